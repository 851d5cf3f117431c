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
  /**
   * Bytes staged by the namespace's unfinished upload sessions (chunks sent, upload not completed):
   * they count against the quota with `bytes` until the upload completes, is cancelled or purged.
   */
  stagedBytes: number;
  /** The namespace's byte quota, if one is set. */
  quota?: number;
}

/** SQL: the namespace of column `col` (a repository name). */
const ns = (col: string) => `CASE WHEN instr(${col}, '/') > 0 THEN substr(${col}, 1, instr(${col}, '/') - 1) ELSE ${col} END`;
/** SQL: `col` is a repository of namespace `p` (range comparisons: index-friendly and no LIKE wildcards). */
const inNamespace = (col: string, p = "?1") => `(${col} = ${p} OR (${col} >= ${p} || '/' AND ${col} < ${p} || '0'))`;

/**
 * Usage of every namespace (`only` absent) or of the namespaces in `only` (read alone when they are at most 50). Namespaces
 * with nothing stored but a quota are listed too.
 */
export async function namespaceUsage(env: Env, only?: string[]): Promise<NamespaceUsage[]> {
  const db = env.DB;
  // with `only`, each query reads the rows of those namespaces alone (index ranges), not the store's
  const names = only && new Set(only).size <= 50 ? [...new Set(only)] : null;
  if (names && names.length === 0) return [];
  const inNames = (col: string) => (names ? `(${names.map((_, i) => inNamespace(col, `?${i + 1}`)).join(" OR ")})` : "1");
  const isName = (col: string) => (names ? `${col} IN (${names.map((_, i) => `?${i + 1}`).join(",")})` : "1");
  const q = (sql: string) => (names ? db.prepare(sql).bind(...names) : db.prepare(sql));
  const [content, manifests, tags, cache, quotas, staged] = await db.batch([
    q(
      `SELECT ns, SUM(size) AS bytes, SUM(is_blob) AS blobs FROM (
         SELECT DISTINCT ${ns("r.repo")} AS ns, b.digest AS digest, b.size AS size, 1 AS is_blob FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE ${inNames("r.repo")}
         UNION SELECT DISTINCT ${ns("m.repo")} AS ns, m.digest AS digest, m.size AS size, 0 AS is_blob FROM manifests m WHERE ${inNames("m.repo")}
       ) GROUP BY ns`,
    ),
    q(`SELECT ${ns("repo")} AS ns, COUNT(*) AS n FROM manifests WHERE ${inNames("repo")} GROUP BY ns`),
    q(`SELECT ${ns("repo")} AS ns, COUNT(*) AS n FROM tags WHERE ${inNames("repo")} GROUP BY ns`),
    q(`SELECT scope AS ns, SUM(size) AS bytes FROM (SELECT DISTINCT scope, layer, size FROM cache_entries WHERE layer IS NOT NULL AND ${isName("scope")}) GROUP BY scope`),
    q(`SELECT namespace AS ns, bytes FROM quotas WHERE ${isName("namespace")}`),
    q(`SELECT ${ns("repo")} AS ns, SUM(size) AS bytes FROM uploads WHERE ${inNames("repo")} GROUP BY ns`),
  ]);
  const out = new Map<string, NamespaceUsage>();
  const row = (name: string) => {
    let u = out.get(name);
    if (!u) out.set(name, (u = { namespace: name, bytes: 0, blobs: 0, manifests: 0, tags: 0, cacheBytes: 0, stagedBytes: 0 }));
    return u;
  };
  for (const r of content.results as { ns: string; bytes: number; blobs: number }[]) Object.assign(row(r.ns), { bytes: r.bytes ?? 0, blobs: r.blobs ?? 0 });
  for (const r of manifests.results as { ns: string; n: number }[]) row(r.ns).manifests = r.n;
  for (const r of tags.results as { ns: string; n: number }[]) row(r.ns).tags = r.n;
  for (const r of cache.results as { ns: string; bytes: number }[]) row(r.ns).cacheBytes = r.bytes ?? 0;
  for (const r of quotas.results as { ns: string; bytes: number }[]) row(r.ns).quota = r.bytes;
  for (const r of staged.results as { ns: string; bytes: number }[]) if (r.bytes) row(r.ns).stagedBytes = r.bytes;
  const list = [...out.values()].filter((u) => !only || only.includes(u.namespace));
  return list.sort((a, b) => (a.namespace < b.namespace ? -1 : a.namespace > b.namespace ? 1 : 0));
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

/**
 * How long a reservation counts at most: a writer that died (isolate gone mid-write) holds its
 * namespace's room no longer than this. Writers release theirs as soon as their rows are written.
 */
export const RESERVATION_TTL_MS = 60 * 60 * 1000;

/** SQL parameters (`?N`) of the namespace, of now (ms), and of a reservation id left out of the sum. */
interface HeldParams { ns: string; now: string; except?: string }

/** SQL: bytes stored in namespace `ns` (see namespaceUsage). */
const storedSql = (ns: string) => `SELECT COALESCE(SUM(size), 0) FROM (
  SELECT DISTINCT b.digest AS digest, b.size AS size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE ${inNamespace("r.repo", ns)}
  UNION SELECT DISTINCT m.digest, m.size FROM manifests m WHERE ${inNamespace("m.repo", ns)})`;
/** SQL: bytes staged by the namespace's upload sessions (their chunks in R2, not yet a blob). */
const stagedSql = (ns: string) => `SELECT COALESCE(SUM(size), 0) FROM uploads WHERE ${inNamespace("repo", ns)}`;
/** SQL: bytes the namespace's writers in progress reserved (live reservations only). */
const reservedSql = (p: HeldParams) =>
  `SELECT COALESCE(SUM(bytes), 0) FROM quota_reservations WHERE namespace = ${p.ns} AND expires_at > ${p.now}${p.except ? ` AND id <> ${p.except}` : ""}`;

/**
 * SQL condition: the namespace `p.ns` can take `adding` more bytes: stored + staged + reserved
 * (without reservation `p.except`) + adding is within its quota (no quota: always). Evaluated inside
 * the one statement that writes, so concurrent writers never share the same room.
 */
export function fitsQuotaSql(p: HeldParams, adding: string): string {
  return `(${storedSql(p.ns)}) + (${stagedSql(p.ns)}) + (${reservedSql(p)}) + ${adding} <= COALESCE((SELECT bytes FROM quotas WHERE namespace = ${p.ns}), 9223372036854775807)`;
}

/** A namespace's quota, as writers read it first (one primary-key query; null: no quota). */
export interface Quota { namespace: string; bytes: number }

/** The quota of the namespace of `repo`, or null. */
export async function quotaOf(env: Env, repo: string): Promise<Quota | null> {
  const namespace = namespaceOf(repo);
  const bytes = await getQuota(env, namespace);
  return bytes === null ? null : { namespace, bytes };
}

/** Bytes a writer holds in its namespace's room until it releases them (or they expire). */
export interface Reservation { id: string; namespace: string; bytes: number }

/** What a namespace holds against its quota now (for refusals and usage). */
export async function quotaState(env: Env, namespace: string): Promise<{ stored: number; staged: number; reserved: number; quota: number | null }> {
  const r = await env.DB.prepare(
    `SELECT (${storedSql("?1")}) AS stored, (${stagedSql("?1")}) AS staged, (${reservedSql({ ns: "?1", now: "?2" })}) AS reserved,
       (SELECT bytes FROM quotas WHERE namespace = ?1) AS quota`,
  ).bind(namespace, Date.now()).first<{ stored: number; staged: number; reserved: number; quota: number | null }>();
  return { stored: r?.stored ?? 0, staged: r?.staged ?? 0, reserved: r?.reserved ?? 0, quota: r?.quota ?? null };
}

/** The refusal of `adding` bytes to `namespace`, naming what it holds now and its quota. */
export async function quotaRefusal(env: Env, namespace: string, adding: number): Promise<StorageError> {
  const s = await quotaState(env, namespace);
  return quotaExceeded(namespace, s, s.quota ?? 0, adding);
}

/**
 * Reserves `bytes` in the namespace of `quota`, or refuses (StorageError DENIED naming usage and
 * quota): one INSERT whose condition sums the namespace's stored, staged and reserved bytes, so of
 * concurrent writers only those that fit together get a reservation. Release it with releaseQuota
 * once the bytes are written (they count as stored then) or not written at all.
 */
export async function reserveQuota(env: Env, quota: Quota, bytes: number, ttlMs = RESERVATION_TTL_MS): Promise<Reservation> {
  const id = crypto.randomUUID();
  const now = Date.now();
  const r = await env.DB.prepare(
    `INSERT INTO quota_reservations (id, namespace, bytes, expires_at) SELECT ?3, ?1, ?4, ?5 WHERE ${fitsQuotaSql({ ns: "?1", now: "?2" }, "?4")}`,
  ).bind(quota.namespace, now, id, bytes, now + ttlMs).run();
  if (!r.meta.changes) throw await quotaRefusal(env, quota.namespace, bytes);
  return { id, namespace: quota.namespace, bytes };
}

/**
 * `body` cut off once it passes the room the namespace of `repo` has now (its quota less stored,
 * staged and reserved bytes), for a write of unknown length: it errors with StorageError DENIED
 * (naming usage and quota) at that point, so a writer that stores it (spool) aborts, and its bytes
 * never reach R2 in full. The room is read once: the write's own atomic check (or assertWithinQuota)
 * still decides.
 */
export async function cappedToRoom(env: Env, repo: string, body: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>> {
  const namespace = namespaceOf(repo);
  const held = await quotaState(env, namespace);
  const room = (held.quota ?? Infinity) - held.stored - held.staged - held.reserved;
  let received = 0;
  return body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      received += chunk.byteLength;
      if (received > room) controller.error(quotaExceeded(namespace, held, held.quota ?? 0, received, true));
      else controller.enqueue(chunk);
    },
  }));
}

