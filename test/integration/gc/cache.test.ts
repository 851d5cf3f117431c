import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../../src/env";
import { getCacheEntry, putCacheEntry, type CacheEntry } from "../../../src/storage/cache";
import { collectGarbage } from "../../../src/storage/gc";
import { pushBlob, randomBytes, reg } from "../registry/helpers";
import { build } from "../builds/helpers";
import { blobRow, collect } from "./helpers";

const testEnv = env as unknown as Env;
const DAY = 24 * 3600 * 1000;
const hex = (n: number) => n.toString(16).padStart(64, "0");

function entry(digest: string | null, size = 100): CacheEntry {
  return { version: 1, layer: digest ? { digest, diffId: digest, size, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" } : null, config: {}, history: null };
}

async function setLastHit(key: string, at: number): Promise<void> {
  await env.DB.prepare("UPDATE cache_entries SET last_hit_at = ? WHERE key = ?").bind(at, key).run();
}

describe("cache lifecycle", () => {
  it("a build's cache entries record their last hit; entries unused for KILN_CACHE_MAX_AGE_DAYS (30) are dropped, the image keeps its layers", async () => {
    const files = { Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": `a-${Math.random()}` };
    const first = await build(files, "?tag=cachelife/app:1");
    expect(first.status).toBe("succeeded");
    const { results } = await env.DB.prepare("SELECT key, scope, layer, last_hit_at FROM cache_entries WHERE scope = 'cachelife'").all<{ key: string; layer: string | null; last_hit_at: number }>();
    expect(results.length).toBeGreaterThanOrEqual(2);
    const copy = results.find((r) => r.layer)!;
    // a hit moves last_hit_at forward
    await setLastHit(copy.key, Date.now() - 40 * DAY);
    const again = await build(files, "?tag=cachelife/app:2");
    expect(again.steps.find((s) => s.instruction.startsWith("COPY"))?.status).toBe("cached");
    const hit = await env.DB.prepare("SELECT last_hit_at FROM cache_entries WHERE key = ?").bind(copy.key).first<{ last_hit_at: number }>();
    expect(hit!.last_hit_at).toBeGreaterThan(Date.now() - 60_000);

    for (const r of results) await setLastHit(r.key, Date.now() - 31 * DAY);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.cacheEntries).toBeGreaterThanOrEqual(results.length);
    expect(await getCacheEntry(testEnv, copy.key)).toBeNull();
    // the tagged images still have their layer
    expect((await reg(`/v2/cachelife/app/blobs/${copy.layer}`, { method: "HEAD" })).status).toBe(200);
    const rebuilt = await build(files, "?tag=cachelife/app:3");
    expect(rebuilt.steps.find((s) => s.instruction.startsWith("COPY"))?.status).toBe("done");
  });

  it("a layer only a cache entry holds survives a blob delete and goes when the entry is evicted", async () => {
    const layer = await pushBlob("cacheheld/app", randomBytes(500, 11));
    await putCacheEntry(testEnv, `sha256:${hex(0xcafe)}`, entry(layer, 500), "cacheheld");
    expect((await reg(`/v2/cacheheld/app/blobs/${layer}`, { method: "DELETE" })).status).toBe(202);
    expect(await blobRow(layer)).toBe(true);
    const kept = await collect("graceSeconds=0");
    expect(kept.deleted.blobs).not.toContain(layer);
    await setLastHit(`sha256:${hex(0xcafe)}`, Date.now() - 31 * DAY);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.blobs).toContain(layer);
    expect(await blobRow(layer)).toBe(false);
  });

  it("past a scope's byte budget, the least recently hit entries go first; other scopes and a dry run are untouched", async () => {
    const now = Date.now();
    const keys = [1, 2, 3].map((i) => `sha256:${hex(0xb000 + i)}`);
    for (const [i, k] of keys.entries()) {
      await putCacheEntry(testEnv, k, entry(`sha256:${hex(0xc000 + i)}`, 100), "budget");
      await setLastHit(k, now - (3 - i) * 3600_000); // keys[0] hit longest ago
    }
    const other = `sha256:${hex(0xd001)}`;
    await putCacheEntry(testEnv, other, entry(`sha256:${hex(0xd002)}`, 1000), "budget-other");
    await setLastHit(other, now - 5 * 3600_000);
    const opts = { graceMs: 0, trigger: "test" as const, cacheMaxAgeMs: 30 * DAY, cacheBudgetBytes: 250 };
    const dry = await collectGarbage(testEnv, crypto.randomUUID(), { ...opts, dryRun: true });
    expect(dry.deleted.cacheEntries).toBe(2); // keys[0] (budget) and `other` (1000 > 250 on its own)
    expect(await getCacheEntry(testEnv, keys[0])).not.toBeNull();
    // a hit on keys[0] now makes keys[1] the least recently hit
    expect(await getCacheEntry(testEnv, keys[0], "budget")).not.toBeNull();
    await setLastHit(keys[0], now - 1800_000);
    await collectGarbage(testEnv, crypto.randomUUID(), { ...opts, dryRun: false });
    expect(await getCacheEntry(testEnv, keys[0])).not.toBeNull();
    expect(await getCacheEntry(testEnv, keys[1])).toBeNull();
    expect(await getCacheEntry(testEnv, keys[2])).not.toBeNull();
  });
});
