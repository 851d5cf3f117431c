/**
 * Streaming tar writer (ustar + PAX).
 *
 * The writer is deterministic: the same entries give the same bytes. It writes no user/group names,
 * devmajor/devminor 0, magic "ustar\0" "00", directories with a trailing "/", relative paths without
 * "./" (as docker/BuildKit layers look), PAX extended headers (sorted records) only when a value does
 * not fit ustar (long or non-ASCII path/linkname, size >= 8 GiB, big uid/gid/mtime, xattrs), and two
 * zero blocks at the end. Body chunks are passed through without copying; headers and small bodies are
 * coalesced into 64 KiB chunks.
 */
import { archivePath, BLOCK, roundUp, TarError } from "./paths";

/** An entry to write. */
export interface TarEntry {
  path: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";
  mode: number; // permission bits incl. setuid/setgid/sticky; file-type bits are ignored
  uid: number;
  gid: number;
  mtime: number; // seconds since the epoch
  /** Body length; required for a stream body, defaults to the length of a Uint8Array body. */
  size?: number;
  /** Symlink target (kept verbatim) or hardlink target (a path in the same archive). */
  linkname?: string;
  /** Passed on without copying when large: do not modify a Uint8Array body after handing it over. */
  body?: ReadableStream<Uint8Array> | Uint8Array;
  /** Extended attributes, written as PAX `SCHILY.xattr.<name>` records. Binary values (e.g.
   *  security.capability) must be Uint8Array: a string is written as its UTF-8 bytes. */
  xattrs?: Record<string, string | Uint8Array>;
  /** Device numbers of a char or block device. */
  devmajor?: number;
  devminor?: number;
}

const ZERO_BLOCK = new Uint8Array(BLOCK);

/** The zero bytes that pad a body of `size` bytes to whole blocks. */
export function tarPadding(size: number): Uint8Array {
  return new Uint8Array(roundUp(size) - size);
}

/** The two zero blocks that end an archive. */
export const END_OF_ARCHIVE: Uint8Array = new Uint8Array(2 * BLOCK);
const CHUNK = 64 * 1024;
const DIRECT = 16 * 1024; // body chunks at least this big are passed through without copying
const encoder = new TextEncoder();
const MAX_OCTAL_11 = 0o77777777777; // 8 GiB - 1 (12-byte fields)
const MAX_OCTAL_7 = 0o7777777; // 2097151 (8-byte fields)

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f || s.charCodeAt(i) === 0) return false;
  return true;
}

function putString(b: Uint8Array, off: number, len: number, s: string): void {
  // Only called with ASCII strings that fit.
  for (let i = 0; i < s.length && i < len; i++) b[off + i] = s.charCodeAt(i);
}

/** Octal, zero-padded to len-1 digits, NUL terminated. */
function putOctal(b: Uint8Array, off: number, len: number, n: number): void {
  const s = Math.floor(n).toString(8).padStart(len - 1, "0");
  putString(b, off, len - 1, s);
  b[off + len - 1] = 0;
}

/** Splits a long ASCII path into ustar prefix (<=155) and name (<=100) at a "/", or null. */
function splitUstar(p: string): [string, string] | null {
  if (p.length <= 100) return ["", p];
  let i = p.length - 1;
  if (i > 155) i = 155; // prefix is at most 155 bytes
  for (; i > 0; i--) {
    if (p.charCodeAt(i) === 0x2f) {
      const prefix = p.slice(0, i);
      const name = p.slice(i + 1);
      if (name.length > 0 && name.length <= 100) return [prefix, name];
      if (name.length > 100) return null;
    }
  }
  return null;
}

/** One PAX record "<len> <key>=<value>\n" as bytes (the length counts itself). */
function paxRecord(key: string, value: string | Uint8Array): Uint8Array {
  const k = encoder.encode(key);
  const v = typeof value === "string" ? encoder.encode(value) : value;
  const bodyLen = k.length + v.length + 3; // " " "=" "\n"
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length + bodyLen !== len) len = bodyLen + String(len).length;
  const out = new Uint8Array(len);
  const head = encoder.encode(`${len} `);
  out.set(head);
  out.set(k, head.length);
  out[head.length + k.length] = 0x3d;
  out.set(v, head.length + k.length + 1);
  out[len - 1] = 0x0a;
  return out;
}

interface HeaderFields {
  name: string;
  prefix: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  devmajor?: number;
  devminor?: number;
}

