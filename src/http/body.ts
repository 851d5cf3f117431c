/** Reading small request/response bodies whole (pure Web APIs). */

/** The chunks joined into one Uint8Array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}

/**
 * Reads a body completely, refusing more than `max` bytes: reading stops at the limit and
 * `tooLarge()` is thrown; the rest is never read. (The stream is released, not cancelled: under
 * `wrangler dev` a cancelled request body races the response and the client sometimes sees 503
 * instead of the 413.)
 */
export async function readLimited(body: ReadableStream<Uint8Array> | null, max: number, tooLarge: () => Error): Promise<Uint8Array> {
  if (!body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      reader.releaseLock();
      throw tooLarge();
    }
    chunks.push(value);
  }
  return concatBytes(chunks);
}
