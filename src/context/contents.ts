/**
 * Content-addressed context upload (issue 14). The CLI sends a build's file index; the server answers
 * which contents the build's cache scope lacks (`missingContents`); the CLI uploads those in batches
 * (`ingestContents`: a plain tar whose entries are named by the sha256 hex of their contents, each
 * batch stored as one pack of its own); the build then starts from the index (`ingestIndex`), which
 * points into those packs. Contents are looked up by (scope, sha256) only: a namespace never reaches
 * another's bytes by naming their digest, it uploads them itself.
 *
 * A file larger than one request goes in pieces, entries named `<hex>.<start>.<total>`; once the
 * pieces cover the file, their bytes are read back and hashed before the content is recorded.
 */
import type { Env } from "../env";
import { ApiError } from "../errors";
import { ByteReader } from "../oci/bytes";
import { CONTEXT_INDEX_TYPE, type ContextIndexUpload } from "../protocol/contexts";
import {
  ContextPackWriter, deleteContextIndex, dropPieces, findContents, putContextIndex, readContextRange, recordContents, recordPiece, touchContents,
  type ContentPart,
} from "../storage/contexts";
import { entryHasher, workerHasher } from "./hasher";
import { normalizeContextPath, UnsafePathError } from "./paths";
import { readTar, TarFormatError } from "./tar-reader";
import { maxContextBytes, maxContextEntries, MAX_DOCKERFILE_BYTES, type ContextFile, type ContextIndex, type IngestedContext } from "./ingest";

export { CONTEXT_INDEX_TYPE, type ContextIndexUpload };

const bad = (message: string) => new ApiError(400, message);
const HEX = /^[0-9a-f]{64}$/;
/** The digest of no bytes: the "pack" of an index whose files all point into packs of their own. */
export const EMPTY_PACK = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** Which of `digests` the scope has not uploaded yet. */
export async function missingContents(env: Env, scope: string, digests: unknown): Promise<string[]> {
  if (!Array.isArray(digests) || !digests.every((d) => typeof d === "string" && d.startsWith("sha256:") && HEX.test(d.slice(7)))) {
    throw bad("expected {digests: [\"sha256:<hex>\", …]}");
  }
  if (digests.length > maxContextEntries(env)) throw new ApiError(413, `more than ${maxContextEntries(env)} digests (the setting KILN_MAX_CONTEXT_ENTRIES)`);
  const found = await findContents(env, scope, digests as string[]);
  return [...new Set(digests as string[])].filter((d) => !found.has(d));
}

/**
 * Stores one batch of contents (a plain tar of entries named `<hex>` or `<hex>.<start>.<total>`) as a
 * pack of its own and records each verified content for `scope`. An entry whose bytes do not hash to
 * its name is refused (400) and nothing of the batch is recorded.
 */
