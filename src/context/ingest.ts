import type { Env } from "../env";
import { ApiError } from "../errors";
import { DockerIgnore } from "../dockerfile/dockerignore";
import { ContextPackWriter, deleteContext, deleteContextIndex, putContextIndex, readContextRange } from "../storage/contexts";
import { ByteReader } from "../oci/bytes";
import { concatBytes } from "../http/body";
import { yieldEvery } from "./yield";
import { entryHasher, workerHasher } from "./hasher";
import { gunzipPaced } from "./gunzip";
import { boundaryOf, MultipartError, readMultipart } from "./multipart";
import { normalizeContextPath, resolveInRoot, UnsafePathError } from "./paths";
import { BLOCK, roundUp, type TarReadEntry } from "../oci/tar";
import { contextEntries, readTar, TarFormatError, type TarEntry } from "./tar-reader";

/** One entry of a context's file index (paths are root-relative, without leading "./"). */
export interface ContextFile {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number; // permission bits (07777)
  uid: number;
  gid: number;
  size: number;
  sha256?: string; // files: sha256:<hex> of the contents
  linkTarget?: string; // symlinks
  offset?: number; // files: where the contents start in the pack
  pack?: string; // files: the pack holding the contents when not the index's own (content-addressed uploads)
  parts?: { pack: string; offset: number; size: number }[]; // files sent in pieces: their ranges in order
}

export interface ContextIndex {
  version: 1;
  pack: string; // sha256 of the pack
  packSize: number;
  files: ContextFile[]; // sorted by path
}

export interface IngestedContext {
  packDigest: string;
  indexDigest: string;
  index: ContextIndex;
  dockerfile: string;
  dockerfilePath: string;
  secrets: Record<string, string>;
  /** Removes what this ingest stored (for a refusal after ingest, e.g. a Dockerfile syntax error). */
  discard(): Promise<void>;
}

export interface IngestOptions {
  contentType: string;
  dockerfilePath?: string;
  dockerfileText?: string;
  maxBytes?: number;
  /** Most tar entries (files, dirs, links, ignored ones too) a context may have; default KILN_MAX_CONTEXT_ENTRIES. */
  maxEntries?: number;
}

/** A context that is already a sequence of tar entries (a git host's archive, re-rooted): ingested as they come, not re-encoded. */
export interface ContextEntries {
  entries: AsyncIterable<TarReadEntry>;
}

export const DEFAULT_MAX_CONTEXT_BYTES = 2 * 1024 * 1024 * 1024;
/**
 * 200,000 entries: twice a large monorepo's context (node_modules trees reach ~100,000 files), while the
 * index (about 200 bytes of JSON per entry, 40 MB at the limit) still fits a Worker's 128 MB with room
 * for the build that reads it.
 */
export const DEFAULT_MAX_CONTEXT_ENTRIES = 200_000;
export const MAX_DOCKERFILE_BYTES = 1024 * 1024;

const bad = (message: string) => new ApiError(400, message);
const DRAIN_ON_REFUSAL = 256 * 1024 * 1024;
/** Most bytes read after a context archive's end before the rest is cancelled. */
const TRAILING_DRAIN = 16 * 1024 * 1024;
/**
 * Compressed input is fed to the decompressor in pieces this small, as its output is read: one piece
 * expands to at most ~1032× (deflate's ceiling), ~16 MiB, so a gzip bomb is stopped within that of its limit.
 */
const GZIP_PIECE = 16 * 1024;

export function maxContextBytes(env: Env): number {
  const n = Number(env.KILN_MAX_CONTEXT_BYTES);
  return Number.isFinite(n) && n > 0 ? n : DEFAULT_MAX_CONTEXT_BYTES;
}

export function maxContextEntries(env: Env): number {
  const n = Number(env.KILN_MAX_CONTEXT_ENTRIES);
  return Number.isInteger(n) && n > 0 ? n : DEFAULT_MAX_CONTEXT_ENTRIES;
}

/**
 * A context past one of its limits (expanded bytes or entries). The rest of the body is not read: a
 * gzip bomb's sender would otherwise keep the server reading (and a tar's remainder is just as useless).
 */
export class ContextLimitError extends ApiError {
  constructor(message: string) {
    super(413, message);
  }
}

const tooLarge = (maxBytes: number) =>
  new ContextLimitError(`build context is larger than the limit of ${maxBytes} bytes (expanded; the setting KILN_MAX_CONTEXT_BYTES)`);
const tooManyEntries = (maxEntries: number) =>
  new ContextLimitError(`build context has more than the limit of ${maxEntries} entries (the setting KILN_MAX_CONTEXT_ENTRIES)`);

/** Passes at most `maxBytes` through; the chunk that passes the limit errors the stream instead. */
function limitBytes(maxBytes: number): TransformStream<Uint8Array, Uint8Array> {
  let total = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      total += chunk.byteLength;
      if (total > maxBytes) throw tooLarge(maxBytes);
      controller.enqueue(chunk);
    },
  });
}

