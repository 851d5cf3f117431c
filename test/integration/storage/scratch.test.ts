// The scratch store: staged files of a build step, under tmp/ only.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { deleteScratch, putScratch, readScratch } from "../../../src/storage/scratch";

const text = async (s: ReadableStream<Uint8Array>) => await new Response(s).text();

describe("storage: scratch", () => {
  it("stores bytes and fixed-length streams, reads them back, deletes them", async () => {
    const prefix = `tmp/builds/scratch-${crypto.randomUUID()}/0`;
    await putScratch(env, `${prefix}/a`, new TextEncoder().encode("alpha"));
    const fixed = new FixedLengthStream(4);
    const w = fixed.writable.getWriter();
    await Promise.all([putScratch(env, `${prefix}/b`, fixed.readable), (async () => { await w.write(new TextEncoder().encode("beta")); await w.close(); })()]);
    expect(await text(await readScratch(env, `${prefix}/a`))).toBe("alpha");
    expect(await text(await readScratch(env, `${prefix}/b`))).toBe("beta");
    await deleteScratch(env, [`${prefix}/a`, `${prefix}/b`]);
    expect((await env.BUCKET.list({ prefix })).objects).toEqual([]);
    await expect(readScratch(env, `${prefix}/a`)).rejects.toThrow(/vanished/);
  });

  it("refuses keys outside tmp/ and never touches them", async () => {
    await env.BUCKET.put("blobs/sha256/scratch-guard", "keep");
    for (const key of ["blobs/sha256/scratch-guard", "tmp/../blobs/sha256/scratch-guard", "tmp//x", "tmpx/y"]) {
      await expect(putScratch(env, key, new Uint8Array(1))).rejects.toThrow(/not a scratch key/);
      await expect(readScratch(env, key)).rejects.toThrow(/not a scratch key/);
      await expect(deleteScratch(env, [key])).rejects.toThrow(/not a scratch key/);
    }
    expect(await (await env.BUCKET.get("blobs/sha256/scratch-guard"))!.text()).toBe("keep");
  });
});
