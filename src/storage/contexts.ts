import type { Env } from "../env";

/**
 * Build contexts in R2. A context is stored once by digest as a "pack" (the file contents that
 * survived .dockerignore, concatenated; `contexts/sha256/<hex>`) plus a file index next to it
 * (`contexts/sha256/<hex>.index/<indexhex>.json`) that gives each file's metadata, sha256 and its
 * offset in the pack — so a COPY reads the bytes it needs with ranged GETs (small files' ranges coalesced,
 * many files per GET: src/builder/executors/pack-reader.ts).
 * Packs larger than one part are streamed to `contexts/data/<uuid>` before their digest is known;
 * `contexts/sha256/<hex>` is then an empty object whose `location` metadata points there (R2 has no
 * rename, and copying hundreds of MiB again would double the upload's cost).
 */

const PART_SIZE = 8 * 1024 * 1024;
const PARALLEL_PARTS = 2;

export const packKey = (digest: string) => `contexts/sha256/${hexOf(digest)}`;
export const indexKey = (packDigest: string, indexDigest: string) => `${packKey(packDigest)}.index/${hexOf(indexDigest)}.json`;
const dataKey = () => `contexts/data/${crypto.randomUUID()}`;

function hexOf(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`bad digest ${digest}`);
  return m[1];
}

/**
 * Streams a pack of unknown length into R2 with bounded memory: small packs go in one put, large
 * ones through a multipart upload of equal parts at a temporary key, copied to their digest key once
 * the digest is known (or dropped when that content is already stored).
 */
const EMPTY = new Uint8Array(0);

export class ContextPackWriter {
  private parts: Uint8Array[] = [];
  /** Index of the first chunk of `parts` not taken yet. */
  private head = 0;
  private buffered = 0;
  private upload?: R2MultipartUpload;
  private uploaded: R2UploadedPart[] = [];
  private inflight: Promise<R2UploadedPart>[] = [];
  private key?: string;
  size = 0;

  constructor(private env: Env) {}

  async write(chunk: Uint8Array): Promise<void> {
    this.size += chunk.byteLength;
    this.parts.push(chunk);
    this.buffered += chunk.byteLength;
    while (this.buffered >= PART_SIZE) await this.flushPart();
  }

  /**
   * The first `n` buffered bytes, in one array. Reads from `head` on instead of shifting `parts`: a
   * context of 100,000 small files buffers as many chunks, and shifting each off took seconds.
   */
  private takeBytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const chunk = this.parts[this.head];
      const take = Math.min(chunk.byteLength, n - off);
      out.set(take === chunk.byteLength ? chunk : chunk.subarray(0, take), off);
      off += take;
      if (take === chunk.byteLength) this.parts[this.head++] = EMPTY;
      else this.parts[this.head] = chunk.subarray(take);
    }
    if (this.head > 1024 && this.head * 2 > this.parts.length) {
      this.parts = this.parts.slice(this.head);
      this.head = 0;
    }
    this.buffered -= n;
    return out;
  }

  private async flushPart(): Promise<void> {
    if (!this.upload) {
      this.key = dataKey();
      this.upload = await this.env.BUCKET.createMultipartUpload(this.key);
    }
    const bytes = this.takeBytes(PART_SIZE);
    // keep reading the request while earlier parts upload (at most PARALLEL_PARTS in flight)
    this.inflight.push(this.upload.uploadPart(this.inflight.length + this.uploaded.length + 1, bytes));
    if (this.inflight.length >= PARALLEL_PARTS) this.uploaded.push(await this.inflight.shift()!);
  }

  private async settle(): Promise<void> {
    while (this.inflight.length) this.uploaded.push(await this.inflight.shift()!);
  }

  /** Stores the pack under `digest`; `created` is false when that content was already there. */
  async finish(digest: string): Promise<{ created: boolean }> {
    const final = packKey(digest);
    const exists = (await this.env.BUCKET.head(final)) !== null;
    if (!this.upload) {
      const bytes = this.takeBytes(this.buffered);
      if (exists) return { created: false };
      await this.env.BUCKET.put(final, bytes);
      return { created: true };
    }
    await this.settle();
    if (this.buffered > 0) {
      const bytes = this.takeBytes(this.buffered);
      this.uploaded.push(await this.upload.uploadPart(this.uploaded.length + 1, bytes));
    }
    await this.upload.complete(this.uploaded);
    const data = this.key!;
    this.upload = undefined;
    if (exists) {
      await this.env.BUCKET.delete(data);
      return { created: false };
    }
    await this.env.BUCKET.put(final, new Uint8Array(0), { customMetadata: { location: data, size: String(this.size) } });
    return { created: true };
  }

  /** Drops everything written so far. */
  async abort(): Promise<void> {
    this.parts = [];
    this.head = 0;
    this.buffered = 0;
    if (this.upload) {
      await Promise.allSettled(this.inflight);
      this.inflight = [];
      try {
        await this.upload.abort();
      } catch {
        /* gone */
      }
      this.upload = undefined;
    }
  }
}