/** Gives the reservations' room back (idempotent; a reservation already transferred is a no-op). */
export async function releaseQuota(env: Env, ...reservations: (Reservation | null | undefined)[]): Promise<void> {
  const ids = reservations.flatMap((r) => (r ? [r.id] : []));
  if (ids.length) await env.DB.prepare(`DELETE FROM quota_reservations WHERE id IN (${ids.map(() => "?").join(",")})`).bind(...ids).run();
}

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

/** Content a write adds to a repository: digests the namespace already holds add nothing; no digest: new bytes. */
export interface QuotaWrite { repo: string; content: { digest?: string; size: number }[] }

/**
 * Runs `write` holding a reservation, in each namespace with a quota that `writes` touch, of the
 * bytes new to it (a digest counted once per namespace); refuses (DENIED, naming usage and quota)
 * before `write` starts when one namespace has no room: nothing is written. The reservations are
 * released when `write` ends, whatever its outcome. A namespace without a quota costs one query.
 * `write` learns whether it adds content new to a namespace with a quota (`fresh`), for writers
 * whose length was unknown beforehand (they check again once stored: assertWithinQuota).
 */
export async function withQuota<T>(env: Env, writes: QuotaWrite[], write: (fresh: boolean) => Promise<T>): Promise<T> {
  const byNamespace = new Map<string, QuotaWrite["content"]>();
  for (const w of writes) byNamespace.set(namespaceOf(w.repo), [...(byNamespace.get(namespaceOf(w.repo)) ?? []), ...w.content]);
  const held: Reservation[] = [];
  let fresh = false;
  try {
    for (const [namespace, content] of byNamespace) {
      const bytes = await getQuota(env, namespace);
      if (bytes === null) continue;
      const counted = await countedIn(env, namespace, content.flatMap((c) => (c.digest ? [c.digest] : [])));
      const seen = new Set<string>();
      let adding = 0;
      for (const c of content) {
        if (c.digest && (counted.has(c.digest) || seen.has(c.digest))) continue;
        if (c.digest) seen.add(c.digest);
        adding += c.size;
        fresh = true;
      }
      if (adding > 0) held.push(await reserveQuota(env, { namespace, bytes }, adding));
    }
    return await write(fresh);
  } finally {
    await releaseQuota(env, ...held);
  }
}

