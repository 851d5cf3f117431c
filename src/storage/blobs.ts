/**
 * Content-addressed blob store. Bytes live once, globally; the D1 `blobs` row is written only after
 * the bytes were verified against the digest, and says where they are: at `blobs/<alg>/<hex>` when
 * the digest was known before writing, else in the object they were first written to (a build layer
 * at `blobs/objects/<uuid>`, the chunks of a push as segments): nothing is copied after the fact. A
 * repository sees a blob only through its `repo_blobs` link row.
 */
import type { Env } from "../env";
import { StorageError } from "./errors";
import { algorithmOf, hexOf, isDigest, webAlgorithm, type Digest } from "../oci/digest";
import { Meter, SINGLE_PUT_MAX, concatObjects, hashStream, isBadDigest, putFixed, spool, type ObjectPiece } from "./streams";

/** Where a stored blob's bytes are (see migration 0011). */
export interface BlobLocation {
  digest: Digest;
  size: number;
  /** The one object holding the bytes (null: blobs/<alg>/<hex>), or with `segments`, the segments' owner. */
  objectKey: string | null;
  /** How many segment objects hold the bytes (0: one object). */
  segments: number;
}

type LocationRow = { size: number; object_key: string | null; segments: number };

function location(digest: string, row: LocationRow): BlobLocation {
  return { digest: digest as Digest, size: row.size, objectKey: row.object_key, segments: row.segments };
}

/** A stored blob's size and location, or null. */
export async function statBlob(env: Env, digest: string): Promise<BlobLocation | null> {
  if (!isDigest(digest)) return null;
  const row = await env.DB.prepare("SELECT size, object_key, segments FROM blobs WHERE digest = ?").bind(digest).first<LocationRow>();
  return row ? location(digest, row) : null;
}

/** The single R2 object holding a blob's bytes, or null when they are in several segments. */
export function blobObjectKey(loc: BlobLocation): string | null {
  if (loc.segments > 0) return null;
  return loc.objectKey ?? blobKey(loc.digest);
}

/** A digest from a client, or StorageError DIGEST_INVALID. */
export function requireDigest(s: string): Digest {
  if (isDigest(s)) return s;
  throw new StorageError("DIGEST_INVALID", "invalid digest (want sha256:<64 lowercase hex> or sha512:<128 lowercase hex>)", { detail: { digest: s } });
}

/** R2 key of a blob's bytes (manifests included). */
export function blobKey(d: Digest): string {
  return `blobs/${algorithmOf(d)}/${hexOf(d)}`;
}

/** The R2 checksum that makes a put fail unless the bytes hash to `d`. */
function r2Checksum(d: Digest): R2PutOptions {
  return algorithmOf(d) === "sha256" ? { sha256: hexOf(d) } : { sha512: hexOf(d) };
}

/** A stored blob's bytes (only `range` of them when given) as a stream, with the blob's whole size; null when unknown. */
export async function getBlob(env: Env, digest: string, range?: { offset: number; length?: number }): Promise<{ body: ReadableStream<Uint8Array>; size: number } | null> {
  const loc = await statBlob(env, digest);
  return loc ? openBlob(env, loc, range) : null;
}

/** The bytes at a location found by statBlob or statRepoBlob (no further D1 read for a one-object blob). */
export async function openBlob(env: Env, loc: BlobLocation, range?: { offset: number; length?: number }): Promise<{ body: ReadableStream<Uint8Array>; size: number } | null> {
  const key = blobObjectKey(loc);
  if (key !== null) {
    const obj = await env.BUCKET.get(key, range ? { range } : undefined);
    return obj ? { body: obj.body, size: loc.size } : null;
  }
  const offset = range?.offset ?? 0;
  const end = range?.length !== undefined ? Math.min(loc.size, offset + range.length) : loc.size;
  const { results } = await env.DB.prepare("SELECT key, offset, size FROM blob_segments WHERE owner = ? ORDER BY n")
    .bind(loc.objectKey).all<{ key: string; offset: number; size: number }>();
  const pieces: ObjectPiece[] = [];
  for (const seg of results) {
    const from = Math.max(offset, seg.offset);
    const to = Math.min(end, seg.offset + seg.size);
    if (from >= to) continue;
    pieces.push(from === seg.offset && to === seg.offset + seg.size ? seg.key : { key: seg.key, range: { offset: from - seg.offset, length: to - from } });
  }
  const { stream, done } = concatObjects(env.BUCKET, pieces, Math.max(0, end - offset));
  done.catch((err) => console.error(`blob ${loc.digest}: segment read failed`, err));
  return { body: stream, size: loc.size };
}

