/**
 * gunzip that decompresses only as fast as its output is read. A DecompressionStream behind
 * pipeThrough takes all the input it is offered and queues what it expands, so a 14 MB gzip bomb
 * becomes gigabytes in memory before a size check downstream sees the first of them.
 */
export function gunzipPaced(input: ReadableStream<Uint8Array>, piece = 16 * 1024): ReadableStream<Uint8Array> {
  return pacedThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>, input, piece);
}

const turn = () => new Promise<void>((r) => setTimeout(r, 0));
const IDLE = Promise.resolve("idle" as const);

/**
 * `input` through a (native) transform, paced by the reader: the input is written in pieces of at
 * most `piece` bytes, the next only when the reader wants more and a turn of the event loop after the
 * last write brought no output. So at most about one piece's worth of output is ever ahead of the reader.
 */
export function pacedThrough(ts: TransformStream<Uint8Array, Uint8Array>, input: ReadableStream<Uint8Array>, piece: number): ReadableStream<Uint8Array> {
  const writer = ts.writable.getWriter();
  const out = ts.readable.getReader();
  const src = input.getReader();
  let rest: Uint8Array = new Uint8Array(0);
  let inputDone = false;
  let writing: Promise<void> = Promise.resolve();
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;

  async function nextPiece(): Promise<Uint8Array | null> {
    while (rest.byteLength === 0) {
      const { done, value } = await src.read();
      if (done) return null;
      if (value) rest = value;
    }
    const p = rest.subarray(0, piece);
    rest = rest.subarray(p.byteLength);
    return p;
  }

  return new ReadableStream<Uint8Array>({
    async pull(c) {
      pending ??= out.read();
      // output already there (the common case): no turn of the event loop, no write
      const ready = await Promise.race([pending, IDLE]);
      const read = pending.then(() => "read" as const);
      for (;;) {
        if (ready !== "idle") break;
        // a turn of the event loop after the last write: its output has surfaced by then, if it made any
        const first = await Promise.race([read, writing.then(turn).then(() => "wrote" as const)]);
        if (first === "read" || inputDone) break;
        const p = await nextPiece();
        if (p === null) {
          inputDone = true;
          writing = writer.close();
        } else writing = writer.write(p);
        writing.catch(() => {}); // its failure reaches the reader through `out`
      }
      const r = await pending;
      pending = undefined;
      if (r.done) c.close();
      else c.enqueue(r.value);
    },
    async cancel(reason) {
      await src.cancel(reason).catch(() => {});
      await writer.abort(reason).catch(() => {});
      await out.cancel(reason).catch(() => {});
    },
  });
}
