// Streaming tar (ustar + PAX + GNU long names) for the runner: a writer for the layers it produces and a
// reader for the layers it unpacks. Node only.

export type TarType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface TarHeader {
  path: string; // relative, no leading "/" or "./"; directories without trailing "/"
  type: TarType;
  mode: number; // permission bits incl. setuid/setgid/sticky
  uid: number;
  gid: number;
  size: number;
  mtime: number; // seconds
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** PAX xattrs (SCHILY.xattr.<name>), values as bytes. */
  xattrs?: Record<string, Buffer>;
}

const TYPE_FLAG: Record<TarType, string> = { file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", dir: "5", fifo: "6" };

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarFormatError";
  }
}

function writeString(buf: Buffer, off: number, len: number, s: string): void {
  const b = Buffer.from(s, "utf8");
  b.copy(buf, off, 0, Math.min(len, b.length));
}

function writeOctal(buf: Buffer, off: number, len: number, n: number): boolean {
  const s = Math.max(0, Math.floor(n)).toString(8);
  if (s.length > len - 1) return false;
  buf.write(s.padStart(len - 1, "0") + "\0", off, len, "ascii");
  return true;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const rest = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = rest.length + 1;
  while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
  return Buffer.concat([Buffer.from(String(len), "ascii"), rest]);
}

function rawHeader(name: string, typeflag: string, size: number, h: Partial<TarHeader>): Buffer {
  const buf = Buffer.alloc(512);
  writeString(buf, 0, 100, name);
  writeOctal(buf, 100, 8, h.mode ?? 0o644);
  writeOctal(buf, 108, 8, h.uid ?? 0);
  writeOctal(buf, 116, 8, h.gid ?? 0);
  writeOctal(buf, 124, 12, size);
  writeOctal(buf, 136, 12, h.mtime ?? 0);
  buf.fill(0x20, 148, 156);
  buf.write(typeflag, 156, 1, "ascii");
  writeString(buf, 157, 100, h.linkname ?? "");
  buf.write("ustar\0", 257, 6, "ascii");
  buf.write("00", 263, 2, "ascii");
  writeOctal(buf, 329, 8, h.devmajor ?? 0);
  writeOctal(buf, 337, 8, h.devminor ?? 0);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += buf[i];
  buf.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return buf;
}

/** Encodes the header block(s) of one entry (a PAX header first when a field does not fit ustar). */
export function encodeHeader(h: TarHeader): Buffer {
  const name = h.type === "dir" ? `${h.path}/` : h.path;
  const size = h.type === "file" ? h.size : 0;
  const pax: Buffer[] = [];
  if (Buffer.byteLength(name) > 100) pax.push(paxRecord("path", Buffer.from(name, "utf8")));
  if (h.linkname && Buffer.byteLength(h.linkname) > 100) pax.push(paxRecord("linkpath", Buffer.from(h.linkname, "utf8")));
  if (size > 0o77777777777) pax.push(paxRecord("size", Buffer.from(String(size))));
  if (h.uid > 0o7777777) pax.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if (h.gid > 0o7777777) pax.push(paxRecord("gid", Buffer.from(String(h.gid))));
  for (const k of Object.keys(h.xattrs ?? {}).sort()) pax.push(paxRecord(`SCHILY.xattr.${k}`, h.xattrs![k]));
  const main = rawHeader(name, TYPE_FLAG[h.type], size > 0o77777777777 ? 0 : size, {
    ...h, uid: h.uid > 0o7777777 ? 0 : h.uid, gid: h.gid > 0o7777777 ? 0 : h.gid,
  });
  if (!pax.length) return main;
  const body = Buffer.concat(pax);
  const paxName = `PaxHeaders/${name.replace(/\/$/, "").split("/").pop()}`.slice(0, 99);
  return Buffer.concat([rawHeader(paxName, "x", body.length, { mode: 0o644, mtime: h.mtime }), body, padding(body.length), main]);
}

export function padding(size: number): Buffer {
  const rem = size % 512;
  return rem ? Buffer.alloc(512 - rem) : Buffer.alloc(0);
}

/** The two zero blocks that end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(1024);

// ---------------------------------------------------------------- reader

/** Pulls exact byte counts out of an async iterable of chunks. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private done = false;
  private it: AsyncIterator<Buffer | Uint8Array>;

  constructor(source: AsyncIterable<Buffer | Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.buffered < n && !this.done) {
      const r = await this.it.next();
      if (r.done) { this.done = true; break; }
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      if (b.length) { this.chunks.push(b); this.buffered += b.length; }
    }
  }

  /** Exactly n bytes, or fewer at the end of the stream. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const out = Buffer.concat(this.chunks, Math.min(n, this.buffered));
    this.consume(out.length);
    return out;
  }

  private consume(n: number): void {
    while (n > 0) {
      const c = this.chunks[0];
      if (c.length <= n) { this.chunks.shift(); n -= c.length; this.buffered -= c.length; }
      else { this.chunks[0] = c.subarray(n); this.buffered -= n; n = 0; }
    }
  }

  /** Yields the next n bytes in chunks as they arrive. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (!this.buffered) await this.fill(1);
      if (!this.buffered) throw new TarFormatError("unexpected end of archive inside an entry");
      const c = this.chunks[0];
      const take = Math.min(c.length, n);
      const out = c.subarray(0, take);
      this.consume(take);
      n -= take;
      yield out;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.stream(n)) void _;
  }

  /** Reads and discards everything left (so a hash over the stream sees all of it). */
  async drain(): Promise<void> {
    this.chunks = [];
    this.buffered = 0;
    while (!this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
    }
  }
}

