// Write amplification (issue 16): every byte pushed, built or uploaded as a context is written to R2
// once. The storage functions the routes and the builder call run against an instrumented bucket
// that counts the bytes of every put and multipart part.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../../src/env";
import { getBlob, putBlobComputed, statBlob } from "../../../src/storage/blobs";
import { appendUpload, createUpload, finishUpload } from "../../../src/storage/uploads";
import { storeLayer } from "../../../src/builder/layers";
import { ingestContext } from "../../../src/context/ingest";
import { collect, tarStream } from "../../../src/oci/tar";
import { randomBytes, sha256, streamOf } from "./helpers";

const MiB = 1024 * 1024;

/** Bytes written per R2 key while `fn` ran with a bucket that counts them. */
async function countWrites(fn: (env: Env) => Promise<void>): Promise<Map<string, number>> {
  const written = new Map<string, number>();
  const add = (key: string, n: number) => written.set(key, (written.get(key) ?? 0) + n);
  const sizeOf = (v: unknown): number | undefined =>
    v instanceof ArrayBuffer ? v.byteLength : ArrayBuffer.isView(v) ? v.byteLength : typeof v === "string" ? new TextEncoder().encode(v).byteLength : undefined;
  const wrapUpload = (up: R2MultipartUpload): R2MultipartUpload => new Proxy(up, {
    get(target, prop) {
      if (prop === "uploadPart") {
        return async (n: number, value: unknown, o?: unknown) => {
          const size = sizeOf(value);
          if (size === undefined) throw new Error("counting bucket: a part of unknown size");
          const part = await target.uploadPart(n, value as ArrayBuffer, o as R2UploadPartOptions);
          add(target.key, size);
          return part;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const bucket = new Proxy(env.BUCKET, {
    get(target, prop) {
      if (prop === "put") {
        return async (key: string, value: unknown, o?: R2PutOptions) => {
          const obj = await target.put(key, value as ArrayBuffer, o);
          add(key, obj?.size ?? 0);
          return obj;
        };
      }
      if (prop === "createMultipartUpload") {
        return async (key: string, o?: R2MultipartOptions) => wrapUpload(await target.createMultipartUpload(key, o));
      }
      if (prop === "resumeMultipartUpload") return (key: string, id: string) => wrapUpload(target.resumeMultipartUpload(key, id));
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  await fn({ ...env, BUCKET: bucket } as Env);
  return written;
}

const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

async function readAll(e: Env, digest: string): Promise<Uint8Array> {
  const blob = await getBlob(e, digest);
  return new Uint8Array(await new Response(blob!.body).arrayBuffer());
}

describe("write once: bytes written to R2 per byte stored", () => {
  it("a push as one streamed PATCH (docker, podman, skopeo): 1.0, and the chunk is not read again", async () => {
    const data = randomBytes(20 * MiB + 12345);
    const digest = await sha256(data);
    let readsAfter = 0;
    const written = await countWrites(async (e) => {
      let s = await createUpload(e, "wo/stream");
      s = await appendUpload(e, s, streamOf(data, 65_536)); // unknown length
      // The completion must not need the bytes again: a bucket whose GET fails proves it.
      const blind = { ...e, BUCKET: new Proxy(e.BUCKET, { get: (t, p) => (p === "get" ? () => { readsAfter++; throw new Error("read"); } : Reflect.get(t, p)) }) } as Env;
      await finishUpload(blind, s, digest, null);
    });
    expect(readsAfter).toBe(0);
    expect(total(written)).toBe(data.length);
    expect(await sha256(await readAll(env, digest))).toBe(digest);
  });

  it("a chunked push (uneven chunks and a final chunk in the PUT): 1.0", async () => {
    const data = randomBytes(17 * MiB + 999);
    const digest = await sha256(data);
    const cuts = [0, 6 * MiB, 6 * MiB + 17, 13 * MiB, data.length];
    const written = await countWrites(async (e) => {
      let s = await createUpload(e, "wo/chunks");
      for (let i = 0; i < cuts.length - 2; i++) {
        const part = data.slice(cuts[i], cuts[i + 1]);
        s = await appendUpload(e, s, streamOf(part), { start: cuts[i], length: part.length });
      }
      const last = data.slice(cuts[cuts.length - 2]);
      await finishUpload(e, s, digest, streamOf(last), last.length);
    });
    expect(total(written)).toBe(data.length);
    // Read back across segment boundaries: whole, and a range spanning three segments.
    expect(await sha256(await readAll(env, digest))).toBe(digest);
    const range = await getBlob(env, digest, { offset: 6 * MiB - 10, length: 7 * MiB });
    // (compared by hash: a deep equality of 7 MiB arrays takes vitest a minute)
    expect(await sha256(new Uint8Array(await new Response(range!.body).arrayBuffer()))).toBe(await sha256(data.slice(6 * MiB - 10, 13 * MiB - 10)));
  });

  it("a monolithic PUT: 1.0; a second push of stored bytes writes nothing new", async () => {
    const data = randomBytes(9 * MiB);
    const digest = await sha256(data);
    const first = await countWrites(async (e) => {
      const s = await createUpload(e, "wo/mono");
      await finishUpload(e, s, digest, streamOf(data), data.length);
    });
    expect(total(first)).toBe(data.length);
    const again = await countWrites(async (e) => {
      const s = await createUpload(e, "wo/mono-again");
      await finishUpload(e, s, digest, streamOf(data), data.length);
    });
    expect(total(again)).toBe(0);
  });

  it("a build layer: 1.0, written where it stays, its digest from the pass that wrote it", async () => {
    const file = randomBytes(12 * MiB); // incompressible: the layer is larger than one part
    let layer!: Awaited<ReturnType<typeof storeLayer>>;
    const written = await countWrites(async (e) => {
      layer = await storeLayer(e, [{ path: "big.bin", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: file }]);
    });
    expect(layer.size).toBeGreaterThan(12 * MiB);
    expect(total(written)).toBe(layer.size);
    expect([...written.keys()]).toEqual([expect.stringMatching(/^blobs\/objects\//)]);
    expect((await statBlob(env, layer.digest))!.size).toBe(layer.size);
    expect(await sha256(await readAll(env, layer.digest))).toBe(layer.digest);
  });

  it("a small computed blob goes straight to its content address", async () => {
    const data = randomBytes(3000);
    const written = await countWrites(async (e) => { await putBlobComputed(e, streamOf(data)); });
    expect([...written.entries()]).toEqual([[`blobs/sha256/${(await sha256(data)).slice(7)}`, 3000]]);
  });

  it("a build context: its pack is written once (the index is the only other write)", async () => {
    const big = randomBytes(11 * MiB);
    const tar = await collect(tarStream([
      { path: "Dockerfile", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: new TextEncoder().encode("FROM scratch\nCOPY . /\n") },
      { path: "big.bin", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: big },
    ]));
    let packSize = 0;
    const written = await countWrites(async (e) => {
      const ctx = await ingestContext(e, streamOf(tar, 65_536), { contentType: "application/x-tar" });
      packSize = ctx.index.packSize;
    });
    const pack = [...written].filter(([k]) => !k.includes(".index/")).reduce((n, [, v]) => n + v, 0);
    expect(packSize).toBeGreaterThanOrEqual(big.length);
    expect(pack).toBe(packSize);
  });
});
