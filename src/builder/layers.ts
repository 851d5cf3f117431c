/** Layers in the Worker: writing deterministic layers into the blob store, reading an image's file tree. */
import type { Env } from "../env";
import { workerHasher } from "../context/hasher";
import { ByteReader } from "../oci/bytes";
import { yieldEvery } from "../context/yield";
export { yieldEvery };
import { readTar } from "../context/tar-reader";
import { writeLayer } from "../oci/layer";
import type { TarEntry } from "../oci/tar";
import { MediaType } from "../oci/mediatypes";
import { getBlob, putBlobComputed } from "../storage/blobs";
import { getLayerIndex, putLayerIndex } from "../storage/cache";
import type { LayerRef } from "./model";
import { gunzipPaced } from "../context/gunzip";

export const LAYER_MEDIA_TYPE = MediaType.OciLayerGzip as string;

/**
 * Writes entries (already sorted) as a gzip layer into the blob store, once: the digest and the
 * diffID come from the one pass that compresses and writes the bytes (the store does not hash them again).
 */
export async function storeLayer(env: Env, entries: AsyncIterable<TarEntry> | Iterable<TarEntry>): Promise<LayerRef> {
  const { stream, result } = writeLayer(entries, { hasher: workerHasher });
  const stored = await putBlobComputed(env, stream.pipeThrough(yieldEvery(4 * 1024 * 1024)), { digest: result.then((r) => r.digest) });
  const r = await result;
  if (r.size !== stored.size) throw new Error(`layer size mismatch: ${r.size} vs ${stored.size}`);
  return { digest: r.digest, diffId: r.diffId, size: r.size, mediaType: LAYER_MEDIA_TYPE };
}

export interface FsNode {
  path: string; // root-relative, no leading slash
  type: "file" | "dir" | "symlink" | "hardlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname?: string;
  /** Index of the layer holding the node's contents. */
  layer: number;
}

export type FsTree = Map<string, FsNode>;

const headerCache = new Map<string, FsNode[]>();

function remember(digest: string, nodes: FsNode[]): void {
  if (headerCache.size > 200) headerCache.clear();
  headerCache.set(digest, nodes);
}

function normalizeLayerPath(p: string): string {
  return p.split("/").filter((s) => s && s !== ".").join("/");
}

async function layerHeaders(env: Env, layer: LayerRef, li: number): Promise<FsNode[]> {
  const cached = headerCache.get(layer.digest);
  if (cached) return cached.map((n) => ({ ...n, layer: li }));
  const stored = await getLayerIndex(env, layer.digest);
  if (stored) {
    const nodes = stored as FsNode[];
    remember(layer.digest, nodes);
    return nodes.map((n) => ({ ...n, layer: li }));
  }
  const blob = await getBlob(env, layer.digest);
  if (!blob) throw new Error(`layer ${layer.digest} is missing from the blob store`);
  let s: ReadableStream<Uint8Array> = blob.body;
  if (!layer.mediaType.endsWith("tar")) s = gunzipPaced(s);
  const out: FsNode[] = [];
  for await (const e of readTar(new ByteReader(s))) {
    const path = normalizeLayerPath(e.path);
    if (!path) continue;
    out.push({
      path,
      type: e.type === "file" || e.type === "dir" || e.type === "symlink" || e.type === "hardlink" ? e.type : "other",
      mode: e.mode,
      uid: e.uid,
      gid: e.gid,
      size: e.type === "file" ? e.size : 0,
      linkname: e.linkname || undefined,
      layer: li,
    });
  }
  remember(layer.digest, out);
  await putLayerIndex(env, layer.digest, out).catch((e) => console.error("storing a layer index failed", e));
  return out;
}

