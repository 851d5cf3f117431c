/**
 * Streaming tar writer and reader (ustar + PAX; reads GNU long names too).
 *
 * The writer is deterministic: the same entries give the same bytes. It writes no user/group names,
 * devmajor/devminor 0, magic "ustar\0" "00", directories with a trailing "/", relative paths without
 * "./" (as docker/BuildKit layers look), PAX extended headers (sorted records) only when a value does
 * not fit ustar (long or non-ASCII path/linkname, size >= 8 GiB, big uid/gid/mtime, xattrs), and two
 * zero blocks at the end. Body chunks are passed through without copying; headers and small bodies are
 * coalesced into 64 KiB chunks.
 */

export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarError";
  }
}

/** An entry to write. */
export interface TarEntry {
  path: string;
  type: "file" | "dir" | "symlink" | "hardlink";
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
}

export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "other";

/** A header as read. `path`/`linkname` are as stored (apply cleanTarPath / isUnsafePath yourself). */
export interface TarHeader {
  path: string;
  type: TarEntryType;
  /** The raw typeflag character ("0", "5", …; "\0" reads as "0"). */
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  /** Length of the body (0 for everything but files). */
  size: number;
  mtime: number; // seconds (fractions from PAX kept)
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes (PAX `SCHILY.xattr.*`) as raw bytes. */
  xattrs: Record<string, Uint8Array>;
  /** All PAX records that applied to this entry (values decoded as UTF-8). */
  pax: Record<string, string>;
}

export interface TarReadEntry {
  header: TarHeader;
  /** The body; read it before asking for the next entry, or it is skipped (and this stream closed). */
  body: ReadableStream<Uint8Array>;
}

export interface ReadTarOptions {
  /** Fail when the input ends without the end-of-archive zero block (default: accepted at a block
   *  boundary, as docker and Go's archive/tar do). */
  requireEndMarker?: boolean;
  /** Read and discard whatever follows the end-of-archive marker (default true), so a hash taken over
   *  the whole input stream upstream sees all of it. When false the input is cancelled instead. */
  drainTrailing?: boolean;
}

// ---------------------------------------------------------------- paths

/** POSIX-clean a path (like Go's path.Clean) and strip a leading "./". Keeps a leading "/" and
 *  leading ".." components of relative paths; "" and "." become ".". */
export function cleanTarPath(p: string): string {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(part);
  }
  const s = out.join("/");
  if (rooted) return "/" + s;
  return s === "" ? "." : s;
}

/** True for absolute paths and paths with any ".." component (before cleaning). */
export function isUnsafePath(p: string): boolean {
  if (p.startsWith("/")) return true;
  for (const part of p.split("/")) if (part === "..") return true;
  return false;
}

/** The whiteout that deletes `path` in a lower layer: `dir/.wh.name`. */
export function whiteoutPath(path: string): string {
  const c = cleanTarPath(path).replace(/^\/+/, "");
  const i = c.lastIndexOf("/");
  return i < 0 ? `.wh.${c}` : `${c.slice(0, i)}/.wh.${c.slice(i + 1)}`;
}

/** The opaque-directory marker that hides everything below `dir` in lower layers. */
export function opaqueWhiteout(dir: string): string {
  const c = cleanTarPath(dir).replace(/^\/+/, "");
  return c === "." || c === "" ? ".wh..wh..opq" : `${c}/.wh..wh..opq`;
}

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** The archive path for an entry: relative, clean, no "./"; refuses ".." and empty paths. */
function archivePath(p: string, what: string): string {
  let s = p.replace(/^\/+/, "");
  if (isUnsafePath(s)) throw new TarError(`unsafe ${what} ${JSON.stringify(p)}: ".." component`);
  s = cleanTarPath(s);
  if (s === ".") throw new TarError(`empty ${what} ${JSON.stringify(p)}`);
  return s;
}

// ---------------------------------------------------------------- writer

const BLOCK = 512;
const ZERO_BLOCK = new Uint8Array(BLOCK);
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
  putOctal(b, 329, 8, 0); // devmajor
  putOctal(b, 337, 8, 0); // devminor
  putString(b, 345, 155, f.prefix);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  putOctal(b, 148, 7, sum); // 6 digits + NUL, then the space left at 155
  return b;
}

