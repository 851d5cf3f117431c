// Upstream credentials and the pull-through store across namespaces (issue 17, finding 9): an
// in-memory registry speaking the Docker Hub token flow stands in for the upstream.
import { env, SELF } from "cloudflare:test";
import { beforeEach, describe, expect, it } from "vitest";
import { clearTokenCache, UpstreamError } from "../../../src/upstream/client";
import { pullImage } from "../../../src/upstream/pull";

const ADMIN = { authorization: "Bearer kiln-test-admin" };
const PLATFORM = { os: "linux", architecture: "amd64" };
const enc = new TextEncoder();

async function sha(bytes: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `sha256:${[...h].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

interface Image {
  manifest: Uint8Array;
  digest: string;
  blobs: Map<string, Uint8Array>;
}

async function image(label: string): Promise<Image> {
  const layer = enc.encode(`layer of ${label}`);
  const config = enc.encode(JSON.stringify({ architecture: "amd64", os: "linux", config: { Env: [`IMAGE=${label}`] }, rootfs: { type: "layers", diff_ids: [await sha(layer)] } }));
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await sha(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: await sha(layer), size: layer.length }],
  }));
  return { manifest, digest: await sha(manifest), blobs: new Map([[await sha(layer), layer], [await sha(config), config]]) };
}

/**
 * A registry at https://<host>: repositories by name, each `private` or not. Tokens come from /token;
 * with Basic user:pass they are authenticated, without they are anonymous (as Docker Hub does). A
 * private repository answers 401 to an anonymous token. `down` makes every request fail to connect.
 */
function registry(host: string, repos: Record<string, { private: boolean; tags: Record<string, Image> }>, creds = { user: "puller", pass: "pa55word" }) {
  const state = { down: false, requests: [] as string[] };
  const issued = new Map<string, boolean>();
  const fetchImpl = async (input: string, init?: RequestInit): Promise<Response> => {
    const url = new URL(input);
    if (url.host !== host) throw new TypeError(`no route to ${url.host}`);
    if (state.down) throw new TypeError("connection refused");
    const auth = new Headers(init?.headers).get("authorization") ?? "";
    const method = init?.method ?? "GET";
    if (url.pathname === "/token") {
      if (auth && auth !== `Basic ${btoa(`${creds.user}:${creds.pass}`)}`) return new Response("bad credentials", { status: 401 });
      const token = `t${issued.size}`;
      issued.set(token, !!auth);
      return Response.json({ token, expires_in: 300 });
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    const repo = m ? repos[m[1]] : undefined;
    const token = auth.startsWith("Bearer ") ? auth.slice(7) : null;
    const challenge = { status: 401, headers: { "www-authenticate": `Bearer realm="https://${host}/token",service="${host}"` } };
    if (!token || !issued.has(token)) return new Response("", challenge);
    // what the registry answered with a token (the first, token-less try of each request is not logged)
    state.requests.push(`${method} ${url.pathname}${issued.get(token) ? " (authenticated)" : ""}`);
    if (!m || !repo) return new Response("", { status: 404 });
    if (repo.private && !issued.get(token)) return new Response("", challenge);
    const images = Object.values(repo.tags);
    if (m[2] === "manifests") {
      const img = repo.tags[m[3]] ?? images.find((i) => i.digest === m[3]);
      if (!img) return new Response("", { status: 404 });
      const headers = { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": img.digest, "content-length": String(img.manifest.length) };
      return new Response(method === "HEAD" ? null : img.manifest, { headers });
    }
    const blob = images.map((i) => i.blobs.get(m[3])).find(Boolean);
    return blob ? new Response(blob, { headers: { "content-length": String(blob.length) } }) : new Response("", { status: 404 });
  };
  return { state, fetch: fetchImpl };
}

async function putUpstream(host: string, body: Record<string, unknown>): Promise<Response> {
  return SELF.fetch(`https://kiln.test/v1/upstreams/${host}`, { method: "PUT", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) });
}

const pull = (ref: string, namespace: string, fetch: (input: string, init?: RequestInit) => Promise<Response>) => pullImage(env, ref, PLATFORM, { namespace, fetch });

