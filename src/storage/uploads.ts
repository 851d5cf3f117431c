/**
 * Blob upload sessions. State lives only in D1 (`uploads`, `upload_chunks`) and R2 (one object
 * `blobs/objects/<uuid>` per PATCH), never in Worker memory, so a session survives a restart and
 * chunks may have any size. Each chunk is written once, where it stays: on completion the chunks are
 * verified against the digest and become the blob's segments (a one-chunk push: its object), never
 * copied. A first chunk is hashed while it is written, so the usual one-PATCH push is read no more.
 */
import type { Env } from "../env";
import { StorageError } from "./errors";
import { adoptBlobObjects, linkBlob, putBlobVerified, putBlobVerifiedSized, requireDigest, withBlobPin } from "./blobs";
import { Meter, SINGLE_PUT_MAX, concatObjects, hashStream, putFixed, spool } from "./streams";
import { algorithmOf, hexOf, webAlgorithm } from "../oci/digest";
import { cappedToRoom, fitsQuotaSql, quotaRefusal, RESERVATION_TTL_MS, type Quota, type Reservation } from "./usage";

export interface UploadSession {
  id: string;
  repo: string;
  /** Bytes received so far. */
  size: number;
  /** Staged chunks so far. */
  chunks: number;
  /** sha256 hex of the bytes so far, when they are one chunk hashed while it was written. */
  sha256?: string | null;
}

const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function createUpload(env: Env, repo: string): Promise<UploadSession> {
  const id = crypto.randomUUID();
  const now = Date.now();
  await env.DB.prepare("INSERT INTO uploads (id, repo, size, chunks, created_at, updated_at) VALUES (?, ?, 0, 0, ?, ?)")
    .bind(id, repo, now, now).run();
  return { id, repo, size: 0, chunks: 0 };
}

/** The session `id` of `repo`, or null (unknown id, other repository, finished or cancelled). */
export async function getUpload(env: Env, repo: string, id: string): Promise<UploadSession | null> {
  if (!ID_RE.test(id)) return null;
  const row = await env.DB.prepare("SELECT id, repo, size, chunks, sha256 FROM uploads WHERE id = ? AND repo = ?")
    .bind(id, repo).first<UploadSession>();
  return row ?? null;
}

/**
 * Writes a chunk to `key`; returns its length and, with `hash`, its sha256 hex from the same pass.
 * `length` known → one fixed-length put; unknown → written in parts.
 */
async function stage(bucket: R2Bucket, key: string, body: ReadableStream<Uint8Array>, length: number | undefined, hash: boolean): Promise<{ size: number; sha256?: string }> {
  if (length !== undefined && length <= SINGLE_PUT_MAX) {
    // Hashed on its way into the put (a tee of a request body is not reliable in every runtime path).
    const meter = hash ? new Meter("SHA-256") : null;
    const toStore = meter ? body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      async transform(chunk, controller) {
        await meter.update(chunk);
        controller.enqueue(chunk);
      },
    })) : body;
    try {
      await putFixed(bucket, key, toStore, length);
    } catch {
      await bucket.delete(key).catch(() => {});
      throw new StorageError("SIZE_INVALID", `chunk is not ${length} bytes as announced`, { detail: { expected: length } });
    }
    if (!meter) return { size: length };
    await meter.finish();
    return { size: length, sha256: await meter.hex() };
  }
  const meter = new Meter(hash ? "SHA-256" : undefined);
  const r = await spool(bucket, body, key, meter);
  if (length !== undefined && meter.size !== length) {
    await r.upload?.abort().catch(() => {});
    throw new StorageError("SIZE_INVALID", `chunk is not ${length} bytes as announced`, { detail: { expected: length, received: meter.size } });
  }
  if (r.small) {
    if (r.small.byteLength > 0) await bucket.put(key, r.small);
  } else {
    await r.upload!.complete(r.parts);
  }
  return { size: meter.size, sha256: hash ? await meter.hex() : undefined };
}

function rangeError(session: UploadSession, message: string): StorageError {
  return new StorageError("RANGE_INVALID", message, { upload: { repo: session.repo, id: session.id, size: session.size } });
}

/**
 * Where a chunk starts, its announced length, and the quota of the session's namespace (null: none).
 * With a quota, the chunk is kept only if the namespace can take it (else StorageError DENIED, the
 * chunk's bytes deleted, the session as it was); `reservation` (made by reserveQuota for the
 * announced length before the body was read) becomes the session's staged bytes when it is kept.
 */