/** A small blob (an image config, a manifest) read whole; null when unknown. */
export async function getBlobBytes(env: Env, digest: string): Promise<Uint8Array | null> {
  const blob = await getBlob(env, digest);
  return blob ? new Uint8Array(await new Response(blob.body).arrayBuffer()) : null;
}

function digestMismatch(d: Digest, actual?: string): StorageError {
  return new StorageError("DIGEST_INVALID", "the uploaded content does not match the digest", {
    detail: actual ? { expected: d, actual: `${algorithmOf(d)}:${actual}` } : { expected: d },
  });
}

function sizeMismatch(expected: number, actual: number): StorageError {
  return new StorageError("SIZE_INVALID", `the content is ${actual} bytes, expected ${expected}`, { detail: { expected, actual } });
}

/** Writes the blob's row (bytes at blobs/<alg>/<hex>, or at `objectKey`); false when another writer's row won. */
async function recordBlob(env: Env, digest: string, size: number, objectKey: string | null = null, segments = 0): Promise<boolean> {
  const res = await env.DB.prepare("INSERT INTO blobs (digest, size, created_at, object_key, segments) VALUES (?, ?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING")
    .bind(digest, size, Date.now(), objectKey, segments).run();
  return (res.meta.changes ?? 0) > 0;
}

/**
 * Records the staged objects `pieces` (in order, `size` bytes in all, already verified to hash to
 * `digest`) as the blob's bytes where they are: one piece becomes the blob's object, several its
 * segments. Returns false, having written nothing, when the blob is already stored (the caller
 * deletes its pieces).
 */
export async function adoptBlobObjects(env: Env, digest: string, size: number, pieces: { key: string; size: number }[], owner: string): Promise<boolean> {
  const d = requireDigest(digest);
  if (await statBlob(env, d)) return false;
  await awaitCollection(env, d);
  if (pieces.length === 1) return recordBlob(env, d, size, pieces[0].key, 0);
  let offset = 0;
  const rows = pieces.map((p, n) => {
    const stmt = env.DB.prepare("INSERT INTO blob_segments (owner, n, key, offset, size) VALUES (?, ?, ?, ?, ?)").bind(owner, n, p.key, offset, p.size);
    offset += p.size;
    return stmt;
  });
  for (let i = 0; i < rows.length; i += 50) await env.DB.batch(rows.slice(i, i + 50));
  if (await recordBlob(env, d, size, owner, pieces.length)) return true;
  await env.DB.prepare("DELETE FROM blob_segments WHERE owner = ?").bind(owner).run();
  return false;
}

/**
 * Writes `body` to the blob's final key so that nothing becomes readable unless its digest matches:
 * a single put carries the expected checksum (R2 refuses the put on mismatch, leaving any existing
 * object untouched); a multipart upload (unknown or huge size) is completed only after the digest
 * was checked.
 */
