/**
 * Layers: tar → diffID hash → gzip → digest hash, in one streaming pass.
 */
import type { Digest, HasherFactory } from "./digest";
import { layerCompression } from "./mediatypes";
import { through } from "./streams";
import { readTar, tarStream, TarError, type ReadTarOptions, type TarEntry, type TarReadEntry } from "./tar";

export interface LayerResult {
  /** sha256 of the compressed blob (what the manifest references). */
  digest: Digest;
  /** sha256 of the uncompressed tar (what the config's rootfs.diff_ids lists). */
  diffId: Digest;
  /** Compressed size in bytes. */
  size: number;
  uncompressedSize: number;
}

export interface WriteLayerOptions {
  hasher: HasherFactory;
  /** Accepted for API compatibility; CompressionStream has no level knob (zlib default, 6). */
  gzipLevel?: number;
}

/**
 * Writes a gzip layer. Read `stream` to the end (e.g. into R2); `result` resolves after the last byte
 * passed (and rejects if the stream errors or is cancelled).
 */
export function writeLayer(
  entries: AsyncIterable<TarEntry> | Iterable<TarEntry>,
  options: WriteLayerOptions,
): { stream: ReadableStream<Uint8Array>; result: Promise<LayerResult> } {
  return compressLayer(tarStream(entries), options);
}

/** Like writeLayer for an already-made tar stream (e.g. a runner's diff). */
export function compressLayer(
  tar: ReadableStream<Uint8Array>,
  options: WriteLayerOptions,
): { stream: ReadableStream<Uint8Array>; result: Promise<LayerResult> } {
  const un = options.hasher();
  const gz = options.hasher();
  let uncompressedSize = 0;
  let size = 0;
  let headerLeft = GZIP_HEADER.length;
  let resolve!: (r: LayerResult) => void;
  let reject!: (e: unknown) => void;
  const result = new Promise<LayerResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  result.catch(() => {});
  const stream = through(tar, new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>, {
    input(chunk) {
      un.update(chunk);
      uncompressedSize += chunk.length;
    },
    output(chunk) {
      if (headerLeft > 0) {
        chunk = normalizeGzipHeader(chunk, GZIP_HEADER.length - headerLeft);
        headerLeft = Math.max(0, headerLeft - chunk.length);
      }
      gz.update(chunk);
      size += chunk.length;
      return chunk;
    },
    async end() {
      if (headerLeft > 0) throw new Error("gzip: stream shorter than its header");
      const [diffId, digest] = await Promise.all([un.digest(), gz.digest()]);
      resolve({ digest: digest as Digest, diffId: diffId as Digest, size, uncompressedSize });
    },
    fail: (e) => reject(e),
  });
  return { stream, result };
}

/** Checks/rewrites the gzip header bytes of `chunk`, which starts at header offset `at`. */
function normalizeGzipHeader(chunk: Uint8Array, at: number): Uint8Array {
  let out = chunk;
  for (let i = 0; i < chunk.length && at + i < GZIP_HEADER.length; i++) {
    const pos = at + i;
    if (chunk[i] === GZIP_HEADER[pos]) continue;
    if (pos < 4) throw new Error(pos === 3 ? "gzip: compressor wrote optional header fields" : "gzip: compressor did not produce a gzip stream");
    if (out === chunk) out = chunk.slice();
    out[i] = GZIP_HEADER[pos];
  }
  return out;
}

/**
 * The gzip header kiln writes: magic 1f 8b, CM 8 (deflate), FLG 0 (no name, comment or extra), MTIME 0,
 * XFL 0, OS 3 (Unix). This is exactly what CompressionStream("gzip") emits in workerd and in Node 20
 * (both wrap zlib's deflate with its default header: no time, no name, OS_CODE 3); src/oci/layer.test.ts
 * and src/oci/node-check.ts pin it (compressLayer checks it and rewrites MTIME/XFL/OS if a runtime ever differs), together with the digest of the whole compressed stream, so a layer
 * made in the Worker and one made by a Node runner from the same tar are byte-identical.
 */
export const GZIP_HEADER = new Uint8Array([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]);

/** Reads a layer blob as tar entries, decompressing gzip; zstd is refused with a TarError. */
export function readLayer(
  stream: ReadableStream<Uint8Array>,
  mediaType: string,
  options?: ReadTarOptions,
): AsyncIterable<TarReadEntry> {
  const c = layerCompression(mediaType);
  if (c === undefined) throw new TarError(`not a layer media type: ${mediaType}`);
  if (c === "zstd") throw new TarError("zstd layers are not supported");
  if (c === "gzip") {
    stream = through(stream, new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>, {
      transformError: (e) => new TarError(`layer is not valid gzip: ${(e as Error)?.message ?? e}`),
    });
  }
  return readTar(stream, options);
}
