import { ByteReader } from "./bytes";

/**
 * Streaming tar reader for build contexts (ustar, GNU long names, PAX extended headers, base-256
 * numbers). Entries are yielded one at a time; an entry's data must be read through `body()` before
 * asking for the next one (or it is skipped).
 */
export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | "other";

export interface TarEntryHeader {
  path: string;
  type: TarEntryType;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
}

export interface TarEntry extends TarEntryHeader {
  /** Streams the entry's data to `sink` (once). */
  body(sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void>;
}

export class TarFormatError extends Error {}

const dec = new TextDecoder();

function str(b: Uint8Array, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return dec.decode(b.subarray(off, end));
}

function num(b: Uint8Array, off: number, len: number): number {
  if (b[off] & 0x80) {
    // base-256 (GNU): big-endian, first byte's high bit set
    let v = b[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i];
    return v;
  }
  const s = str(b, off, len).trim();
  if (!s) return 0;
  const v = parseInt(s, 8);
  if (Number.isNaN(v)) throw new TarFormatError(`invalid number in tar header: ${JSON.stringify(s)}`);
  return v;
}

function checksumOk(h: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  return sum === num(h, 148, 8);
}

function typeOf(flag: string): TarEntryType {
  switch (flag) {
    case "0": case "\0": case "": case "7": return "file";
    case "1": return "hardlink";
    case "2": return "symlink";
    case "3": return "char";
    case "4": return "block";
    case "5": return "dir";
    case "6": return "fifo";
    default: return "other";
  }
}

function parsePax(data: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    let sp = pos;
    while (sp < data.length && data[sp] !== 0x20) sp++;
    const len = parseInt(dec.decode(data.subarray(pos, sp)), 10);
    if (!len || Number.isNaN(len)) break;
    const rec = dec.decode(data.subarray(sp + 1, pos + len - 1));
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

const MAX_META = 1 << 20;

export async function* readTar(r: ByteReader): AsyncGenerator<TarEntry> {
  let pax: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const h = await r.readExact(512);
    if (!h) return; // clean end without the two zero blocks
    if (h.every((x) => x === 0)) return; // end-of-archive marker
    if (!checksumOk(h)) throw new TarFormatError("not a tar archive (bad header checksum)");
    const typeflag = String.fromCharCode(h[156]);
    const size = num(h, 124, 12);
    const padded = Math.ceil(size / 512) * 512;
    if (typeflag === "x" || typeflag === "g" || typeflag === "L" || typeflag === "K") {
      if (size > MAX_META) throw new TarFormatError("tar extended header too large");
      const data = (await r.readExact(padded)) ?? new Uint8Array(0);
      const body = data.subarray(0, size);
      if (typeflag === "x") pax = { ...pax, ...parsePax(body) };
      else if (typeflag === "L") longName = str(body, 0, body.length);
      else if (typeflag === "K") longLink = str(body, 0, body.length);
      continue; // global headers ('g') are ignored
    }
    const magic = str(h, 257, 6);
    let path = str(h, 0, 100);
    if (magic.startsWith("ustar")) {
      const prefix = str(h, 345, 155);
      if (prefix && magic === "ustar") path = `${prefix}/${path}`;
    }
    if (longName !== undefined) path = longName;
    if (pax.path !== undefined) path = pax.path;
    let linkname = str(h, 157, 100);
    if (longLink !== undefined) linkname = longLink;
    if (pax.linkpath !== undefined) linkname = pax.linkpath;
    const header: TarEntryHeader = {
      path,
      typeflag,
      type: typeOf(typeflag),
      mode: num(h, 100, 8) & 0o7777,
      uid: pax.uid !== undefined ? Number(pax.uid) : num(h, 108, 8),
      gid: pax.gid !== undefined ? Number(pax.gid) : num(h, 116, 8),
      size: pax.size !== undefined ? Number(pax.size) : size,
      mtime: pax.mtime !== undefined ? Math.floor(Number(pax.mtime)) : num(h, 136, 12),
      linkname,
    };
    pax = {};
    longName = longLink = undefined;
    const dataSize = header.type === "file" || header.type === "other" ? header.size : header.size; // some writers give hardlinks a size of 0
    const dataPadded = Math.ceil(dataSize / 512) * 512;
    let consumed = false;
    const entry: TarEntry = {
      ...header,
      async body(sink) {
        if (consumed) throw new Error("tar entry body already read");
        consumed = true;
        await r.stream(dataSize, sink);
        await r.skip(dataPadded - dataSize);
      },
    };
    yield entry;
    if (!consumed) {
      consumed = true;
      await r.skip(dataPadded);
    }
  }
}
