/** Pull-based byte reader over a ReadableStream: exact reads and bounded streaming of N bytes. */
export class ByteReader {
  private reader: ReadableStreamDefaultReader<Uint8Array>;
  private buf: Uint8Array = new Uint8Array(0);
  private done = false;
  /** Bytes consumed from the stream so far (including buffered ones not yet handed out). */
  total = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.reader = stream.getReader();
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const { value, done } = await this.reader.read();
    if (done) {
      this.done = true;
      return false;
    }
    if (value && value.byteLength) {
      this.total += value.byteLength;
      this.buf = this.buf.byteLength ? concat(this.buf, value) : value;
    }
    return true;
  }

  /** Looks at the next n bytes without consuming (fewer at end of stream). */
  async peek(n: number): Promise<Uint8Array> {
    while (this.buf.byteLength < n && (await this.fill()));
    return this.buf.subarray(0, Math.min(n, this.buf.byteLength));
  }

  /** Reads exactly n bytes, or null at a clean end (nothing buffered); throws on a short read. */
  async readExact(n: number): Promise<Uint8Array | null> {
    while (this.buf.byteLength < n && (await this.fill()));
    if (this.buf.byteLength === 0 && n > 0) return null;
    if (this.buf.byteLength < n) throw new Error("unexpected end of stream");
    const out = this.buf.slice(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Hands the next n bytes to `sink` chunk by chunk (at most what arrives at a time). */
  async stream(n: number, sink: (chunk: Uint8Array) => void | Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.byteLength === 0 && !(await this.fill())) throw new Error("unexpected end of stream");
      const take = Math.min(left, this.buf.byteLength);
      const chunk = this.buf.slice(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      await sink(chunk);
    }
  }

  async skip(n: number): Promise<void> {
    await this.stream(n, () => {});
  }

  /** Reads and discards the rest (up to `limit` more bytes, then cancels). */
  async drain(limit = Infinity): Promise<void> {
    this.buf = new Uint8Array(0);
    const stop = this.total + limit;
    try {
      while (this.total < stop && (await this.fill())) this.buf = new Uint8Array(0);
    } catch {
      /* a broken stream is drained too */
    }
    if (!this.done) await this.cancel();
  }

  /**
   * The rest of the input as a stream for another reader. Cancelling that stream leaves the source
   * to this ByteReader (to drain or cancel it).
   */
  asStream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>({
      pull: async (c) => {
        const avail = (await this.peek(65536)).byteLength;
        const chunk = avail ? await this.readExact(avail) : null;
        if (!chunk || !chunk.byteLength) c.close();
        else c.enqueue(chunk);
      },
    });
  }

  async cancel(reason?: unknown): Promise<void> {
    try {
      await this.reader.cancel(reason);
    } catch {
      /* already closed */
    }
  }
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}
