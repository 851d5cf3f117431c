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

/**
 * Reads and drops what is left of the body of a request kiln refuses, before the refusal is sent,
 * when its declared length says at most `max` bytes are left. workerd closes a connection whose
 * request body was not read to its end, and closing a socket with unread input sends a TCP reset,
 * which can destroy the refusal before the client reads it (a proxy in front, such as npm start's TLS
 * guard, loses it often); a drained body leaves the connection clean and reusable. A body of unknown
 * or larger length is left alone: reading it would be the very work the refusal avoids.
 */
export async function discardRefusedBody(req: Request, max = 64 * 1024 * 1024): Promise<void> {
  const body = req.body;
  if (!body || body.locked) return;
  const declared = req.headers.get("content-length");
  if (declared === null || !/^\d+$/.test(declared.trim()) || Number(declared) > max) return;
  const reader = body.getReader();
  try {
    for (let n = 0; n <= max;) {
      const { done, value } = await reader.read();
      if (done) return;
      n += value.byteLength;
    }
  } catch {
    // the client went away: nothing left to protect
  } finally {
    reader.releaseLock();
  }
}
