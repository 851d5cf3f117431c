// Deterministic generated blob data: any byte range can be produced on demand, so tests and benches
// push and verify blobs of hundreds of MiB or GiB without holding them in memory.
import { createHash, randomBytes } from "node:crypto";

const BLOCK = 1 << 20;

export class GeneratedBlob {
  readonly size: number;
  private readonly base: Buffer;
  private readonly tag: string;
  private cachedDigest?: string;

  constructor(size: number, tag = "kiln") {
    this.size = size;
    this.tag = tag;
    // Incompressible: one random block, each 1 MiB block stamped with its index (blocks all differ).
    this.base = randomBytes(BLOCK);
  }

  /** Bytes [start, end) as a new buffer (keep ranges small: a few MiB). */
  bytes(start: number, end: number): Buffer {
    const out = Buffer.allocUnsafe(end - start);
    let pos = start;
    while (pos < end) {
      const block = Math.floor(pos / BLOCK);
      const within = pos - block * BLOCK;
      const n = Math.min(BLOCK - within, end - pos);
      this.base.copy(out, pos - start, within, within + n);
      // stamp: the first 16 bytes of each block carry the block index and the tag
      if (within < 16) {
        const stamp = Buffer.alloc(16);
        stamp.writeUInt32BE(block, 0);
        stamp.write(this.tag.slice(0, 12), 4);
        stamp.copy(out, pos - start, within, Math.min(16, within + n));
      }
      pos += n;
    }
    return out;
  }

  /** Bytes [start, end) as a stream of chunks of at most `chunk` bytes. */
  stream(start = 0, end = this.size, chunk = BLOCK): ReadableStream<Uint8Array> {
    let pos = start;
    return new ReadableStream<Uint8Array>({
      pull: (controller) => {
        if (pos >= end) { controller.close(); return; }
        const n = Math.min(chunk, end - pos);
        controller.enqueue(new Uint8Array(this.bytes(pos, pos + n)));
        pos += n;
      },
    }, { highWaterMark: 0 });
  }

  /** `sha256:<hex>` of the whole blob (computed once by generating it). */
  digest(): string {
    if (this.cachedDigest) return this.cachedDigest;
    const h = createHash("sha256");
    for (let pos = 0; pos < this.size; pos += 4 * BLOCK) h.update(this.bytes(pos, Math.min(this.size, pos + 4 * BLOCK)));
    this.cachedDigest = `sha256:${h.digest("hex")}`;
    return this.cachedDigest;
  }
}

export const sha256 = (data: Uint8Array | string) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** Reads a byte stream to the end: its length and sha256 digest (never buffered whole). */
export async function digestStream(body: ReadableStream<Uint8Array> | null): Promise<{ size: number; digest: string }> {
  const h = createHash("sha256");
  let size = 0;
  if (body) {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      h.update(value);
      size += value.byteLength;
    }
  }
  return { size, digest: `sha256:${h.digest("hex")}` };
}