describe("upstream credentials carry the namespaces allowed to use them", () => {
  beforeEach(() => clearTokenCache());

  it("PUT /v1/upstreams/:host takes namespaces; GET shows them, never the password", async () => {
    expect((await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["b", "a", "a"] })).status).toBe(200);
    expect((await putUpstream("open.test", { endpoint: "https://open.test", username: "puller", password: "pa55word" })).status).toBe(200);
    const res = await SELF.fetch("https://kiln.test/v1/upstreams", { headers: ADMIN });
    const text = await res.text();
    expect(text).not.toContain("pa55word");
    const list = (JSON.parse(text) as { upstreams: Array<{ host: string; namespaces?: string[]; hasPassword: boolean }> }).upstreams;
    expect(list.find((u) => u.host === "up.test")).toMatchObject({ namespaces: ["a", "b"], hasPassword: true });
    expect(list.find((u) => u.host === "open.test")?.namespaces).toBeUndefined();
    for (const bad of [["A"], "a", [""], ["a/b"], [1]]) {
      const r = await putUpstream("up.test", { endpoint: "https://up.test", namespaces: bad });
      expect(r.status, JSON.stringify(bad)).toBe(400);
    }
  });

  it("a namespace not allowed goes anonymous and gets a clear error for a private image, by tag and by digest", async () => {
    const priv = await image("private");
    const up = registry("up.test", { "org/base": { private: true, tags: { "1": priv } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a"] });

    const a = await pull("up.test/org/base:1", "a", up.fetch);
    expect(a.resolvedDigest).toBe(priv.digest);
    expect(a.config).toMatchObject({ config: { Env: ["IMAGE=private"] } });
    expect(up.state.requests).toContain("GET /v2/org/base/manifests/" + priv.digest + " (authenticated)");

    up.state.requests.length = 0;
    const byTag = await pull("up.test/org/base:1", "b", up.fetch).catch((e: unknown) => e);
    expect(byTag).toBeInstanceOf(UpstreamError);
    expect((byTag as UpstreamError).message).toMatch(/^unauthorized: up\.test\/org\/base:1: .*the credentials for up\.test are not available to namespace b$/);
    const byDigest = await pull(`up.test/org/base@${priv.digest}`, "b", up.fetch).catch((e: unknown) => e);
    expect((byDigest as UpstreamError).message).toMatch(/the credentials for up\.test are not available to namespace b/);
    // b only asked, anonymously, and was never served anything from kiln's store or the upstream
    expect([...new Set(up.state.requests)]).toEqual([`HEAD /v2/org/base/manifests/1`, `HEAD /v2/org/base/manifests/${priv.digest}`]);

    // a by digest: the upstream is asked (the image is private), nothing is downloaded again
    up.state.requests.length = 0;
    expect((await pull(`up.test/org/base@${priv.digest}`, "a", up.fetch)).manifestDigest).toBe(priv.digest);
    expect(up.state.requests).toEqual([`HEAD /v2/org/base/manifests/${priv.digest} (authenticated)`]);
  });

  it("without namespaces every namespace uses the credentials (the operator's account)", async () => {
    const priv = await image("shared");
    const up = registry("up.test", { "org/base": { private: true, tags: { "1": priv } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word" });
    expect((await pull("up.test/org/base:1", "a", up.fetch)).resolvedDigest).toBe(priv.digest);
    expect((await pull(`up.test/org/base@${priv.digest}`, "b", up.fetch)).resolvedDigest).toBe(priv.digest);
  });

  it("an image public upstream is served to every namespace; a pinned digest of it needs no request", async () => {
    const pub = await image("public");
    const up = registry("up.test", { "lib/pub": { private: false, tags: { "1": pub } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a"] });
    await pull("up.test/lib/pub:1", "a", up.fetch);
    // blobs went with the operator's credentials (rate limits), the HEAD without: that is how kiln knows it is public
    expect(up.state.requests[0]).toBe("HEAD /v2/lib/pub/manifests/1");
    expect(up.state.requests.filter((r) => r.startsWith("GET")).every((r) => r.endsWith("(authenticated)"))).toBe(true);
    up.state.requests.length = 0;
    expect((await pull("up.test/lib/pub:1", "b", up.fetch)).resolvedDigest).toBe(pub.digest);
    expect(up.state.requests).toEqual(["HEAD /v2/lib/pub/manifests/1"]);
    up.state.requests.length = 0;
    expect((await pull(`up.test/lib/pub@${pub.digest}`, "c", up.fetch)).resolvedDigest).toBe(pub.digest);
    expect(up.state.requests).toEqual([]);
  });

  it("while the upstream is unreachable: public images and namespaces authorized before, nobody else", async () => {
    const priv = await image("private");
    const pub = await image("public");
    const up = registry("up.test", { "org/base": { private: true, tags: { "1": priv } }, "lib/pub": { private: false, tags: { "1": pub } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a", "c"] });
    await pull("up.test/org/base:1", "a", up.fetch);
    await pull("up.test/lib/pub:1", "a", up.fetch);
    up.state.down = true;
    expect((await pull("up.test/org/base:1", "a", up.fetch)).resolvedDigest).toBe(priv.digest);
    expect((await pull(`up.test/org/base@${priv.digest}`, "a", up.fetch)).resolvedDigest).toBe(priv.digest);
    expect((await pull("up.test/lib/pub:1", "b", up.fetch)).resolvedDigest).toBe(pub.digest);
    // c may use the credentials but the upstream never said yes to c; b may not use them at all
    for (const ns of ["b", "c"]) {
      for (const ref of ["up.test/org/base:1", `up.test/org/base@${priv.digest}`]) {
        const err = await pull(ref, ns, up.fetch).catch((e: unknown) => e);
        expect((err as Error).message, `${ns} ${ref}`).toMatch(new RegExp(`^unauthorized: .*unreachable.*namespace ${ns} was never authorized for it`));
      }
    }
    // the operator takes a's access away: its earlier authorization no longer counts
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["c"] });
    await expect(pull("up.test/org/base:1", "a", up.fetch)).rejects.toThrow(/namespace a was never authorized/);
  });

  it("a namespace the upstream stops authorizing loses its fallback", async () => {
    const priv = await image("private");
    const up = registry("up.test", { "org/base": { private: true, tags: { "1": priv } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a"] });
    await pull("up.test/org/base:1", "a", up.fetch);
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "rotated", namespaces: ["a"] });
    await expect(pull("up.test/org/base:1", "a", up.fetch)).rejects.toThrow(/refused the credentials of puller/);
    up.state.down = true;
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a"] });
    await expect(pull("up.test/org/base:1", "a", up.fetch)).rejects.toThrow(/namespace a was never authorized/);
  });

  it("naming a stored digest on another host or repository fetches it from there: the store proves nothing", async () => {
    const priv = await image("private");
    const up = registry("up.test", { "org/base": { private: true, tags: { "1": priv } } });
    await putUpstream("up.test", { endpoint: "https://up.test", username: "puller", password: "pa55word", namespaces: ["a"] });
    await pull("up.test/org/base:1", "a", up.fetch);
    // a host of b's own that claims every digest in answer to a HEAD but holds no bytes
    const claims: string[] = [];
    const liar = async (input: string, init?: RequestInit): Promise<Response> => {
      const url = new URL(input);
      claims.push(`${init?.method ?? "GET"} ${url.pathname}`);
      const digest = url.pathname.split("/").pop()!;
      if ((init?.method ?? "GET") === "HEAD") return new Response(null, { headers: { "docker-content-digest": digest, "content-type": "application/vnd.oci.image.manifest.v1+json" } });
      return new Response("", { status: 404 });
    };
    await expect(pull(`evil.test/x@${priv.digest}`, "b", liar)).rejects.toThrow(/not found/);
    expect(claims).toEqual([`HEAD /v2/x/manifests/${priv.digest}`, `GET /v2/x/manifests/${priv.digest}`]);
    // same host, another repository: the upstream itself says no
    const other = registry("up.test", { "org/base": { private: true, tags: { "1": priv } }, "b/own": { private: false, tags: {} } });
    await expect(pull(`up.test/b/own@${priv.digest}`, "b", other.fetch)).rejects.toThrow(/not found on up\.test without credentials, and the credentials for up\.test are not available to namespace b/);
    await expect(pull(`up.test/b/own@${priv.digest}`, "a", other.fetch)).rejects.toThrow(/not found on up\.test$/);
  });
});