function cstr(buf: Buffer, off: number, len: number): string {
  const s = buf.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? len : z).toString("utf8");
}

function parseNumeric(buf: Buffer, off: number, len: number): number {
  if (buf[off] & 0x80) {
    // base-256
    let n = buf[off] & 0x7f;
    for (let i = 1; i < len; i++) n = n * 256 + buf[off + i];
    return n;
  }
  const s = cstr(buf, off, len).replace(/[ \0]/g, "");
  if (!s) return 0;
  if (!/^[0-7]+$/.test(s)) throw new TarFormatError(`invalid numeric field ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function parsePax(body: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(body.subarray(i, sp).toString("ascii"), 10);
    if (!Number.isFinite(len) || len <= 0 || i + len > body.length) throw new TarFormatError("invalid PAX record");
    const rec = body.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(rec.subarray(0, eq).toString("utf8"), rec.subarray(eq + 1));
    i += len;
  }
  return out;
}

export interface TarReadEntry {
  header: TarHeader;
  /** Raw path as in the archive (before cleaning). */
  rawPath: string;
  /** The entry's data; must be consumed (or left: the reader skips what is not read). */
  body: AsyncGenerator<Buffer>;
}

/** Iterates the entries of a tar stream. Unknown entry types are skipped. */
export async function* readTar(source: AsyncIterable<Buffer | Uint8Array>, reader = new ByteReader(source)): AsyncGenerator<TarReadEntry> {
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax: Map<string, Buffer> | undefined;
  const globalPax = new Map<string, Buffer>();
  for (;;) {
    const block = await reader.read(512);
    if (block.length === 0) return;
    if (block.length < 512) throw new TarFormatError("truncated tar header");
    if (block.every((b) => b === 0)) { await reader.drain(); return; }
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i];
    if (sum !== parseNumeric(block, 148, 8)) throw new TarFormatError("tar header checksum mismatch");
    const flag = String.fromCharCode(block[156] || 0x30);
    let size = parseNumeric(block, 124, 12);
    const readBody = async () => {
      const b = await reader.read(size);
      if (b.length < size) throw new TarFormatError("truncated tar entry");
      await reader.skip(padding(size).length);
      return b;
    };
    if (flag === "x") { pax = parsePax(await readBody()); continue; }
    if (flag === "g") { for (const [k, v] of parsePax(await readBody())) globalPax.set(k, v); continue; }
    if (flag === "L") { longName = cstr(await readBody(), 0, size); continue; }
    if (flag === "K") { longLink = cstr(await readBody(), 0, size); continue; }
    const attrs = new Map([...globalPax, ...(pax ?? [])]);
    const magic = block.subarray(257, 263).toString("ascii");
    let name = cstr(block, 0, 100);
    if (magic.startsWith("ustar")) {
      const prefix = cstr(block, 345, 155);
      if (prefix && magic === "ustar\0") name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    if (attrs.has("path")) name = attrs.get("path")!.toString("utf8");
    let linkname = cstr(block, 157, 100);
    if (longLink !== undefined) linkname = longLink;
    if (attrs.has("linkpath")) linkname = attrs.get("linkpath")!.toString("utf8");
    if (attrs.has("size")) size = Number(attrs.get("size")!.toString());
    const xattrs: Record<string, Buffer> = {};
    for (const [k, v] of attrs) if (k.startsWith("SCHILY.xattr.")) xattrs[k.slice(13)] = v;
    longName = longLink = pax = undefined;
    const types: Record<string, TarType> = { "0": "file", "7": "file", "1": "hardlink", "2": "symlink", "3": "char", "4": "block", "5": "dir", "6": "fifo" };
    let type = types[flag];
    if (!type && flag !== "\0") {
      await reader.skip(size + padding(size).length);
      continue;
    }
    if (type === "file" && name.endsWith("/")) type = "dir";
    if (type === "dir") name = name.replace(/\/+$/, "");
    const header: TarHeader = {
      path: name,
      type,
      mode: parseNumeric(block, 100, 8) & 0o7777,
      uid: attrs.has("uid") ? Number(attrs.get("uid")!.toString()) : parseNumeric(block, 108, 8),
      gid: attrs.has("gid") ? Number(attrs.get("gid")!.toString()) : parseNumeric(block, 116, 8),
      size: type === "file" ? size : 0,
      mtime: attrs.has("mtime") ? Math.floor(Number(attrs.get("mtime")!.toString())) : parseNumeric(block, 136, 12),
      linkname: linkname || undefined,
      devmajor: parseNumeric(block, 329, 8),
      devminor: parseNumeric(block, 337, 8),
      xattrs: Object.keys(xattrs).length ? xattrs : undefined,
    };
    let consumed = 0;
    const dataSize = size;
    const body = (async function* () {
      for await (const c of reader.stream(dataSize)) { consumed += c.length; yield c; }
    })();
    yield { header, rawPath: name, body };
    // Skip what the consumer did not read, then the padding.
    if (consumed < dataSize) await reader.skip(dataSize - consumed);
    await reader.skip(padding(dataSize).length);
  }
}

/**
 * Cleans a path from an archive to a relative path ("a/b"); null when it escapes the root (".." that
 * climbs above it). A leading "/" or "./" is dropped; "" is the root itself.
 */
export function cleanArchivePath(p: string): string | null {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (!out.length) return null;
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out.join("/");
}
