// Turns an overlayfs upperdir into an OCI layer: overlay whiteouts (0/0 char devices) become `.wh.<name>`,
// opaque directories (trusted.overlay.opaque=y) get `.wh..wh..opq`, hardlinks are kept, entries are in
// byte order of their paths, mtimes are clamped to SOURCE_DATE_EPOCH, owners are numeric only.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, type Stats } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import { encodeEntryHeader, END_OF_ARCHIVE, OPAQUE_WHITEOUT, tarPadding, WHITEOUT_PREFIX, type TarEntry } from "../oci/tar";
import { listXattrs, OPAQUE_XATTR } from "./xattr";

/** An entry's header as src/oci's tar writer takes it (without a body; `size` is the file's length). */
export type DiffHeader = Omit<TarEntry, "body" | "size"> & { size: number };

export interface DiffEntry {
  header: DiffHeader;
  /** Absolute path of the file's content (regular files only). */
  source?: string;
}

const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

async function listTree(root: string): Promise<{ rel: string; st: Stats }[]> {
  const out: { rel: string; st: Stats }[] = [];
  const walk = async (relDir: string) => {
    const names = (await fs.readdir(path.join(root, relDir))).sort(byBytes);
    for (const name of names) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const st = await fs.lstat(path.join(root, rel));
      out.push({ rel, st });
      if (st.isDirectory()) await walk(rel);
    }
  };
  await walk("");
  return out;
}

export const isWhiteoutDevice = (st: Stats) => st.isCharacterDevice() && st.rdev === 0;

/** The entries of the layer an upperdir stands for, in archive order. */
export async function diffEntries(upper: string, sourceDateEpoch: number): Promise<DiffEntry[]> {
  const tree = await listTree(upper);
  // One batch for every entry's xattrs: overlay's opaque marker, and the ones a layer carries
  // (file capabilities, user.*), never overlay's own bookkeeping or SELinux labels.
  const allXattrs = await listXattrs(tree.map((t) => path.join(upper, t.rel)));
  const opaque = new Set<string>();
  const keptXattrs = new Map<string, Record<string, Buffer>>();
  tree.forEach((t, i) => {
    const xa = allXattrs[i];
    if (t.st.isDirectory() && xa[OPAQUE_XATTR]?.toString() === "y") opaque.add(t.rel);
    const kept = Object.entries(xa).filter(([k]) => !k.startsWith("trusted.overlay.") && k !== "security.selinux");
    if (kept.length) keptXattrs.set(t.rel, Object.fromEntries(kept));
  });

  const clamp = (st: Stats) => Math.min(Math.floor(st.mtimeMs / 1000), sourceDateEpoch);
  const links = new Map<string, string>();
  const entries: DiffEntry[] = [];
  const whiteoutHeader = (rel: string, mtime: number): DiffHeader => ({ path: rel, type: "file", mode: 0o644, uid: 0, gid: 0, size: 0, mtime });
  for (const { rel, st } of tree) {
    const base = { path: rel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: 0, mtime: clamp(st), xattrs: keptXattrs.get(rel) };
    if (isWhiteoutDevice(st)) {
      const dir = path.posix.dirname(rel);
      const name = `${WHITEOUT_PREFIX}${path.posix.basename(rel)}`;
      entries.push({ header: whiteoutHeader(dir === "." ? name : `${dir}/${name}`, clamp(st)) });
      continue;
    }
    if (st.isDirectory()) {
      entries.push({ header: { ...base, type: "dir" } });
      if (opaque.has(rel)) entries.push({ header: whiteoutHeader(`${rel}/${OPAQUE_WHITEOUT}`, clamp(st)) });
      continue;
    }
    if (!st.isSymbolicLink() && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = links.get(key);
      if (first) {
        entries.push({ header: { ...base, type: "hardlink", linkname: first } });
        continue;
      }
      links.set(key, rel);
    }
    if (st.isFile()) entries.push({ header: { ...base, type: "file", size: st.size }, source: path.join(upper, rel) });
    else if (st.isSymbolicLink()) entries.push({ header: { ...base, type: "symlink", linkname: await fs.readlink(path.join(upper, rel)) } });
    else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const devmajor = Number((BigInt(st.rdev) >> 8n) & 0xfffn);
      const devminor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
      entries.push({ header: { ...base, type: st.isCharacterDevice() ? "char" : "block", devmajor, devminor } });
    } else if (st.isFIFO()) entries.push({ header: { ...base, type: "fifo" } });
    // sockets are not archived
  }
  return entries;
}

/** The uncompressed tar of the entries, streamed. */
export async function* tarChunks(entries: DiffEntry[]): AsyncGenerator<Buffer> {
  for (const e of entries) {
    for (const b of encodeEntryHeader(e.header, e.header.type === "file" ? e.header.size : 0)) yield asBuffer(b);
    if (e.header.type === "file" && e.source) {
      let n = 0;
      for await (const c of createReadStream(e.source)) {
        const b = c as Buffer;
        const take = Math.min(b.length, e.header.size - n);
        if (take > 0) yield b.subarray(0, take);
        n += take;
      }
      if (n < e.header.size) throw new Error(`${e.header.path} shrank while it was archived`);
      yield asBuffer(tarPadding(e.header.size));
    }
  }
  yield asBuffer(END_OF_ARCHIVE);
}

const asBuffer = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

export interface WrittenLayer {
  path: string;
  digest: string; // sha256 of the gzip
  diffId: string; // sha256 of the tar
  size: number;
  mediaType: string;
  entries: number;
}

function hashing(hash: ReturnType<typeof createHash>, count?: { n: number }) {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      if (count) count.n += chunk.length;
      cb(null, chunk);
    },
  });
}

/** Writes entries as a gzip layer file, hashing both the tar (diffID) and the gzip (digest). */
export async function writeLayerFile(entries: DiffEntry[], file: string): Promise<WrittenLayer> {
  const tarHash = createHash("sha256");
  const gzHash = createHash("sha256");
  const count = { n: 0 };
  await pipeline(Readable.from(tarChunks(entries)), hashing(tarHash), zlib.createGzip(), hashing(gzHash, count), createWriteStream(file));
  return {
    path: file,
    diffId: `sha256:${tarHash.digest("hex")}`,
    digest: `sha256:${gzHash.digest("hex")}`,
    size: count.n,
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
    entries: entries.length,
  };
}