/** Yields the first chunk's bytes without losing them. */
async function sniff(stream: ReadableStream<Uint8Array>, n: number): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const br = new ByteReader(stream);
  const head = await br.peek(n);
  const out = new ReadableStream<Uint8Array>({
    async pull(c) {
      const chunk = await br.readExact(Math.min(65536, Math.max(1, (await br.peek(65536)).byteLength)));
      if (!chunk || chunk.byteLength === 0) c.close();
      else c.enqueue(chunk);
    },
    cancel: (r) => br.cancel(r),
  });
  return { head, stream: out };
}

async function readSmall(stream: ReadableStream<Uint8Array>, limit: number, what: string): Promise<Uint8Array> {
  const r = new ByteReader(stream);
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const chunk = await r.readExact(Math.min(65536, Math.max(1, (await r.peek(65536)).byteLength)));
    if (!chunk || !chunk.byteLength) break;
    n += chunk.byteLength;
    if (n > limit) {
      await r.cancel();
      throw bad(`${what} is larger than ${limit} bytes`);
    }
    parts.push(chunk);
  }
  return concatBytes(parts);
}

interface TarIngest {
  files: Map<string, ContextFile>;
  dockerfileBytes?: Uint8Array;
  dockerignoreText?: string;
}

/**
 * Reads a (possibly gzipped) context tar once: validates every path, hashes each file, appends the
 * contents of files that survive .dockerignore to the pack, and builds the index.
 */
async function ingestTar(
  body: ReadableStream<Uint8Array>,
  pack: ContextPackWriter,
  dockerfilePath: string,
  limits: Limits,
): Promise<TarIngest> {
  const { head, stream } = await sniff(body, 2);
  if (head.byteLength === 0) return { files: new Map() };
  const gzip = head[0] === 0x1f && head[1] === 0x8b;
  const raw = gzip ? gunzipPaced(stream, GZIP_PIECE) : stream;
  // the expanded size is checked as it streams: a bomb is refused after at most its limit of bytes
  const tarStream = raw.pipeThrough(limitBytes(limits.maxBytes)).pipeThrough(yieldEvery(4 * 1024 * 1024));
  const br = new ByteReader(tarStream);
  try {
    return await ingestEntries(readTar(br), () => br.total, pack, dockerfilePath, limits);
  } catch (err) {
    // Read what the client still sends (bounded) so the refusal reaches it as a response, not a reset;
    // past a limit the rest is not worth reading (and decompressing it is what a bomb wants).
    if (!(err instanceof ContextLimitError)) await br.drain(DRAIN_ON_REFUSAL).catch(() => {});
    throw err;
  } finally {
    await br.cancel().catch(() => {});
  }
}

/** ingestTar for entries already read; their size counts as the tar they would make (headers, padded bodies). */
async function ingestContextEntries(source: ContextEntries, pack: ContextPackWriter, dockerfilePath: string, limits: Limits): Promise<TarIngest> {
  let total = 0;
  async function* counted(): AsyncGenerator<TarEntry> {
    for await (const e of contextEntries(source.entries)) {
      total += BLOCK + roundUp(e.type === "file" ? e.size : 0);
      // refused before the entry's body is read (its size is known from the header)
      if (total > limits.maxBytes) throw tooLarge(limits.maxBytes);
      yield e;
    }
  }
  return ingestEntries(counted(), () => total, pack, dockerfilePath, limits);
}

interface Limits {
  maxBytes: number;
  maxEntries: number;
}

