/**
 * Blob upload sessions. State lives only in D1 (`uploads`, `upload_chunks`) and R2 (one staged
 * object `uploads/<id>/<n>-<rand>` per PATCH), never in Worker memory, so a session survives a
 * restart and chunks may have any size: each chunk is its own object, concatenated on completion.
 */
import type { Env } from "../env";
import { StorageError } from "./errors";
import { putBlobVerified, putBlobVerifiedSized, requireDigest } from "./blobs";
import { Meter, SINGLE_PUT_MAX, concatObjects, putFixed, spool } from "./streams";

export interface UploadSession {
  id: string;
  repo: string;
  /** Bytes received so far. */
  size: number;
  /** Staged chunks so far. */
  chunks: number;
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
  const row = await env.DB.prepare("SELECT id, repo, size, chunks FROM uploads WHERE id = ? AND repo = ?")
    .bind(id, repo).first<UploadSession>();
  return row ?? null;
}

/** Writes a chunk to `key`; returns its length. `length` known → one fixed-length put; unknown → spooled in parts. */
async function stage(bucket: R2Bucket, key: string, body: ReadableStream<Uint8Array>, length: number | undefined): Promise<number> {
  if (length !== undefined && length <= SINGLE_PUT_MAX) {
    try {
      await putFixed(bucket, key, body, length);
    } catch {
      await bucket.delete(key).catch(() => {});
      throw new StorageError("SIZE_INVALID", `chunk is not ${length} bytes as announced`, { detail: { expected: length } });
    }
    return length;
  }
  const meter = new Meter();
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
  return meter.size;
}

function rangeError(session: UploadSession, message: string): StorageError {
  return new StorageError("RANGE_INVALID", message, { upload: { repo: session.repo, id: session.id, size: session.size } });
}

/**
 * Appends a chunk. `start` (from Content-Range) must equal the bytes received so far, else
 * RANGE_INVALID (416). `length` is the announced length when known; a streamed body of unknown
 * length is fine. Concurrent appends to one session are serialised by (upload_id, n).
 */
export async function appendUpload(
  env: Env,
  session: UploadSession,
  body: ReadableStream<Uint8Array> | null,
  opts: { start?: number; length?: number } = {},
): Promise<UploadSession> {
  if (opts.start !== undefined && opts.start !== session.size) {
    body?.cancel().catch(() => {});
    throw rangeError(session, `chunk starts at ${opts.start}, but ${session.size} bytes were received so far`);
  }
  if (!body || opts.length === 0) return session;
  const n = session.chunks;
  const key = `uploads/${session.id}/${n}-${crypto.randomUUID().slice(0, 8)}`;
  const size = await stage(env.BUCKET, key, body, opts.length);
  if (size === 0) return session;
  let updated = 0;
  try {
    const [, upd] = await env.DB.batch([
      env.DB.prepare(
        "INSERT INTO upload_chunks (upload_id, n, key, size) SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM uploads WHERE id = ?1 AND chunks = ?2)",
      ).bind(session.id, n, key, size),
      env.DB.prepare("UPDATE uploads SET chunks = chunks + 1, size = size + ?1, updated_at = ?2 WHERE id = ?3 AND chunks = ?4")
        .bind(size, Date.now(), session.id, n),
    ]);
    updated = upd.meta.changes ?? 0;
  } catch {
    updated = 0;
  }
  if (!updated) {
    await env.BUCKET.delete(key);
    const now = await getUpload(env, session.repo, session.id);
    if (!now) throw new StorageError("BLOB_UPLOAD_UNKNOWN", "upload unknown (finished or cancelled meanwhile)");
    throw rangeError(now, "another chunk was appended to this upload concurrently");
  }
  return { ...session, size: session.size + size, chunks: n + 1 };
}

async function chunkKeys(env: Env, id: string): Promise<string[]> {
  const { results } = await env.DB.prepare("SELECT key FROM upload_chunks WHERE upload_id = ? ORDER BY n").bind(id).all<{ key: string }>();
  return results.map((r) => r.key);
}

async function dropSession(env: Env, id: string, keys: string[]): Promise<void> {
  await env.DB.batch([
    env.DB.prepare("DELETE FROM uploads WHERE id = ?").bind(id),
    env.DB.prepare("DELETE FROM upload_chunks WHERE upload_id = ?").bind(id),
  ]);
  for (let i = 0; i < keys.length; i += 1000) await env.BUCKET.delete(keys.slice(i, i + 1000));
}

/**
 * Completes an upload: the optional final chunk is appended, then the staged bytes are verified
 * against `digest` while being written to the blob's content address, and the blob is linked to the
 * repository. On a mismatch nothing is kept (the session is gone too) and DIGEST_INVALID is thrown.
 */
export async function finishUpload(
  env: Env,
  session: UploadSession,
  digest: string,
  finalBody: ReadableStream<Uint8Array> | null,
  finalLength?: number,
): Promise<{ digest: string; size: number }> {
  requireDigest(digest);
  let result: { digest: string; size: number };
  if (session.chunks === 0 && finalBody && finalLength !== 0) {
    // Nothing staged: verify and store the PUT body directly.
    try {
      result = await putBlobVerified(env, finalBody, digest, finalLength, session.repo);
    } catch (err) {
      if (err instanceof StorageError && (err.code === "DIGEST_INVALID" || err.code === "SIZE_INVALID")) await dropSession(env, session.id, []);
      throw err;
    }
  } else {
    if (finalBody) session = await appendUpload(env, session, finalBody, { length: finalLength });
    const keys = await chunkKeys(env, session.id);
    try {
      const staged = concatObjects(env.BUCKET, keys, session.size);
      result = await putBlobVerifiedSized(env, staged.stream, digest, session.size, session.repo);
      await staged.done;
    } catch (err) {
      if (err instanceof StorageError && (err.code === "DIGEST_INVALID" || err.code === "SIZE_INVALID")) await dropSession(env, session.id, keys);
      throw err;
    }
  }
  // Linked to session.repo by the put above, before a concurrent delete could collect the blob.
  await dropSession(env, session.id, await chunkKeys(env, session.id));
  return result;
}

/** Cancels an upload and deletes its staged chunks. */
export async function cancelUpload(env: Env, session: UploadSession): Promise<void> {
  await dropSession(env, session.id, await chunkKeys(env, session.id));
}

/**
 * Deletes upload sessions untouched for `maxAgeMs` (default 7 days) with their staged chunks, and
 * temporary objects of interrupted putBlobComputed calls. Meant for a scheduled (cron) handler.
 * Returns how many sessions were purged.
 */
export async function purgeStaleUploads(env: Env, maxAgeMs = 7 * 24 * 3600 * 1000, limit = 100): Promise<number> {
  const cutoff = Date.now() - maxAgeMs;
  const { results } = await env.DB.prepare("SELECT id FROM uploads WHERE updated_at < ? ORDER BY updated_at LIMIT ?")
    .bind(cutoff, limit).all<{ id: string }>();
  for (const { id } of results) await dropSession(env, id, await chunkKeys(env, id));
  const tmp = await env.BUCKET.list({ prefix: "tmp/", limit: 1000 });
  const old = tmp.objects.filter((o) => o.uploaded.getTime() < cutoff).map((o) => o.key);
  if (old.length) await env.BUCKET.delete(old);
  return results.length;
}