async function writeVerified(bucket: R2Bucket, d: Digest, body: ReadableStream<Uint8Array>, size?: number, bodyHasLength = false): Promise<number> {
  const key = blobKey(d);
  const checksum = r2Checksum(d);
  if (size !== undefined && size <= SINGLE_PUT_MAX) {
    try {
      await putFixed(bucket, key, body, size, checksum, bodyHasLength);
    } catch (err) {
      if (isBadDigest(err)) throw digestMismatch(d);
      if ((err as { pipeError?: unknown }).pipeError !== undefined || /FixedLengthStream|expected|length/i.test(String(err))) {
        throw new StorageError("SIZE_INVALID", `the content is not ${size} bytes as announced`, { detail: { expected: size } });
      }
      throw err;
    }
    return size;
  }
  const meter = new Meter(webAlgorithm(algorithmOf(d)));
  const r = await spool(bucket, body, key, meter);
  const hex = await meter.hex();
  if (hex !== hexOf(d) || (size !== undefined && meter.size !== size)) {
    await r.upload?.abort().catch(() => {});
    if (hex !== hexOf(d)) throw digestMismatch(d, hex);
    throw sizeMismatch(size!, meter.size);
  }
  if (r.small) await bucket.put(key, r.small, checksum);
  else await r.upload!.complete(r.parts);
  return meter.size;
}

/**
 * Reads `body` only to check it hashes to `d` (the blob is already stored, `stored` bytes long).
 * The stored blob may belong to repositories the caller cannot read, so a failure says exactly what
 * writeVerified would say for a blob never stored: nothing about the stored one (not its size).
 */
async function verifyOnly(d: Digest, body: ReadableStream<Uint8Array>, stored: number, size?: number): Promise<number> {
  const hex = await hashStream(body, webAlgorithm(algorithmOf(d)));
  if (hex !== hexOf(d)) throw size !== undefined && size <= SINGLE_PUT_MAX ? digestMismatch(d) : digestMismatch(d, hex);
  if (size !== undefined && size !== stored) {
    throw new StorageError("SIZE_INVALID", `the content is not ${size} bytes as announced`, { detail: { expected: size } });
  }
  return stored;
}

// ------------------------------------------------------------------ pushes vs concurrent deletes
// A writer pins a digest while it stores and links it; collectBlob deletes nothing pinned. A
// collection marks the digest in blob_deletions while it removes the bytes; writers wait for that
// to end before writing the same bytes, so a delete can never remove bytes a push just wrote.

/** A pin outlives a writer that died (a Worker killed mid-push) by at most this long. */
const PIN_TTL_MS = 60 * 60 * 1000;
/** A collection marker older than this is from a collector that died; writers ignore it. */
const DELETION_STALE_MS = 30 * 1000;

/** Runs `fn` with `digest` pinned: no concurrent delete collects the blob until `fn` has finished. */
export async function withBlobPin<T>(env: Env, digest: string, fn: () => Promise<T>): Promise<T> {
  const id = crypto.randomUUID();
  await env.DB.prepare("INSERT INTO blob_pins (id, digest, expires_at) VALUES (?, ?, ?)").bind(id, digest, Date.now() + PIN_TTL_MS).run();
  try {
    return await fn();
  } finally {
    await env.DB.prepare("DELETE FROM blob_pins WHERE id = ? OR expires_at < ?").bind(id, Date.now()).run();
  }
}

/**
 * Runs `fn` with every one of `digests` pinned (one D1 batch to pin, one statement to unpin): a manifest
 * push pins what it references before checking it is there, so a collection running meanwhile cannot
 * remove a link, child manifest or blob between the check and the manifest row.
 */
export async function withBlobPins<T>(env: Env, digests: string[], fn: () => Promise<T>): Promise<T> {
  const id = crypto.randomUUID();
  const unique = [...new Set(digests)];
  const expires = Date.now() + PIN_TTL_MS;
  const stmts: D1PreparedStatement[] = [];
  for (let i = 0; i < unique.length; i += 30) {
    const part = unique.slice(i, i + 30);
    stmts.push(env.DB.prepare(`INSERT INTO blob_pins (id, digest, expires_at) VALUES ${part.map(() => "(?, ?, ?)").join(",")}`)
      .bind(...part.flatMap((d, j) => [`${id}/${i + j}`, d, expires])));
  }
  if (stmts.length) await env.DB.batch(stmts);
  try {
    return await fn();
  } finally {
    await env.DB.prepare("DELETE FROM blob_pins WHERE (id >= ?1 AND id < ?2) OR expires_at < ?3").bind(`${id}/`, `${id}0`, Date.now()).run();
  }
}

