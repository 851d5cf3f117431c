/**
 * Layers: tar → diffID hash → gzip → digest hash, in one streaming pass.
 */
import type { Digest, HasherFactory } from "./digest";
import { hashingStream } from "./digest";
import { layerCompression } from "./mediatypes";
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
  const un = hashingStream(options.hasher);
  const gz = hashingStream(options.hasher);
  const stream = tar
    .pipeThrough(un.stream)
    .pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>)
    .pipeThrough(gzipHeaderNormalizer())
    .pipeThrough(gz.stream);
  const result = Promise.all([un.result, gz.result]).then(([u, g]) => ({
    digest: g.digest,
    diffId: u.digest,
    size: g.size,
    uncompressedSize: u.size,
  }));
  result.catch(() => {});
  return { stream, result };
}

/**
 * Rewrites the 10-byte gzip header to 1f 8b 08 00 00000000 00 ff... (no mtime, no name, OS "unknown").
 * TODO(measure): fill with what workerd emits so the Worker path needs no rewrite.
 */
export function gzipHeaderNormalizer(): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream<Uint8Array, Uint8Array>();
}

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
    stream = stream.pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>);
  }
  return readTar(stream, options);
}