function encodeHeader(f: HeaderFields): Uint8Array {
  const b = new Uint8Array(BLOCK);
  putString(b, 0, 100, f.name);
  putOctal(b, 100, 8, f.mode);
  putOctal(b, 108, 8, f.uid);
  putOctal(b, 116, 8, f.gid);
  putOctal(b, 124, 12, f.size);
  putOctal(b, 136, 12, f.mtime);
  b.fill(0x20, 148, 156); // checksum placeholder: spaces
  b[156] = f.typeflag.charCodeAt(0);
  putString(b, 157, 100, f.linkname);
  putString(b, 257, 6, "ustar\0");
  putString(b, 263, 2, "00");
  // uname (265..297) and gname (297..329) stay empty
  putOctal(b, 329, 8, f.devmajor ?? 0);
  putOctal(b, 337, 8, f.devminor ?? 0);
  putString(b, 345, 155, f.prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  putOctal(b, 148, 7, sum); // 6 digits + NUL, then the space left at 155
  return b;
}

const TYPEFLAG: Record<TarEntry["type"], string> = { file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6" };

/** The header block(s) of an entry: an optional PAX header + its records, then the ustar header. */
export function encodeEntryHeader(e: TarEntry, size: number): Uint8Array[] {
  if (!(e.type in TYPEFLAG)) throw new TarError(`unsupported entry type ${JSON.stringify(e.type)}`);
  let path = archivePath(e.path, "path");
  if (e.type === "dir") path += "/";
  let linkname = "";
  if (e.type === "symlink") {
    if (!e.linkname) throw new TarError(`symlink ${JSON.stringify(e.path)} has no target`);
    linkname = e.linkname;
  } else if (e.type === "hardlink") {
    if (!e.linkname) throw new TarError(`hardlink ${JSON.stringify(e.path)} has no target`);
    linkname = archivePath(e.linkname, "hardlink target");
  }
  for (const [k, v] of [["mode", e.mode], ["uid", e.uid], ["gid", e.gid], ["mtime", e.mtime]] as const) {
    if (typeof v !== "number" || !Number.isFinite(v)) throw new TarError(`${e.path}: ${k} must be a number`);
    if (k !== "mtime" && (v < 0 || !Number.isInteger(v))) throw new TarError(`${e.path}: ${k} must be a non-negative integer`);
  }
  const mtime = Math.floor(e.mtime);
  const pax: [string, string | Uint8Array][] = [];
  let name = path;
  let prefix = "";
  const split = isAscii(path) ? splitUstar(path) : null;
  if (split) [prefix, name] = split;
  else {
    pax.push(["path", path]);
    name = asciiTrunc(path, 100);
  }
  if (!isAscii(linkname) || linkname.length > 100) {
    pax.push(["linkpath", linkname]);
    linkname = asciiTrunc(linkname, 100);
  }
  let sizeField = size;
  if (size > MAX_OCTAL_11) {
    pax.push(["size", String(size)]);
    sizeField = 0;
  }
  let uid = e.uid;
  if (uid > MAX_OCTAL_7) {
    pax.push(["uid", String(uid)]);
    uid = 0;
  }
  let gid = e.gid;
  if (gid > MAX_OCTAL_7) {
    pax.push(["gid", String(gid)]);
    gid = 0;
  }
  let mtimeField = mtime;
  if (mtime < 0 || mtime > MAX_OCTAL_11) {
    pax.push(["mtime", String(mtime)]);
    mtimeField = 0;
  }
  if (e.xattrs) {
    for (const k of Object.keys(e.xattrs)) pax.push([`SCHILY.xattr.${k}`, e.xattrs[k]]);
  }
  const mode = e.mode & 0o7777;
  const dev = e.type === "char" || e.type === "block";
  for (const [k, v] of [["devmajor", e.devmajor], ["devminor", e.devminor]] as const) {
    if (dev && v !== undefined && (!Number.isSafeInteger(v) || v < 0 || v > MAX_OCTAL_7)) throw new TarError(`${e.path}: ${k} must be an integer in 0..${MAX_OCTAL_7}`);
  }
  const header = encodeHeader({
    name, prefix, mode, uid, gid, size: sizeField, mtime: mtimeField, typeflag: TYPEFLAG[e.type], linkname,
    devmajor: dev ? e.devmajor : 0, devminor: dev ? e.devminor : 0,
  });
  if (pax.length === 0) return [header];
  pax.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const recs = pax.map(([k, v]) => paxRecord(k, v));
  const records = new Uint8Array(recs.reduce((n, r) => n + r.length, 0));
  let ro = 0;
  for (const r of recs) {
    records.set(r, ro);
    ro += r.length;
  }
  // Go's archive/tar names PAX headers "<dir>/PaxHeaders.0/<base>"; do the same (deterministic).
  const base = path.replace(/\/$/, "");
  const slash = base.lastIndexOf("/");
  const paxName = asciiTrunc(slash < 0 ? `PaxHeaders.0/${base}` : `${base.slice(0, slash)}/PaxHeaders.0/${base.slice(slash + 1)}`, 100);
  const paxHeader = encodeHeader({ name: paxName, prefix: "", mode, uid, gid, size: records.length, mtime: mtimeField, typeflag: "x", linkname: "" });
  const padded = new Uint8Array(roundUp(records.length));
  padded.set(records);
  return [paxHeader, padded, header];
}

function asciiTrunc(s: string, n: number): string {
  let out = "";
  for (let i = 0; i < s.length && out.length < n; i++) {
    const c = s.charCodeAt(i);
    out += c > 0 && c < 0x80 ? s[i] : "_";
  }
  return out;
}

/** Coalesces small pieces into CHUNK-sized buffers; big pieces pass through untouched. */
class Coalescer {
  private buf = new Uint8Array(CHUNK);
  private n = 0;
  /** Adds bytes; returns the chunks ready to emit, in order. */
  push(bytes: Uint8Array, out: Uint8Array[]): void {
    if (bytes.length >= DIRECT) {
      this.flush(out);
      out.push(bytes);
      return;
    }
    if (this.n + bytes.length > CHUNK) this.flush(out);
    this.buf.set(bytes, this.n);
    this.n += bytes.length;
  }
  zeros(count: number, out: Uint8Array[]): void {
    while (count > 0) {
      if (this.n === CHUNK) this.flush(out);
      const k = Math.min(count, CHUNK - this.n);
      // the buffer is fresh (zeroed) past n
      this.n += k;
      count -= k;
    }
  }
  flush(out: Uint8Array[]): void {
    if (this.n === 0) return;
    out.push(this.buf.subarray(0, this.n));
    this.buf = new Uint8Array(CHUNK);
    this.n = 0;
  }
}

async function* tarChunks(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>): AsyncGenerator<Uint8Array[]> {
  const co = new Coalescer();
  for await (const e of entries) {
    const out: Uint8Array[] = [];
    let size = 0;
    const body = e.body;
    if (e.type === "file") {
      if (body instanceof Uint8Array) {
        size = e.size ?? body.length;
        if (size !== body.length) throw new TarError(`${e.path}: body has ${body.length} bytes but size is ${size}`);
      } else if (body) {
        if (e.size === undefined) throw new TarError(`${e.path}: a stream body needs a size`);
        size = e.size;
      } else {
        size = e.size ?? 0;
        if (size !== 0) throw new TarError(`${e.path}: size ${size} but no body`);
      }
      if (!Number.isSafeInteger(size) || size < 0) throw new TarError(`${e.path}: invalid size ${size}`);
    } else if (body) {
      if (body instanceof ReadableStream) await body.cancel();
      if ((body instanceof Uint8Array ? body.length : 0) !== 0 || (e.size ?? 0) !== 0) {
        throw new TarError(`${e.path}: a ${e.type} has no body`);
      }
    }
    for (const h of encodeEntryHeader(e, size)) co.push(h, out);
    if (size > 0) {
      if (body instanceof Uint8Array) {
        co.push(body, out);
      } else if (body) {
        yield out.splice(0);
        const reader = body.getReader();
        let got = 0;
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            if (!value || value.length === 0) continue;
            got += value.length;
            if (got > size) throw new TarError(`${e.path}: body is longer than its size ${size}`);
            co.push(value, out);
            if (out.length) yield out.splice(0);
          }
        } catch (err) {
          await reader.cancel(err).catch(() => {});
          throw err;
        } finally {
          reader.releaseLock();
        }
        if (got !== size) throw new TarError(`${e.path}: body has ${got} bytes but size is ${size}`);
      }
      co.zeros(roundUp(size) - size, out);
    }
    if (out.length) yield out;
  }
  const out: Uint8Array[] = [];
  co.zeros(2 * BLOCK, out);
  co.flush(out);
  yield out;
}

/** A deterministic tar stream of `entries`, written in the order given (sort them for layers). */
export function tarStream(entries: AsyncIterable<TarEntry> | Iterable<TarEntry>): ReadableStream<Uint8Array> {
  const it = tarChunks(entries);
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        const { done, value } = await it.next();
        if (done) {
          controller.close();
          return;
        }
        if (value.length === 0) continue;
        for (const c of value) controller.enqueue(c);
        return;
      }
    },
    async cancel(reason) {
      await it.throw(reason ?? new Error("cancelled")).catch(() => {});
    },
  });
}

/** Buffers `stream` into one Uint8Array (for tests and small inputs only). */
export async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const r = stream.getReader();
  for (;;) {
    const { done, value } = await r.read();
    if (done) break;
    parts.push(value);
    n += value.length;
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