/** Waits until no collection of `digest` is deleting its bytes (call before writing them). */
async function awaitCollection(env: Env, digest: string): Promise<void> {
  const deadline = Date.now() + DELETION_STALE_MS;
  for (let wait = 10; ; wait = Math.min(wait * 2, 250)) {
    const row = await env.DB.prepare("SELECT started_at FROM blob_deletions WHERE digest = ?").bind(digest).first<{ started_at: number }>();
    if (!row || row.started_at < Date.now() - DELETION_STALE_MS || Date.now() > deadline) return;
    await new Promise((r) => setTimeout(r, wait));
  }
}

/**
 * Stores `body` as blob `digest` only if its bytes hash to `digest`; throws StorageError DIGEST_INVALID
 * (or SIZE_INVALID when `size` is given and wrong) and stores nothing otherwise. An already stored
 * blob is never rewritten. With `linkTo`, links the blob to that repository before a concurrent
 * delete can collect it (a push never loses to a delete); else links nothing (see linkBlob).
 */
export async function putBlobVerified(env: Env, body: ReadableStream<Uint8Array>, digest: string, size?: number, linkTo?: string): Promise<{ digest: string; size: number }> {
  return storeBlobVerified(env, body, digest, size, false, linkTo);
}

/** putBlobVerified for a body that already is a known-length stream of `size` bytes (FixedLengthStream, R2 body). */
export async function putBlobVerifiedSized(env: Env, body: ReadableStream<Uint8Array>, digest: string, size: number, linkTo?: string): Promise<{ digest: string; size: number }> {
  return storeBlobVerified(env, body, digest, size, true, linkTo);
}

async function storeBlobVerified(env: Env, body: ReadableStream<Uint8Array>, digest: string, size: number | undefined, bodyHasLength: boolean, linkTo?: string): Promise<{ digest: string; size: number }> {
  const d = requireDigest(digest);
  return withBlobPin(env, digest, async () => {
    let result: { digest: string; size: number };
    const stored = await statBlob(env, digest);
    if (stored) {
      result = { digest, size: await verifyOnly(d, body, stored.size, size) };
    } else {
      await awaitCollection(env, digest);
      const written = await writeVerified(env.BUCKET, d, body, size, bodyHasLength);
      await recordBlob(env, digest, written);
      result = { digest, size: written };
    }
    if (linkTo !== undefined) await linkBlob(env, linkTo, digest);
    return result;
  });
}

/**
 * Pins `digest` for PIN_TTL_MS beyond the call (a lease nobody releases; it expires): a build layer
 * is linked into its repository only when the image is pushed, and until then nothing else may hold
 * it (its cache entry is written after, an identical old blob may be unreferenced).
 */
async function leaseBlob(env: Env, digest: string): Promise<void> {
  const now = Date.now();
  await env.DB.batch([
    env.DB.prepare("INSERT INTO blob_pins (id, digest, expires_at) VALUES (?, ?, ?)").bind(`lease/${crypto.randomUUID()}`, digest, now + PIN_TTL_MS),
    env.DB.prepare("DELETE FROM blob_pins WHERE digest = ? AND id LIKE 'lease/%' AND expires_at < ?").bind(digest, now),
  ]);
}

