import type { Env } from "../env";

/**
 * Build contexts in R2. A context is stored once by digest as a "pack" (the file contents that
 * survived .dockerignore, concatenated; `contexts/sha256/<hex>`) plus a file index next to it
 * (`contexts/sha256/<hex>.index/<indexhex>.json`) that gives each file's metadata, sha256 and its
 * offset in the pack — so a COPY reads exactly the bytes it needs with a ranged GET.
 */

const PART_SIZE = 8 * 1024 * 1024;

export const packKey = (digest: string) => `contexts/sha256/${hexOf(digest)}`;
export const indexKey = (packDigest: string, indexDigest: string) => `${packKey(packDigest)}.index/${hexOf(indexDigest)}.json`;
const tempKey = () => `contexts/uploads/${crypto.randomUUID()}`;

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
export class ContextPackWriter {
  private parts: Uint8Array[] = [];
  private buffered = 0;
  private upload?: R2MultipartUpload;
  private uploaded: R2UploadedPart[] = [];
  private key?: string;
  size = 0;

  constructor(private env: Env) {}

  async write(chunk: Uint8Array): Promise<void> {
    this.size += chunk.byteLength;
    this.parts.push(chunk);
    this.buffered += chunk.byteLength;
    while (this.buffered >= PART_SIZE) await this.flushPart();
  }

  private takeBytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const head = this.parts[0];
      const take = Math.min(head.byteLength, n - off);
      out.set(head.subarray(0, take), off);
      off += take;
      if (take === head.byteLength) this.parts.shift();
      else this.parts[0] = head.subarray(take);
    }
    this.buffered -= n;
    return out;
  }

  private async flushPart(): Promise<void> {
    if (!this.upload) {
      this.key = tempKey();
      this.upload = await this.env.BUCKET.createMultipartUpload(this.key);
    }
    const bytes = this.takeBytes(PART_SIZE);
    this.uploaded.push(await this.upload.uploadPart(this.uploaded.length + 1, bytes));
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
    if (this.buffered > 0) {
      const bytes = this.takeBytes(this.buffered);
      this.uploaded.push(await this.upload.uploadPart(this.uploaded.length + 1, bytes));
    }
    await this.upload.complete(this.uploaded);
    const tmp = this.key!;
    this.upload = undefined;
    try {
      if (exists) return { created: false };
      const obj = await this.env.BUCKET.get(tmp);
      if (!obj) throw new Error("context upload vanished");
      const fixed = new FixedLengthStream(obj.size);
      const [, put] = await Promise.all([obj.body.pipeTo(fixed.writable), this.env.BUCKET.put(final, fixed.readable)]);
      void put;
      return { created: true };
    } finally {
      await this.env.BUCKET.delete(tmp);
    }
  }

  /** Drops everything written so far. */
  async abort(): Promise<void> {
    this.parts = [];
    this.buffered = 0;
    if (this.upload) {
      try {
        await this.upload.abort();
      } catch {
        /* gone */
      }
      this.upload = undefined;
    }
  }
}

export async function putContextIndex(env: Env, packDigest: string, indexDigest: string, bytes: Uint8Array): Promise<void> {
  await env.BUCKET.put(indexKey(packDigest, indexDigest), bytes, { httpMetadata: { contentType: "application/json" } });
}

export async function getContextIndexBytes(env: Env, packDigest: string, indexDigest: string): Promise<ArrayBuffer | null> {
  const obj = await env.BUCKET.get(indexKey(packDigest, indexDigest));
  return obj ? await obj.arrayBuffer() : null;
}

/** A byte range of a stored pack (a file's contents). */
export async function readContextRange(env: Env, packDigest: string, offset: number, length: number): Promise<ReadableStream<Uint8Array>> {
  if (length === 0) return new ReadableStream({ start: (c) => c.close() });
  const obj = await env.BUCKET.get(packKey(packDigest), { range: { offset, length } });
  if (!obj) throw new Error(`build context ${packDigest} is gone`);
  return obj.body;
}

/** Removes a context this request created (refusal after storing). */
export async function deleteContext(env: Env, packDigest: string, indexDigest?: string): Promise<void> {
  const keys = [packKey(packDigest)];
  if (indexDigest) keys.push(indexKey(packDigest, indexDigest));
  await env.BUCKET.delete(keys);
}
