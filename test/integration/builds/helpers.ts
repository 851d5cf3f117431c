import { env } from "cloudflare:test";
import { readSse as readEvents } from "../../../src/protocol/events";
import { collect, tarStream, type TarEntry } from "../../../src/oci/tar";

export const ADMIN = { authorization: "Bearer kiln-test-admin" };

export type Files = Record<string, string | Uint8Array | { body?: string | Uint8Array; mode?: number; type?: "dir" | "symlink" | "hardlink"; linkname?: string; uid?: number; gid?: number }>;

/** A context tar built with the OCI tar writer (entries in the given order). */
export async function makeTar(files: Files, opts: { gzip?: boolean } = {}): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const entries: TarEntry[] = Object.entries(files).map(([path, v]) => {
    const spec = typeof v === "string" || v instanceof Uint8Array ? { body: v } : v;
    const type = spec.type ?? "file";
    return {
      path,
      type,
      mode: spec.mode ?? (type === "dir" ? 0o755 : 0o644),
      uid: spec.uid ?? 1000,
      gid: spec.gid ?? 1000,
      mtime: 1700000000,
      linkname: spec.linkname,
      body: type === "file" ? (spec.body instanceof Uint8Array ? spec.body : enc.encode(spec.body ?? "")) : undefined,
    };
  });
  let s = tarStream(entries);
  if (opts.gzip) s = s.pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
  return await collect(s);
}

/** Raw tar header block for entries the OCI writer refuses to write (devices, absolute paths). */
export function rawTarEntry(path: string, typeflag: string, body = new Uint8Array(0)): Uint8Array {
  const h = new Uint8Array(512);
  const enc = new TextEncoder();
  const put = (off: number, s: string) => h.set(enc.encode(s), off);
  put(0, path);
  put(100, "0000644\0");
  put(108, "0000000\0");
  put(116, "0000000\0");
  put(124, body.length.toString(8).padStart(11, "0") + "\0");
  put(136, "00000000000\0");
  put(156, typeflag);
  put(257, "ustar\0");
  put(263, "00");
  for (let i = 148; i < 156; i++) h[i] = 32;
  let sum = 0;
  for (const b of h) sum += b;
  put(148, sum.toString(8).padStart(6, "0") + "\0 ");
  const padded = new Uint8Array(Math.ceil(body.length / 512) * 512);
  padded.set(body);
  const out = new Uint8Array(512 + padded.length + 1024);
  out.set(h);
  out.set(padded, 512);
  return out;
}

export function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (let i = 0; i < bytes.length; i += 1000) c.enqueue(bytes.slice(i, i + 1000));
      c.close();
    },
  });
}

export async function r2Keys(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor: string | undefined;
  do {
    const l = await env.BUCKET.list({ prefix, cursor });
    out.push(...l.objects.map((o) => o.key));
    cursor = l.truncated ? l.cursor : undefined;
  } while (cursor);
  return out;
}

import { SELF } from "cloudflare:test";

export interface BuildResult {
  id: string;
  status: string;
  steps: { index: number; stage: string; instruction: string; status: string; cacheKey: string | null; layer?: string; durationMs: number | null; line: number }[];
  image?: { repository: string; tags: string[]; digest: string };
  error?: { message: string; step?: number; line?: number };
}

export async function postBuild(body: Uint8Array, query = "", headers: Record<string, string> = {}): Promise<Response> {
  return await SELF.fetch(`http://kiln.test/v1/builds${query}`, {
    method: "POST",
    headers: { ...ADMIN, "content-type": "application/x-tar", ...headers },
    body,
  });
}

export async function waitBuild(id: string, timeoutMs = 30_000): Promise<BuildResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { headers: ADMIN });
    const b = (await res.json()) as BuildResult;
    if (["succeeded", "failed", "cancelled"].includes(b.status)) return b;
    if (Date.now() > deadline) throw new Error(`build ${id} still ${b.status}: ${JSON.stringify(b)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function build(files: Files, query = ""): Promise<BuildResult> {
  const res = await postBuild(await makeTar(files), query);
  const body = (await res.json()) as { id: string; error?: { message: string } };
  if (res.status !== 202) throw new Error(`POST /v1/builds ${res.status}: ${JSON.stringify(body)}`);
  return await waitBuild(body.id);
}

export async function imageOf(repo: string, ref: string): Promise<{ manifest: { layers: { digest: string }[]; config: { digest: string } }; config: Record<string, any>; digest: string }> {
  const m = await SELF.fetch(`http://kiln.test/v2/${repo}/manifests/${ref}`, { headers: { ...ADMIN, accept: "application/vnd.oci.image.manifest.v1+json" } });
  if (!m.ok) throw new Error(`manifest ${repo}:${ref}: ${m.status} ${await m.text()}`);
  const digest = m.headers.get("docker-content-digest")!;
  const manifest = (await m.json()) as { layers: { digest: string }[]; config: { digest: string } };
  const c = await SELF.fetch(`http://kiln.test/v2/${repo}/blobs/${manifest.config.digest}`, { headers: ADMIN });
  return { manifest, config: (await c.json()) as Record<string, any>, digest };
}

/** The entries of a layer blob: path → { type, mode, uid, gid, body }. */
export async function layerEntries(repo: string, digest: string): Promise<Record<string, { type: string; mode: number; uid: number; gid: number; body?: string; linkname?: string }>> {
  const { ByteReader } = await import("../../../src/oci/bytes");
  const { readTar } = await import("../../../src/context/tar-reader");
  const res = await SELF.fetch(`http://kiln.test/v2/${repo}/blobs/${digest}`, { headers: ADMIN });
  if (!res.ok) throw new Error(`blob ${digest}: ${res.status}`);
  const s = res.body!.pipeThrough(new DecompressionStream("gzip"));
  const out: Record<string, { type: string; mode: number; uid: number; gid: number; body?: string; linkname?: string }> = {};
  for await (const e of readTar(new ByteReader(s))) {
    const chunks: Uint8Array[] = [];
    await e.body((c) => {
      chunks.push(c);
    });
    const body = e.type === "file" ? new TextDecoder().decode(await new Blob(chunks).arrayBuffer()) : undefined;
    out[e.path] = { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, body, linkname: e.linkname || undefined };
  }
  return out;
}

/** The server-sent events of `res` as {event, data (JSON), id}, up to and including the first `until` event (or the end). */
export async function readSse(res: Response, until = "done"): Promise<{ event: string; data: any; id?: string }[]> {
  const out: { event: string; data: any; id?: string }[] = [];
  for await (const ev of readEvents(res.body!)) {
    out.push({ event: ev.event, data: JSON.parse(ev.data), ...(ev.id !== undefined ? { id: ev.id } : {}) });
    if (ev.event === until) break;
  }
  return out;
}
