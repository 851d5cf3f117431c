import type { Env } from "../env";

/**
 * The build cache index: `cache/sha256/<key>` → what the step with that key produced (the layer
 * descriptor, if any, and the config after the step with its history entry). Layers themselves are
 * content-addressed blobs; an entry only points at them.
 */
export interface CacheLayer {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
}

export interface CacheEntry {
  version: 1;
  /** The layer the step added; null for metadata-only steps (and RUN steps that changed nothing). */
  layer: CacheLayer | null;
  /** The image's runtime config after the step (docker's `config` object). */
  config: Record<string, unknown>;
  /** MAINTAINER: the image author after the step. */
  author?: string;
  /** The history entry the step appended (null for FROM). */
  history: Record<string, unknown> | null;
}

export const cacheObjectKey = (key: string) => {
  const hex = key.startsWith("sha256:") ? key.slice(7) : key;
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`bad cache key ${key}`);
  return `cache/sha256/${hex}`;
};

/**
 * The entry of `key`, or null. A hit is recorded (`cache_entries.last_hit_at`, at most once a minute
 * per entry) so eviction drops the least recently hit first; an entry from before the index existed
 * is indexed under `scope` on its first hit.
 */
export async function getCacheEntry(env: Env, key: string, scope?: string): Promise<CacheEntry | null> {
  const obj = await env.BUCKET.get(cacheObjectKey(key));
  if (!obj) return null;
  let e: CacheEntry;
  try {
    e = (await obj.json()) as CacheEntry;
  } catch {
    return null;
  }
  if (!e || e.version !== 1) return null;
  if (scope !== undefined) await recordHit(env, key, scope, e);
  return e;
}

async function recordHit(env: Env, key: string, scope: string, e: CacheEntry): Promise<void> {
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
     ON CONFLICT(key) DO UPDATE SET last_hit_at = ?5 WHERE cache_entries.last_hit_at < ?5 - 60000`,
  ).bind(key, scope, e.layer?.digest ?? null, e.layer?.size ?? 0, now).run();
}

/**
 * Writes the entry of `key` for a build of cache scope `scope`. The D1 index row comes first, so
 * the collector sees the layer as used before the entry can be found.
 */
export async function putCacheEntry(env: Env, key: string, entry: CacheEntry, scope: string): Promise<void> {
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
     ON CONFLICT(key) DO UPDATE SET layer = ?3, size = ?4, last_hit_at = ?5`,
  ).bind(key, scope, entry.layer?.digest ?? null, entry.layer?.size ?? 0, now).run();
  await env.BUCKET.put(cacheObjectKey(key), JSON.stringify(entry), { httpMetadata: { contentType: "application/json" } });
}

/**
 * The headers of a layer's tar (path, type, mode, owner, size, link), computed once per layer so
 * COPY/WORKDIR into an image need not decompress its layers again: `layer-index/sha256/<hex>`.
 */
export async function getLayerIndex(env: Env, layerDigest: string): Promise<unknown[] | null> {
  const obj = await env.BUCKET.get(`layer-index/${layerDigest.replace(":", "/")}`);
  if (!obj) return null;
  try {
    return (await obj.json()) as unknown[];
  } catch {
    return null;
  }
}

export async function putLayerIndex(env: Env, layerDigest: string, nodes: unknown[]): Promise<void> {
  await env.BUCKET.put(`layer-index/${layerDigest.replace(":", "/")}`, JSON.stringify(nodes), { httpMetadata: { contentType: "application/json" } });
}