const TYPEFLAG: Record<TarEntry["type"], string> = { file: "0", hardlink: "1", symlink: "2", dir: "5" };

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
  const header = encodeHeader({ name, prefix, mode, uid, gid, size: sizeField, mtime: mtimeField, typeflag: TYPEFLAG[e.type], linkname });
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

function roundUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
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

// ---------------------------------------------------------------- reader

/** Reads `stream` as tar entries. See ReadTarOptions for end-of-archive handling. */
export function readTar(stream: ReadableStream<Uint8Array>, options: ReadTarOptions = {}): AsyncIterable<TarReadEntry> {
  return { [Symbol.asyncIterator]: () => readEntries(stream, options) };
}

/** Pulls bytes from a stream in caller-sized pieces, handing out views of the input chunks. */
class ByteReader {
  private cur: Uint8Array = new Uint8Array(0);
  eof = false;
  /** Bytes consumed so far (for error messages). */
  offset = 0;
  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  private async fill(): Promise<boolean> {
    while (this.cur.length === 0) {
      if (this.eof) return false;
      const { done, value } = await this.reader.read();
      if (done) {
        this.eof = true;
        return false;
      }
      if (value) this.cur = value;
    }
    return true;
  }

  /** Up to `max` bytes (a view, no copy), or null at the end of input. */
  async readUpTo(max: number): Promise<Uint8Array | null> {
    if (!(await this.fill())) return null;
    const n = Math.min(max, this.cur.length);
    const out = this.cur.subarray(0, n);
    this.cur = this.cur.subarray(n);
    this.offset += n;
    return out;
  }

  /** Exactly `n` bytes, or the number of bytes that were left when the input ended early. */
  async readExact(n: number): Promise<Uint8Array | number> {
    if (!(await this.fill())) return 0;
    if (this.cur.length >= n) {
      const out = this.cur.subarray(0, n);
      this.cur = this.cur.subarray(n);
      this.offset += n;
      return out;
    }
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const part = await this.readUpTo(n - got);
      if (!part) return got;
      out.set(part, got);
      got += part.length;
    }
    return out;
  }

  /** Skips `n` bytes; returns how many were skipped (< n when the input ended). */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const part = await this.readUpTo(Math.min(left, 1 << 30));
      if (!part) break;
      left -= part.length;
    }
    return n - left;
  }

  async drain(): Promise<void> {
    this.cur = new Uint8Array(0);
    while (!this.eof) {
      const { done } = await this.reader.read();
      if (done) this.eof = true;
    }
  }

  async cancel(reason?: unknown): Promise<void> {
    if (this.eof) return;
    this.eof = true;
    await this.reader.cancel(reason).catch(() => {});
  }
}

const utf8 = new TextDecoder();
const MAX_META = 1 << 20; // PAX / GNU long-name bodies are metadata: cap them

function cString(b: Uint8Array, off: number, len: number): string {
  let end = off;
  const stop = off + len;
  while (end < stop && b[end] !== 0) end++;
  return utf8.decode(b.subarray(off, end));
}

function parseNumeric(b: Uint8Array, off: number, len: number, field: string, at: number): number {
  if (b[off] & 0x80) {
    // GNU base-256: big-endian two's complement, marked by the top bit of the first byte
    const neg = b[off] === 0xff;
    let v = 0;
    for (let i = 0; i < len; i++) {
      let byte = b[off + i];
      if (neg) byte ^= 0xff;
      else if (i === 0) byte &= 0x7f;
      v = v * 256 + byte;
    }
    if (neg) v = -(v + 1);
    if (!Number.isSafeInteger(v)) throw new TarError(`tar header at byte ${at}: ${field} out of range`);
    return v;
  }
  let i = off;
  const end = off + len;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let v = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new TarError(`tar header at byte ${at}: invalid octal in ${field}`);
    v = v * 8 + (c - 0x30);
    digits++;
  }
  return digits === 0 ? 0 : v;
}

function verifyChecksum(b: Uint8Array, at: number): void {
  const stored = parseNumeric(b, 148, 8, "checksum", at);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  if (stored !== unsigned && stored !== signed) {
    throw new TarError(`tar header at byte ${at}: checksum mismatch (not a tar archive or corrupted)`);
  }
}

