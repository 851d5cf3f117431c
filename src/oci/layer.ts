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
 * The gzip header kiln writes: magic 1f 8b, CM 8 (deflate), FLG 0 (no name, comment or extra), MTIME 0,
 * XFL 0, OS 3 (Unix). This is exactly what CompressionStream("gzip") emits in workerd and in Node 20
 * (both wrap zlib's deflate with its default header: no time, no name, OS_CODE 3); src/oci/layer.test.ts
 * and src/oci/node-check.ts pin it, together with the digest of the whole compressed stream, so a layer
 * made in the Worker and one made by a Node runner from the same tar are byte-identical.
 */
export const GZIP_HEADER = new Uint8Array([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03]);

/**
 * Normalises the gzip header of a CompressionStream's output to GZIP_HEADER (MTIME, XFL and OS; a header
 * with optional fields is an error). A no-op on the runtimes measured, kept as a guard so a runtime that
 * stamps a time or another OS byte cannot make layers irreproducible.
 */
export function gzipHeaderNormalizer(): TransformStream<Uint8Array, Uint8Array> {
  let head: Uint8Array | null = new Uint8Array(0);
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      if (head === null) {
        controller.enqueue(chunk);
        return;
      }
      let buf: Uint8Array = chunk;
      if (head.length > 0) {
        buf = new Uint8Array(head.length + chunk.length);
        buf.set(head);
        buf.set(chunk, head.length);
      }
      if (buf.length < GZIP_HEADER.length) {
        head = buf === chunk ? chunk.slice() : buf;
        return;
      }
      head = null;
      if (buf[0] !== 0x1f || buf[1] !== 0x8b || buf[2] !== 0x08) throw new Error("gzip: compressor did not produce a gzip stream");
      if (buf[3] !== 0) throw new Error("gzip: compressor wrote optional header fields");
      let same = true;
      for (let i = 4; i < GZIP_HEADER.length; i++) if (buf[i] !== GZIP_HEADER[i]) same = false;
      if (!same) {
        if (buf === chunk) buf = chunk.slice();
        buf.set(GZIP_HEADER.subarray(4), 4);
      }
      controller.enqueue(buf);
    },
    flush(controller) {
      if (head !== null && head.length > 0) throw new Error("gzip: stream shorter than its header");
      void controller;
    },
  });
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
