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

const keyOf = (key: string) => {
  const hex = key.startsWith("sha256:") ? key.slice(7) : key;
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`bad cache key ${key}`);
  return `cache/sha256/${hex}`;
};

export async function getCacheEntry(env: Env, key: string): Promise<CacheEntry | null> {
  const obj = await env.BUCKET.get(keyOf(key));
  if (!obj) return null;
  try {
    const e = (await obj.json()) as CacheEntry;
    return e && e.version === 1 ? e : null;
  } catch {
    return null;
  }
}

export async function putCacheEntry(env: Env, key: string, entry: CacheEntry): Promise<void> {
  await env.BUCKET.put(keyOf(key), JSON.stringify(entry), { httpMetadata: { contentType: "application/json" } });
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
