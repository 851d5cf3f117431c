/**
 * Usage per namespace (the first segment of a repository name) and byte quotas. A namespace's bytes
 * are the distinct blobs and manifests its repositories hold: a blob linked by several namespaces
 * counts for each of them, once per namespace however many of its repositories link it.
 */
import type { Env } from "../env";
import { StorageError } from "./errors";

export interface NamespaceUsage {
  namespace: string;
  /** Distinct blob and manifest bytes linked in the namespace. */
  bytes: number;
  blobs: number;
  manifests: number;
  tags: number;
  /** Layer bytes of the build cache entries of the namespace's scope (distinct layers). */
  cacheBytes: number;
  /** The namespace's byte quota, if one is set. */
  quota?: number;
}

/** SQL: the namespace of column `col` (a repository name). */
const ns = (col: string) => `CASE WHEN instr(${col}, '/') > 0 THEN substr(${col}, 1, instr(${col}, '/') - 1) ELSE ${col} END`;
/** SQL: `col` is a repository of namespace ?1 (range comparisons: index-friendly and no LIKE wildcards). */
const inNamespace = (col: string) => `(${col} = ?1 OR (${col} >= ?1 || '/' AND ${col} < ?1 || '0'))`;

/**
 * Usage of every namespace (`only` absent) or of the namespaces in `only`. Namespaces with nothing
 * stored but a quota are listed too.
 */
export async function namespaceUsage(env: Env, only?: string[]): Promise<NamespaceUsage[]> {
  const db = env.DB;
  const [content, manifests, tags, cache, quotas] = await db.batch([
    db.prepare(
      `SELECT ns, SUM(size) AS bytes, SUM(is_blob) AS blobs FROM (
         SELECT DISTINCT ${ns("r.repo")} AS ns, b.digest AS digest, b.size AS size, 1 AS is_blob FROM repo_blobs r JOIN blobs b ON b.digest = r.digest
         UNION SELECT DISTINCT ${ns("m.repo")} AS ns, m.digest AS digest, m.size AS size, 0 AS is_blob FROM manifests m
       ) GROUP BY ns`,
    ),
    db.prepare(`SELECT ${ns("repo")} AS ns, COUNT(*) AS n FROM manifests GROUP BY ns`),
    db.prepare(`SELECT ${ns("repo")} AS ns, COUNT(*) AS n FROM tags GROUP BY ns`),
    db.prepare("SELECT scope AS ns, SUM(size) AS bytes FROM (SELECT DISTINCT scope, layer, size FROM cache_entries WHERE layer IS NOT NULL) GROUP BY scope"),
    db.prepare("SELECT namespace AS ns, bytes FROM quotas"),
  ]);
  const out = new Map<string, NamespaceUsage>();
  const row = (name: string) => {
    let u = out.get(name);
    if (!u) out.set(name, (u = { namespace: name, bytes: 0, blobs: 0, manifests: 0, tags: 0, cacheBytes: 0 }));
    return u;
  };
  for (const r of content.results as { ns: string; bytes: number; blobs: number }[]) Object.assign(row(r.ns), { bytes: r.bytes ?? 0, blobs: r.blobs ?? 0 });
  for (const r of manifests.results as { ns: string; n: number }[]) row(r.ns).manifests = r.n;
  for (const r of tags.results as { ns: string; n: number }[]) row(r.ns).tags = r.n;
  for (const r of cache.results as { ns: string; bytes: number }[]) row(r.ns).cacheBytes = r.bytes ?? 0;
  for (const r of quotas.results as { ns: string; bytes: number }[]) row(r.ns).quota = r.bytes;
  const list = [...out.values()].filter((u) => !only || only.includes(u.namespace));
  return list.sort((a, b) => (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : 0));
}

/** Bytes held by one namespace (see namespaceUsage). */
export async function namespaceBytes(env: Env, namespace: string): Promise<number> {
  const r = await env.DB.prepare(
    `SELECT COALESCE(SUM(size), 0) AS bytes FROM (
       SELECT DISTINCT b.digest AS digest, b.size AS size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE ${inNamespace("r.repo")}
       UNION SELECT DISTINCT m.digest, m.size FROM manifests m WHERE ${inNamespace("m.repo")}
     )`,
  ).bind(namespace).first<{ bytes: number }>();
  return r?.bytes ?? 0;
}

export async function getQuota(env: Env, namespace: string): Promise<number | null> {
  const r = await env.DB.prepare("SELECT bytes FROM quotas WHERE namespace = ?").bind(namespace).first<{ bytes: number }>();
  return r ? r.bytes : null;
}

