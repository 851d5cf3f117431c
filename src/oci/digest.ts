/**
 * Content digests (`sha256:<64 hex>`) and incremental hashing.
 *
 * crypto.subtle.digest is one-shot and crypto.DigestStream is Workers-only, so streaming code takes a
 * `HasherFactory`: the Worker passes one built on DigestStream, Node one built on `createHash`, and
 * `createSha256` (pure JS) is the portable fallback used in tests.
 */

/** The digest algorithms the registry accepts (OCI distribution); kiln itself produces sha256 only. */
export type DigestAlgorithm = "sha256" | "sha512";

/** A typed digest: `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`. */
export type Digest = `sha256:${string}` | `sha512:${string}`;

export class DigestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DigestError";
  }
}

const DIGEST_RE = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/** Parses and validates `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`; throws DigestError otherwise. */
export function parseDigest(s: string): Digest {
  if (typeof s !== "string") throw new DigestError("digest must be a string");
  if (DIGEST_RE.test(s)) return s as Digest;
  const colon = s.indexOf(":");
  if (colon <= 0) throw new DigestError(`invalid digest ${JSON.stringify(s)}: expected <algorithm>:<hex>`);
  const alg = s.slice(0, colon);
  if (alg !== "sha256" && alg !== "sha512") throw new DigestError(`unsupported digest algorithm ${JSON.stringify(alg)}`);
  throw new DigestError(`invalid ${alg} digest ${JSON.stringify(s)}: expected ${alg === "sha256" ? 64 : 128} lowercase hex characters`);
}

export function isDigest(s: unknown): s is Digest {
  return typeof s === "string" && DIGEST_RE.test(s);
}

/** The hex part of a digest (validated). */
export function hexOf(d: string): string {
  const v = parseDigest(d);
  return v.slice(v.indexOf(":") + 1);
}

/** The algorithm of a digest (validated). */
export function algorithmOf(d: string): DigestAlgorithm {
  return parseDigest(d).startsWith("sha512:") ? "sha512" : "sha256";
}

/** The Web Crypto name of a digest algorithm (crypto.subtle, DigestStream). */
export function webAlgorithm(alg: DigestAlgorithm): "SHA-256" | "SHA-512" {
  return alg === "sha256" ? "SHA-256" : "SHA-512";
}

/** Incremental SHA-256. `update` must not be called after `digest`. Chunks are not retained after
 *  `update` returns, except by implementations that queue them (DigestStream): never mutate a chunk
 *  after handing it over. */
export interface Hasher {
  update(chunk: Uint8Array): void;
  /** `sha256:<hex>` of everything passed to update. */
  digest(): Promise<string>;
}

export type HasherFactory = () => Hasher;

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, "0"));

/** Lowercase hex of some bytes. */
export function toHex(bytes: Uint8Array | ArrayBuffer): string {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = "";
  for (let i = 0; i < b.length; i++) s += HEX[b[i]];
  return s;
}

/** One-shot SHA-256 with crypto.subtle; returns the bare hex. */
export async function sha256Hex(bytes: Uint8Array | ArrayBuffer): Promise<string> {
  const buf = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return toHex(new Uint8Array(buf));
}