/**
 * Stores `body` (length and digest unknown up front), written once: a body of up to one part (8 MiB)
 * is hashed in memory and put at blobs/<alg>/<hex>; a larger one is streamed as multipart parts
 * straight into `blobs/objects/<uuid>` while it is hashed, and the row points there. `digest`, when
 * the producer hashes the bytes itself in the same pass (a layer writer), saves hashing them twice.
 * The digest stays pinned for an hour after (leaseBlob), so a collection cannot take it before the
 * build links it.
 */
export async function putBlobComputed(env: Env, body: ReadableStream<Uint8Array>, opts: { digest?: Promise<string> } = {}): Promise<{ digest: string; size: number }> {
  const bucket = env.BUCKET;
  const objectKey = `blobs/objects/${crypto.randomUUID()}`;
  const meter = new Meter(opts.digest ? undefined : "SHA-256");
  const r = await spool(bucket, body, objectKey, meter);
  const digest = opts.digest ? await opts.digest : `sha256:${await meter.hex()}`;
  const d = requireDigest(digest);
  const size = meter.size;
  // pinned before looking: identical old bytes found below stay until the build has linked them
  await leaseBlob(env, digest);
  if (await statBlob(env, digest)) {
    await r.upload?.abort().catch(() => {});
    return { digest, size };
  }
  await awaitCollection(env, digest);
  if (r.small) {
    try {
      await bucket.put(blobKey(d), r.small, r2Checksum(d));
    } catch (err) {
      if (isBadDigest(err)) throw digestMismatch(d);
      throw err;
    }
    await recordBlob(env, digest, size);
  } else {
    await r.upload!.complete(r.parts);
    if (!(await recordBlob(env, digest, size, objectKey))) await bucket.delete(objectKey);
  }
  return { digest, size };
}

