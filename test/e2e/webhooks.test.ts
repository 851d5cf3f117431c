// Git webhooks end to end: a git host double on 127.0.0.1 serves commit archives and records the
// commit statuses kiln reports; kiln builds and tags what a push names.
import { createHmac } from "node:crypto";
import { execFileSync } from "node:child_process";
import http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, freePort, startKiln, type KilnServer } from "./server";
import { contextDir, waitForBuild } from "./helpers";

interface GitHost {
  url: string;
  archives: Map<string, Buffer>;
  statuses: Array<{ path: string; body: any; auth?: string }>;
  archiveRequests: string[];
  close(): Promise<void>;
}

/** Serves GitHub-, GitLab- and Gitea-shaped archive and status endpoints for any repository. */
async function startGitHost(): Promise<GitHost> {
  const port = await freePort();
  const host: GitHost = { url: `http://127.0.0.1:${port}`, archives: new Map(), statuses: [], archiveRequests: [], close: async () => {} };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", host.url);
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      if (req.method === "POST" && /\/statuses\//.test(url.pathname)) {
        host.statuses.push({ path: url.pathname, body: JSON.parse(body || "{}"), auth: req.headers.authorization ?? (req.headers["private-token"] as string) });
        res.writeHead(201, { "content-type": "application/json" }).end("{}");
        return;
      }
      // GitHub: /repos/o/r/tarball/<sha>; GitLab: /projects/<id>/repository/archive.tar.gz?sha=; Gitea: /repos/o/r/archive/<sha>.tar.gz
      const sha = url.pathname.match(/\/tarball\/([0-9a-f]+)$/)?.[1] ?? url.searchParams.get("sha") ?? url.pathname.match(/\/archive\/([0-9a-f]+)\.tar\.gz$/)?.[1];
      host.archiveRequests.push(url.pathname + url.search);
      const archive = sha ? host.archives.get(sha) : undefined;
      if (!archive) { res.writeHead(404).end("not found"); return; }
      res.writeHead(200, { "content-type": "application/x-gzip" }).end(archive);
    });
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  host.close = () => new Promise((r) => server.close(() => r()));
  return host;
}

/** A tar.gz with everything under one top-level folder, as git hosts make them. */
function archiveOf(files: Record<string, string>, top: string): Buffer {
  const dir = contextDir(Object.fromEntries(Object.entries(files).map(([k, v]) => [`${top}/${k}`, v])));
  return execFileSync("tar", ["-C", dir, "--sort=name", "-czf", "-", top]);
}

const sign = (secret: string, body: string) => createHmac("sha256", secret).update(body).digest("hex");