/** One-shot digest of some bytes (sha256 unless told). */
export async function digestOf(bytes: Uint8Array | ArrayBuffer): Promise<`sha256:${string}`>;
export async function digestOf(bytes: Uint8Array | ArrayBuffer, algorithm: DigestAlgorithm): Promise<Digest>;
export async function digestOf(bytes: Uint8Array | ArrayBuffer, algorithm: DigestAlgorithm = "sha256"): Promise<Digest> {
  const buf = await crypto.subtle.digest(webAlgorithm(algorithm), bytes as Uint8Array<ArrayBuffer>);
  return `${algorithm}:${toHex(new Uint8Array(buf))}` as Digest;
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** Pure-JS incremental SHA-256 (FIPS 180-4). No allocation per update. */
export class Sha256 implements Hasher {
  private readonly h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  private readonly w = new Int32Array(64);
  private readonly block = new Uint8Array(64);
  private blockLen = 0;
  private bytesHi = 0; // total length in bytes = bytesHi * 2^32 + bytesLo
  private bytesLo = 0;
  private finished = false;

  update(data: Uint8Array): void {
    if (this.finished) throw new Error("Sha256: update after digest");
    const len = data.length;
    const lo = this.bytesLo + len;
    this.bytesHi += Math.floor(lo / 0x100000000);
    this.bytesLo = lo >>> 0;
    let pos = 0;
    if (this.blockLen > 0) {
      const take = Math.min(64 - this.blockLen, len);
      this.block.set(data.subarray(0, take), this.blockLen);
      this.blockLen += take;
      pos = take;
      if (this.blockLen < 64) return;
      this.compress(this.block, 0);
      this.blockLen = 0;
    }
    while (len - pos >= 64) {
      this.compress(data, pos);
      pos += 64;
    }
    if (pos < len) {
      this.block.set(data.subarray(pos), 0);
      this.blockLen = len - pos;
    }
  }

  /** The digest as raw 32 bytes. */
  digestBytes(): Uint8Array {
    if (this.finished) throw new Error("Sha256: digest called twice");
    this.finished = true;
    const bitsHi = ((this.bytesHi << 3) | (this.bytesLo >>> 29)) >>> 0;
    const bitsLo = (this.bytesLo << 3) >>> 0;
    const b = this.block;
    b[this.blockLen++] = 0x80;
    if (this.blockLen > 56) {
      b.fill(0, this.blockLen);
      this.compress(b, 0);
      this.blockLen = 0;
    }
    b.fill(0, this.blockLen, 56);
    b[56] = bitsHi >>> 24; b[57] = bitsHi >>> 16; b[58] = bitsHi >>> 8; b[59] = bitsHi;
    b[60] = bitsLo >>> 24; b[61] = bitsLo >>> 16; b[62] = bitsLo >>> 8; b[63] = bitsLo;
    this.compress(b, 0);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const v = this.h[i];
      out[i * 4] = v >>> 24; out[i * 4 + 1] = v >>> 16; out[i * 4 + 2] = v >>> 8; out[i * 4 + 3] = v;
    }
    return out;
  }

  digest(): Promise<string> {
    try {
      return Promise.resolve(`sha256:${toHex(this.digestBytes())}`);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private compress(p: Uint8Array, off: number): void {
    const w = this.w;
    const h = this.h;
    for (let i = 0; i < 16; i++, off += 4) {
      w[i] = (p[off] << 24) | (p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3];
    }
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h[0] | 0, b = h[1] | 0, c = h[2] | 0, d = h[3] | 0;
    let e = h[4] | 0, f = h[5] | 0, g = h[6] | 0, hh = h[7] | 0;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) | 0;
      hh = g; g = f; f = e; e = (d + t1) | 0;
      d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
}

/** A new pure-JS SHA-256 hasher. Portable fallback for `HasherFactory`. */
export const createSha256: HasherFactory = () => new Sha256();

/**
 * Adapts a hashing WritableStream with a `digest` promise (workerd's `crypto.DigestStream`) to a
 * HasherFactory, without referencing the Workers-only class here:
 * `const hasher = writableHasher(() => new crypto.DigestStream("SHA-256"))`.
 * Writes are queued without waiting (DigestStream consumes them promptly), small ones gathered into
 * one; `digest()` closes the stream.
 */
export function writableHasher(
  create: () => { getWriter(): WritableStreamDefaultWriter<ArrayBufferView | ArrayBuffer>; digest: Promise<ArrayBuffer> },
): HasherFactory {
  return () => {
    const stream = create();
    const writer = stream.getWriter();
    let failure: unknown = null;
    // Small updates (a context of many tiny files) are gathered into one write: each write to the
    // stream costs more than hashing a few bytes.
    let pending: Uint8Array | null = null;
    let used = 0;
    const write = (chunk: Uint8Array) => {
      writer.write(chunk).catch((e) => {
        failure ??= e;
      });
    };
    const flush = () => {
      if (pending && used) write(pending.subarray(0, used));
      pending = null;
      used = 0;
    };
    return {
      update(chunk: Uint8Array) {
        if (chunk.length === 0) return;
        if (chunk.length >= GATHER_BYTES) {
          flush();
          write(chunk);
          return;
        }
        if (pending && used + chunk.length > GATHER_BYTES) flush();
        pending ??= new Uint8Array(GATHER_BYTES);
        pending.set(chunk, used);
        used += chunk.length;
      },
      async digest() {
        flush();
        await writer.close();
        if (failure) throw failure;
        return `sha256:${toHex(new Uint8Array(await stream.digest))}`;
      },
    };
  };
}

/** Updates smaller than this are gathered into writes of up to this size (writableHasher). */
const GATHER_BYTES = 64 * 1024;

/** A promise with its resolve/reject at hand; an unobserved rejection is not an unhandled one. */
function settledLater<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * A pass-through TransformStream that hashes and counts the bytes flowing through it.
 * `result` resolves when the stream is flushed and rejects if it errors; on runtimes without
 * `Transformer.cancel` a downstream cancel leaves it pending: prefer `hashReadable` then.
 */
export function hashingStream(hasher: HasherFactory): {
  stream: TransformStream<Uint8Array, Uint8Array>;
  result: Promise<{ digest: Digest; size: number }>;
} {
  const h = hasher();
  let size = 0;
  const { promise: result, resolve, reject } = settledLater<{ digest: Digest; size: number }>();
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      h.update(chunk);
      size += chunk.length;
      controller.enqueue(chunk);
    },
    async flush() {
      try {
        resolve({ digest: (await h.digest()) as Digest, size });
      } catch (e) {
        reject(e);
        throw e;
      }
    },
    cancel(reason: unknown) {
      reject(reason ?? new Error("stream cancelled"));
    },
  } as Transformer<Uint8Array, Uint8Array>);
  return { stream, result };
}

/**
 * Wraps `src` so that reading the returned stream hashes and counts every byte. `result` resolves
 * after the last byte was read and rejects when `src` errors or the returned stream is cancelled.
 * Chunks are passed on as they are (no copy).
 */
export function hashReadable(
  src: ReadableStream<Uint8Array>,
  hasher: HasherFactory,
): { stream: ReadableStream<Uint8Array>; result: Promise<{ digest: Digest; size: number }> } {
  const h = hasher();
  let size = 0;
  const { promise: result, resolve, reject } = settledLater<{ digest: Digest; size: number }>();
  const reader = src.getReader();
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) {
              resolve({ digest: (await h.digest()) as Digest, size });
              controller.close();
              return;
            }
            if (!value || value.length === 0) continue;
            h.update(value);
            size += value.length;
            controller.enqueue(value);
            return;
          }
        } catch (e) {
          reject(e);
          throw e;
        }
      },
      async cancel(reason) {
        reject(reason ?? new Error("stream cancelled"));
        await reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
  return { stream, result };
}
