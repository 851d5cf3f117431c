/**
 * The one pull-based byte reader over a ReadableStream: exact reads, peeks and skips for the tar
 * reader and for context ingest, which keeps the source to count what was read and to drain the rest
 * of a request after a refusal.
 */
export class ByteReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private buf: Uint8Array = new Uint8Array(0);
  /** The stream has ended (or was cancelled). */
  eof = false;
  /** Bytes pulled from the stream so far (including buffered ones not yet handed out). */
  total = 0;
  /** Bytes handed out or skipped so far. */
  offset = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  /** Pulls the next non-empty chunk into the buffer; false at the end of the stream. */
  private async fill(): Promise<boolean> {
    while (!this.eof) {
      const { done, value } = await this.reader.read();
      if (done) {
        this.eof = true;
        return false;
      }
      if (value && value.byteLength) {
        this.total += value.byteLength;
        this.buf = this.buf.byteLength ? concat(this.buf, value) : value;
        return true;
      }
    }
    return false;
  }

  private take(n: number): Uint8Array {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    this.offset += n;
    return out;
  }

  /** Looks at the next n bytes without consuming them (fewer at the end of the stream). */
  async peek(n: number): Promise<Uint8Array> {
    while (this.buf.byteLength < n && (await this.fill()));
    return this.buf.subarray(0, Math.min(n, this.buf.byteLength));
  }

  /** Up to `max` bytes (a view of the input, no copy), or null at the end of the stream. */
  async readUpTo(max: number): Promise<Uint8Array | null> {
    if (this.buf.byteLength === 0 && !(await this.fill())) return null;
    return this.take(Math.min(max, this.buf.byteLength));
  }

  /** Exactly n bytes (a copy), or null at a clean end (nothing left); throws on a short read. */
  async readExact(n: number): Promise<Uint8Array | null> {
    while (this.buf.byteLength < n && (await this.fill()));
    if (this.buf.byteLength === 0 && n > 0) return null;
    if (this.buf.byteLength < n) throw new Error("unexpected end of stream");
    return this.take(n).slice();
  }

  /** Exactly n bytes (a view when they are in one chunk), or how many were left when the stream ended early. */
  async readFull(n: number): Promise<Uint8Array | number> {
    if (this.buf.byteLength >= n) return this.take(n);
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const part = await this.readUpTo(n - got);
      if (!part) return got;
      out.set(part, got);
      got += part.length;
    }
    return out;
  }

  /** Skips n bytes; returns how many were skipped (< n when the stream ended). */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      const part = await this.readUpTo(left);
      if (!part) break;
      left -= part.length;
    }
    return n - left;
  }

  /** Reads and discards everything left, so a hash taken over the stream upstream sees all of it; stream errors propagate. */
  async discardRest(): Promise<void> {
    this.buf = new Uint8Array(0);
    while (await this.fill()) this.buf = new Uint8Array(0);
  }

  /** Reads and discards the rest (up to `limit` more bytes, then cancels) so a refused sender still gets its answer; errors are ignored. */
  async drain(limit = Infinity): Promise<void> {
    this.buf = new Uint8Array(0);
    const stop = this.total + limit;
    try {
      while (this.total < stop && (await this.fill())) this.buf = new Uint8Array(0);
    } catch {
      /* a broken stream is drained too */
    }
    if (!this.eof) await this.cancel();
  }

  /**
   * The rest of the input as a stream for another reader. Cancelling that stream leaves the source
   * to this ByteReader (to drain or cancel it).
   */
  asStream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        const chunk = await this.readUpTo(65536);
        if (!chunk) c.close();
        else c.enqueue(chunk.slice());
      },
    });
  }

  async cancel(reason?: unknown): Promise<void> {
    if (this.eof) return;
    this.eof = true;
    this.buf = new Uint8Array(0);
    await this.reader.cancel(reason).catch(() => {});
  }
}

/** a followed by b, in a new array. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}
