// Webhook receivers through the Worker's routes (issue 17, finding 7 and the webhook parts of 10):
// payload fields never reach a URL unchecked, one build per (webhook, ref, commit), bodies cut off
// at the limit while streaming.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

const BASE = "http://kiln.test";
const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };
const enc = new TextEncoder();

async function hmacHex(secret: string, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return [...new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(body)))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function createHook(body: Record<string, unknown>): Promise<{ id: string; url: string }> {
  // Port 9 on loopback: nothing answers, the background archive fetch fails fast.
  const res = await SELF.fetch(`${BASE}/v1/webhooks`, { method: "POST", headers: ADMIN, body: JSON.stringify({ baseUrl: "http://127.0.0.1:9", ...body }) });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as { id: string; url: string };
}

async function buildIds(): Promise<string[]> {
  const res = await SELF.fetch(`${BASE}/v1/builds`, { headers: ADMIN });
  return ((await res.json()) as { builds: { id: string }[] }).builds.map((b) => b.id);
}

const SHA = "d1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

describe("GitLab payloads choose no URL", () => {
  it("refuses project_id ../../user and a mismatched project, recording no build", async () => {
    const hook = await createHook({ provider: "gitlab", repository: "grp/app", secret: "gitlab-secret-1", image: "hooks/gl-attack", token: "glpat-private" });
    const before = await buildIds();
    const send = (body: Record<string, unknown>, uuid: string) => SELF.fetch(hook.url, {
      method: "POST", body: JSON.stringify(body),
      headers: { "x-gitlab-event": "Push Hook", "x-gitlab-token": "gitlab-secret-1", "x-gitlab-event-uuid": uuid, "content-type": "application/json" },
    });
    const traversal = await send({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: "../../user", project: { id: "../../user", path_with_namespace: "grp/app" } }, "a1");
    expect(traversal.status).toBe(400);
    expect(((await traversal.json()) as { error: { message: string } }).error.message).toMatch(/project_id must be a positive integer/);
    const other = await send({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 7, project: { id: 7, path_with_namespace: "victim/private" } }, "a2");
    expect(other.status).toBe(400);
    expect(((await other.json()) as { error: { message: string } }).error.message).toMatch(/victim\/private/);
    const shortSha = await send({ ref: "refs/heads/main", after: "d1b2c3d", checkout_sha: "d1b2c3d", project_id: 7, project: { id: 7, path_with_namespace: "grp/app" } }, "a3");
    expect(shortSha.status).toBe(400);
    expect(await buildIds()).toEqual(before);
  });

  it("refuses a project id other than the registered one", async () => {
    const hook = await createHook({ provider: "gitlab", repository: "grp/pinned", projectId: 42, secret: "gitlab-secret-2", image: "hooks/gl-pinned" });
    expect(((await (await SELF.fetch(`${BASE}/v1/webhooks/${hook.id}`, { headers: ADMIN })).json()) as { projectId?: string }).projectId).toBe("42");
    const before = await buildIds();
    const res = await SELF.fetch(hook.url, {
      method: "POST", body: JSON.stringify({ ref: "refs/heads/main", after: SHA, checkout_sha: SHA, project_id: 43, project: { id: 43, path_with_namespace: "grp/pinned" } }),
      headers: { "x-gitlab-event": "Push Hook", "x-gitlab-token": "gitlab-secret-2", "x-gitlab-event-uuid": "p1", "content-type": "application/json" },
    });
    expect(res.status).toBe(400);
    expect(await buildIds()).toEqual(before);
    const bad = await SELF.fetch(`${BASE}/v1/webhooks`, { method: "POST", headers: ADMIN, body: JSON.stringify({ provider: "gitlab", repository: "grp/x", projectId: "../../user", secret: "gitlab-secret-3", image: "hooks/x" }) });
    expect(bad.status).toBe(400);
    const dots = await SELF.fetch(`${BASE}/v1/webhooks`, { method: "POST", headers: ADMIN, body: JSON.stringify({ provider: "github", repository: "../..", secret: "github-secret-3", image: "hooks/x" }) });
    expect(dots.status).toBe(400);
  });
});

describe("one build per (webhook, ref, commit)", () => {
  it("a signed body replayed under new delivery ids answers with the same build", async () => {
    const secret = "github-secret-1";
    const hook = await createHook({ provider: "github", repository: "acme/replay", secret, image: "hooks/replay" });
    const payload = JSON.stringify({ ref: "refs/heads/main", after: SHA, repository: { full_name: "acme/replay", default_branch: "main" } });
    const sig = `sha256=${await hmacHex(secret, payload)}`;
    const deliver = (id: string) => SELF.fetch(hook.url, { method: "POST", body: payload, headers: { "x-github-event": "push", "x-github-delivery": id, "x-hub-signature-256": sig, "content-type": "application/json" } });
    const before = await buildIds();
    const first = await deliver("delivery-1");
    expect(first.status).toBe(202);
    const { id } = (await first.json()) as { id: string };
    for (const d of ["delivery-2", "delivery-3", ""]) {
      const again = await deliver(d);
      expect([200, 202]).toContain(again.status);
      expect(((await again.json()) as { id: string }).id).toBe(id);
    }
    const after = await buildIds();
    expect(after.filter((b) => !before.includes(b))).toEqual([id]);

    // The same commit on another ref is another build (other tags).
    const tagPayload = JSON.stringify({ ref: "refs/tags/v1", after: SHA, repository: { full_name: "acme/replay" } });
    const tagRes = await SELF.fetch(hook.url, { method: "POST", body: tagPayload, headers: { "x-github-event": "push", "x-github-delivery": "delivery-4", "x-hub-signature-256": `sha256=${await hmacHex(secret, tagPayload)}`, "content-type": "application/json" } });
    expect(tagRes.status).toBe(202);
    expect(((await tagRes.json()) as { id: string }).id).not.toBe(id);
  });
});

describe("webhook bodies are cut off at the limit while streaming", () => {
  it("an unsigned 200 MB chunked body gets 413 without being read to the end", async () => {
    const total = 200 * 1024 * 1024;
    const piece = new Uint8Array(1024 * 1024).fill(0x20);
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (pulled >= total) { ctl.close(); return; }
        pulled += piece.byteLength;
        ctl.enqueue(piece);
      },
    });
    const res = await SELF.fetch(`${BASE}/v1/hooks/github`, {
      method: "POST", body, headers: { "x-github-event": "push", "content-type": "application/json" }, duplex: "half",
    } as RequestInit);
    expect(res.status).toBe(413);
    // The 25 MiB limit plus what was in flight, never the whole body.
    expect(pulled).toBeLessThan(40 * 1024 * 1024);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/larger than 26214400 bytes/);
  });

  it("a declared Content-Length over the limit is refused before reading", async () => {
    const res = await SELF.fetch(`${BASE}/v1/hooks/gitlab`, {
      method: "POST", body: "{}", headers: { "x-gitlab-event": "Push Hook", "content-length": String(300 * 1024 * 1024) },
    });
    expect(res.status).toBe(413);
  });
});
