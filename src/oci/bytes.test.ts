import { describe, expect, it } from "vitest";
import { ByteReader } from "./bytes";

function chunks(...parts: number[][]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const p of parts) c.enqueue(new Uint8Array(p));
      c.close();
    },
  });
}

describe("ByteReader", () => {
  it("peeks without consuming and reads exactly across chunks", async () => {
    const r = new ByteReader(chunks([1, 2], [], [3, 4, 5]));
    expect([...(await r.peek(3))]).toEqual([1, 2, 3]);
    expect([...(await r.readExact(4))!]).toEqual([1, 2, 3, 4]);
    expect(r.offset).toBe(4);
    expect(r.total).toBe(5);
    await expect(r.readExact(2)).rejects.toThrow(/unexpected end of stream/);
  });

  it("readExact is null at a clean end; readFull says how many bytes were left", async () => {
    const r = new ByteReader(chunks([1, 2, 3]));
    expect([...(await r.readExact(3))!]).toEqual([1, 2, 3]);
    expect(await r.readExact(1)).toBeNull();
    const s = new ByteReader(chunks([1], [2]));
    expect(await s.readFull(5)).toBe(2);
  });

  it("readUpTo hands out views of the input; skip reports a short skip", async () => {
    const input = new Uint8Array([9, 8, 7, 6]);
    const r = new ByteReader(new ReadableStream({ start: (c) => { c.enqueue(input); c.close(); } }));
    const v = (await r.readUpTo(2))!;
    expect(v.buffer).toBe(input.buffer);
    expect(await r.skip(5)).toBe(2);
    expect(await r.readUpTo(1)).toBeNull();
  });

  it("drain reads at most `limit` more bytes, then cancels; discardRest reads all and surfaces stream errors", async () => {
    let pulled = 0;
    let cancelled = false;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) { pulled++; c.enqueue(new Uint8Array(10)); },
      cancel() { cancelled = true; },
    }, { highWaterMark: 0 });
    const r = new ByteReader(endless);
    await r.drain(35);
    expect(cancelled).toBe(true);
    expect(pulled).toBe(4);
    const broken = new ReadableStream<Uint8Array>({ start(c) { c.enqueue(new Uint8Array(1)); c.error(new Error("boom")); } });
    await expect(new ByteReader(broken).discardRest()).rejects.toThrow("boom");
    const broken2 = new ReadableStream<Uint8Array>({ start(c) { c.enqueue(new Uint8Array(1)); c.error(new Error("boom")); } });
    await new ByteReader(broken2).drain();
  });

  it("asStream passes the rest on", async () => {
    const r = new ByteReader(chunks([1, 2], [3]));
    await r.readExact(1);
    expect([...new Uint8Array(await new Response(r.asStream()).arrayBuffer())]).toEqual([2, 3]);
  });
});
