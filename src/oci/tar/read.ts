/** Streaming tar reader: ustar, PAX (xattrs kept raw) and GNU long names. */
import { ByteReader } from "../bytes";
import { BLOCK, roundUp, TarError } from "./paths";

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

/** Reads `stream` as tar entries. See ReadTarOptions for end-of-archive handling. */
export function readTar(stream: ReadableStream<Uint8Array>, options: ReadTarOptions = {}): AsyncIterable<TarReadEntry> {
  return { [Symbol.asyncIterator]: () => readEntries(stream, options) };
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
  const br = new ByteReader(stream);
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
    const data = await br.readFull(size);
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
      const blk = await br.readFull(BLOCK);
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
        else await br.discardRest();
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
