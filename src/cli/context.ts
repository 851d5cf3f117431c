// Walks a build context directory honouring .dockerignore and streams it as a tar (gzip).
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import { readFile } from "node:fs/promises";
import { createHash } from "node:crypto";
import path from "node:path";
import { Readable } from "node:stream";
import { DockerIgnore } from "../dockerfile/dockerignore";
import { tarStream, type TarEntry } from "../oci/tar";
import type { ContextIndexEntry } from "../protocol/contexts";

export interface ContextFile {
  rel: string;
  abs: string;
  stat: Stats;
}

/** The files of `dir` that survive .dockerignore, sorted, directories before their children. */
export function listContext(dir: string, dockerfile = "Dockerfile"): ContextFile[] {
  let ignoreText = "";
  try {
    ignoreText = readFileSync(path.join(dir, ".dockerignore"), "utf8");
  } catch {}
  const ignore = new DockerIgnore(ignoreText);
  const keep = { dockerfilePath: dockerfile.split(path.sep).join("/") };
  const out: ContextFile[] = [];
  const walk = (relDir: string) => {
    const absDir = path.join(dir, relDir);
    for (const name of readdirSync(absDir).sort()) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = path.join(absDir, name);
      const stat = lstatSync(abs);
      const excluded = ignore.isExcluded(rel, keep);
      if (stat.isDirectory()) {
        if (!excluded) out.push({ rel, abs, stat });
        // An exception pattern may re-include something below an excluded directory.
        if (!ignore.canSkipDir(rel, keep)) walk(rel);
      } else if (!excluded && (stat.isFile() || stat.isSymbolicLink())) {
        out.push({ rel, abs, stat });
      }
    }
  };
  walk("");
  return out;
}

function toEntry(f: ContextFile): TarEntry {
  const base = { path: f.rel, mode: f.stat.mode & 0o7777, uid: 0, gid: 0, mtime: Math.floor(f.stat.mtimeMs / 1000) };
  if (f.stat.isDirectory()) return { ...base, type: "dir" };
  if (f.stat.isSymbolicLink()) return { ...base, type: "symlink", linkname: readlinkSync(f.abs) };
  return {
    ...base,
    type: "file",
    size: f.stat.size,
    body: Readable.toWeb(createReadStream(f.abs)) as unknown as ReadableStream<Uint8Array>,
  };
}

/** A gzip-compressed tar stream of the context. */
export function contextStream(dir: string, dockerfile?: string): { stream: ReadableStream<Uint8Array>; files: number } {
  const files = listContext(dir, dockerfile);
  const tar = tarStream((function* () { for (const f of files) yield toEntry(f); })());
  return { stream: tar.pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>), files: files.length };
}

/** One entry of the file index `kiln build` sends: ids and size always set. */
export type IndexEntry = Required<Pick<ContextIndexEntry, "path" | "type" | "mode" | "uid" | "gid" | "size">> & Pick<ContextIndexEntry, "sha256" | "linkTarget">;

/** Files up to this size are read whole to be hashed; larger ones stream. */
const READ_WHOLE_BYTES = 1024 * 1024;
/** Files hashed at once: a context of many small files is bound by the file system's latency. */
const HASH_CONCURRENCY = 16;

async function hashFile(file: string, size: number): Promise<string> {
  if (size <= READ_WHOLE_BYTES) return `sha256:${createHash("sha256").update(await readFile(file)).digest("hex")}`;
  return await new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file)
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(`sha256:${h.digest("hex")}`))
      .on("error", reject);
  });
}

/** The context's file index (what survives .dockerignore), each file's contents hashed; `abs` maps a digest to a file holding it. */
export async function contextIndex(dir: string, dockerfile?: string): Promise<{ files: IndexEntry[]; sources: Map<string, { abs: string; size: number }>; bytes: number }> {
  const listed = listContext(dir, dockerfile);
  const files: IndexEntry[] = new Array(listed.length);
  const regular: number[] = [];
  let bytes = 0;
  listed.forEach((f, i) => {
    const base = { path: f.rel, mode: f.stat.mode & 0o7777, uid: 0, gid: 0, size: 0 };
    if (f.stat.isDirectory()) files[i] = { ...base, type: "dir" };
    else if (f.stat.isSymbolicLink()) files[i] = { ...base, type: "symlink", linkTarget: readlinkSync(f.abs) };
    else {
      files[i] = { ...base, type: "file", size: f.stat.size };
      bytes += f.stat.size;
      regular.push(i);
    }
  });
  let next = 0;
  const worker = async () => {
    while (next < regular.length) {
      const i = regular[next++];
      files[i].sha256 = await hashFile(listed[i].abs, listed[i].stat.size);
    }
  };
  await Promise.all(Array.from({ length: Math.min(HASH_CONCURRENCY, regular.length) }, worker));
  // in the context's order: the first file of each content is the one uploaded
  const sources = new Map<string, { abs: string; size: number }>();
  for (const i of regular) if (listed[i].stat.size > 0 && !sources.has(files[i].sha256!)) sources.set(files[i].sha256!, { abs: listed[i].abs, size: listed[i].stat.size });
  return { files, sources, bytes };
}

/** One request of a content upload: entries `<hex>` (a whole file) or `<hex>.<start>.<total>` (a piece). */
export interface ContentBatch {
  entries: { name: string; abs: string; start: number; size: number }[];
  bytes: number;
}

/**
 * Splits the contents to upload into batches of at most `limit` bytes of contents each (a request
 * stays under the server's body limit); a file larger than that goes in pieces.
 */
export function contentBatches(missing: { sha256: string; abs: string; size: number }[], limit: number): ContentBatch[] {
  const batches: ContentBatch[] = [];
  let cur: ContentBatch = { entries: [], bytes: 0 };
  const push = (e: ContentBatch["entries"][number]) => {
    if (cur.bytes + e.size > limit && cur.entries.length) {
      batches.push(cur);
      cur = { entries: [], bytes: 0 };
    }
    cur.entries.push(e);
    cur.bytes += e.size;
  };
  for (const m of missing) {
    const hex = m.sha256.slice("sha256:".length);
    if (m.size <= limit) push({ name: hex, abs: m.abs, start: 0, size: m.size });
    else for (let start = 0; start < m.size; start += limit) push({ name: `${hex}.${start}.${m.size}`, abs: m.abs, start, size: Math.min(limit, m.size - start) });
  }
  if (cur.entries.length) batches.push(cur);
  return batches;
}

/** A batch as a plain tar stream. */
export function batchStream(batch: ContentBatch): ReadableStream<Uint8Array> {
  return tarStream((function* () {
    for (const e of batch.entries) {
      yield {
        path: e.name, type: "file" as const, mode: 0o644, uid: 0, gid: 0, mtime: 0, size: e.size,
        body: e.size === 0 ? new Uint8Array(0) : Readable.toWeb(createReadStream(e.abs, { start: e.start, end: e.start + e.size - 1 })) as unknown as ReadableStream<Uint8Array>,
      };
    }
  })());
}