/**
 * Refuses (DENIED) when the namespace of `repo` holds more than its quota (stored, staged and
 * reserved bytes), or with `full`, when it has no byte left (a build, which pushes at least a
 * manifest). For writes whose length was known only once stored: the caller takes its write back.
 */
export async function assertWithinQuota(env: Env, repo: string, full = false): Promise<void> {
  const namespace = namespaceOf(repo);
  const quota = await getQuota(env, namespace);
  if (quota === null) return;
  const s = await quotaState(env, namespace);
  const used = s.stored + s.staged + s.reserved;
  if (used > quota || (full && used >= quota)) {
    throw new StorageError("DENIED", `namespace ${namespace} has reached its quota: it uses ${used} of ${quota} bytes${heldText(s)}; delete images (or ask an admin to raise the quota with PUT /v1/quotas/${namespace})`, {
      detail: { namespace, usage: used, quota, staged: s.staged, reserved: s.reserved },
    });
  }
}

/** The sizes of stored blobs (those stored at all), for withQuota of content already in the store. */
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

const heldText = (s: { staged: number; reserved: number }) =>
  s.staged || s.reserved ? ` (of them ${s.staged} staged by unfinished uploads, ${s.reserved} reserved by writes in progress)` : "";

/** The refusal of a write of `adding` (with `atLeast`: at least `adding`, the rest unread) bytes to a namespace that holds `held` of its `quota` bytes. */
export function quotaExceeded(namespace: string, held: { stored: number; staged: number; reserved: number }, quota: number, adding: number, atLeast = false): StorageError {
  const used = held.stored + held.staged + held.reserved;
  return new StorageError("DENIED", `namespace ${namespace} would exceed its quota: it uses ${used} of ${quota} bytes${heldText(held)} and this adds ${atLeast ? "at least " : ""}${adding}; delete images (or ask an admin to raise the quota with PUT /v1/quotas/${namespace})`, {
    detail: { namespace, usage: used, quota, adding, staged: held.staged, reserved: held.reserved },
  });
}