/** The merged file tree of stacked layers (whiteouts applied). */
export async function loadTree(env: Env, layers: LayerRef[]): Promise<FsTree> {
  const tree: FsTree = new Map();
  for (const [li, layer] of layers.entries()) {
    const nodes = await layerHeaders(env, layer, li);
    for (const n of nodes) {
      const slash = n.path.lastIndexOf("/");
      const dir = slash < 0 ? "" : n.path.slice(0, slash);
      const base = n.path.slice(slash + 1);
      if (base === ".wh..wh..opq") {
        const prefix = dir ? dir + "/" : "";
        for (const p of [...tree.keys()]) if (p.startsWith(prefix) && tree.get(p)!.layer < li) tree.delete(p);
        continue;
      }
      if (base.startsWith(".wh.")) {
        const victim = (dir ? dir + "/" : "") + base.slice(4);
        tree.delete(victim);
        for (const p of [...tree.keys()]) if (p.startsWith(victim + "/")) tree.delete(p);
        continue;
      }
      const prev = tree.get(n.path);
      if (prev && prev.type === "dir" && n.type !== "dir") {
        for (const p of [...tree.keys()]) if (p.startsWith(n.path + "/")) tree.delete(p);
      }
      if (n.type === "hardlink" && n.linkname) {
        const target = tree.get(normalizeLayerPath(n.linkname));
        if (target) {
          tree.set(n.path, { ...target, path: n.path, mode: n.mode || target.mode });
          continue;
        }
      }
      tree.set(n.path, n);
    }
  }
  return tree;
}

/**
 * Reads the contents of `nodes` (files of the tree) from their layers, one pass per layer, handing
 * each body to `sink` (which must consume the stream).
 */
export async function readLayerFiles(
  env: Env,
  layers: LayerRef[],
  nodes: FsNode[],
  sink: (node: FsNode, body: ReadableStream<Uint8Array>) => Promise<void>,
): Promise<void> {
  const byLayer = new Map<number, Map<string, FsNode[]>>();
  for (const n of nodes) {
    if (n.type !== "file") continue;
    // An empty file has no body to find: its tar entry yields no chunk, and piping nothing into a
    // zero-length stream bound for R2 never settled (COPY --from of a stage with an empty file hung).
    if (n.size === 0) {
      await sink(n, new ReadableStream({ start: (c) => c.close() }));
      continue;
    }
    const m = byLayer.get(n.layer) ?? new Map<string, FsNode[]>();
    // a hardlink copy points at its target's path within the layer
    const list = m.get(n.path) ?? [];
    list.push(n);
    m.set(n.path, list);
    byLayer.set(n.layer, m);
  }
  for (const [li, wanted] of byLayer) {
    const blob = await getBlob(env, layers[li].digest);
    if (!blob) throw new Error(`layer ${layers[li].digest} is missing`);
    let s: ReadableStream<Uint8Array> = blob.body;
    if (!layers[li].mediaType.endsWith("tar")) s = gunzipPaced(s);
    const br = new ByteReader(s);
    let left = wanted.size;
    const linkOwners = new Map<string, FsNode[]>();
    for await (const e of readTar(br)) {
      const path = normalizeLayerPath(e.path);
      let want = wanted.get(path);
      if (e.type === "hardlink") {
        // the node came from a hard link: its bytes are the target's, read when we meet the target
        if (want) {
          const t = normalizeLayerPath(e.linkname);
          linkOwners.set(t, [...(linkOwners.get(t) ?? []), ...want]);
          wanted.delete(path);
        }
        continue;
      }
      if (e.type !== "file") continue;
      const extra = linkOwners.get(path) ?? [];
      if (!want && !extra.length) continue;
      want = [...(want ?? []), ...extra];
      // buffer-free fan-out: one body per consumer means re-reading; consumers are sequential here
      const chunks: Uint8Array[] = [];
      const many = want.length > 1;
      if (!many) {
        const ts = new TransformStream<Uint8Array, Uint8Array>();
        const w = ts.writable.getWriter();
        const done = sink(want[0], ts.readable);
        await e.body(async (c) => {
          await w.write(c);
        });
        await w.close();
        await done;
      } else {
        await e.body((c) => {
          chunks.push(c);
        });
        for (const n of want) {
          await sink(n, new ReadableStream({ start(c) { for (const x of chunks) c.enqueue(x); c.close(); } }));
        }
      }
      if (wanted.has(path)) {
        wanted.delete(path);
        left--;
      }
      if (left <= 0 && linkOwners.size === 0) break;
    }
    await br.cancel().catch(() => {});
  }
}

/** Reads one small file (e.g. /etc/passwd) of an image; null when absent. */
export async function readSmallFile(env: Env, layers: LayerRef[], tree: FsTree, path: string, limit = 4 * 1024 * 1024): Promise<string | null> {
  const node = tree.get(normalizeLayerPath(path));
  if (!node || node.type !== "file" || node.size > limit) return null;
  let text: string | null = null;
  await readLayerFiles(env, layers, [node], async (_n, body) => {
    text = await new Response(body).text();
  });
  return text;
}
