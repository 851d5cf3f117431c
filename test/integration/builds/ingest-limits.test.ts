import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ContextLimitError, DEFAULT_MAX_CONTEXT_ENTRIES, ingestContext, maxContextEntries } from "../../../src/context/ingest";
import { ApiError } from "../../../src/errors";
import { pacedThrough } from "../../../src/context/gunzip";
import { makeTar, r2Keys, rawTarEntry, streamOf, type Files } from "./helpers";

const MiB = 1024 * 1024;

/**
 * A gzip bomb made while it is read: a tar header for one file of `size` bytes, then zeros, gzipped by
 * a CompressionStream as the server pulls. Counts the zeros made (expanded bytes) and the gzip bytes
 * the server took.
 */
function gzipBomb(size: number): { body: ReadableStream<Uint8Array>; expanded: () => number; compressed: () => number } {
  const header = rawTarEntry("bomb.bin", "0").subarray(0, 512);
  header.set(new TextEncoder().encode(size.toString(8).padStart(11, "0") + "\0"), 124);
  let sum = 0;
  header.fill(32, 148, 156);
  for (const b of header) sum += b;
  header.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  let made = 0;
  let taken = 0;
  const zeros = new Uint8Array(MiB);
  const tar = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(header.slice());
    },
    pull(c) {
      if (made >= size) return c.close();
      const n = Math.min(MiB, size - made);
      made += n;
      c.enqueue(zeros.slice(0, n));
    },
  });
  const counted = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, c) {
      taken += chunk.byteLength;
      c.enqueue(chunk);
    },
  });
  // paced: a CompressionStream behind pipeThrough would compress all of it at once, whatever the server reads
  const gzip = new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>;
  const body = pacedThrough(gzip, tar, MiB).pipeThrough(counted);
  return { body, expanded: () => made, compressed: () => taken };
}

async function limitRefusal(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ContextLimitError);
    expect((e as ApiError).status).toBe(413);
    return e as ApiError;
  }
  throw new Error("expected a refusal");
}

describe("context limits while streaming", () => {
  const stored = async () => (await r2Keys("contexts/")).length;

  it("refuses a gzip bomb after at most its limit of expanded bytes, reading little of the body, storing nothing", async () => {
    const before = await stored();
    // 4 GiB - 1 of zeros (~4 MB of gzip); the limit is 20 MiB, so the pack writer had begun a multipart upload
    const bomb = gzipBomb(4 * 1024 * MiB - 1);
    const limit = 20 * MiB;
    const err = await limitRefusal(ingestContext(env, bomb.body, { contentType: "application/gzip", maxBytes: limit }));
    expect(err.message).toMatch(/larger than the limit of 20971520 bytes/);
    expect(err.message).toContain("KILN_MAX_CONTEXT_BYTES");
    // the whole bomb is ~4 MB of gzip and 4 GiB expanded: the server stopped near the limit
    expect(bomb.compressed()).toBeLessThan(256 * 1024);
    expect(bomb.expanded()).toBeLessThan(512 * MiB);
    expect(await stored()).toBe(before);
  });

  it("refuses a bomb inside a multipart body the same way", async () => {
    const before = await stored();
    const bomb = gzipBomb(4 * 1024 * MiB - 1);
    const boundary = "bombBOUNDARY";
    const enc = new TextEncoder();
    const head = enc.encode(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="c.tgz"\r\nContent-Type: application/gzip\r\n\r\n`);
    const reader = bomb.body.getReader();
    let sentHead = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (!sentHead) {
          sentHead = true;
          return c.enqueue(head);
        }
        const { done, value } = await reader.read();
        if (done) c.close();
        else c.enqueue(value);
      },
      cancel: (r) => reader.cancel(r),
    });
    const err = await limitRefusal(ingestContext(env, body, { contentType: `multipart/form-data; boundary=${boundary}`, maxBytes: 8 * MiB }));
    expect(err.message).toMatch(/larger than the limit of 8388608 bytes.*KILN_MAX_CONTEXT_BYTES/);
    expect(bomb.compressed()).toBeLessThan(256 * 1024);
    expect(await stored()).toBe(before);
  });

  it("refuses a context with more entries than the limit as soon as it passes it", async () => {
    const before = await stored();
    const files: Files = { Dockerfile: "FROM scratch\n" };
    for (let i = 0; i < 300; i++) files[`f/${String(i).padStart(3, "0")}`] = String(i);
    const tgz = await makeTar(files, { gzip: true });
    const err = await limitRefusal(ingestContext(env, streamOf(tgz), { contentType: "application/gzip", maxEntries: 100 }));
    expect(err.message).toBe("build context has more than the limit of 100 entries (the setting KILN_MAX_CONTEXT_ENTRIES)");
    expect(await stored()).toBe(before);
    // at the limit it is accepted
    const ok = await ingestContext(env, streamOf(tgz), { contentType: "application/gzip", maxEntries: 301 });
    expect(ok.index.files.filter((f) => f.type === "file")).toHaveLength(301);
    await ok.discard();
  });

  it("still refuses broken gzip with a 400 (the paced gunzip passes its errors on)", async () => {
    const before = await stored();
    const garbage = new Uint8Array(4096).fill(7);
    garbage.set([0x1f, 0x8b, 8, 0]);
    await expect(ingestContext(env, streamOf(garbage), { contentType: "application/gzip" })).rejects.toMatchObject({ status: 400 });
    const tgz = await makeTar({ Dockerfile: "FROM scratch\n", "a.txt": "x".repeat(100_000) }, { gzip: true });
    await expect(ingestContext(env, streamOf(tgz.subarray(0, tgz.length - 40)), { contentType: "application/gzip" })).rejects.toMatchObject({ status: 400 });
    expect(await stored()).toBe(before);
  });

  it("reads KILN_MAX_CONTEXT_ENTRIES, with a default when unset or invalid", () => {
    expect(maxContextEntries({ ...env, KILN_MAX_CONTEXT_ENTRIES: "5000" })).toBe(5000);
    expect(maxContextEntries({ ...env, KILN_MAX_CONTEXT_ENTRIES: undefined })).toBe(DEFAULT_MAX_CONTEXT_ENTRIES);
    expect(maxContextEntries({ ...env, KILN_MAX_CONTEXT_ENTRIES: "lots" })).toBe(DEFAULT_MAX_CONTEXT_ENTRIES);
  });
});
