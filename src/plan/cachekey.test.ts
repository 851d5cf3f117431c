import { describe, expect, it } from "vitest";
import { cacheKeyFor, canonicalJson, type CacheKeyInput } from "./cachekey";

const base: CacheKeyInput = {
  parent: "sha256:" + "a".repeat(64),
  platform: "linux/amd64",
  instruction: { kind: "COPY", sources: ["."], dest: "/app", chown: "1000" },
  sources: [
    { dest: "/app/a.txt", mode: 0o644, uid: 0, gid: 0, sha256: "1".repeat(64) },
    { dest: "/app/bin/run", mode: 0o755, uid: 0, gid: 0, sha256: "2".repeat(64) },
    { dest: "/app/link", mode: 0o777, uid: 0, gid: 0, sha256: "", linkTarget: "a.txt" },
  ],
};

describe("cacheKeyFor", () => {
  it("is a sha256 hex string and deterministic", async () => {
    const k = await cacheKeyFor(base);
    expect(k).toMatch(/^[0-9a-f]{64}$/);
    expect(await cacheKeyFor(structuredClone(base))).toBe(k);
  });

  it("ignores the order of sources and of object keys", async () => {
    const k = await cacheKeyFor(base);
    const reordered: CacheKeyInput = {
      instruction: { dest: "/app", chown: "1000", sources: ["."], kind: "COPY" },
      sources: [...base.sources!].reverse(),
      platform: base.platform,
      parent: base.parent,
    };
    expect(await cacheKeyFor(reordered)).toBe(k);
  });

  it("ignores modification times and other unknown source fields", async () => {
    const k = await cacheKeyFor(base);
    const withTimes = { ...base, sources: base.sources!.map((s, i) => ({ ...s, mtime: 1_700_000_000 + i })) };
    expect(await cacheKeyFor(withTimes)).toBe(k);
  });

  it("changes with any change to the instruction, parent, platform, env, sources or source stage", async () => {
    const k = await cacheKeyFor(base);
    const variants: CacheKeyInput[] = [
      { ...base, instruction: { ...(base.instruction as object), chown: "1001" } },
      { ...base, instruction: { ...(base.instruction as object), link: true } },
      { ...base, parent: "scratch" },
      { ...base, platform: "linux/arm64" },
      { ...base, env: ["A=1"] },
      { ...base, sources: base.sources!.slice(1) },
      { ...base, sources: base.sources!.map((s, i) => (i === 0 ? { ...s, mode: 0o600 } : s)) },
      { ...base, sources: base.sources!.map((s, i) => (i === 0 ? { ...s, uid: 1 } : s)) },
      { ...base, sources: base.sources!.map((s, i) => (i === 0 ? { ...s, sha256: "3".repeat(64) } : s)) },
      { ...base, sources: base.sources!.map((s, i) => (i === 2 ? { ...s, linkTarget: "bin/run" } : s)) },
      { ...base, fromKey: "f".repeat(64) },
    ];
    const keys = await Promise.all(variants.map(cacheKeyFor));
    for (const v of keys) expect(v).not.toBe(k);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it("keeps the order of env entries (later entries win in a shell)", async () => {
    expect(await cacheKeyFor({ ...base, env: ["A=1", "A=2"] })).not.toBe(await cacheKeyFor({ ...base, env: ["A=2", "A=1"] }));
  });
});

describe("canonicalJson", () => {
  it("sorts keys at every level and drops undefined members", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: undefined } })).toBe('{"a":{"d":[3,{"y":2,"z":1}]},"b":1}');
  });
});
