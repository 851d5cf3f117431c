import { describe, expect, it } from "vitest";
import { cacheKeyFor, canonicalJson, SHARED_CACHE_SCOPE, type CacheKeyInput } from "./cachekey";

const base: CacheKeyInput = {
  scope: "acme",
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
  it("derives the same key as before canonical JSON moved to src/oci (stored cache entries stay valid)", async () => {
    const input: CacheKeyInput = {
      ...base,
      instruction: { kind: "COPY", sources: ["."], dest: "/app", chown: "1000" },
      env: ["A=1", "B=é"],
      sources: [base.sources![0], base.sources![2]],
      fromKey: "f".repeat(64),
    };
    expect(await cacheKeyFor(input)).toBe("1a40b34b73497f49bc61a073e15ce07921bea73bc7598ad9a8bd5dac03a83503");
  });

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
      scope: "acme",
    };
    expect(await cacheKeyFor(reordered)).toBe(k);
  });

  it("ignores modification times and other unknown source fields", async () => {
    const k = await cacheKeyFor(base);
    const withTimes = { ...base, sources: base.sources!.map((s, i) => ({ ...s, mtime: 1_700_000_000 + i })) };
    expect(await cacheKeyFor(withTimes)).toBe(k);
  });

  it("is the same for the same inputs in one scope and differs across scopes", async () => {
    const run: CacheKeyInput = { scope: "a", parent: "scratch", platform: "linux/amd64", instruction: { kind: "RUN", args: ["cat /run/secrets/tok > /f"] }, env: ["PATH=/bin"] };
    const a1 = await cacheKeyFor(run);
    expect(await cacheKeyFor({ ...structuredClone(run), scope: "a" })).toBe(a1);
    const others = await Promise.all(["b", "_untagged", SHARED_CACHE_SCOPE, "A", "a ", "ab"].map((scope) => cacheKeyFor({ ...run, scope })));
    for (const k of others) expect(k).not.toBe(a1);
    expect(new Set(others).size).toBe(others.length);
  });

  it("keeps the scope apart from the other members (no key of one scope equals a crafted key of another)", async () => {
    // the scope is its own member of the canonical document, so moving text between scope and
    // instruction or parent never yields the same document
    const k = await cacheKeyFor({ scope: "a", parent: "scratch", platform: "linux/amd64", instruction: "x" });
    expect(await cacheKeyFor({ scope: "a\",\"parent\":\"scratch", parent: "", platform: "linux/amd64", instruction: "x" })).not.toBe(k);
    expect(await cacheKeyFor({ scope: "b", parent: "scratch", platform: "linux/amd64", instruction: "x", env: ["scope=a"] })).not.toBe(k);
  });

  it("refuses to make a key without a scope", async () => {
    await expect(cacheKeyFor({ ...base, scope: "" })).rejects.toThrow(/scope/);
    await expect(cacheKeyFor({ ...base, scope: undefined as unknown as string })).rejects.toThrow(/scope/);
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
      { ...base, scope: "other" },
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