function isZeroBlock(b: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** Parses PAX records ("<len> <key>=<value>\n"...): values decoded as UTF-8, xattrs also kept raw. */
function parsePax(data: Uint8Array, at: number, raw: Record<string, Uint8Array>): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    let sp = pos;
    let len = 0;
    while (sp < data.length && data[sp] >= 0x30 && data[sp] <= 0x39) len = len * 10 + (data[sp++] - 0x30);
    if (sp === pos || data[sp] !== 0x20 || len <= sp - pos + 1 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new TarError(`tar PAX header at byte ${at}: malformed record`);
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError(`tar PAX header at byte ${at}: malformed record`);
    const key = utf8.decode(rec.subarray(0, eq));
    const value = rec.subarray(eq + 1);
    out[key] = utf8.decode(value);
    if (key.startsWith("SCHILY.xattr.")) raw[key] = value.slice();
    pos += len;
  }
  return out;
}

function paxInt(v: string, key: string, at: number): number {
  if (!/^-?\d+$/.test(v)) throw new TarError(`tar PAX header at byte ${at}: invalid ${key} ${JSON.stringify(v)}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new TarError(`tar PAX header at byte ${at}: ${key} out of range`);
  return n;
}

const TYPES: Record<string, TarEntryType> = {
  "0": "file", "\0": "file", "7": "file", "1": "hardlink", "2": "symlink", "3": "char", "4": "block", "5": "dir", "6": "fifo",
};
const HEADER_ONLY = new Set(["1", "2", "3", "4", "5", "6"]);

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({ start: (c) => c.close() });
}

async function* readEntries(stream: ReadableStream<Uint8Array>, options: ReadTarOptions): AsyncGenerator<TarReadEntry> {
  const br = new ByteReader(stream.getReader());
  const global: Record<string, string> = {};
  let local: Record<string, string> = {};
  const globalRaw: Record<string, Uint8Array> = {};
  let localRaw: Record<string, Uint8Array> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  let finished = false;
  // The body of the entry handed out last: what is left of it, and how to end its stream.
  let pending: { remaining: number; pad: number; pulling: Promise<void> | null; end: (e?: unknown) => void } | null = null;

  const readMeta = async (size: number, at: number, what: string): Promise<Uint8Array> => {
    if (size > MAX_META) throw new TarError(`tar ${what} at byte ${at} is too large (${size} bytes)`);
    const data = await br.readExact(size);
    if (typeof data === "number") throw new TarError(`tar archive truncated in ${what} at byte ${at}`);
    const pad = roundUp(size) - size;
    if ((await br.skip(pad)) !== pad) throw new TarError(`tar archive truncated in ${what} at byte ${at}`);
    return data;
  };

  try {
    for (;;) {
      if (pending) {
        const p = pending;
        pending = null;
        if (p.pulling) await p.pulling.catch(() => {});
        if (p.remaining > 0) {
          p.end(new TarError("entry body was not read before the next entry was requested"));
          if ((await br.skip(p.remaining)) !== p.remaining) throw new TarError(`tar archive truncated at byte ${br.offset}`);
          p.remaining = 0;
        }
        if ((await br.skip(p.pad)) !== p.pad) throw new TarError(`tar archive truncated at byte ${br.offset}`);
      }
      const at = br.offset;
      const blk = await br.readExact(BLOCK);
      if (typeof blk === "number") {
        if (blk === 0) {
          if (options.requireEndMarker) throw new TarError(`tar archive truncated: no end-of-archive marker after byte ${at}`);
          if (longName !== undefined || longLink !== undefined || Object.keys(local).length > 0) {
            throw new TarError(`tar archive truncated after an extended header at byte ${at}`);
          }
          finished = true;
          return;
        }
        throw new TarError(`tar archive truncated in a header at byte ${at}`);
      }
      if (isZeroBlock(blk)) {
        // End of archive: the second zero block may be missing; anything after it is ignored.
        finished = true;
        if (options.drainTrailing === false) await br.cancel();
        else await br.drain();
        return;
      }
      verifyChecksum(blk, at);
      const flagByte = blk[156];
      const typeflag = flagByte === 0 ? "0" : String.fromCharCode(flagByte);
      const sizeField = parseNumeric(blk, 124, 12, "size", at);
      if (typeflag === "x" || typeflag === "g") {
        const g = typeflag === "g";
        const recs = parsePax(await readMeta(sizeField, at, "PAX header"), at, g ? globalRaw : localRaw);
        Object.assign(g ? global : local, recs);
        continue;
      }
      if (typeflag === "L" || typeflag === "K") {
        const data = await readMeta(sizeField, at, "GNU long name");
        let end = data.length;
        while (end > 0 && data[end - 1] === 0) end--;
        const s = utf8.decode(data.subarray(0, end));
        if (typeflag === "L") longName = s;
        else longLink = s;
        continue;
      }
      const pax = { ...global, ...local };
      for (const k of Object.keys(pax)) if (pax[k] === "") delete pax[k]; // an empty value unsets
      const raw = { ...globalRaw, ...localRaw };
      local = {};
      localRaw = {};
      const magic = cString(blk, 257, 6); // "ustar" (POSIX, version "00") or "ustar  " (GNU)
      const hasDev = magic.startsWith("ustar");
      const version = String.fromCharCode(blk[263], blk[264]);
      const ustar = magic === "ustar" && version === "00";
      let name = cString(blk, 0, 100);
      if (ustar) {
        const prefix = cString(blk, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      const path = pax.path ?? longName ?? name;
      const linkname = pax.linkpath ?? longLink ?? cString(blk, 157, 100);
      longName = longLink = undefined;
      let type: TarEntryType = TYPES[typeflag] ?? "other";
      if ((flagByte === 0 || !hasDev) && typeflag === "0" && path.endsWith("/")) type = "dir"; // old-style directories
      if (pax["GNU.sparse.major"] !== undefined || pax["GNU.sparse.size"] !== undefined) type = "other";
      let size = pax.size !== undefined ? paxInt(pax.size, "size", at) : sizeField;
      if (size < 0) throw new TarError(`tar header at byte ${at}: negative size`);
      if (HEADER_ONLY.has(typeflag)) size = 0;
      const xattrs: Record<string, Uint8Array> = {};
      for (const k of Object.keys(pax)) if (k.startsWith("SCHILY.xattr.") && raw[k]) xattrs[k.slice(13)] = raw[k];
      const header: TarHeader = {
        path,
        type,
        typeflag,
        mode: parseNumeric(blk, 100, 8, "mode", at),
        uid: pax.uid !== undefined ? paxInt(pax.uid, "uid", at) : parseNumeric(blk, 108, 8, "uid", at),
        gid: pax.gid !== undefined ? paxInt(pax.gid, "gid", at) : parseNumeric(blk, 116, 8, "gid", at),
        size: type === "file" ? size : 0,
        mtime: pax.mtime !== undefined ? Number(pax.mtime) : parseNumeric(blk, 136, 12, "mtime", at),
        linkname,
        uname: pax.uname ?? cString(blk, 265, 32),
        gname: pax.gname ?? cString(blk, 297, 32),
        devmajor: hasDev ? parseNumeric(blk, 329, 8, "devmajor", at) : 0,
        devminor: hasDev ? parseNumeric(blk, 337, 8, "devminor", at) : 0,
        xattrs,
        pax,
      };
      if (!Number.isFinite(header.mtime)) throw new TarError(`tar PAX header at byte ${at}: invalid mtime`);
      if (size === 0) {
        yield { header, body: emptyStream() };
        continue;
      }
      const state = { remaining: size, pad: roundUp(size) - size, pulling: null as Promise<void> | null, end: (_e?: unknown) => {} };
      pending = state;
      const bodyAt = br.offset;
      const body = new ReadableStream<Uint8Array>(
        {
          start(controller) {
            state.end = (e?: unknown) => {
              try {
                controller.error(e);
              } catch {}
            };
          },
          pull(controller) {
            if (pending !== state) {
              controller.error(new TarError("entry body read after the next entry was requested"));
              return;
            }
            const work = (async () => {
              const chunk = await br.readUpTo(state.remaining);
              if (!chunk) {
                const err = new TarError(`tar archive truncated in the body of ${JSON.stringify(path)} (byte ${bodyAt}, ${state.remaining} of ${size} bytes missing)`);
                controller.error(err);
                throw err;
              }
              state.remaining -= chunk.length;
              controller.enqueue(chunk);
              if (state.remaining === 0) controller.close();
            })();
            state.pulling = work;
            return work.finally(() => {
              if (state.pulling === work) state.pulling = null;
            });
          },
        },
        { highWaterMark: 0 },
      );
      yield { header, body };
    }
  } catch (e) {
    if (pending) pending.end(e);
    await br.cancel(e);
    throw e;
  } finally {
    if (!finished) await br.cancel();
  }
}
