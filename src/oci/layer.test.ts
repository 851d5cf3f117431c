import { describe, expect, it } from "vitest";
import { createSha256, sha256Hex } from "./digest";
import { compressLayer, GZIP_HEADER, readLayer, writeLayer } from "./layer";
import { MediaType } from "./mediatypes";
import { collect, readTar, tarStream, TarError } from "./tar";
import { bytesEqual, chunkedStream, PINNED, pseudoText, sampleEntries } from "./testing";

describe("writeLayer", () => {
  it("computes digest, diffID and sizes equal to independent SHA-256 of the bytes", async () => {
    const { stream, result } = writeLayer(sampleEntries(), { hasher: createSha256 });
    const gz = await collect(stream);
    const r = await result;
    const tar = await collect(tarStream(sampleEntries()));
    expect(r.digest).toBe(`sha256:${await sha256Hex(gz)}`);
    expect(r.diffId).toBe(`sha256:${await sha256Hex(tar)}`);
    expect(r.size).toBe(gz.length);
    expect(r.uncompressedSize).toBe(tar.length);
    // the compressed bytes decompress to exactly the tar
    const back = await collect(chunkedStream(gz, 1000).pipeThrough(new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>));
    expect(bytesEqual(back, tar)).toBe(true);
  });

  it("writes a gzip header without time or name (1f8b 08 00 00000000 00 03)", async () => {
    const gz = await collect(writeLayer(sampleEntries(), { hasher: createSha256 }).stream);
    expect([...gz.subarray(0, 10)]).toEqual([...GZIP_HEADER]);
  });

  it("is reproducible and byte-identical to the layer Node 20 makes from the same entries", async () => {
    const a = writeLayer(sampleEntries(), { hasher: createSha256 });
    await collect(a.stream);
    const b = writeLayer((async function* () { yield* sampleEntries(); })(), { hasher: createSha256 });
    await collect(b.stream);
    expect(await a.result).toEqual(PINNED.sampleLayer);
    expect(await b.result).toEqual(PINNED.sampleLayer);
  });

  it("CompressionStream output does not depend on how the input is chunked, and matches Node's zlib", async () => {
    const data = pseudoText(1 << 20, 42);
    for (const chunk of [1 << 20, 65536, 4099]) {
      const gz = await collect(chunkedStream(data, chunk).pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>));
      expect({ sha256: await sha256Hex(gz), size: gz.length }, `chunk ${chunk}`).toEqual(PINNED.gzipPseudo1MiB);
    }
  });

  it("fails the stream and the result when an entry is bad", async () => {
    const { stream, result } = writeLayer(
      [{ path: "f", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, size: 5, body: new Uint8Array(4) }],
      { hasher: createSha256 },
    );
    await expect(collect(stream)).rejects.toThrow(TarError);
    await expect(result).rejects.toThrow(TarError);
  });

  it("rejects the result when the consumer cancels", async () => {
    const { stream, result } = writeLayer(sampleEntries(), { hasher: createSha256 });
    const r = stream.getReader();
    await r.read();
    await r.cancel(new Error("client went away"));
    await expect(result).rejects.toThrow();
  });

  it("compressLayer hashes an existing tar stream the same way", async () => {
    const { stream, result } = compressLayer(tarStream(sampleEntries()), { hasher: createSha256 });
    await collect(stream);
    expect(await result).toEqual(PINNED.sampleLayer);
  });
});

describe("readLayer", () => {
  it("reads a gzip layer back into its entries", async () => {
    const { stream } = writeLayer(sampleEntries(), { hasher: createSha256 });
    const paths: string[] = [];
    for await (const { header, body } of readLayer(stream, MediaType.OciLayerGzip)) {
      paths.push(header.path);
      await collect(body);
    }
    expect(paths).toHaveLength(sampleEntries().length);
    expect(paths[0]).toBe("a/");
  });

  it("reads an uncompressed layer and refuses zstd and non-layer types", async () => {
    const n: string[] = [];
    for await (const { header } of readLayer(tarStream(sampleEntries()), MediaType.OciLayer)) n.push(header.path);
    expect(n).toHaveLength(12);
    expect(() => readLayer(tarStream([]), MediaType.OciLayerZstd)).toThrow(/zstd/);
    expect(() => readLayer(tarStream([]), MediaType.OciConfig)).toThrow(/not a layer/);
  });

  it("reports a corrupt gzip layer as an error", async () => {
    const gz = await collect(writeLayer(sampleEntries(), { hasher: createSha256 }).stream);
    const cut = gz.slice(0, gz.length - 100);
    const consume = async () => {
      for await (const { body } of readLayer(chunkedStream(cut, 4096), MediaType.DockerLayerGzip)) await collect(body);
    };
    await expect(consume()).rejects.toThrow(TarError);
  });
});

it("readTar is usable straight on a stream that the caller also hashes", async () => {
  const { stream, result } = compressLayer(tarStream(sampleEntries()), { hasher: createSha256 });
  const [a, b] = stream.tee();
  const count = (async () => { let n = 0; for await (const e of readLayer(a, MediaType.OciLayerGzip)) { n++; await e.body.cancel(); } return n; })();
  await collect(b);
  expect(await count).toBe(12);
  expect((await result).digest).toBe(PINNED.sampleLayer.digest);
  void readTar;
});