/** Validates, hashes and packs a context's entries; `consumed` is how many tar bytes were read so far. */
async function ingestEntries(
  entries: AsyncIterable<TarEntry>,
  consumed: () => number,
  pack: ContextPackWriter,
  dockerfilePath: string,
  limits: Limits,
): Promise<TarIngest> {
  const { maxBytes, maxEntries } = limits;
  const files = new Map<string, ContextFile>();
  let ignore: DockerIgnore | undefined;
  const result: TarIngest = { files };
  let count = 0;
  try {
    for await (const e of entries) {
      if (consumed() > maxBytes) throw tooLarge(maxBytes);
      if (++count > maxEntries) throw tooManyEntries(maxEntries);
      const path = normalizeContextPath(e.path);
      if (e.type === "char" || e.type === "block" || e.type === "fifo") {
        throw bad(`build context contains a ${e.type === "fifo" ? "fifo" : "device node"}: ${e.path}`);
      }
      if (e.type === "other") continue; // unknown entry kinds (e.g. sparse headers we do not model) are dropped
      if (path === "") continue; // the root "./" itself
      if (e.type === "dir") {
        files.set(path, { path, type: "dir", mode: e.mode, uid: e.uid, gid: e.gid, size: 0 });
        continue;
      }
      if (e.type === "symlink") {
        files.set(path, { path, type: "symlink", mode: e.mode || 0o777, uid: e.uid, gid: e.gid, size: 0, linkTarget: e.linkname });
        continue;
      }
      if (e.type === "hardlink") {
        const target = files.get(normalizeContextPath(e.linkname));
        if (!target || target.type !== "file") throw bad(`hard link ${e.path} points at a missing file ${e.linkname}`);
        files.set(path, { ...target, path, mode: e.mode || target.mode });
        if (path === dockerfilePath) result.dockerfileBytes = undefined; // read from the pack later
        continue;
      }
      // regular file
      const isDockerfile = path === dockerfilePath;
      const isIgnoreFile = path === ".dockerignore";
      const capture: Uint8Array[] | undefined = isDockerfile || isIgnoreFile ? [] : undefined;
      const capLimit = isDockerfile ? MAX_DOCKERFILE_BYTES : 1024 * 1024;
      if (capture && e.size > capLimit) {
        throw bad(isDockerfile ? `Dockerfile ${path} is larger than 1 MiB` : `.dockerignore is larger than 1 MiB`);
      }
      const keep = !ignore || !ignore.matches(path);
      const h = entryHasher(e.size);
      const offset = pack.size;
      await e.body(async (chunk) => {
        h.update(chunk);
        capture?.push(chunk);
        if (keep) await pack.write(chunk);
      });
      const sha256 = await h.digest();
      if (consumed() > maxBytes) throw tooLarge(maxBytes);
      if (keep) files.set(path, { path, type: "file", mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, sha256, offset });
      else files.delete(path);
      if (capture) {
        const bytes = concatBytes(capture);
        if (isDockerfile) result.dockerfileBytes = bytes;
        if (isIgnoreFile) {
          result.dockerignoreText = new TextDecoder().decode(bytes);
          ignore = new DockerIgnore(result.dockerignoreText);
        }
      }
    }
  } catch (err) {
    if (err instanceof UnsafePathError) throw bad(err.message);
    if (err instanceof TarFormatError) throw bad(`build context is not a valid tar archive: ${err.message}`);
    if (err instanceof ApiError) throw err;
    if (err instanceof TypeError && /gzip|decompress|header/i.test(String(err.message))) throw bad(`build context is not a valid gzip stream: ${err.message}`);
    if (err instanceof Error && /unexpected end of stream/.test(err.message)) throw bad("build context tar is truncated");
    throw err;
  }
  // .dockerignore applies to every entry, also those seen before it.
  if (result.dockerignoreText !== undefined) {
    const ig = new DockerIgnore(result.dockerignoreText);
    for (const p of [...files.keys()]) if (ig.matches(p)) files.delete(p);
  }
  return result;
}

/** Adds the parent directories a tar left implicit (docker creates them 0755 root:root). */
function addImplicitDirs(files: Map<string, ContextFile>): void {
  for (const p of [...files.keys()]) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      if (!files.has(dir)) files.set(dir, { path: dir, type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0 });
    }
  }
}

/**
 * Takes a build context request body (tar, tar.gz, or multipart/form-data with `context`,
 * `dockerfile` and `secrets` parts) or entries already read, validates it, and stores it once by digest with its index.
 * Throws ApiError 400 with a clear message on refusal and leaves nothing behind.
 */