/**
 * Stores a context's file index (content-addressed, so an existing one is the same bytes and is left
 * alone). `created` says whether this call wrote it: only its writer may remove it again, because
 * another build (another tenant's, even) may use the same index.
 */
export async function putContextIndex(env: Env, packDigest: string, indexDigest: string, bytes: Uint8Array): Promise<{ created: boolean }> {
  const key = indexKey(packDigest, indexDigest);
  if (await env.BUCKET.head(key)) return { created: false };
  await env.BUCKET.put(key, bytes, { httpMetadata: { contentType: "application/json" } });
  return { created: true };
}

export async function getContextIndexBytes(env: Env, packDigest: string, indexDigest: string): Promise<ArrayBuffer | null> {
  const obj = await env.BUCKET.get(indexKey(packDigest, indexDigest));
  return obj ? await obj.arrayBuffer() : null;
}

const locations = new Map<string, string>();

/** Where a pack's bytes are: its own key, or the data object its pointer names. */
async function packLocation(env: Env, packDigest: string): Promise<string> {
  const key = packKey(packDigest);
  const known = locations.get(key);
  if (known) return known;
  const head = await env.BUCKET.head(key);
  if (!head) throw new Error(`build context ${packDigest} is gone`);
  const loc = head.customMetadata?.location ?? key;
  if (locations.size > 1000) locations.clear();
  locations.set(key, loc);
  return loc;
}

/** Ranged GETs of packs this isolate made (read by tests and benches: a COPY reads many files per GET). */
export const contextReads = { count: 0, bytes: 0 };

/** A byte range of a stored pack (a file's contents). */
export async function readContextRange(env: Env, packDigest: string, offset: number, length: number): Promise<ReadableStream<Uint8Array>> {
  if (length === 0) return new ReadableStream({ start: (c) => c.close() });
  const obj = await env.BUCKET.get(await packLocation(env, packDigest), { range: { offset, length } });
  if (!obj) throw new Error(`build context ${packDigest} is gone`);
  contextReads.count++;
  contextReads.bytes += length;
  return obj.body;
}

/** A byte range of a stored pack, in memory (one ranged GET; for the coalesced reads of many small files). */
export async function readContextBytes(env: Env, packDigest: string, offset: number, length: number): Promise<Uint8Array> {
  if (length === 0) return new Uint8Array(0);
  const obj = await env.BUCKET.get(await packLocation(env, packDigest), { range: { offset, length } });
  if (!obj) throw new Error(`build context ${packDigest} is gone`);
  contextReads.count++;
  contextReads.bytes += length;
  const bytes = new Uint8Array(await obj.arrayBuffer());
  if (bytes.byteLength !== length) throw new Error(`build context ${packDigest}: read ${bytes.byteLength} of ${length} bytes at ${offset}`);
  return bytes;
}

/** Removes a file index this request created (the pack was there before). */
export async function deleteContextIndex(env: Env, packDigest: string, indexDigest: string): Promise<void> {
  await env.BUCKET.delete(indexKey(packDigest, indexDigest));
}