export interface AppendOptions { start?: number; length?: number; quota?: Quota | null; reservation?: Reservation | null }

/**
 * Appends a chunk. `start` (from Content-Range) must equal the bytes received so far, else
 * RANGE_INVALID (416). `length` is the announced length when known; a streamed body of unknown
 * length is fine. Concurrent appends to one session are serialised by (upload_id, n). The session's
 * staged bytes count against its namespace's quota (see AppendOptions) until it ends.
 */
export async function appendUpload(
  env: Env,
  session: UploadSession,
  body: ReadableStream<Uint8Array> | null,
  opts: AppendOptions = {},
): Promise<UploadSession> {
  if (opts.start !== undefined && opts.start !== session.size) {
    body?.cancel().catch(() => {});
    throw rangeError(session, `chunk starts at ${opts.start}, but ${session.size} bytes were received so far`);
  }
  if (!body || opts.length === 0) return session;
  const n = session.chunks;
  const key = `blobs/objects/${crypto.randomUUID()}`;
  const quota = opts.quota;
  // A chunk of unknown length is cut off once it passes the room the namespace has now: it would be
  // refused when recorded anyway, and its bytes should not reach R2 meanwhile.
  if (quota && opts.length === undefined) body = await cappedToRoom(env, session.repo, body);
  const { size, sha256 } = await stage(env.BUCKET, key, body, opts.length, n === 0);
  if (size === 0) {
    await env.BUCKET.delete(key);
    return session;
  }
  // The session grows only if it still has `n` chunks and, in a namespace with a quota, only if the
  // namespace can take the chunk (one statement: concurrent sessions never share the same room); the
  // chunk's reservation, if the caller made one, is transferred to the staged bytes in the same batch.
  const fits = quota ? ` AND ${fitsQuotaSql({ ns: "?6", now: "?7", except: "?8" }, "?1")}` : "";
  const now = Date.now();
  let updated = 0;
  try {
    const [upd] = await env.DB.batch([
      env.DB.prepare(`UPDATE uploads SET chunks = chunks + 1, size = size + ?1, updated_at = ?2, sha256 = ?5 WHERE id = ?3 AND chunks = ?4${fits}`)
        .bind(size, now, session.id, n, n === 0 ? sha256 ?? null : null, ...(quota ? [quota.namespace, now, opts.reservation?.id ?? ""] : [])),
      env.DB.prepare(
        `INSERT INTO upload_chunks (upload_id, n, key, size) SELECT ?1, ?2, ?3, ?4
         WHERE EXISTS (SELECT 1 FROM uploads WHERE id = ?1 AND chunks = ?2 + 1) AND NOT EXISTS (SELECT 1 FROM upload_chunks WHERE upload_id = ?1 AND n = ?2)`,
      ).bind(session.id, n, key, size),
      ...(opts.reservation ? [env.DB.prepare("DELETE FROM quota_reservations WHERE id = ?").bind(opts.reservation.id)] : []),
    ]);
    updated = upd.meta.changes ?? 0;
  } catch {
    updated = 0;
  }
  if (!updated) {
    await env.BUCKET.delete(key);
    const current = await getUpload(env, session.repo, session.id);
    if (!current) throw new StorageError("BLOB_UPLOAD_UNKNOWN", "upload unknown (finished or cancelled meanwhile)");
    if (quota && current.chunks === n) throw await quotaRefusal(env, quota.namespace, size);
    throw rangeError(current, "another chunk was appended to this upload concurrently");
  }
  return { ...session, size: session.size + size, chunks: n + 1, sha256: n === 0 ? sha256 ?? null : null };
}

async function chunkRows(env: Env, id: string): Promise<{ key: string; size: number }[]> {
  const { results } = await env.DB.prepare("SELECT key, size FROM upload_chunks WHERE upload_id = ? ORDER BY n").bind(id).all<{ key: string; size: number }>();
  return results;
}

async function chunkKeys(env: Env, id: string): Promise<string[]> {
  return (await chunkRows(env, id)).map((r) => r.key);
}

async function dropSession(env: Env, id: string, keys: string[]): Promise<void> {
  await env.DB.batch([
    env.DB.prepare("DELETE FROM uploads WHERE id = ?").bind(id),
    env.DB.prepare("DELETE FROM upload_chunks WHERE upload_id = ?").bind(id),
    // the room its staged bytes held while it was completed (claimSession with a quota)
    env.DB.prepare("DELETE FROM quota_reservations WHERE id = ?").bind(id),
  ]);
  for (let i = 0; i < keys.length; i += 1000) await env.BUCKET.delete(keys.slice(i, i + 1000));
}

