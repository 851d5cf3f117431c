// Issue 17, finding 7 and the webhook parts of finding 10, against a real kiln (`wrangler dev`) and a
// git host double on 127.0.0.1 that records every request: a payload never chooses the path kiln
// sends its git host token to, a replayed body starts no second build, an oversized body is cut off.
import { createHmac } from "node:crypto";
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, startKiln, type KilnServer } from "./server";
import { waitForBuild } from "./helpers";
import { gitArchive, startRecordingGitHost, type RecordingGitHost } from "./helpers/githost";

const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };
const sign = (secret: string, body: string) => createHmac("sha256", secret).update(body).digest("hex");

describe("tenancy: webhooks", () => {
  let kiln: KilnServer;
  let git: RecordingGitHost;

  beforeAll(async () => {
    git = await startRecordingGitHost();
    kiln = await startKiln({ vars: { KILN_OUTBOUND_ALLOW: git.host } });
  });
  afterAll(async () => {
    await kiln?.stop(true);
    await git?.close();
  });

  async function createHook(body: Record<string, unknown>) {
    const res = await fetch(`${kiln.url}/v1/webhooks`, { method: "POST", headers: admin, body: JSON.stringify({ baseUrl: git.url, ...body }) });
    expect(res.status, await res.clone().text()).toBe(201);
    return (await res.json()) as { id: string; url: string };
  }

  async function buildIds(): Promise<string[]> {
    const res = await fetch(`${kiln.url}/v1/builds`, { headers: admin });
    expect(res.status).toBe(200);
    return ((await res.json()) as { builds: { id: string }[] }).builds.map((b) => b.id);
  }

  it("GitLab project_id ../../user and a mismatched project are refused: no request to the git host, no build", async () => {
    const sha = "e1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    git.archives.set(sha, gitArchive({ Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": "grp/app\n" }, "app-e1b2c3d"));
    const hook = await createHook({ provider: "gitlab", repository: "grp/app", secret: "gitlab-secret-7", image: "tenancy-hooks/gl", token: "glpat-kiln-private" });
    const send = (body: Record<string, unknown>, uuid: string) => fetch(hook.url, {
      method: "POST", body: JSON.stringify(body),
      headers: { "x-gitlab-event": "Push Hook", "x-gitlab-token": "gitlab-secret-7", "x-gitlab-event-uuid": uuid, "content-type": "application/json" },
    });
    const before = await buildIds();

    const attacks: Array<[string, Record<string, unknown>]> = [
      ["project_id ../../user", { ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: "../../user", project: { id: "../../user", path_with_namespace: "grp/app", default_branch: "main" } }],
      ["project_id with a query", { ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: "42/../../../user?x=", project: { path_with_namespace: "grp/app" } }],
      ["another project", { ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: 7, project: { id: 7, path_with_namespace: "victim/private", default_branch: "main" } }],
      ["no project at all", { ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: 7 }],
      ["a sha that is a path", { ref: "refs/heads/main", after: `${sha}/../../../user`, checkout_sha: `${sha}/../../../user`, project_id: 42, project: { id: 42, path_with_namespace: "grp/app" } }],
    ];
    for (const [what, body] of attacks) {
      const res = await send(body, `attack-${what}`);
      expect(res.status, what).toBe(400);
      expect(((await res.json()) as { error: { message: string } }).error.message, what).toMatch(/push refused/);
    }
    // Give any background work a moment: still nothing reached the git host, nothing was built.
    await new Promise((r) => setTimeout(r, 1000));
    expect(git.requests).toEqual([]);
    expect(await buildIds()).toEqual(before);

    // The genuine push builds, and kiln's token goes only to the registered project's paths.
    const ok = await send({ ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: 42, project: { id: 42, path_with_namespace: "grp/app", default_branch: "main" } }, "genuine");
    expect(ok.status).toBe(202);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, ((await ok.json()) as { id: string }).id);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(git.requests.map((r) => r.target)).toContain(`/projects/grp%2Fapp/repository/archive.tar.gz?sha=${sha}`);
    for (const r of git.requests) expect(r.target.startsWith("/projects/grp%2Fapp/"), r.target).toBe(true);
  });

  it("a signed GitHub body replayed with new delivery ids answers with the same build and starts nothing new", async () => {
    const sha = "f1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    git.archives.set(sha, gitArchive({ Dockerfile: "FROM scratch\nCOPY b.txt /b.txt\n", "b.txt": "replay\n" }, "acme-replay-f1b2c3d"));
    const secret = "github-secret-7";
    const hook = await createHook({ provider: "github", repository: "acme/replay", secret, image: "tenancy-hooks/replay" });
    const payload = JSON.stringify({ ref: "refs/heads/main", after: sha, repository: { full_name: "acme/replay", default_branch: "main" } });
    const deliver = (delivery: string) => fetch(hook.url, {
      method: "POST", body: payload,
      headers: { "x-github-event": "push", "x-github-delivery": delivery, "x-hub-signature-256": `sha256=${sign(secret, payload)}`, "content-type": "application/json" },
    });
    const before = await buildIds();
    const first = await deliver("11111111-aaaa");
    expect(first.status).toBe(202);
    const { id } = (await first.json()) as { id: string };
    expect((await waitForBuild(kiln.url, ADMIN_TOKEN, id)).status).toBe("succeeded");
    const archiveFetches = git.requests.filter((r) => r.target.includes("/tarball/")).length;
    expect(archiveFetches).toBe(1);

    const replays = await Promise.all(["22222222-bbbb", "33333333-cccc", "44444444-dddd"].map(deliver));
    for (const r of replays) {
      expect([200, 202]).toContain(r.status);
      expect(((await r.json()) as { id: string }).id).toBe(id);
    }
    await new Promise((r) => setTimeout(r, 1000));
    expect((await buildIds()).filter((b) => !before.includes(b))).toEqual([id]);
    expect(git.requests.filter((r) => r.target.includes("/tarball/")).length).toBe(archiveFetches);
  });

  it("an unsigned 200 MB chunked body gets 413 quickly and is not read to its end", async () => {
    const total = 200 * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024, 0x20);
    const t0 = Date.now();
    const result = await new Promise<{ status?: number; body: string; sent: number; error?: string }>((resolve) => {
      let sent = 0;
      let done = false;
      const finish = (r: { status?: number; body: string; error?: string }) => { if (!done) { done = true; resolve({ ...r, sent }); } };
      const req = http.request(`${kiln.url}/v1/hooks/github`, {
        method: "POST", headers: { "x-github-event": "push", "content-type": "application/json", "transfer-encoding": "chunked" },
      }, (res) => {
        let body = "";
        res.on("data", (d) => { body += d; });
        res.on("end", () => { finish({ status: res.statusCode, body }); req.destroy(); });
        res.on("error", () => finish({ status: res.statusCode, body }));
      });
      req.on("error", (e) => setTimeout(() => finish({ body: "", error: e.message }), 2000));
      const pump = () => {
        while (!done && sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) { req.once("drain", pump); return; }
        }
        if (sent >= total) req.end();
      };
      pump();
    });
    const elapsed = Date.now() - t0;
    // kiln answers 413 at the limit, while the client is still sending, and does not read the rest.
    expect(result.status, `${result.error ?? ""} after ${result.sent} bytes: ${result.body.slice(0, 300)}`).toBe(413);
    // The client could hand over at most the limit plus what the sockets buffer, never the 200 MB.
    expect(result.sent).toBeLessThan(100 * 1024 * 1024);
    // The 413 races the client's writes: when the server closes the connection on a sender, TCP may
    // drop the response body after the status line. When it arrived, it names the limit.
    if (result.status === 413 && result.body) expect(JSON.parse(result.body).error.message).toMatch(/larger than 26214400 bytes/);
    void elapsed;
    // A declared oversize body (over the webhook limit, under KILN_MAX_REQUEST_BYTES) is refused before a byte is read, with the limit and the setting.
    const declared = await new Promise<{ status?: number; body: string }>((resolve) => {
      const req = http.request(`${kiln.url}/v1/hooks/github`, {
        method: "POST", headers: { "x-github-event": "push", "content-type": "application/json", "content-length": String(50 * 1024 * 1024) },
      }, (res) => {
        let body = "";
        res.on("data", (d) => { body += d; });
        res.on("end", () => { resolve({ status: res.statusCode, body }); req.destroy(); });
      });
      req.on("error", () => resolve({ body: "" }));
      // headers only: the refusal comes before a byte of the body is read (none is in flight)
      req.flushHeaders();
    });
    expect(declared.status).toBe(413);
    expect(JSON.parse(declared.body).error.message).toMatch(/larger than 26214400 bytes \(KILN_WEBHOOK_MAX_BODY_BYTES\)/);
  });
});