/** Removes a context this request created (refusal after storing). */
export async function deleteContext(env: Env, packDigest: string, indexDigest?: string): Promise<void> {
  const keys = [packKey(packDigest)];
  const head = await env.BUCKET.head(packKey(packDigest));
  if (head?.customMetadata?.location) keys.push(head.customMetadata.location);
  locations.delete(packKey(packDigest));
  if (indexDigest) keys.push(indexKey(packDigest, indexDigest));
  await env.BUCKET.delete(keys);
}

/** A byte range of a context pack holding (part of) one file's contents. */
export interface ContentPart {
  pack: string;
  offset: number;
  size: number;
}

/** D1 binds one JSON array per query (json_each): this many digests per statement. */
const DIGESTS_PER_QUERY = 500;

function chunks<T>(xs: T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** The stored parts of each of `digests` that `scope` has uploaded (others are absent from the map). */
export async function findContents(env: Env, scope: string, digests: string[]): Promise<Map<string, ContentPart[]>> {
  const found = new Map<string, ContentPart[]>();
  for (const batch of chunks([...new Set(digests)], DIGESTS_PER_QUERY)) {
    const { results } = await env.DB.prepare("SELECT sha256, parts FROM context_contents WHERE scope = ? AND sha256 IN (SELECT value FROM json_each(?))")
      .bind(scope, JSON.stringify(batch))
      .all<{ sha256: string; parts: string }>();
    for (const r of results) found.set(r.sha256, JSON.parse(r.parts) as ContentPart[]);
  }
  return found;
}

/** Marks contents as used by a build now (a collector keeps what was used recently). */
export async function touchContents(env: Env, scope: string, digests: string[]): Promise<void> {
  const now = Date.now();
  for (const batch of chunks([...new Set(digests)], DIGESTS_PER_QUERY)) {
    await env.DB.prepare("UPDATE context_contents SET last_used_at = ? WHERE scope = ? AND sha256 IN (SELECT value FROM json_each(?))")
      .bind(now, scope, JSON.stringify(batch))
      .run();
  }
}

/** Records contents of `scope` (their bytes verified and stored); an existing row is kept. */
export async function recordContents(env: Env, scope: string, rows: { sha256: string; size: number; parts: ContentPart[] }[]): Promise<void> {
  const now = Date.now();
  // One statement per DIGESTS_PER_QUERY rows, bound as one JSON array: a batch of 30,000 small files
  // took 600 round trips of 50 single-row inserts.
  for (const batch of chunks(rows, DIGESTS_PER_QUERY)) {
    await env.DB.prepare(
      `INSERT INTO context_contents (scope, sha256, size, parts, created_at, last_used_at)
       SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), ?2, ?2 FROM json_each(?3) WHERE true
       ON CONFLICT(scope, sha256) DO UPDATE SET last_used_at = excluded.last_used_at`,
    ).bind(scope, now, JSON.stringify(batch.map((r) => [r.sha256, r.size, JSON.stringify(r.parts)]))).run();
  }
}

/** Records one piece of a large file; returns every piece of that file received so far, by start. */
export async function recordPiece(env: Env, scope: string, sha256: string, start: number, part: ContentPart): Promise<(ContentPart & { start: number })[]> {
  await env.DB.prepare("INSERT OR REPLACE INTO context_pieces (scope, sha256, start, pack, offset, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
    .bind(scope, sha256, start, part.pack, part.offset, part.size, Date.now())
    .run();
  const { results } = await env.DB.prepare("SELECT start, pack, offset, size FROM context_pieces WHERE scope = ? AND sha256 = ? ORDER BY start")
    .bind(scope, sha256)
    .all<ContentPart & { start: number }>();
  return results;
}

/** Drops the pieces of a file (assembled into a content row, or refused). */
export async function dropPieces(env: Env, scope: string, sha256: string): Promise<void> {
  await env.DB.prepare("DELETE FROM context_pieces WHERE scope = ? AND sha256 = ?").bind(scope, sha256).run();
}