export async function ingestContents(env: Env, scope: string, body: ReadableStream<Uint8Array> | null): Promise<{ stored: number; bytes: number; pack?: string }> {
  if (!body) throw bad("empty body: expected a tar of contents named by their sha256");
  const pack = new ContextPackWriter(env);
  const packHash = workerHasher();
  const br = new ByteReader(body);
  const whole: { sha256: string; size: number; offset: number }[] = [];
  const pieces: { sha256: string; start: number; total: number; offset: number; size: number }[] = [];
  const max = maxContextBytes(env);
  try {
    for await (const e of readTar(br)) {
      if (e.type === "dir") continue;
      if (e.type !== "file") throw bad(`contents batch: entry ${e.path} is not a regular file`);
      const m = /^([0-9a-f]{64})(?:\.(\d+)\.(\d+))?$/.exec(e.path.replace(/^\.\//, ""));
      if (!m) throw bad(`contents batch: entry ${e.path} is not named <sha256 hex> or <hex>.<start>.<total>`);
      if (pack.size + e.size > max) throw new ApiError(413, `contents batch larger than ${max} bytes (KILN_MAX_CONTEXT_BYTES)`);
      const offset = pack.size;
      const h = entryHasher(e.size);
      await e.body(async (chunk) => {
        h.update(chunk);
        packHash.update(chunk);
        await pack.write(chunk);
      });
      const sha256 = `sha256:${m[1]}`;
      if (m[2] === undefined) {
        const got = await h.digest();
        if (got !== sha256) throw bad(`contents batch: the bytes of ${e.path} hash to ${got}, not to their name`);
        whole.push({ sha256, size: e.size, offset });
      } else {
        const start = Number(m[2]);
        const total = Number(m[3]);
        if (start + e.size > total) throw bad(`contents batch: piece ${e.path} ends past the file's ${total} bytes`);
        pieces.push({ sha256, start, total, offset, size: e.size });
      }
    }
  } catch (err) {
    await pack.abort();
    await br.cancel().catch(() => {});
    if (err instanceof UnsafePathError || err instanceof TarFormatError) throw bad(`contents batch is not a valid tar: ${err.message}`);
    throw err;
  }
  if (pack.size === 0 && whole.length === 0 && pieces.length === 0) {
    await pack.abort();
    return { stored: 0, bytes: 0 };
  }
  const packDigest = await packHash.digest();
  await pack.finish(packDigest);
  // the pack stays even when a piece below is refused: the whole files recorded before point into it
  await recordContents(env, scope, whole.map((w) => ({ sha256: w.sha256, size: w.size, parts: [{ pack: packDigest, offset: w.offset, size: w.size }] })));
  for (const p of pieces) {
    const got = await recordPiece(env, scope, p.sha256, p.start, { pack: packDigest, offset: p.offset, size: p.size });
    await assembleIfComplete(env, scope, p.sha256, p.total, got);
  }
  return { stored: whole.length + pieces.length, bytes: pack.size, pack: packDigest };
}

/** When the pieces of a file cover it end to end, hashes them (read back) and records the content. */
async function assembleIfComplete(env: Env, scope: string, sha256: string, total: number, pieces: (ContentPart & { start: number })[]): Promise<void> {
  let at = 0;
  const parts: ContentPart[] = [];
  for (const p of pieces) {
    if (p.start !== at) return; // a gap: more pieces to come
    parts.push({ pack: p.pack, offset: p.offset, size: p.size });
    at += p.size;
  }
  if (at !== total) return;
  const h = workerHasher();
  for (const p of parts) {
    const r = (await readContextRange(env, p.pack, p.offset, p.size)).getReader();
    for (;;) {
      const { done, value } = await r.read();
      if (done) break;
      h.update(value);
    }
  }
  const got = await h.digest();
  await dropPieces(env, scope, sha256);
  if (got !== sha256) throw bad(`contents batch: the pieces of ${sha256} hash to ${got}`);
  await recordContents(env, scope, [{ sha256, size: total, parts }]);
}

/**
 * A build context from its file index: every file's contents must have been uploaded in `scope`
 * (else 400 naming how many are missing). Returns what ingestContext returns for a tar.
 */
export async function ingestIndex(env: Env, scope: string, upload: ContextIndexUpload, dockerfilePathIn?: string): Promise<IngestedContext> {
  if (!upload || !Array.isArray(upload.files) || typeof upload.dockerfile !== "string") throw bad("a context index needs {files: [...], dockerfile: \"...\"}");
  if (new TextEncoder().encode(upload.dockerfile).byteLength > MAX_DOCKERFILE_BYTES) throw bad("Dockerfile is larger than 1 MiB");
  if (upload.files.length > maxContextEntries(env)) throw new ApiError(413, `build context has more than the limit of ${maxContextEntries(env)} entries (the setting KILN_MAX_CONTEXT_ENTRIES)`);
  let dockerfilePath: string;
  try {
    dockerfilePath = normalizeContextPath(dockerfilePathIn || "Dockerfile");
  } catch (e) {
    throw bad(`invalid dockerfile path: ${(e as Error).message}`);
  }
  const byPath = new Map<string, ContextFile>();
  let total = 0;
  for (const f of upload.files) {
    let path: string;
    try {
      path = normalizeContextPath(String(f.path));
    } catch (e) {
      throw bad(`context index: ${(e as Error).message}`);
    }
    if (path === "") continue;
    const mode = Number(f.mode) & 0o7777;
    const uid = Number(f.uid ?? 0);
    const gid = Number(f.gid ?? 0);
    if (![mode, uid, gid].every((n) => Number.isInteger(n) && n >= 0)) throw bad(`context index: ${path}: bad mode, uid or gid`);
    if (f.type === "dir") byPath.set(path, { path, type: "dir", mode, uid, gid, size: 0 });
    else if (f.type === "symlink") {
      if (typeof f.linkTarget !== "string" || !f.linkTarget) throw bad(`context index: symlink ${path} without a target`);
      byPath.set(path, { path, type: "symlink", mode: mode || 0o777, uid, gid, size: 0, linkTarget: f.linkTarget });
    } else if (f.type === "file") {
      const size = Number(f.size);
      if (!Number.isSafeInteger(size) || size < 0) throw bad(`context index: ${path}: bad size`);
      if (typeof f.sha256 !== "string" || !f.sha256.startsWith("sha256:") || !HEX.test(f.sha256.slice(7))) throw bad(`context index: ${path}: bad sha256`);
      total += size;
      byPath.set(path, { path, type: "file", mode, uid, gid, size, sha256: f.sha256 });
    } else throw bad(`context index: ${path}: type must be file, dir or symlink`);
  }
  if (total > maxContextBytes(env)) throw new ApiError(413, `build context is larger than the limit of ${maxContextBytes(env)} bytes (the setting KILN_MAX_CONTEXT_BYTES)`);
  // parent directories a walk left implicit
  for (const p of [...byPath.keys()]) {
    const segs = p.split("/");
    for (let i = 1; i < segs.length; i++) {
      const dir = segs.slice(0, i).join("/");
      if (!byPath.has(dir)) byPath.set(dir, { path: dir, type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0 });
    }
  }
  const digests = [...byPath.values()].flatMap((f) => (f.type === "file" && f.size > 0 ? [f.sha256!] : []));
  const found = await findContents(env, scope, digests);
  const missing = [...new Set(digests.filter((d) => !found.has(d)))];
  if (missing.length) {
    throw new ApiError(400, `${missing.length} file content${missing.length === 1 ? " was" : "s were"} not uploaded to this build's scope (${scope}); upload them first (POST /v1/contexts/contents), as kiln build does`, { missing: missing.slice(0, 100) });
  }
  for (const f of byPath.values()) {
    if (f.type !== "file" || f.size === 0) continue;
    const parts = found.get(f.sha256!)!;
    if (parts.reduce((n, p) => n + p.size, 0) !== f.size) throw bad(`context index: ${f.path} has size ${f.size}, but its content ${f.sha256} has another`);
    if (parts.length === 1) {
      f.pack = parts[0].pack;
      f.offset = parts[0].offset;
    } else {
      f.parts = parts;
      f.offset = 0;
    }
  }
  await touchContents(env, scope, digests);
  const files = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const index: ContextIndex = { version: 1, pack: EMPTY_PACK, packSize: 0, files };
  const indexBytes = new TextEncoder().encode(JSON.stringify(index));
  const ih = workerHasher();
  ih.update(indexBytes);
  const indexDigest = await ih.digest();
  const { created } = await putContextIndex(env, EMPTY_PACK, indexDigest, indexBytes);
  return {
    packDigest: EMPTY_PACK,
    indexDigest,
    index,
    dockerfile: upload.dockerfile,
    dockerfilePath,
    secrets: upload.secrets && typeof upload.secrets === "object" ? upload.secrets : {},
    // the contents stay (other builds of the scope share them); only an index this call wrote goes
    discard: async () => {
      if (created) await deleteContextIndex(env, EMPTY_PACK, indexDigest);
    },
  };
}