describe("git webhooks", () => {
  let kiln: KilnServer;
  let git: GitHost;
  const secret = "webhook-secret-1";
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };

  beforeAll(async () => {
    git = await startGitHost();
    // the git host double is on loopback: the only internal host kiln may fetch from
    kiln = await startKiln({ vars: { KILN_OUTBOUND_ALLOW: new URL(git.url).host } });
  });
  afterAll(async () => {
    await kiln?.stop(true);
    await git?.close();
  });

  async function createHook(body: Record<string, unknown>) {
    const res = await fetch(`${kiln.url}/v1/webhooks`, { method: "POST", headers: admin, body: JSON.stringify(body) });
    expect(res.status, await res.clone().text()).toBe(201);
    return (await res.json()) as { id: string; url: string };
  }

  async function tagsOf(repo: string): Promise<string[]> {
    const res = await fetch(`${kiln.url}/v2/${repo}/tags/list`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    if (res.status !== 200) return [];
    return ((await res.json()) as { tags: string[] }).tags ?? [];
  }

  it("GitHub: a signed push builds and tags {branch} and {sha:7}; a redelivery returns the same build; a forgery stores nothing", async () => {
    const sha = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    git.archives.set(sha, archiveOf({ Dockerfile: "FROM scratch\nCOPY hello.txt /hello.txt\n", "hello.txt": "hi from git\n" }, "acme-app-a1b2c3d"));
    const hook = await createHook({ provider: "github", repository: "acme/app", secret, baseUrl: git.url, image: "hooks/app", tags: ["{branch}", "{sha:7}"], token: "gh-token" });
    expect(hook.url).toBe(`${kiln.url}/v1/hooks/github/${hook.id}`);

    const ping = JSON.stringify({ zen: "Keep it logically awesome.", repository: { full_name: "acme/app" } });
    const pong = await fetch(hook.url, { method: "POST", headers: { "x-github-event": "ping", "x-github-delivery": "p1", "x-hub-signature-256": `sha256=${sign(secret, ping)}`, "content-type": "application/json" }, body: ping });
    expect(pong.status).toBe(200);

    const payload = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: sha, deleted: false, repository: { full_name: "acme/app", default_branch: "main" }, head_commit: { id: sha } });
    const headers = { "x-github-event": "push", "x-github-delivery": "delivery-1", "content-type": "application/json" };

    const forged = await fetch(hook.url, { method: "POST", headers: { ...headers, "x-hub-signature-256": `sha256=${sign("not-the-secret", payload)}` }, body: payload });
    expect(forged.status).toBe(401);
    const unsigned = await fetch(`${kiln.url}/v1/hooks/github`, { method: "POST", headers, body: payload });
    expect(unsigned.status).toBe(401);
    expect(git.archiveRequests).toEqual([]);
    const listed = (await (await fetch(`${kiln.url}/v1/builds`, { headers: admin })).json()) as { builds: unknown[] };
    expect(listed.builds).toEqual([]);

    const t0 = Date.now();
    const res = await fetch(hook.url, { method: "POST", headers: { ...headers, "x-hub-signature-256": `sha256=${sign(secret, payload)}` }, body: payload });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const again = await fetch(hook.url, { method: "POST", headers: { ...headers, "x-hub-signature-256": `sha256=${sign(secret, payload)}` }, body: payload });
    expect(((await again.json()) as { id: string }).id).toBe(id);

    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect((await tagsOf("hooks/app")).sort()).toEqual(["a1b2c3d", "main"]);
    expect(git.archiveRequests).toContain(`/repos/acme/app/tarball/${sha}`);
    const states = git.statuses.filter((s) => s.path === `/repos/acme/app/statuses/${sha}`).map((s) => s.body.state);
    expect(states).toEqual(["pending", "success"]);
    expect(git.statuses[0].auth).toBe("Bearer gh-token");
    expect(git.statuses.at(-1)!.body.target_url).toBe(`${kiln.url}/v1/builds/${id}`);
  });

  it("GitLab: a tag push tags the git tag; a branch deletion and a non-matching branch are ignored", async () => {
    const sha = "b1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    git.archives.set(sha, archiveOf({ "svc/Dockerfile": "FROM scratch\nCOPY app.txt /app.txt\n", "svc/app.txt": "svc\n" }, "app-b1b2c3d-b1b2c3d"));
    const hook = await createHook({ provider: "gitlab", repository: "grp/app", projectId: 42, secret: "gitlab-token-1", baseUrl: git.url, image: "hooks/gl", context: "svc", branches: ["main"], tags: ["{tag}", "{branch}"] });
    const send = (event: string, body: Record<string, unknown>, uuid: string, token = "gitlab-token-1") =>
      fetch(hook.url, { method: "POST", headers: { "x-gitlab-event": event, "x-gitlab-token": token, "x-gitlab-event-uuid": uuid, "content-type": "application/json" }, body: JSON.stringify(body) });
    const project = { id: 42, path_with_namespace: "grp/app", default_branch: "main" };

    expect((await send("Push Hook", { ref: "refs/heads/main", after: sha, checkout_sha: sha, project_id: 42, project }, "u0", "wrong-token")).status).toBe(401);
    const ignored = await send("Push Hook", { ref: "refs/heads/feature", after: sha, checkout_sha: sha, project_id: 42, project }, "u1");
    expect(ignored.status).toBe(202);
    expect(await ignored.json()).toMatchObject({ ignored: expect.stringContaining("feature") });
    const deleted = await send("Push Hook", { ref: "refs/heads/main", before: sha, after: "0".repeat(40), checkout_sha: null, project_id: 42, project }, "u2");
    expect(await deleted.json()).toMatchObject({ ignored: expect.stringContaining("deleted") });

    const res = await send("Tag Push Hook", { ref: "refs/tags/v1.0.0", after: sha, checkout_sha: sha, project_id: 42, project }, "u3");
    expect(res.status).toBe(202);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, ((await res.json()) as { id: string }).id);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(await tagsOf("hooks/gl")).toEqual(["v1.0.0"]);
    expect(git.archiveRequests).toContain(`/projects/42/repository/archive.tar.gz?sha=${sha}`);
  });

  it("Gitea: a failing Dockerfile reports a failure status with the build link", async () => {
    const sha = "c1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    git.archives.set(sha, archiveOf({ Dockerfile: "FROM scratch\nCOPY missing.txt /x\n" }, "app"));
    const hook = await createHook({ provider: "gitea", repository: "o/app", secret, baseUrl: git.url, image: "hooks/gt", token: "gt-token" });
    const payload = JSON.stringify({ ref: "refs/heads/main", after: sha, repository: { full_name: "o/app", default_branch: "main" } });
    const res = await fetch(`${kiln.url}/v1/hooks/gitea`, { method: "POST", headers: { "x-gitea-event": "push", "x-gitea-delivery": "g1", "x-gitea-signature": sign(secret, payload), "content-type": "application/json" }, body: payload });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status).toBe("failed");
    const deadline = Date.now() + 10_000;
    let final: { body: any } | undefined;
    while (Date.now() < deadline) {
      final = git.statuses.filter((s) => s.path === `/repos/o/app/statuses/${sha}`).find((s) => s.body.state === "failure");
      if (final) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(final?.body).toMatchObject({ state: "failure", target_url: `${kiln.url}/v1/builds/${id}`, context: "kiln" });
    expect(await tagsOf("hooks/gt")).toEqual([]);
  });
});
