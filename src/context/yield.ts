/**
 * Gives the event loop a turn every `bytes`: a long layer pipeline otherwise runs on promise
 * continuations alone and starves every other request of the isolate (the build's own GET/SSE,
 * and under `wrangler dev` the whole server) until it ends.
 */
export function yieldEvery(bytes: number): TransformStream<Uint8Array, Uint8Array> {
  let since = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    async transform(chunk, controller) {
      controller.enqueue(chunk);
      since += chunk.byteLength;
      if (since >= bytes) {
        since = 0;
        await new Promise((r) => setTimeout(r, 0));
      }
    },
  });
}
