// Security review of issue 17's fixes: each test performs an attack that works today and asserts the
// refusal kiln should give. A failing test here is a confirmed hole.
import { SELF, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";

const BASE = "http://kiln.test";
const ADMIN = "kiln-test-admin";
const enc = new TextEncoder();

let seq = 0;
/** A namespace no other test uses. */
const ns = (p: string) => `${p}${Date.now().toString(36)}${seq++}`;

async function sha256(data: Uint8Array | string): Promise<string> {
  const b = typeof data === "string" ? enc.encode(data) : data;
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return `sha256:${[...h].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

async function call(path: string, token: string | null, init: { method?: string; body?: BodyInit | object; headers?: Record<string, string> } = {}): Promise<Response> {
  const isJson = init.body !== undefined && typeof init.body === "object" && !(init.body instanceof Uint8Array) && !(init.body instanceof ReadableStream) && !(init.body instanceof FormData);
  const body = isJson ? JSON.stringify(init.body) : (init.body as BodyInit | undefined);
  return SELF.fetch(`${BASE}${path}`, {
    method: init.method ?? (body === undefined ? "GET" : "POST"),
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(isJson ? { "content-type": "application/json" } : {}), ...init.headers },
    body,
  });
}

async function createToken(scopes: string[]): Promise<{ id: string; token: string }> {
  const res = await call("/v1/tokens", ADMIN, { body: { name: "attacker", scopes } });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

async function pushBlob(repo: string, token: string, data: Uint8Array | string): Promise<string> {
  const b = typeof data === "string" ? enc.encode(data) : data;
  const digest = await sha256(b);
  const res = await call(`/v2/${repo}/blobs/uploads/?digest=${digest}`, token, { method: "POST", body: b });
  expect(res.status, await res.clone().text()).toBe(201);
  return digest;
}

async function putManifest(repo: string, ref: string, token: string, doc: unknown, mediaType = "application/vnd.oci.image.manifest.v1+json"): Promise<Response> {
  return call(`/v2/${repo}/manifests/${ref}`, token, { method: "PUT", body: JSON.stringify(doc), headers: { "content-type": mediaType } });
}

/** A tar archive of `files` (ustar, written by kiln's own tar writer). */
async function makeTar(files: Record<string, string>): Promise<Uint8Array> {
  const { collect, tarStream } = await import("../../src/oci/tar");
  return collect(tarStream(Object.entries(files).map(([path, body]) => ({
    path, type: "file" as const, mode: 0o644, uid: 0, gid: 0, mtime: 1700000000, body: enc.encode(body),
  }))));
}

interface Build { id: string; status: string; steps: { index: number; instruction: string; status: string; cacheKey: string | null }[]; error?: { message: string } }

async function startBuild(token: string, files: Record<string, string>, query: string): Promise<Response> {
  return call(`/v1/builds${query}`, token, { method: "POST", body: await makeTar(files), headers: { "content-type": "application/x-tar" } });
}

async function getBuild(id: string): Promise<Build> {
  return (await call(`/v1/builds/${id}`, ADMIN)).json();
}

async function waitBuild(id: string, until: (b: Build) => boolean = (b) => ["succeeded", "failed", "cancelled"].includes(b.status), timeoutMs = 30_000): Promise<Build> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await getBuild(id);
    if (until(b)) return b;
    if (Date.now() > deadline) throw new Error(`build ${id}: ${JSON.stringify(b)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ------------------------------------------------------------------------------------------------

describe("attacks on tenancy after issue 17", () => {
  it("A cannot read B's private blob by naming its digest as a foreign layer of A's own base image", async () => {
    const a = ns("fa");
    const b = ns("fb");
    const A = (await createToken([`repository:${a}/*:pull,push`])).token;
    const B = (await createToken([`repository:${b}/*:pull,push`])).token;
    // B's private layer; A learns only its digest (a digest is not a secret: SECURITY.md says
    // "knowing a digest of another tenant's layer gives no access to it").
    const secret = `B's private layer ${crypto.randomUUID()}`;
    const victim = await pushBlob(`${b}/x`, B, secret);
    expect((await call(`/v2/${a}/out/blobs/${victim}`, A)).status).toBe(404);

    // A pushes a base image whose only layer is a "foreign" descriptor naming B's digest: putManifest
    // does not require foreign layers (urls + nondistributable media type) to be in the repository.
    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [await sha256("x")] }, config: {} });
    const configDigest = await pushBlob(`${a}/evil`, A, config);
    const put = await putManifest(`${a}/evil`, "1", A, {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: enc.encode(config).length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", digest: victim, size: 1, urls: ["https://example.invalid/l"] }],
    });
    expect(put.status, await put.clone().text()).toBe(201);

    // A builds FROM that base into a/out: pushing the result links every layer of the state into a/out.
    const res = await startBuild(A, { Dockerfile: `FROM kiln.test/${a}/evil:1\nENV X=1\n` }, `?tag=${a}/out:1`);
    expect(res.status, await res.clone().text()).toBe(202);
    const built = await waitBuild(((await res.json()) as { id: string }).id);
    void built;

    // B's bytes are now readable through A's repository.
    const stolen = await call(`/v2/${a}/out/blobs/${victim}`, A);
    const text = stolen.status === 200 ? await stolen.text() : "";
    expect({ status: stolen.status, leaked: text === secret }).toEqual({ status: 404, leaked: false });
  });

  it("A cannot COPY files out of B's private layer through a foreign-layer base (no link needed)", async () => {
    const a = ns("ca");
    const b = ns("cb");
    const A = (await createToken([`repository:${a}/*:pull,push`])).token;
    const B = (await createToken([`repository:${b}/*:pull,push`])).token;
    // B's private image layer: a gzip tar holding secret.txt.
    const secret = `top secret ${crypto.randomUUID()}`;
    const tar = await makeTar({ "secret.txt": secret });
    const gz = new Uint8Array(await new Response(new Blob([tar]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
    const victim = await pushBlob(`${b}/x`, B, gz);

    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [await sha256(tar)] }, config: {} });
    const configDigest = await pushBlob(`${a}/evil`, A, config);
    const put = await putManifest(`${a}/evil`, "1", A, {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: enc.encode(config).length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", digest: victim, size: gz.length, urls: ["https://example.invalid/l"] }],
    });
    expect(put.status, await put.clone().text()).toBe(201);

    const res = await startBuild(A, { Dockerfile: `FROM scratch\nCOPY --from=kiln.test/${a}/evil:1 /secret.txt /stolen.txt\n` }, `?tag=${a}/copied:1`);
    expect(res.status, await res.clone().text()).toBe(202);
    const built = await waitBuild(((await res.json()) as { id: string }).id);
    let leaked = false;
    if (built.status === "succeeded") {
      const m = (await (await call(`/v2/${a}/copied/manifests/1`, A, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } })).json()) as { layers: { digest: string }[] };
      for (const l of m.layers) {
        const blob = await call(`/v2/${a}/copied/blobs/${l.digest}`, A);
        const text = new TextDecoder().decode(await new Response(blob.body!.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer());
        if (text.includes(secret)) leaked = true;
      }
    }
    expect({ status: built.status, leaked }).toEqual({ status: "failed", leaked: false });
  });

  it("a RUN step's cache key covers the contents of its --mount=type=bind,from=<stage> source", async () => {
    // Two tokens of one namespace (say a CI token for one app and the owner's): the RUN key omits the
    // mounted stage, so the first build's result is served to the second whatever the second mounts.
    const a = ns("ka");
    const A1 = (await createToken([`repository:${a}/one:pull,push`])).token;
    const A2 = (await createToken([`repository:${a}/two:pull,push`])).token;
    const dockerfile = "FROM scratch AS src\nCOPY f /f\nFROM scratch\nRUN --mount=type=bind,from=src,target=/m [\"/m/f\"]\n";
    const keyOf = async (token: string, repo: string, content: string) => {
      const res = await startBuild(token, { Dockerfile: dockerfile, f: content }, `?tag=${repo}:1`);
      expect(res.status, await res.clone().text()).toBe(202);
      const id = ((await res.json()) as { id: string }).id;
      const b = await waitBuild(id, (x) => x.steps.some((s) => s.instruction.startsWith("RUN") && s.cacheKey !== null) || ["failed", "succeeded"].includes(x.status));
      await call(`/v1/builds/${id}`, ADMIN, { method: "DELETE" });
      return b.steps.find((s) => s.instruction.startsWith("RUN"))!.cacheKey;
    };
    const k1 = await keyOf(A1, `${a}/one`, "#!/bin/sh\necho poisoned > /out\n");
    const k2 = await keyOf(A2, `${a}/two`, "#!/bin/sh\necho good > /out\n");
    expect(k1).not.toBeNull();
    expect(k2).not.toBe(k1);
  });

  it("A cannot delete the stored context of B's queued build by submitting the same context with a bad Dockerfile", async () => {
    const a = ns("da");
    const b = ns("db");
    const A = (await createToken([`repository:${a}/*:pull,push`])).token;
    const B = (await createToken([`repository:${b}/*:pull,push`])).token;
    // B's context (think: an open-source repository built by a webhook; A can fetch the same tree).
    const files = { Dockerfile: "FROM scratch\nRUN [\"/bin/true\"]\nCOPY app.txt /app.txt\n", "app.txt": `public source ${crypto.randomUUID()}` };
    const res = await startBuild(B, files, `?tag=${b}/app:1`);
    expect(res.status).toBe(202);
    const id = ((await res.json()) as { id: string }).id;
    await waitBuild(id, (x) => x.steps.some((s) => s.instruction.startsWith("RUN") && s.status === "running"));
    const { listKeys } = { listKeys: async () => (await env.BUCKET.list({ prefix: "contexts/sha256/" })).objects.map((o) => o.key) };
    const before = (await listKeys()).filter((k) => k.includes(".index/"));

    // A posts the same tar, with the Dockerfile replaced (multipart `dockerfile` part) by one that does not parse.
    const form = new FormData();
    form.append("context", new Blob([await makeTar(files)]), "context.tar");
    form.append("dockerfile", new Blob(["FROM scratch\nNOPE x\n"]), "Dockerfile");
    const refused = await call(`/v1/builds?tag=${a}/x:1`, A, { method: "POST", body: form });
    expect(refused.status).toBe(400);

    const after = (await listKeys()).filter((k) => k.includes(".index/"));
    await call(`/v1/builds/${id}`, ADMIN, { method: "DELETE" });
    // B's context index must still be there for B's COPY step.
    expect(before.filter((k) => !after.includes(k))).toEqual([]);
  });

  it("a push to a branch named `latest` (or like a release tag) does not overwrite the image's :latest", async () => {
    const secret = "github-secret-latest";
    const image = `${ns("wh")}/app`;
    const created = await call("/v1/webhooks", ADMIN, { body: { provider: "github", repository: "acme/latest-attack", secret, image, baseUrl: "http://127.0.0.1:9" } });
    expect(created.status, await created.clone().text()).toBe(201);
    const hook = (await created.json()) as { url: string };
    const payload = JSON.stringify({ ref: "refs/heads/latest", after: "a".repeat(40), repository: { full_name: "acme/latest-attack", default_branch: "main" } });
    const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const sig = [...new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(payload)))].map((x) => x.toString(16).padStart(2, "0")).join("");
    const res = await SELF.fetch(hook.url, { method: "POST", body: payload, headers: { "x-github-event": "push", "x-github-delivery": crypto.randomUUID(), "x-hub-signature-256": `sha256=${sig}`, "content-type": "application/json" } });
    expect(res.status).toBe(202);
    const { tags } = (await res.json()) as { tags: string[] };
    // DEFAULT_TAG_TEMPLATES promise `latest` only for the default branch (main).
    expect(tags).not.toContain(`${image}:latest`);
  });
});
