// Tenancy of build inputs (issue 17, findings 1, 8 and 10): a build acts as the token that submitted
// it. With A's token (`repository:a/*:pull,push`) nothing of B's private repositories can be read
// through FROM, COPY --from, RUN --mount from= or ONBUILD; unqualified names resolve as docker
// resolves them, never to an image somebody pushed into kiln; another tenant's build is a 404.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, startKiln, type KilnServer } from "./server";
import { build, contextDir, createToken, submitBuild } from "./helpers";

describe("builds read only what their token may pull", () => {
  let kiln: KilnServer;
  let host: string;
  let a: string;
  let b: string;

  beforeAll(async () => {
    kiln = await startKiln();
    host = `127.0.0.1:${kiln.port}`;
    a = (await createToken(kiln.url, ["repository:a/*:pull,push"], "tenant-a")).token;
    b = (await createToken(kiln.url, ["repository:b/*:pull,push"], "tenant-b")).token;
    // B's private image: a secret file and ONBUILD triggers that must not show in A's builds.
    const secret = await build(kiln.url, b, contextDir({
      Dockerfile: "FROM scratch\nCOPY secret.txt /secret.txt\nONBUILD COPY leaked-trigger.txt /t\n",
      "secret.txt": "b's private data\n",
    }), { tag: "b/x:v1" });
    expect(secret.status, JSON.stringify(secret.error)).toBe("succeeded");
    // B's public image: readable by everyone.
    const pub = await build(kiln.url, b, contextDir({ Dockerfile: "FROM scratch\nCOPY shared.txt /shared.txt\n", "shared.txt": "public\n" }), { tag: "b/public:1" });
    expect(pub.status).toBe("succeeded");
    const res = await fetch(`${kiln.url}/v1/repositories/b/public`, {
      method: "PUT", headers: { authorization: `Bearer ${b}`, "content-type": "application/json" }, body: JSON.stringify({ public: true }),
    });
    expect(res.status).toBe(200);
  }, 180_000);

  afterAll(async () => {
    await kiln?.stop(true);
  });

  it("FROM, COPY --from and RUN --mount from= of B's private image fail for A, with the same words as a missing image", async () => {
    const denied = (ref: string) => `pull access denied for ${ref}: the repository does not exist or token tenant-a`;
    const from = await build(kiln.url, a, contextDir({ Dockerfile: `FROM ${host}/b/x:v1\nENV X=1\n` }), { tag: "a/app:from" });
    expect(from.status).toBe("failed");
    expect(from.error?.message).toContain(denied(`${host}/b/x:v1`));
    expect(from.error?.line).toBe(1);
    // ONBUILD triggers of B's image never become A's steps
    expect(from.steps.map((s) => s.instruction).join("\n")).not.toContain("leaked-trigger");

    const copy = await build(kiln.url, a, contextDir({ Dockerfile: `FROM scratch\nCOPY --from=${host}/b/x:v1 /secret.txt /s\n` }), { tag: "a/app:copy" });
    expect(copy.status).toBe("failed");
    expect(copy.error?.message).toContain(denied(`${host}/b/x:v1`));
    expect(copy.error?.line).toBe(2);

    const mount = await build(kiln.url, a, contextDir({ Dockerfile: `FROM scratch\nRUN --mount=type=bind,from=${host}/b/x:v1,target=/m ["/m/secret.txt"]\n` }), { tag: "a/app:mount" });
    expect(mount.status).toBe("failed");
    expect(mount.error?.message).toContain(denied(`${host}/b/x:v1`));

    // a repository that does not exist gives the same answer: the refusal tells nothing about B
    const missing = await build(kiln.url, a, contextDir({ Dockerfile: `FROM ${host}/b/nothing:v1\n` }), { tag: "a/app:missing" });
    expect(missing.error?.message).toContain(denied(`${host}/b/nothing:v1`));

    // nothing of B's reached A's repository
    const tags = await fetch(`${kiln.url}/v2/a/app/tags/list`, { headers: { authorization: `Bearer ${a}` } });
    expect(tags.status === 404 || ((await tags.json()) as { tags: string[] }).tags.length === 0).toBe(true);
  });

  it("B's own build, A's own private image and B's public image still work", async () => {
    const own = await build(kiln.url, b, contextDir({ Dockerfile: `FROM ${host}/b/x:v1\nCOPY --from=${host}/b/x:v1 /secret.txt /copy.txt\nCOPY leaked-trigger.txt /c\n`, "leaked-trigger.txt": "t" }), { tag: "b/y:1" });
    expect(own.status, JSON.stringify(own.error)).toBe("succeeded");
    expect(own.steps.map((s) => s.instruction)).toContain("COPY leaked-trigger.txt /t");
    const base = await build(kiln.url, a, contextDir({ Dockerfile: "FROM scratch\nCOPY f /f\n", f: "a\n" }), { tag: "a/base:1" });
    expect(base.status).toBe("succeeded");
    const child = await build(kiln.url, a, contextDir({ Dockerfile: `FROM ${host}/a/base:1\nCOPY --from=${host}/b/public:1 /shared.txt /shared.txt\n` }), { tag: "a/child:1" });
    expect(child.status, JSON.stringify(child.error)).toBe("succeeded");
    const bases = child.bases as Array<{ ref: string; source: string; repository: string; digest: string }>;
    expect(bases[0]).toMatchObject({ ref: `${host}/a/base:1`, source: "kiln", repository: "a/base" });
  });

  it("a revoked token starts nothing", async () => {
    const t = await createToken(kiln.url, ["repository:b/*:pull,push"], "short-lived");
    await fetch(`${kiln.url}/v1/tokens/${t.id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const res = await submitBuild(kiln.url, t.token, contextDir({ Dockerfile: `FROM ${host}/b/x:v1\n` }), { tag: "b/z:1" });
    expect(res.status).toBe(401);
  });

  it("unqualified names are Docker Hub's: an `alpine:3.20` pushed into kiln is never a base for `FROM alpine:3.20`", async () => {
    // an admin (or anyone with push on `alpine`) puts an image named alpine:3.20 into kiln
    const hijack = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: "FROM scratch\nCOPY evil /evil\n", evil: "pwned\n" }), { tag: "alpine:3.20" });
    expect(hijack.status).toBe("succeeded");
    const victim = await build(kiln.url, b, contextDir({ Dockerfile: "FROM alpine:3.20\nENV X=1\n" }), { tag: "b/victim:1" });
    // Docker Hub is unreachable from the test machine: the build fails there instead of using kiln's copy
    expect(victim.status).toBe("failed");
    expect(victim.error?.message).toMatch(/docker\.io/);
    expect(JSON.stringify(victim.bases ?? [])).not.toContain("kiln");
    // named by kiln's host, the same image is kiln's (the admin may pull it)
    const named = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${host}/alpine:3.20\nENV X=1\n` }), { tag: "ops/uses-kiln-alpine:1" });
    expect(named.status, JSON.stringify(named.error)).toBe("succeeded");
    expect((named.bases as Array<{ source: string; repository: string }>)[0]).toMatchObject({ source: "kiln", repository: "alpine" });
  });

  it("another tenant's build answers 404 like a missing one, naming nothing", async () => {
    const mine = await build(kiln.url, b, contextDir({ Dockerfile: "FROM scratch\nENV Q=1\n" }), { tag: "b/secret-project:1" });
    for (const suffix of ["", "/events"]) {
      const res = await fetch(`${kiln.url}/v1/builds/${mine.id}${suffix}`, { headers: { authorization: `Bearer ${a}` } });
      expect(res.status).toBe(404);
      const text = await res.text();
      expect(text).not.toContain("secret-project");
      const none = await fetch(`${kiln.url}/v1/builds/bnotabuild${suffix}`, { headers: { authorization: `Bearer ${a}` } });
      expect(none.status).toBe(404);
    }
    const cancel = await fetch(`${kiln.url}/v1/builds/${mine.id}`, { method: "DELETE", headers: { authorization: `Bearer ${a}` } });
    expect(cancel.status).toBe(404);
  });

  it("a build pushes into one namespace: tags in two namespaces are a clear 400", async () => {
    const both = await createToken(kiln.url, ["repository:a/*:pull,push", "repository:b/*:pull,push"], "both");
    const res = await submitBuild(kiln.url, both.token, contextDir({ Dockerfile: "FROM scratch\n" }), { tag: ["a/one:1", "b/two:1"] });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain("one namespace");
  });
});
