import { SELF, env } from "cloudflare:test";

export const BASE = "http://kiln.test";
export const AUTH = `Basic ${btoa("kiln:kiln-test-admin")}`;

/** fetch against the Worker with admin credentials. */
export function reg(path: string, init: RequestInit & { duplex?: "half" } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (!headers.has("authorization")) headers.set("authorization", AUTH);
  return SELF.fetch(`${BASE}${path}`, { ...init, headers } as RequestInit);
}

export function bytesOf(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export async function sha256(data: Uint8Array | string): Promise<string> {
  const b = typeof data === "string" ? bytesOf(data) : data;
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return `sha256:${[...h].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** Deterministic pseudo-random bytes (so content differs between tests). */
export function randomBytes(n: number, seed = Math.floor(Math.random() * 2 ** 31)): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Monolithic push; returns the digest. */
export async function pushBlob(repo: string, data: Uint8Array | string): Promise<string> {
  const b = typeof data === "string" ? bytesOf(data) : data;
  const digest = await sha256(b);
  const res = await reg(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: b });
  if (res.status !== 201) throw new Error(`push blob ${repo}: ${res.status} ${await res.text()}`);
  return digest;
}

export async function startUpload(repo: string): Promise<string> {
  const res = await reg(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
  if (res.status !== 202) throw new Error(`start upload: ${res.status} ${await res.text()}`);
  await res.arrayBuffer();
  return res.headers.get("location")!;
}

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";

/** Pushes a config and one layer to `repo` and returns an image manifest's text referencing them. */
export async function imageManifest(repo: string, opts: { mediaType?: string; layer?: string; extra?: Record<string, unknown> } = {}): Promise<string> {
  const mediaType = opts.mediaType ?? OCI_MANIFEST;
  const docker = mediaType === DOCKER_MANIFEST;
  const config = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":${Math.random()}}`;
  const layer = opts.layer ?? `layer-${Math.random()}`;
  const configDigest = await pushBlob(repo, config);
  const layerDigest = await pushBlob(repo, layer);
  return JSON.stringify({
    schemaVersion: 2,
    mediaType,
    config: { mediaType: docker ? "application/vnd.docker.container.image.v1+json" : "application/vnd.oci.image.config.v1+json", digest: configDigest, size: bytesOf(config).length },
    layers: [{ mediaType: docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip" : "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: bytesOf(layer).length }],
    ...opts.extra,
  }, null, 3);
}

export async function putManifest(repo: string, reference: string, body: string | Uint8Array, mediaType: string): Promise<Response> {
  return reg(`/v2/${repo}/manifests/${reference}`, { method: "PUT", body, headers: { "content-type": mediaType } });
}

/** A ReadableStream of `data` in the given piece sizes (no Content-Length when used as a body). */
export function streamOf(data: Uint8Array, pieces = 7919): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (off >= data.length) return ctl.close();
      const n = Math.min(pieces, data.length - off);
      ctl.enqueue(data.slice(off, off + n));
      off += n;
    },
  });
}

/** Creates an API token with `scopes` (admin call) and returns Basic credentials for it. */
export async function basicForScopes(name: string, scopes: string[]): Promise<string> {
  const res = await SELF.fetch(`${BASE}/v1/tokens`, {
    method: "POST",
    headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/json" },
    body: JSON.stringify({ name, scopes }),
  });
  if (res.status !== 201) throw new Error(`create token: ${res.status} ${await res.text()}`);
  const { token } = await res.json() as { token: string };
  return `Basic ${btoa(`kiln:${token}`)}`;
}

/** PATCH one chunk of an upload session (with Content-Range when `start` is given). */
export async function patch(location: string, chunk: Uint8Array, start?: number): Promise<Response> {
  const headers: Record<string, string> = { "content-type": "application/octet-stream" };
  if (start !== undefined) headers["content-range"] = `${start}-${start + chunk.length - 1}`;
  return reg(location, { method: "PATCH", body: chunk, headers });
}

/** The upload `location` with `digest=` added to its query. */
export function withDigest(location: string, digest: string): string {
  return `${location}${location.includes("?") ? "&" : "?"}digest=${digest}`;
}

/** The R2 keys of an upload session's staged chunks, in order (from D1: chunk objects are named by uuid). */
export async function stagedKeys(location: string): Promise<string[]> {
  const id = location.split("/").pop()!;
  const { results } = await env.DB.prepare("SELECT key FROM upload_chunks WHERE upload_id = ? ORDER BY n").bind(id).all<{ key: string }>();
  return results.map((r) => r.key);
}

/** Whether every one of `keys` is absent from R2. */
export async function allGone(keys: string[]): Promise<boolean> {
  for (const k of keys) if (await env.BUCKET.head(k)) return false;
  return true;
}