/**
 * Takes the session for one finisher (completion, cancel or purge): its `uploads` row goes in one
 * statement, so of two requests acting on one session (two PUTs, a PUT and a DELETE, the daily
 * purge) only one goes on, and no other can delete chunks this one is adopting as a blob's bytes.
 * The chunk rows stay (the orphan sweep keeps their objects) until the claimant drops them.
 */
async function claimSession(env: Env, id: string, where: { chunks?: number; before?: number } = {}, quota?: Quota | null): Promise<boolean> {
  if (quota) {
    // Its staged bytes keep counting, as a reservation under the session's id, while it becomes a
    // blob (verified, adopted, linked): released by dropSession once the blob counts as stored.
    const [, r] = await env.DB.batch([
      env.DB.prepare(
        `INSERT OR REPLACE INTO quota_reservations (id, namespace, bytes, expires_at) SELECT id, ?4, size, ?5 FROM uploads
         WHERE id = ?1 AND (?2 IS NULL OR chunks = ?2) AND (?3 IS NULL OR updated_at < ?3)`,
      ).bind(id, where.chunks ?? null, where.before ?? null, quota.namespace, Date.now() + RESERVATION_TTL_MS),
      env.DB.prepare("DELETE FROM uploads WHERE id = ?1 AND (?2 IS NULL OR chunks = ?2) AND (?3 IS NULL OR updated_at < ?3)")
        .bind(id, where.chunks ?? null, where.before ?? null),
    ]);
    return (r.meta.changes ?? 0) > 0;
  }
  const r = await env.DB.prepare("DELETE FROM uploads WHERE id = ?1 AND (?2 IS NULL OR chunks = ?2) AND (?3 IS NULL OR updated_at < ?3)")
    .bind(id, where.chunks ?? null, where.before ?? null).run();
  return (r.meta.changes ?? 0) > 0;
}

/**
 * Completes an upload: the optional final chunk is appended, then the staged bytes are verified
 * against `digest` and become the blob where they are (no copy), linked to the repository. On a
 * mismatch nothing is kept (the session is gone too) and DIGEST_INVALID is thrown. With the quota of
 * the session's namespace, the final chunk is appended as AppendOptions say, and the staged bytes
 * keep counting until the blob is linked.
 */
export async function finishUpload(
  env: Env,
  session: UploadSession,
  digest: string,
  finalBody: ReadableStream<Uint8Array> | null,
  finalLength?: number,
  quota: { quota?: Quota | null; reservation?: Reservation | null } = {},
): Promise<{ digest: string; size: number }> {
  const d = requireDigest(digest);
  if (session.chunks === 0) {
    // Nothing staged: the PUT body (or nothing) is verified while it is written to the content address.
    try {
      const empty = new ReadableStream<Uint8Array>({ start: (c) => c.close() });
      const body = finalBody && finalLength !== 0 ? finalBody : empty;
      return await withDroppedSession(env, session.id, putBlobVerified(env, body, digest, body === empty ? 0 : finalLength, session.repo));
    } catch (err) {
      if (err instanceof StorageError && (err.code === "DIGEST_INVALID" || err.code === "SIZE_INVALID")) await dropSession(env, session.id, []);
      throw err;
    }
  }
  if (finalBody) session = await appendUpload(env, session, finalBody, { length: finalLength, ...quota });
  if (!(await claimSession(env, session.id, { chunks: session.chunks }, quota.quota))) {
    if (await getUpload(env, session.repo, session.id)) throw rangeError(session, "another chunk was appended to this upload concurrently");
    throw new StorageError("BLOB_UPLOAD_UNKNOWN", "upload unknown (finished or cancelled meanwhile)");
  }
  const chunks = await chunkRows(env, session.id);
  const size = chunks.reduce((n, c) => n + c.size, 0);
  let adopted = false;
  // From here the session is this request's alone; whatever fails, its chunks go unless adopted.
  if (needsCompaction(chunks)) {
    // Read once, verified by R2 while it is written to the content address as one object.
    const keys = chunks.map((c) => c.key);
    try {
      const staged = concatObjects(env.BUCKET, keys, size);
      const stored = await putBlobVerifiedSized(env, staged.stream, digest, size, session.repo);
      await staged.done;
      return stored;
    } finally {
      await dropSession(env, session.id, keys).catch(() => {});
    }
  }
  return withBlobPin(env, digest, async () => {
    // One chunk hashed while it was written needs no second read; several are read once, in order.
    let hex = chunks.length === 1 && algorithmOf(d) === "sha256" ? session.sha256 ?? null : null;
    if (hex === null) {
      const staged = concatObjects(env.BUCKET, chunks.map((c) => c.key), size);
      hex = await hashStream(staged.stream, webAlgorithm(algorithmOf(d)));
      await staged.done;
    }
    if (hex !== hexOf(d)) {
      await dropSession(env, session.id, chunks.map((c) => c.key));
      throw new StorageError("DIGEST_INVALID", "the uploaded content does not match the digest", {
        detail: { expected: digest, actual: `${algorithmOf(d)}:${hex}` },
      });
    }
    adopted = await adoptBlobObjects(env, digest, size, chunks, session.id);
    await linkBlob(env, session.repo, digest);
    // The adopted objects are the blob's now: only the session's rows go.
    await dropSession(env, session.id, adopted ? [] : chunks.map((c) => c.key));
    return { digest, size };
  }).catch(async (err) => {
    // the session was claimed: its chunk rows go, and its objects unless a blob adopted them
    await dropSession(env, session.id, adopted ? [] : chunks.map((c) => c.key)).catch(() => {});
    throw err;
  });
}

