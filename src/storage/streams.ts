/**
 * Streaming helpers between request bodies and R2 with bounded memory: hashing while passing
 * bytes through, fixed-length puts, and re-chunking a stream of unknown length into equal
 * multipart parts.
 */
import { toHex } from "./digest";

/** Part size for R2 multipart uploads (all parts but the last must have the same size, >= 5 MiB). */
export const PART_SIZE = 8 * 1024 * 1024;
/** Largest object written with a single put (R2 limit is just under 5 GiB). */
export const SINGLE_PUT_MAX = 4.5 * 1024 * 1024 * 1024;

/** Counts and (optionally) hashes the bytes that flow through `transform`. */
export class Meter {
  size = 0;
  finished = false;
  private readonly digestStream?: DigestStream;
  private readonly writer?: WritableStreamDefaultWriter<ArrayBuffer | ArrayBufferView>;
  readonly transform: TransformStream<Uint8Array, Uint8Array>;

  constructor(algorithm?: "SHA-256" | "SHA-512") {
    if (algorithm) {
      this.digestStream = new crypto.DigestStream(algorithm);
      this.writer = this.digestStream.getWriter();
    }
    this.transform = new TransformStream<Uint8Array, Uint8Array>({
      transform: async (chunk, controller) => {
        await this.update(chunk);
        controller.enqueue(chunk);
      },
      flush: async () => {
        await this.finish();
      },
    });
  }

  async update(chunk: Uint8Array): Promise<void> {
    this.size += chunk.byteLength;
    if (this.writer) await this.writer.write(chunk);
  }

  async finish(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    if (this.writer) await this.writer.close();
  }

  /** Hex digest of everything seen; only after the stream finished. */
  async hex(): Promise<string> {
    if (!this.digestStream || !this.finished) throw new Error("digest not available");
    return toHex(await this.digestStream.digest);
  }
}

/**
 * Reads `body` to its end in PART_SIZE pieces. A body that fits in one part comes back as `small`
 * (nothing written); a larger one is written as multipart parts to `key` (left open: the caller
 * completes or aborts it) or, with key null, only counted/hashed and dropped.
 */
export async function spool(
  bucket: R2Bucket,
  body: ReadableStream<Uint8Array>,
  key: string | null,
  meter: Meter,
): Promise<{ small?: Uint8Array; upload?: R2MultipartUpload; parts: R2UploadedPart[] }> {
  const reader = body.getReader();
  let buf = new Uint8Array(PART_SIZE);
  let pos = 0;
  let upload: R2MultipartUpload | undefined;
  const parts: R2UploadedPart[] = [];
  let overflowed = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await meter.update(value);
      let off = 0;
      while (off < value.byteLength) {
        const n = Math.min(PART_SIZE - pos, value.byteLength - off);
        buf.set(value.subarray(off, off + n), pos);
        pos += n;
        off += n;
        if (pos === PART_SIZE) {
          overflowed = true;
          if (key !== null) {
            upload ??= await bucket.createMultipartUpload(key);
            parts.push(await upload.uploadPart(parts.length + 1, buf));
            buf = new Uint8Array(PART_SIZE);
          }
          pos = 0;
        }
      }
    }
    await meter.finish();
    if (!overflowed) return { small: buf.subarray(0, pos), parts };
    if (key !== null && pos > 0) {
      upload ??= await bucket.createMultipartUpload(key);
      parts.push(await upload.uploadPart(parts.length + 1, buf.subarray(0, pos)));
    }
    return { upload, parts };
  } catch (err) {
    reader.cancel(err).catch(() => {});
    if (upload) await upload.abort().catch(() => {});
    throw err;
  }
}

/** Puts `body` of exactly `size` bytes at `key` (single put through FixedLengthStream). */
export async function putFixed(
  bucket: R2Bucket,
  key: string,
  body: ReadableStream<Uint8Array>,
  size: number,
  meter: Meter,
  options: R2PutOptions = {},
): Promise<void> {
  const fixed = new FixedLengthStream(size);
  const piping = body.pipeThrough(meter.transform).pipeTo(fixed.writable);
  const putting = bucket.put(key, fixed.readable, options);
  const [p, q] = await Promise.allSettled([piping, putting]);
  if (q.status === "rejected") throw q.reason;
  if (p.status === "rejected") throw p.reason;
}

/** Concatenates R2 objects into one stream, read one object at a time. */
export function concatObjects(bucket: R2Bucket, keys: string[]): ReadableStream<Uint8Array> {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  (async () => {
    try {
      for (const key of keys) {
        const obj = await bucket.get(key);
        if (!obj) throw new Error(`staged object ${key} is missing`);
        await obj.body.pipeTo(writable, { preventClose: true });
      }
      await writable.close();
    } catch (err) {
      await writable.abort(err).catch(() => {});
    }
  })();
  return readable;
}

/** Drains a stream through `meter` (counting/hashing only). */
export async function drain(body: ReadableStream<Uint8Array>, meter: Meter): Promise<void> {
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    await meter.update(value);
  }
  await meter.finish();
}