export async function ingestContext(env: Env, context: ReadableStream<Uint8Array> | ContextEntries | null, opts: IngestOptions): Promise<IngestedContext> {
  let dockerfilePath: string;
  try {
    dockerfilePath = normalizeContextPath(opts.dockerfilePath || "Dockerfile");
  } catch (e) {
    throw bad(`invalid dockerfile path: ${(e as Error).message}`);
  }
  const limits: Limits = { maxBytes: opts.maxBytes ?? maxContextBytes(env), maxEntries: opts.maxEntries ?? maxContextEntries(env) };
  const pack = new ContextPackWriter(env);
  const packHash = workerHasher();
  const hashingPack = {
    get size() {
      return pack.size;
    },
    async write(chunk: Uint8Array) {
      packHash.update(chunk);
      await pack.write(chunk);
    },
  } as ContextPackWriter;

  // The request body stays owned here so that a refusal can still read what the client sends.
  const entries = context && "entries" in context ? context : null;
  const source = context && !entries ? new ByteReader(context as ReadableStream<Uint8Array>) : null;
  const body = source ? source.asStream() : null;
  let tar: TarIngest = { files: new Map() };
  let dockerfileText = opts.dockerfileText;
  let secrets: Record<string, string> = {};
  let stored: StoredContext | undefined;
  try {
    const ct = (opts.contentType || "").toLowerCase();
    if (entries) {
      tar = await ingestContextEntries(entries, hashingPack, dockerfilePath, limits);
    } else if (ct.startsWith("multipart/form-data")) {
      const boundary = boundaryOf(opts.contentType);
      if (!boundary) throw bad("multipart/form-data without a boundary");
      if (!body) throw bad("empty request body");
      let sawContext = false;
      try {
        for await (const part of readMultipart(body, boundary)) {
          if (part.name === "context") {
            if (sawContext) throw bad("more than one context part");
            sawContext = true;
            tar = await ingestTar(part.body, hashingPack, dockerfilePath, limits);
          } else if (part.name === "dockerfile") {
            const bytes = await readSmall(part.body, MAX_DOCKERFILE_BYTES, "Dockerfile");
            dockerfileText = new TextDecoder().decode(bytes);
          } else if (part.name === "secrets") {
            const bytes = await readSmall(part.body, 1024 * 1024, "secrets");
            try {
              secrets = JSON.parse(new TextDecoder().decode(bytes));
            } catch {
              throw bad("secrets part is not JSON");
            }
          } else {
            await part.body.cancel().catch(() => {});
          }
        }
      } catch (e) {
        if (e instanceof MultipartError) throw bad(`invalid multipart body: ${e.message}`);
        throw e;
      }
      await source?.drain(1024 * 1024); // the epilogue after the closing boundary
    } else if (body) {
      tar = await ingestTar(body, hashingPack, dockerfilePath, limits);
    }

    addImplicitDirs(tar.files);
    const files = [...tar.files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const packDigest = await packHash.digest();
    // Dockerfile: given explicitly, or from the context (following symlinks inside it).
    if (dockerfileText === undefined && tar.dockerfileBytes) dockerfileText = new TextDecoder().decode(tar.dockerfileBytes);
    let needFromPack: ContextFile | undefined;
    if (dockerfileText === undefined) {
      const byPath = tar.files;
      const resolved = resolveInRoot({ linkTarget: (p) => (byPath.get(p)?.type === "symlink" ? byPath.get(p)!.linkTarget : undefined) }, dockerfilePath);
      const f = byPath.get(resolved);
      if (!f || f.type !== "file") throw bad(`Dockerfile not found in the build context: ${dockerfilePath}`);
      if (f.size > MAX_DOCKERFILE_BYTES) throw bad(`Dockerfile ${dockerfilePath} is larger than 1 MiB`);
      needFromPack = f;
    }
    if (dockerfileText !== undefined && new TextEncoder().encode(dockerfileText).byteLength > MAX_DOCKERFILE_BYTES) {
      throw bad(`Dockerfile ${dockerfilePath} is larger than 1 MiB`);
    }
    const index: ContextIndex = { version: 1, pack: packDigest, packSize: pack.size, files };
    const indexBytes = new TextEncoder().encode(JSON.stringify(index));
    const ih = workerHasher();
    ih.update(indexBytes);
    const indexDigest = await ih.digest();
    const { created } = await pack.finish(packDigest);
    stored = { packDigest, indexDigest, createdPack: created, createdIndex: false };
    stored.createdIndex = (await putContextIndex(env, packDigest, indexDigest, indexBytes)).created;
    if (needFromPack) {
      const s = await readContextRange(env, packDigest, needFromPack.offset!, needFromPack.size);
      dockerfileText = new TextDecoder().decode(await readSmall(s, MAX_DOCKERFILE_BYTES, "Dockerfile"));
    }
    const done = stored;
    // What the client sent after the archive's end (tar's record padding, gzip's trailer, a multipart
    // epilogue) is read too, up to a bound: a request answered with its body unread closes the
    // connection, and the client's next request on it fails ("other side closed").
    await source?.drain(TRAILING_DRAIN).catch(() => {});
    return {
      packDigest,
      indexDigest,
      index,
      dockerfile: dockerfileText!,
      dockerfilePath,
      secrets,
      discard: () => discardStored(env, done),
    };
  } catch (e) {
    await pack.abort();
    if (stored) await discardStored(env, stored);
    if (e instanceof ContextLimitError) await source?.cancel().catch(() => {});
    else await source?.drain(DRAIN_ON_REFUSAL).catch(() => {});
    throw e;
  }
}

/** What an ingest stored, and which of it this request created (only that may be removed again). */
interface StoredContext {
  packDigest: string;
  indexDigest: string;
  createdPack: boolean;
  createdIndex: boolean;
}

/**
 * Removes what this request stored, never what it found: a context (pack or index) already stored
 * may belong to another build, another tenant's included, and must outlive this refusal.
 */
async function discardStored(env: Env, s: StoredContext): Promise<void> {
  if (s.createdPack) await deleteContext(env, s.packDigest, s.createdIndex ? s.indexDigest : undefined);
  else if (s.createdIndex) await deleteContextIndex(env, s.packDigest, s.indexDigest);
}