/**
 * Whether a push's chunks are too many, or too small, to stay as the blob's segments: every pull of
 * the digest (anyone's: blobs are shared) reads one R2 object per segment, so a blob pushed first as
 * thousands of tiny PATCHes would make every later pull slow. Such chunks are copied into one object
 * at completion (the only case of a second write).
 */
export function needsCompaction(chunks: { size: number }[]): boolean {
  if (chunks.length <= FEW_SEGMENTS) return false;
  const size = chunks.reduce((n, c) => n + c.size, 0);
  return chunks.length > MAX_SEGMENTS || size / chunks.length < MIN_AVERAGE_SEGMENT;
}

/** Segments kept whatever their size: a pull of the blob reads at most this many small objects. */
const FEW_SEGMENTS = 16;
/** Most segments a pushed blob keeps (a 1 GiB layer in 10 MiB chunks has 103). */
const MAX_SEGMENTS = 256;
/** Smallest average chunk kept as segments when there are more than a few. */
const MIN_AVERAGE_SEGMENT = 1024 * 1024;

/** Awaits the store of a session's only body, then drops the session (it staged nothing). */
async function withDroppedSession<T>(env: Env, id: string, store: Promise<T>): Promise<T> {
  const result = await store;
  await dropSession(env, id, []);
  return result;
}

/** Cancels an upload and deletes its staged chunks. */
export async function cancelUpload(env: Env, session: UploadSession): Promise<void> {
  if (!(await claimSession(env, session.id))) throw new StorageError("BLOB_UPLOAD_UNKNOWN", "upload unknown (finished or cancelled meanwhile)");
  await dropSession(env, session.id, await chunkKeys(env, session.id));
}

/**
 * Deletes upload sessions untouched for `maxAgeMs` (default 7 days) with their staged chunks, and
 * temporary objects left by older versions (tmp/). Meant for a scheduled (cron) handler.
 * Returns how many sessions were purged.
 */
export async function purgeStaleUploads(env: Env, maxAgeMs = 7 * 24 * 3600 * 1000, limit = 100): Promise<number> {
  const cutoff = Date.now() - maxAgeMs;
  const { results } = await env.DB.prepare("SELECT id FROM uploads WHERE updated_at < ? ORDER BY updated_at LIMIT ?")
    .bind(cutoff, limit).all<{ id: string }>();
  for (const { id } of results) {
    // a session being completed right now is its finisher's (claimSession)
    if (await claimSession(env, id, { before: cutoff })) await dropSession(env, id, await chunkKeys(env, id));
  }
  // reservations of writers that died: they stopped counting when they expired
  await env.DB.prepare("DELETE FROM quota_reservations WHERE expires_at < ?").bind(Date.now()).run();
  const tmp = await env.BUCKET.list({ prefix: "tmp/", limit: 1000 });
  const old = tmp.objects.filter((o) => o.uploaded.getTime() < cutoff).map((o) => o.key);
  if (old.length) await env.BUCKET.delete(old);
  return results.length;
}
