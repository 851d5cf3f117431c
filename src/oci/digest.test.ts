import { describe, expect, it } from "vitest";
import { algorithmOf, createSha256, DigestError, digestOf, hashingStream, hashReadable, hexOf, isDigest, parseDigest, sha256Hex, writableHasher } from "./digest";
import { bytesEqual, chunkedStream, pseudoText } from "./testing";
import { collect } from "./tar";

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let o = 0; o < n; o += 65536) crypto.getRandomValues(out.subarray(o, Math.min(n, o + 65536)));
  return out;
}

describe("parseDigest", () => {
  const hex = "a".repeat(64);
  it("accepts sha256 with 64 lowercase hex", () => {
    expect(parseDigest(`sha256:${hex}`)).toBe(`sha256:${hex}`);
    expect(isDigest(`sha256:${hex}`)).toBe(true);
    expect(hexOf(`sha256:${hex}`)).toBe(hex);
    expect(algorithmOf(`sha256:${hex}`)).toBe("sha256");
  });
  it("accepts sha512 with 128 lowercase hex (the registry takes both)", () => {
    const long = "b".repeat(128);
    expect(parseDigest(`sha512:${long}`)).toBe(`sha512:${long}`);
    expect(hexOf(`sha512:${long}`)).toBe(long);
    expect(algorithmOf(`sha512:${long}`)).toBe("sha512");
    expect(() => parseDigest(`sha512:${long}0`)).toThrow(/128 lowercase hex/);
  });
  it("refuses other algorithms, bad lengths, uppercase and garbage with a DigestError", () => {
    for (const bad of [`sha512:${hex}`, `sha256:${hex.slice(1)}`, `sha256:${hex}0`, `sha256:${"A".repeat(64)}`, hex, "", "sha256:"]) {
      expect(() => parseDigest(bad), bad).toThrow(DigestError);
      expect(isDigest(bad)).toBe(false);
    }
    expect(() => parseDigest(`md5:${hex}`)).toThrow(/unsupported digest algorithm "md5"/);
  });
  it("digestOf hashes with sha256 by default and sha512 when told", async () => {
    const bytes = new TextEncoder().encode("abc");
    expect(await digestOf(bytes)).toBe("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(await digestOf(bytes, "sha512")).toBe(
      "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    );
  });
});

describe("pure SHA-256", () => {
  it("matches known vectors", async () => {
    const h = createSha256();
    h.update(new TextEncoder().encode("abc"));
    expect(await h.digest()).toBe("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(await createSha256().digest()).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, (1 << 20) + 3]) {
    it(`equals crypto.subtle on ${n} random bytes, whole and in random pieces`, async () => {
      const data = randomBytes(n);
      const want = `sha256:${await sha256Hex(data)}`;
      const whole = createSha256();
      whole.update(data);
      expect(await whole.digest()).toBe(want);
      const pieces = createSha256();
      let o = 0;
      while (o < n) {
        const k = Math.min(n - o, 1 + Math.floor(Math.random() * 200));
        pieces.update(data.subarray(o, o + k));
        o += k;
      }
      expect(await pieces.digest()).toBe(want);
    });
  }

  it("refuses update after digest", async () => {
    const h = createSha256();
    await h.digest();
    expect(() => h.update(new Uint8Array(1))).toThrow();
  });
});

describe("hashingStream", () => {
  it("passes bytes through and reports their digest and size", async () => {
    const data = pseudoText(300_000);
    const { stream, result } = hashingStream(createSha256);
    const out = await collect(chunkedStream(data, 7777).pipeThrough(stream));
    expect(bytesEqual(out, data)).toBe(true);
    expect(await result).toEqual({ digest: await digestOf(data), size: data.length });
  });
});

describe("writableHasher over workerd's DigestStream", () => {
  it("gives the same digests as crypto.subtle, also for many small writes", async () => {
    const factory = writableHasher(() => new crypto.DigestStream("SHA-256"));
    const data = pseudoText(1_000_003, 9);
    const h = factory();
    for (let o = 0; o < data.length; o += 1000) h.update(data.subarray(o, o + 1000));
    expect(await h.digest()).toBe(await digestOf(data));
    expect(await factory().digest()).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });

  it("gathers small writes without losing their order, around large ones and across reused buffers", async () => {
    const factory = writableHasher(() => new crypto.DigestStream("SHA-256"));
    const data = pseudoText(700_001, 11);
    const h = factory();
    const scratch = new Uint8Array(70_000);
    // sizes 1 byte … 70,000 bytes, some over the gathering size, each passed through one reused buffer
    let o = 0;
    for (let i = 0; o < data.length; i++) {
      const n = Math.min(data.length - o, [1, 7, 512, 65_535, 65_536, 70_000, 3][i % 7]);
      scratch.set(data.subarray(o, o + n));
      h.update(n >= 65_536 ? data.subarray(o, o + n) : scratch.subarray(0, n));
      scratch.fill(0); // the caller reuses its buffer at once
      o += n;
    }
    expect(await h.digest()).toBe(await digestOf(data));
  });
});

describe("hashReadable", () => {
  it("hashes what is read and rejects its result when cancelled", async () => {
    const data = pseudoText(100_000, 5);
    const ok = hashReadable(chunkedStream(data, 4096), createSha256);
    expect(bytesEqual(await collect(ok.stream), data)).toBe(true);
    expect(await ok.result).toEqual({ digest: await digestOf(data), size: data.length });
    const cancelled = hashReadable(chunkedStream(data, 4096), createSha256);
    const r = cancelled.stream.getReader();
    await r.read();
    await r.cancel(new Error("client went away"));
    await expect(cancelled.result).rejects.toThrow(/client went away/);
  });
});
