import { describe, expect, it } from "vitest";
import { discardRefusedBody, readLimited } from "./body";

/** A request whose body yields `chunks` chunks of `size` bytes and counts how many were pulled. */
function counted(chunks: number, size: number, headers: Record<string, string>) {
  let pulled = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(ctrl) {
      if (pulled === chunks) { ctrl.close(); return; }
      pulled++;
      ctrl.enqueue(new Uint8Array(size));
    },
  }, { highWaterMark: 0 });
  const req = new Request("http://kiln.test/v2/x/manifests/t", { method: "PUT", body, headers, duplex: "half" } as RequestInit);
  return { req, pulled: () => pulled };
}

describe("discardRefusedBody", () => {
  it("reads a refused body of declared length to its end, also after part of it was read", async () => {
    const { req, pulled } = counted(10, 1024, { "content-length": String(10 * 1024) });
    await expect(readLimited(req.body, 2048, () => new Error("too large"))).rejects.toThrow("too large");
    expect(pulled()).toBeLessThan(10);
    await discardRefusedBody(req);
    expect(pulled()).toBe(10);
  });

  it("leaves a body alone when its declared length is over the cap, or unknown", async () => {
    const over = counted(10, 1024, { "content-length": String(10 * 1024) });
    await discardRefusedBody(over.req, 4096);
    expect(over.pulled()).toBe(0);
    const unknown = counted(10, 1024, {});
    await discardRefusedBody(unknown.req);
    expect(unknown.pulled()).toBe(0);
  });
});