/** Creates the repository row if it does not exist yet. */
export async function ensureRepository(env: Env, repo: string): Promise<void> {
  await env.DB.prepare("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
    .bind(repo, Date.now()).run();
}

/**
 * Makes a stored blob visible in `repo` (creating the repository). Throws BLOB_UNKNOWN if the blob is
 * not stored. The link is written only while the blob row exists (one statement), so a blob
 * collected concurrently never leaves a link to missing bytes.
 */
export async function linkBlob(env: Env, repo: string, digest: string): Promise<void> {
  const now = Date.now();
  const [, link] = await env.DB.batch([
    env.DB.prepare("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING").bind(repo, now),
    env.DB.prepare(
      // linked again: the link counts as new (created_at), so a collection that judged it unused before
      // leaves it to the manifest about to name it
      "INSERT INTO repo_blobs (repo, digest, created_at) SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?2) ON CONFLICT(repo, digest) DO UPDATE SET created_at = excluded.created_at",
    ).bind(repo, digest, now),
  ]);
  if (!link.meta.changes && !(await statRepoBlob(env, repo, digest))) {
    throw new StorageError("BLOB_UNKNOWN", "blob unknown to registry", { detail: { digest } });
  }
}

export async function repoHasBlob(env: Env, repo: string, digest: string): Promise<boolean> {
  return (await statRepoBlob(env, repo, digest)) !== null;
}

/** The blob's size and location if `repo` links it (one query). */
export async function statRepoBlob(env: Env, repo: string, digest: string): Promise<BlobLocation | null> {
  if (!isDigest(digest)) return null;
  const row = await env.DB.prepare(
    "SELECT b.size AS size, b.object_key AS object_key, b.segments AS segments FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE r.repo = ? AND r.digest = ?",
  ).bind(repo, digest).first<LocationRow>();
  return row ? location(digest, row) : null;
}

/** The sizes of those of `digests` that `repo` links (one query). */
export async function linkedBlobSizes(env: Env, repo: string, digests: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const unique = [...new Set(digests)];
  for (let i = 0; i < unique.length; i += 90) {
    const part = unique.slice(i, i + 90);
    const { results } = await env.DB.prepare(
      `SELECT r.digest AS digest, b.size AS size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE r.repo = ? AND r.digest IN (${part.map(() => "?").join(",")})`,
    ).bind(repo, ...part).all<{ digest: string; size: number }>();
    for (const r of results) out.set(r.digest, r.size);
  }
  return out;
}

/**
 * Removes `repo`'s link to a blob (BLOB_UNKNOWN if there is none). The bytes go only when no
 * repository links them and no manifest references them (see collectBlob).
 */
export async function unlinkBlob(env: Env, repo: string, digest: string): Promise<void> {
  const res = await env.DB.prepare("DELETE FROM repo_blobs WHERE repo = ? AND digest = ?").bind(repo, digest).run();
  if (!res.meta.changes) throw new StorageError("BLOB_UNKNOWN", "blob unknown to repository", { detail: { digest } });
  await collectBlob(env, digest);
}

/**
 * Deletes a blob's row and bytes if nothing uses it any more: no link, no manifest reference, no
 * manifest of that digest, no build cache entry, no pull-through record, no pin.
 */
export async function collectBlob(env: Env, digest: string): Promise<boolean> {
  if (!isDigest(digest)) return false;
  const d = digest;
  const now = Date.now();
  // A row's location never changes while it exists; a writer of the same digest after this delete
  // waits for the blob_deletions marker below before writing.
  const loc = await statBlob(env, d);
  // Nothing uses it and no writer has it pinned; checked and acted on in one transaction.
  const unused = `NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = ?1)
       AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE ref = ?1)
       AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)
       AND NOT EXISTS (SELECT 1 FROM cache_entries WHERE layer = ?1)
       AND NOT EXISTS (SELECT 1 FROM upstream_links WHERE digest = ?1)
       AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE digest = ?1 AND expires_at > ?2)`;
  const [, res] = await env.DB.batch([
    env.DB.prepare(
      `INSERT INTO blob_deletions (digest, started_at) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?1) AND ${unused}
       ON CONFLICT(digest) DO UPDATE SET started_at = excluded.started_at`,
    ).bind(digest, now),
    env.DB.prepare(`DELETE FROM blobs WHERE digest = ?1 AND ${unused}`).bind(digest, now),
  ]);
  if (!res.meta.changes) return false;
  try {
    await deleteBlobBytes(env, d, loc);
  } finally {
    await env.DB.prepare("DELETE FROM blob_deletions WHERE digest = ? AND started_at = ?").bind(digest, now).run();
  }
  return true;
}

/**
 * Deletes every object that may hold the bytes of `d` (its row is already gone): the content
 * address (where a manifest's bytes always are) and the recorded object or segments.
 */
async function deleteBlobBytes(env: Env, d: Digest, loc: BlobLocation | null): Promise<void> {
  const keys = [blobKey(d)];
  if (loc?.segments) {
    const { results } = await env.DB.prepare("SELECT key FROM blob_segments WHERE owner = ?").bind(loc.objectKey).all<{ key: string }>();
    keys.push(...results.map((r) => r.key));
  } else if (loc?.objectKey) {
    keys.push(loc.objectKey);
  }
  for (let i = 0; i < keys.length; i += 1000) await env.BUCKET.delete(keys.slice(i, i + 1000));
  if (loc?.segments) await env.DB.prepare("DELETE FROM blob_segments WHERE owner = ?").bind(loc.objectKey).run();
}

/** Stores small in-memory content (manifests) at its content address; `digest` must be its digest. */
export async function putBlobBytes(env: Env, bytes: Uint8Array, digest: string): Promise<void> {
  const d = requireDigest(digest);
  const stored = await statBlob(env, digest);
  // Manifests are read at their content address: bytes first pushed as a blob of unknown digest
  // (kept elsewhere) get that copy too; collectBlob deletes both.
  if (stored && stored.objectKey === null && stored.segments === 0) return;
  if (!stored) await awaitCollection(env, digest);
  await env.BUCKET.put(blobKey(d), bytes, r2Checksum(d));
  if (!stored) await recordBlob(env, digest, bytes.byteLength);
}
