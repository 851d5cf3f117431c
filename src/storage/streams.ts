/**
 * Streaming helpers between request bodies and R2 with bounded memory. Hot paths avoid per-chunk
 * JavaScript (request bodies arrive in ~4 KiB chunks): bytes are piped natively, verified by R2's
 * checksum on put, or read in whole parts with a BYOB reader.
 */
import { toHex } from "../oci/digest";

/** Part size for R2 multipart uploads (all parts but the last must have the same size, >= 5 MiB). */
export const PART_SIZE = 8 * 1024 * 1024;
/** Largest object written with a single put (R2 limit is just under 5 GiB). */
export const SINGLE_PUT_MAX = 4.5 * 1024 * 1024 * 1024;

/** Counts and (optionally) hashes bytes fed to it in large pieces. */
export class Meter {
  size = 0;
  finished = false;
  private readonly digestStream?: DigestStream;
  private readonly writer?: WritableStreamDefaultWriter<ArrayBuffer | ArrayBufferView>;

  constructor(algorithm?: "SHA-256" | "SHA-512") {
    if (algorithm) {
      this.digestStream = new crypto.DigestStream(algorithm);
      this.writer = this.digestStream.getWriter();
    }
  }

  async update(chunk: Uint8Array): Promise<void> {
    this.size += chunk.byteLength;
    if (this.writer && chunk.byteLength > 0) await this.writer.write(chunk);
  }

  async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (this.writer) await this.writer.close();
  }

  /** Hex digest of everything seen; only after finish(). */
  async hex(): Promise<string> {
    if (!this.digestStream || !this.finished) throw new Error("digest not available");
    return toHex(await this.digestStream.digest);
  }
}

/** Hex digest of a whole stream, hashed natively (no per-chunk JavaScript). */
export async function hashStream(body: ReadableStream<Uint8Array>, algorithm: "SHA-256" | "SHA-512"): Promise<string> {
  const ds = new crypto.DigestStream(algorithm);
  await body.pipeTo(ds);
  return toHex(await ds.digest);
}

type PartReader = { read(into: Uint8Array): Promise<{ filled: Uint8Array; done: boolean }>; cancel(reason?: unknown): Promise<void> };

/** Reads into a caller buffer as much as possible: workerd's BYOB readAtLeast when the stream allows, else chunk by chunk. */
function partReader(body: ReadableStream<Uint8Array>): PartReader {
  try {
    const byob = body.getReader({ mode: "byob" }) as ReadableStreamBYOBReader;
    if (typeof (byob as { readAtLeast?: unknown }).readAtLeast === "function") {
      return {
        async read(into) {
          const { value, done } = await byob.readAtLeast(into.byteLength, into);
          return { filled: value ?? new Uint8Array(0), done: done || !value || value.byteLength < into.byteLength };
        },
        cancel: (r) => byob.cancel(r),
      };
    }
    byob.releaseLock();
  } catch {
    // not a byte stream: fall through
  }
  const reader = body.getReader();
  let pending: Uint8Array | null = null;
  return {
    async read(into) {
      let pos = 0;
      for (;;) {
        if (!pending) {
          const { value, done } = await reader.read();
          if (done) return { filled: into.subarray(0, pos), done: true };
          pending = value;
        }
        const n = Math.min(pending.byteLength, into.byteLength - pos);
        into.set(pending.subarray(0, n), pos);
        pos += n;
        pending = n < pending.byteLength ? pending.subarray(n) : null;
        if (pos === into.byteLength) return { filled: into, done: false };
      }
    },
    cancel: (r) => reader.cancel(r),
  };
}

/**
 * Reads `body` to its end in PART_SIZE pieces (feeding `meter`). A body that fits in one part comes
 * back as `small` (nothing written); a larger one is written as multipart parts to `key`, left open:
 * the caller completes or aborts it.
 */
export async function spool(
  bucket: R2Bucket,
  body: ReadableStream<Uint8Array>,
  key: string,
  meter: Meter,
): Promise<{ small?: Uint8Array; upload?: R2MultipartUpload; parts: R2UploadedPart[] }> {
  const reader = partReader(body);
  let upload: R2MultipartUpload | undefined;
  const parts: R2UploadedPart[] = [];
  try {
    for (;;) {
      const { filled, done } = await reader.read(new Uint8Array(PART_SIZE));
      await meter.update(filled);
      if (done && parts.length === 0 && !upload) {
        await meter.finish();
        return { small: filled, parts };
      }
      if (filled.byteLength > 0) {
        upload ??= await bucket.createMultipartUpload(key);
        parts.push(await upload.uploadPart(parts.length + 1, filled));
      }
      if (done) break;
    }
    await meter.finish();
    return { upload, parts };
  } catch (err) {
    reader.cancel(err).catch(() => {});
    if (upload) await upload.abort().catch(() => {});
    throw err;
  }
}

/**
 * Puts `body` of exactly `size` bytes at `key`, piped natively through a FixedLengthStream
 * (or put as is when `body` already is a known-length stream, e.g. from concatObjects).
 */
export async function putFixed(
  bucket: R2Bucket,
  key: string,
  body: ReadableStream<Uint8Array>,
  size: number,
  options: R2PutOptions = {},
  bodyHasLength = false,
): Promise<{ pipeError?: unknown }> {
  if (bodyHasLength) {
    await bucket.put(key, body, options);
    return {};
  }
  const fixed = new FixedLengthStream(size);
  const piping = body.pipeTo(fixed.writable);
  const putting = bucket.put(key, fixed.readable, options);
  const [p, q] = await Promise.allSettled([piping, putting]);
  if (q.status === "rejected") throw Object.assign(q.reason as object, { pipeError: p.status === "rejected" ? p.reason : undefined });
  if (p.status === "rejected") throw p.reason;
  return {};
}

/** Whether an R2 put failed because the bytes did not match the given checksum. */
export function isBadDigest(err: unknown): boolean {
  return /BadDigest|10037|checksum you specified did not match/i.test(String((err as Error)?.message ?? err));
}

/** One piece of a concatenation: a whole object, or `range` of it. */
export type ObjectPiece = string | { key: string; range?: { offset: number; length: number } };

/**
 * Concatenates R2 objects (or ranges of them; `size` bytes in total) into one stream of known
 * length, read one object at a time. (Written straight into a FixedLengthStream: piping an
 * IdentityTransformStream into one stalls in workerd.) `done` settles when every object was copied;
 * await it so no copy is left running after the request.
 */
export function concatObjects(bucket: R2Bucket, pieces: ObjectPiece[], size: number): { stream: ReadableStream<Uint8Array>; done: Promise<void> } {
  const { readable, writable } = new FixedLengthStream(size);
  const done = (async () => {
    try {
      for (let i = 0; i < pieces.length; i++) {
        const p = typeof pieces[i] === "string" ? { key: pieces[i] as string } : (pieces[i] as { key: string; range?: { offset: number; length: number } });
        const obj = await bucket.get(p.key, p.range ? { range: p.range } : undefined);
        if (!obj) throw new Error(`stored object ${p.key} is missing`);
        await obj.body.pipeTo(writable, { preventClose: i < pieces.length - 1 });
      }
      if (pieces.length === 0) await writable.close();
    } catch (err) {
      await writable.abort(err).catch(() => {});
      throw err;
    }
  })();
  done.catch(() => {});
  return { stream: readable as ReadableStream<Uint8Array>, done };
}