export async function listQuotas(env: Env): Promise<{ namespace: string; bytes: number }[]> {
  const { results } = await env.DB.prepare("SELECT namespace, bytes FROM quotas ORDER BY namespace").all<{ namespace: string; bytes: number }>();
  return results;
}

export async function putQuota(env: Env, namespace: string, bytes: number): Promise<void> {
  await env.DB.prepare("INSERT INTO quotas (namespace, bytes, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(namespace) DO UPDATE SET bytes = ?2, updated_at = ?3")
    .bind(namespace, bytes, Date.now()).run();
}

export async function deleteQuota(env: Env, namespace: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM quotas WHERE namespace = ?").bind(namespace).run();
  return (r.meta.changes ?? 0) > 0;
}

const namespaceOf = (repo: string) => repo.split("/")[0];

/** Those of `digests` the namespace already holds (linked, or a manifest, in one of its repositories). */
async function countedIn(env: Env, namespace: string, digests: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  const unique = [...new Set(digests)];
  for (let i = 0; i < unique.length; i += 90) {
    const part = unique.slice(i, i + 90);
    const marks = part.map((_, j) => `?${j + 2}`).join(",");
    const { results } = await env.DB.prepare(
      `SELECT r.digest AS digest FROM repo_blobs r WHERE r.digest IN (${marks}) AND ${inNamespace("r.repo")}
       UNION SELECT m.digest FROM manifests m WHERE m.digest IN (${marks}) AND ${inNamespace("m.repo")}`,
    ).bind(namespace, ...part).all<{ digest: string }>();
    for (const r of results) found.add(r.digest);
  }
  return found;
}

/**
 * Refuses (StorageError DENIED, naming usage and quota) a write that would add `content` to the
 * namespace of `repo` beyond its quota. Content the namespace already holds adds nothing (a digest
 * absent: new bytes for sure). A namespace without a quota costs one D1 query.
 * Returns whether the write may add content to a namespace with a quota: concurrent writes all pass
 * this check before any of them is stored, so such a writer checks again once stored
 * (assertWithinQuota) and takes its write back when the namespace went past its quota.
 */
export async function checkQuota(env: Env, repo: string, content: { digest?: string; size: number }[]): Promise<boolean> {
  const namespace = namespaceOf(repo);
  const quota = await getQuota(env, namespace);
  if (quota === null) return false;
  const held = await countedIn(env, namespace, content.flatMap((c) => (c.digest ? [c.digest] : [])));
  const seen = new Set<string>();
  let adding = 0;
  let fresh = false;
  for (const c of content) {
    if (c.digest && (held.has(c.digest) || seen.has(c.digest))) continue;
    if (c.digest) seen.add(c.digest);
    adding += c.size;
    fresh = true;
  }
  if (adding === 0) return fresh;
  const used = await namespaceBytes(env, namespace);
  if (used + adding > quota) throw quotaExceeded(namespace, used, quota, adding);
  return true;
}

/**
 * Refuses (DENIED) when the namespace of `repo` holds more than its quota, or with `full`, when it
 * has no byte left (a build, which pushes at least a manifest).
 */
export async function assertWithinQuota(env: Env, repo: string, full = false): Promise<void> {
  const namespace = namespaceOf(repo);
  const quota = await getQuota(env, namespace);
  if (quota === null) return;
  const used = await namespaceBytes(env, namespace);
  if (used > quota || (full && used >= quota)) {
    throw new StorageError("DENIED", `namespace ${namespace} has reached its quota: it uses ${used} of ${quota} bytes; delete images (or ask an admin to raise the quota with PUT /v1/quotas/${namespace})`, {
      detail: { namespace, usage: used, quota },
    });
  }
}

/** The sizes of stored blobs (those stored at all), for checkQuota of content already in the store. */
export async function storedSizes(env: Env, digests: string[]): Promise<{ digest: string; size: number }[]> {
  const out: { digest: string; size: number }[] = [];
  const unique = [...new Set(digests)];
  for (let i = 0; i < unique.length; i += 90) {
    const part = unique.slice(i, i + 90);
    const { results } = await env.DB.prepare(`SELECT digest, size FROM blobs WHERE digest IN (${part.map(() => "?").join(",")})`).bind(...part).all<{ digest: string; size: number }>();
    out.push(...results);
  }
  return out;
}

/** The refusal of a write of `adding` bytes to a namespace that holds `used` of its `quota` bytes. */
export function quotaExceeded(namespace: string, used: number, quota: number, adding: number): StorageError {
  return new StorageError("DENIED", `namespace ${namespace} would exceed its quota: it uses ${used} of ${quota} bytes and this adds ${adding}; delete images (or ask an admin to raise the quota with PUT /v1/quotas/${namespace})`, {
    detail: { namespace, usage: used, quota, adding },
  });
}
