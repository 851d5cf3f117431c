/**
 * Garbage collection: retention policies, then mark and sweep, run by the GarbageCollector Durable
 * Object (src/gc/collector.ts) one collection at a time while pushes, pulls and builds go on.
 *
 * Marks: tags (after retention), and from each marked manifest its index children, its referrers
 * (manifests whose subject it is) and its config and layers; untagged manifests younger than their
 * age (the grace period, or the matching policy's `untaggedOlderThanDays`); build cache entries
 * (after eviction); running builds (their contexts, their repositories' links, their staging
 * objects); upload sessions (their staged chunks); pull-through records; anything younger than the
 * grace period. Everything else is swept.
 *
 * No read-only window: every delete is one conditional D1 statement that re-checks, when it runs,
 * that nothing uses the row any more (a tag re-pushed, a manifest that names it, a pin). Writers pin
 * what they are about to use (withBlobPin(s) in blobs.ts: a manifest push pins its blobs and
 * children before checking they are there), so a delete either happens before the writer's check
 * (which then fails cleanly, the client uploads again) or not at all. Blob rows and bytes go only
 * through collectBlob, which re-checks every use in one batch.
 */
import type { Env } from "../env";
import { patternMatches } from "../auth/scopes";
import { collectBlob } from "./blobs";
import { cacheObjectKey } from "./cache";
import { deleteContext } from "./contexts";

// ------------------------------------------------------------------ retention policies

export interface RetentionPolicy {
  /** Keep the N most recently pushed tags. */
  keepLast?: number;
  /** Keep tags matching these patterns (`latest`, `v*`). */
  keepTags?: string[];
  /** Untagged manifests are deleted once older than this (default: the grace period). */
  untaggedOlderThanDays?: number;
  /** Tags older than this (since their last push) are deleted unless kept above. */
  olderThanDays?: number;
}

export interface RetentionRecord {
  pattern: string;
  policy: RetentionPolicy;
  updatedAt: number;
}

export async function listRetention(env: Env): Promise<RetentionRecord[]> {
  const { results } = await env.DB.prepare("SELECT pattern, policy, updated_at FROM retention_policies ORDER BY pattern").all<{ pattern: string; policy: string; updated_at: number }>();
  return results.map((r) => ({ pattern: r.pattern, policy: JSON.parse(r.policy) as RetentionPolicy, updatedAt: r.updated_at }));
}

export async function putRetention(env: Env, pattern: string, policy: RetentionPolicy): Promise<void> {
  await env.DB.prepare("INSERT INTO retention_policies (pattern, policy, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(pattern) DO UPDATE SET policy = ?2, updated_at = ?3")
    .bind(pattern, JSON.stringify(policy), Date.now()).run();
}

export async function deleteRetention(env: Env, pattern: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM retention_policies WHERE pattern = ?").bind(pattern).run();
  return (r.meta.changes ?? 0) > 0;
}

/** The policy of `repo`: the most specific (longest) pattern that matches it. */
export function policyFor(policies: RetentionRecord[], repo: string): RetentionRecord | undefined {
  return policies.filter((p) => patternMatches(p.pattern, repo)).sort((a, b) => b.pattern.length - a.pattern.length)[0];
}

const DAY_MS = 24 * 3600 * 1000;

/**
 * The tags a policy deletes. Kept: tags matching `keepTags`, and the `keepLast` most recently pushed.
 * Of the rest, all go when `keepLast` is set and `olderThanDays` is not; with `olderThanDays`, only
 * those last pushed longer ago. Without either, none.
 */
export function tagsToDelete(policy: RetentionPolicy, tags: { tag: string; updatedAt: number }[], now: number): string[] {
  if (policy.keepLast === undefined && policy.olderThanDays === undefined) return [];
  const byAge = [...tags].sort((a, b) => b.updatedAt - a.updatedAt || (a.tag < b.tag ? -1 : 1));
  const kept = new Set(byAge.slice(0, policy.keepLast ?? 0).map((t) => t.tag));
  return byAge
    .filter((t) => !kept.has(t.tag) && !(policy.keepTags ?? []).some((p) => patternMatches(p, t.tag)))
    .filter((t) => policy.olderThanDays === undefined || t.updatedAt < now - policy.olderThanDays * DAY_MS)
    .map((t) => t.tag);
}

// ------------------------------------------------------------------ reports

export interface GcOptions {
  dryRun: boolean;
  graceMs: number;
  trigger: "api" | "cron" | "test";
  /** Cache entries not hit for this long are dropped. */
  cacheMaxAgeMs: number;
  /** Per cache scope, entries beyond this many layer bytes are dropped, least recently hit first (null: no budget). */
  cacheBudgetBytes: number | null;
}

export interface GcReport {
  id: string;
  dryRun: boolean;
  trigger: string;
  graceSeconds: number;
  startedAt: number;
  finishedAt: number;
  durationMs: number;
  /** What each retention policy deleted (or would delete): `repo:tag` and `repo@digest`. */
  retention: { pattern: string; tags: string[]; manifests: string[] }[];
  deleted: {
    tags: string[];
    manifests: string[];
    /** Repository links of blobs no manifest of the repository uses. */
    links: number;
    blobs: string[];
    cacheEntries: number;
    contexts: number;
    /** R2 objects no row refers to (interrupted writes, staging left behind). */
    objects: number;
  };
  /** Blob bytes deleted (or that would be). */
  bytesFreed: number;
  /** Lists in the report are cut at this many items; the counts below them are complete. */
  listLimit: number;
  counts: { tags: number; manifests: number; blobs: number };
}

const LIST_LIMIT = 1000;

export async function startGcRun(env: Env, id: string, opts: GcOptions, startedAt: number): Promise<void> {
  await env.DB.prepare("INSERT INTO gc_runs (id, started_at, dry_run, grace_ms, trigger, status) VALUES (?, ?, ?, ?, ?, 'running')")
    .bind(id, startedAt, opts.dryRun ? 1 : 0, opts.graceMs, opts.trigger).run();
}

export async function finishGcRun(env: Env, id: string, status: "done" | "failed", report: GcReport | { error: string }): Promise<void> {
  await env.DB.prepare("UPDATE gc_runs SET status = ?, finished_at = ?, report = ? WHERE id = ?")
    .bind(status, Date.now(), JSON.stringify(report), id).run();
}

export interface GcRunRecord {
  id: string;
  status: string;
  dryRun: boolean;
  trigger: string;
  startedAt: number;
  finishedAt: number | null;
  report: GcReport | { error: string } | null;
}

/** The most recent collections first. */
export async function listGcRuns(env: Env, limit = 20): Promise<GcRunRecord[]> {
  type Row = { id: string; status: string; dry_run: number; trigger: string; started_at: number; finished_at: number | null; report: string | null };
  const { results } = await env.DB.prepare("SELECT id, status, dry_run, trigger, started_at, finished_at, report FROM gc_runs ORDER BY started_at DESC LIMIT ?")
    .bind(Math.min(Math.max(limit, 1), 200)).all<Row>();
  return results.map((r) => ({
    id: r.id, status: r.status, dryRun: r.dry_run === 1, trigger: r.trigger, startedAt: r.started_at, finishedAt: r.finished_at,
    report: r.report ? (JSON.parse(r.report) as GcReport) : null,
  }));
}

/** A run a collector that died left "running": marked failed, so GET /v1/gc does not show it running forever. */
export async function failAbandonedRuns(env: Env, before: number): Promise<void> {
  await env.DB.prepare("UPDATE gc_runs SET status = 'failed', finished_at = ?, report = ? WHERE status = 'running' AND started_at < ?")
    .bind(Date.now(), JSON.stringify({ error: "the collector stopped before finishing" }), before).run();
}

// ------------------------------------------------------------------ the collection

interface ManifestRow { repo: string; digest: string; subject: string | null; created_at: number }

async function all<T>(env: Env, sql: string, ...binds: unknown[]): Promise<T[]> {
  const { results } = await env.DB.prepare(sql).bind(...binds).all<T>();
  return results;
}

/** Deletes in flight at once: few, so the collection never crowds out requests for D1 and R2. */
const WIDTH = 2;

/** Runs `fn` over `items` with at most `n` at a time, yielding to other work between items. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      await fn(items[next++]);
      await new Promise((r) => setTimeout(r, 0));
    }
  }));
}

const pushLimited = (list: string[], item: string) => {
  if (list.length < LIST_LIMIT) list.push(item);
};

/** One collection (retention, cache eviction, mark, sweep); `dryRun` decides the same and deletes nothing. */
export async function collectGarbage(env: Env, id: string, opts: GcOptions): Promise<GcReport> {
  const startedAt = Date.now();
  const cutoff = startedAt - opts.graceMs;
  const report: GcReport = {
    id, dryRun: opts.dryRun, trigger: opts.trigger, graceSeconds: Math.round(opts.graceMs / 1000), startedAt, finishedAt: 0, durationMs: 0,
    retention: [], deleted: { tags: [], manifests: [], links: 0, blobs: [], cacheEntries: 0, contexts: 0, objects: 0 },
    bytesFreed: 0, listLimit: LIST_LIMIT, counts: { tags: 0, manifests: 0, blobs: 0 },
  };

  // Running builds: their repositories keep every link (layers linked before the manifest exists),
  // their contexts and staging objects stay.
  const activeBuilds = await all<{ id: string; repository: string | null; tags: string; context_digest: string | null }>(
    env, "SELECT id, repository, tags, context_digest FROM builds WHERE status IN ('queued', 'running') OR updated_at >= ?", cutoff,
  );
  const buildingRepos = new Set<string>();
  for (const b of activeBuilds) {
    if (b.repository) buildingRepos.add(b.repository);
    // every repository it tags (`repo:tag`)
    for (const t of JSON.parse(b.tags || "[]") as string[]) buildingRepos.add(t.slice(0, t.lastIndexOf(":")));
  }

  // ---- retention and manifest marks, per repository
  const policies = await listRetention(env);
  const byPattern = new Map<string, { pattern: string; tags: string[]; manifests: string[] }>();
  const policyReport = (pattern: string) => {
    let r = byPattern.get(pattern);
    if (!r) byPattern.set(pattern, (r = { pattern, tags: [], manifests: [] }));
    return r;
  };
  const tags = await all<{ repo: string; tag: string; digest: string; updated_at: number }>(env, "SELECT repo, tag, digest, updated_at FROM tags");
  const manifests = await all<ManifestRow>(env, "SELECT repo, digest, subject, created_at FROM manifests");
  const refs = await all<{ repo: string; manifest: string; ref: string }>(env, "SELECT repo, manifest, ref FROM manifest_refs");

  const group = <T extends { repo: string }>(rows: T[]) => {
    const m = new Map<string, T[]>();
    for (const r of rows) {
      const list = m.get(r.repo);
      if (list) list.push(r);
      else m.set(r.repo, [r]);
    }
    return m;
  };
  const tagsByRepo = group(tags);
  const manifestsByRepo = group(manifests);
  const refsByRepo = group(refs);
  const repos = new Set([...tagsByRepo.keys(), ...manifestsByRepo.keys()]);

  /** Surviving manifests' references per repository (for links and blobs). */
  const survivingRefs = new Map<string, Set<string>>();
  const survivingManifests = new Set<string>();
  const deadTags: { repo: string; tag: string; digest: string; updated_at: number }[] = [];
  const deadManifests: { repo: string; digest: string; created_at: number }[] = [];

  for (const repo of repos) {
    const policy = policyFor(policies, repo);
    const repoTags = tagsByRepo.get(repo) ?? [];
    const dropTags = new Set(policy ? tagsToDelete(policy.policy, repoTags.map((t) => ({ tag: t.tag, updatedAt: t.updated_at })), startedAt) : []);
    for (const t of repoTags) {
      if (!dropTags.has(t.tag)) continue;
      deadTags.push(t);
      pushLimited(policyReport(policy!.pattern).tags, `${repo}:${t.tag}`);
    }
    const untaggedDays = policy?.policy.untaggedOlderThanDays;
    const untaggedCutoff = untaggedDays === undefined ? cutoff : Math.min(cutoff, startedAt - untaggedDays * DAY_MS);
    const repoManifests = manifestsByRepo.get(repo) ?? [];
    const known = new Map(repoManifests.map((m) => [m.digest, m]));
    const referrers = new Map<string, string[]>();
    const add = (map: Map<string, string[]>, k: string, v: string) => {
      const list = map.get(k);
      if (list) list.push(v);
      else map.set(k, [v]);
    };
    for (const m of repoManifests) if (m.subject) add(referrers, m.subject, m.digest);
    const refsOf = new Map<string, string[]>();
    for (const r of refsByRepo.get(repo) ?? []) add(refsOf, r.manifest, r.ref);

    const marked = new Set<string>();
    const queue: string[] = [];
    const mark = (d: string) => {
      if (known.has(d) && !marked.has(d)) {
        marked.add(d);
        queue.push(d);
      }
    };
    for (const t of repoTags) if (!dropTags.has(t.tag)) mark(t.digest);
    // a running build pushes children by digest before their index: its repositories keep every manifest
    for (const m of repoManifests) if (m.created_at >= untaggedCutoff || buildingRepos.has(repo)) mark(m.digest);
    while (queue.length) {
      const d = queue.pop()!;
      for (const r of refsOf.get(d) ?? []) mark(r); // index children (layers and configs are no manifests)
      for (const r of referrers.get(d) ?? []) mark(r); // signatures, SBOMs: they go with their subject
    }
    const refsHere = new Set<string>();
    for (const m of repoManifests) {
      if (marked.has(m.digest)) {
        survivingManifests.add(m.digest);
        for (const r of refsOf.get(m.digest) ?? []) refsHere.add(r);
      } else {
        deadManifests.push(m);
        pushLimited(policyReport(policy?.pattern ?? "(untagged, no policy)").manifests, `${repo}@${m.digest}`);
      }
    }
    survivingRefs.set(repo, refsHere);
  }
  report.retention = [...byPattern.values()];
  report.counts.tags = deadTags.length;
  report.counts.manifests = deadManifests.length;
  for (const t of deadTags) pushLimited(report.deleted.tags, `${t.repo}:${t.tag}`);
  for (const m of deadManifests) pushLimited(report.deleted.manifests, `${m.repo}@${m.digest}`);

  if (!opts.dryRun) {
    // a tag re-pushed meanwhile (other digest or time) stays
    await pool(deadTags, WIDTH, async (t) => {
      await env.DB.prepare("DELETE FROM tags WHERE repo = ? AND tag = ? AND digest = ? AND updated_at = ?").bind(t.repo, t.tag, t.digest, t.updated_at).run();
    });
    await deleteManifests(env, deadManifests);
  }

  // ---- links: a repository keeps a blob only while one of its manifests uses it
  const links = await all<{ repo: string; digest: string; created_at: number }>(env, "SELECT repo, digest, created_at FROM repo_blobs WHERE created_at < ?", cutoff);
  const deadLinks = links.filter((l) => !buildingRepos.has(l.repo) && !survivingRefs.get(l.repo)?.has(l.digest) && !survivingManifests.has(l.digest));
  report.deleted.links = deadLinks.length;
  if (!opts.dryRun) {
    await pool(deadLinks, WIDTH, async (l) => {
      await env.DB.prepare(
        `DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2 AND created_at < ?3
           AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repo = ?1 AND ref = ?2)
           AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE digest = ?2 AND expires_at > ?4)`,
      ).bind(l.repo, l.digest, cutoff, Date.now()).run();
    });
  }

  // ---- cache entries: unused for too long, or past their scope's budget
  const evicted = await evictCache(env, opts, cutoff);
  report.deleted.cacheEntries = evicted.count;

  // ---- blobs
  const deadLinkKeys = new Set(deadLinks.map((l) => `${l.repo}\n${l.digest}`));
  const used = new Set<string>();
  for (const l of await all<{ repo: string; digest: string }>(env, "SELECT repo, digest FROM repo_blobs")) {
    if (!deadLinkKeys.has(`${l.repo}\n${l.digest}`)) used.add(l.digest);
  }
  for (const s of survivingRefs.values()) for (const d of s) used.add(d);
  for (const d of survivingManifests) used.add(d);
  const deadManifestKeys = new Set(deadManifests.map((m) => `${m.repo}\n${m.digest}`));
  // manifests and refs written after the marks were read (pushes meanwhile) count as used
  for (const r of await all<{ repo: string; digest: string }>(env, "SELECT repo, digest FROM manifests WHERE created_at >= ?", startedAt)) used.add(r.digest);
  for (const m of manifests) if (!deadManifestKeys.has(`${m.repo}\n${m.digest}`)) used.add(m.digest);
  for (const r of refs) if (!deadManifestKeys.has(`${r.repo}\n${r.manifest}`)) used.add(r.ref);
  const cacheLayers = await all<{ layer: string }>(env, "SELECT DISTINCT layer FROM cache_entries WHERE layer IS NOT NULL");
  for (const c of cacheLayers) if (!evicted.layersGone.has(c.layer)) used.add(c.layer);
  for (const u of await all<{ digest: string }>(env, "SELECT digest FROM upstream_links UNION SELECT digest FROM upstream_manifests")) used.add(u.digest);

  const candidates = (await all<{ digest: string; size: number }>(env, "SELECT digest, size FROM blobs WHERE created_at < ?", cutoff)).filter((b) => !used.has(b.digest));
  if (opts.dryRun) {
    for (const b of candidates) {
      pushLimited(report.deleted.blobs, b.digest);
      report.bytesFreed += b.size;
    }
    report.counts.blobs = candidates.length;
  } else {
    await pool(candidates, WIDTH, async (b) => {
      if (!(await collectBlob(env, b.digest))) return; // used again meanwhile: collectBlob re-checked
      await env.BUCKET.delete(`layer-index/${b.digest.replace(":", "/")}`);
      pushLimited(report.deleted.blobs, b.digest);
      report.counts.blobs++;
      report.bytesFreed += b.size;
    });
  }

  // ---- contexts of builds that ended, and objects no row refers to
  const keepContexts = new Set(activeBuilds.flatMap((b) => (b.context_digest ? [b.context_digest] : [])));
  report.deleted.contexts = await sweepContexts(env, keepContexts, cutoff, opts);
  const activeIds = new Set(activeBuilds.map((b) => b.id));
  report.deleted.objects = await sweepOrphanObjects(env, cutoff, opts.dryRun, activeIds);

  report.finishedAt = Date.now();
  report.durationMs = report.finishedAt - startedAt;
  return report;
}

/**
 * Deletes unmarked manifests (and their refs) of the collection. Each delete re-checks in SQL that
 * the manifest is still untagged, that no existing manifest names it (a parent goes first, so a
 * child whose index is deleted in the same run follows in a later round) and that no push pinned it.
 */
async function deleteManifests(env: Env, dead: { repo: string; digest: string; created_at: number }[]): Promise<void> {
  let left = dead;
  for (let round = 0; left.length && round < 8; round++) {
    const blocked: typeof dead = [];
    await pool(left, WIDTH, async (m) => {
      const [del] = await env.DB.batch([
        env.DB.prepare(
          `DELETE FROM manifests WHERE repo = ?1 AND digest = ?2 AND created_at = ?3
             AND NOT EXISTS (SELECT 1 FROM tags WHERE repo = ?1 AND digest = ?2)
             AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repo = ?1 AND ref = ?2)
             AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE digest = ?2 AND expires_at > ?4)`,
        ).bind(m.repo, m.digest, m.created_at, Date.now()),
        env.DB.prepare("DELETE FROM manifest_refs WHERE repo = ?1 AND manifest = ?2 AND NOT EXISTS (SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2)")
          .bind(m.repo, m.digest),
      ]);
      if (!del.meta.changes) blocked.push(m);
    });
    if (blocked.length === left.length) break;
    left = blocked;
  }
}

/** Drops cache entries (D1 row, then the R2 entry) unused for too long or past their scope's budget. */
async function evictCache(env: Env, opts: GcOptions, cutoff: number): Promise<{ count: number; layersGone: Set<string> }> {
  await adoptLegacyCacheEntries(env);
  const rows = await all<{ key: string; scope: string; layer: string | null; size: number; last_hit_at: number }>(
    env, "SELECT key, scope, layer, size, last_hit_at FROM cache_entries ORDER BY scope, last_hit_at DESC",
  );
  const staleBefore = Math.min(cutoff, Date.now() - opts.cacheMaxAgeMs);
  const dead: typeof rows = [];
  const spent = new Map<string, Map<string, number>>();
  for (const r of rows) {
    // an entry hit within the grace period may be in use by a build right now
    if (r.last_hit_at >= cutoff) {
      if (r.layer) spentOf(spent, r.scope).set(r.layer, r.size);
      continue;
    }
    if (r.last_hit_at < staleBefore) {
      dead.push(r);
      continue;
    }
    const layers = spentOf(spent, r.scope);
    const total = [...layers.values()].reduce((a, b) => a + b, 0);
    if (opts.cacheBudgetBytes !== null && r.layer && !layers.has(r.layer) && total + r.size > opts.cacheBudgetBytes) {
      dead.push(r);
      continue;
    }
    if (r.layer) layers.set(r.layer, r.size);
  }
  const deadKeys = new Set(dead.map((d) => d.key));
  const stillUsed = new Set(rows.filter((r) => r.layer && !deadKeys.has(r.key)).map((r) => r.layer!));
  const layersGone = new Set(dead.flatMap((d) => (d.layer && !stillUsed.has(d.layer) ? [d.layer] : [])));
  if (!opts.dryRun) {
    await pool(dead, WIDTH, async (d) => {
      // a hit meanwhile keeps the entry
      const r = await env.DB.prepare("DELETE FROM cache_entries WHERE key = ? AND last_hit_at = ?").bind(d.key, d.last_hit_at).run();
      if (r.meta.changes) await env.BUCKET.delete(cacheObjectKey(d.key));
    });
  }
  return { count: dead.length, layersGone };
}

function spentOf(m: Map<string, Map<string, number>>, scope: string): Map<string, number> {
  let s = m.get(scope);
  if (!s) m.set(scope, (s = new Map()));
  return s;
}

/**
 * Cache entries written before the D1 index existed get a row (scope unknown: ""), so the collector
 * marks their layers and can age them out; their last hit counts from when they were written.
 */
async function adoptLegacyCacheEntries(env: Env): Promise<void> {
  let cursor: string | undefined;
  do {
    const page = await env.BUCKET.list({ prefix: "cache/sha256/", cursor, limit: 1000 });
    cursor = page.truncated ? page.cursor : undefined;
    const keys = page.objects.map((o) => ({ key: `sha256:${o.key.slice("cache/sha256/".length)}`, uploaded: o.uploaded.getTime() }));
    const known = new Set<string>();
    for (let i = 0; i < keys.length; i += 90) {
      const part = keys.slice(i, i + 90).map((k) => k.key);
      for (const r of await all<{ key: string }>(env, `SELECT key FROM cache_entries WHERE key IN (${part.map(() => "?").join(",")})`, ...part)) known.add(r.key);
    }
    for (const k of keys.filter((k) => !known.has(k.key))) {
      const obj = await env.BUCKET.get(cacheObjectKey(k.key));
      if (!obj) continue;
      let layer: { digest?: string; size?: number } | null = null;
      try {
        layer = ((await obj.json()) as { layer?: { digest?: string; size?: number } | null }).layer ?? null;
      } catch {
        /* unreadable: indexed without a layer, aged out like any other */
      }
      await env.DB.prepare("INSERT OR IGNORE INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?1, '', ?2, ?3, ?4, ?4)")
        .bind(k.key, layer?.digest ?? null, layer?.size ?? 0, k.uploaded).run();
    }
  } while (cursor);
}

/**
 * Packs that uploaded context contents live in (content-addressed contexts, migration 0013). A
 * namespace's contents no build used for the cache's age (KILN_CACHE_MAX_AGE_DAYS) are forgotten
 * first, and pieces of a large file whose upload stopped a day ago; the packs the rest name are kept.
 */
async function contentPacks(env: Env, opts: { dryRun: boolean; cacheMaxAgeMs: number }): Promise<Set<string>> {
  const staleBefore = Date.now() - opts.cacheMaxAgeMs;
  if (!opts.dryRun) {
    await env.DB.prepare("DELETE FROM context_contents WHERE last_used_at < ?").bind(staleBefore).run();
    await env.DB.prepare("DELETE FROM context_pieces WHERE created_at < ?").bind(Date.now() - 24 * 3600 * 1000).run();
  }
  const packs = new Set<string>();
  for (const r of await all<{ pack: string }>(env, "SELECT DISTINCT pack FROM context_pieces")) packs.add(r.pack);
  let last = { scope: "", sha256: "" };
  for (;;) {
    const rows = await all<{ scope: string; sha256: string; parts: string; last_used_at: number }>(env,
      "SELECT scope, sha256, parts, last_used_at FROM context_contents WHERE (scope, sha256) > (?, ?) ORDER BY scope, sha256 LIMIT 5000", last.scope, last.sha256);
    for (const r of rows) {
      if (opts.dryRun && r.last_used_at < staleBefore) continue; // would be forgotten first
      try {
        for (const part of JSON.parse(r.parts) as { pack: string }[]) packs.add(part.pack);
      } catch {
        /* unreadable row: names nothing */
      }
    }
    if (rows.length < 5000) break;
    last = rows[rows.length - 1];
  }
  return packs;
}

/** Deletes context packs (with their data objects and file indexes) no active build and no uploaded content uses, older than the cutoff. */
async function sweepContexts(env: Env, keep: Set<string>, cutoff: number, opts: { dryRun: boolean; cacheMaxAgeMs: number }): Promise<number> {
  const dryRun = opts.dryRun;
  for (const p of await contentPacks(env, opts)) keep.add(p);
  const packs = new Map<string, { uploaded: number; indexes: string[] }>();
  const pointed = new Set<string>();
  const data: { key: string; uploaded: number }[] = [];
  for await (const o of listAll(env, "contexts/")) {
    const m = /^contexts\/sha256\/([0-9a-f]{64})(?:\.index\/([0-9a-f]{64})\.json)?$/.exec(o.key);
    if (o.key.startsWith("contexts/data/")) data.push({ key: o.key, uploaded: o.uploaded.getTime() });
    if (!m) continue;
    const p = packs.get(m[1]) ?? { uploaded: 0, indexes: [] };
    if (m[2]) p.indexes.push(`sha256:${m[2]}`);
    else {
      p.uploaded = o.uploaded.getTime();
      if (o.customMetadata?.location) pointed.add(o.customMetadata.location);
    }
    packs.set(m[1], p);
  }
  let n = 0;
  for (const [hex, p] of packs) {
    const digest = `sha256:${hex}`;
    if (keep.has(digest) || p.uploaded >= cutoff || p.uploaded === 0) continue;
    n++;
    if (dryRun) continue;
    await deleteContext(env, digest);
    for (const i of p.indexes) await env.BUCKET.delete(`contexts/sha256/${hex}.index/${i.slice(7)}.json`);
  }
  // data objects of packs whose pointer was never written (an interrupted upload)
  const orphans = data.filter((d) => !pointed.has(d.key) && d.uploaded < cutoff).map((d) => d.key);
  if (!dryRun && orphans.length) for (let i = 0; i < orphans.length; i += 1000) await env.BUCKET.delete(orphans.slice(i, i + 1000));
  return n + orphans.length;
}

async function* listAll(env: Env, prefix: string): AsyncGenerator<R2Object> {
  let cursor: string | undefined;
  do {
    // `include` makes R2 return custom metadata (a context pack's `location`)
    const page = await env.BUCKET.list({ prefix, cursor, limit: 1000, include: ["customMetadata"] } as R2ListOptions);
    cursor = page.truncated ? page.cursor : undefined;
    yield* page.objects;
  } while (cursor);
}

/**
 * Those of `keys` (one listed page) that a D1 row names: a staged upload chunk, a blob's own object
 * (write once: blobs.object_key) or one of a blob's segments. Asked per page, so a store of any size
 * never needs every key in memory.
 */
async function recordedAmong(env: Env, keys: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < keys.length; i += 90) {
    const part = keys.slice(i, i + 90);
    const marks = part.map(() => "?").join(",");
    const sql = `SELECT key FROM upload_chunks WHERE key IN (${marks})
      UNION SELECT object_key AS key FROM blobs WHERE object_key IN (${marks}) AND segments = 0
      UNION SELECT key FROM blob_segments WHERE key IN (${marks})`;
    const { results } = await env.DB.prepare(sql).bind(...part, ...part, ...part).all<{ key: string }>();
    for (const r of results) found.add(r.key);
  }
  return found;
}

/**
 * Deletes R2 objects older than `cutoff` under the prefixes of interrupted writes (`tmp/`, `uploads/`,
 * `blobs/objects/`) that no D1 row refers to; staging of active builds (`tmp/builds/<id>/`) stays.
 * Returns how many there were.
 */
export async function sweepOrphanObjects(env: Env, cutoff: number, dryRun: boolean, activeBuilds: Set<string>): Promise<number> {
  let n = 0;
  for (const prefix of ["tmp/", "uploads/", "blobs/objects/"]) {
    const dead: string[] = [];
    let page: R2Object[] = [];
    const judge = async () => {
      const old = page.filter((o) => o.uploaded.getTime() < cutoff);
      const recorded = await recordedAmong(env, old.map((o) => o.key));
      for (const o of old) {
        if (recorded.has(o.key)) continue;
        const build = /^tmp\/builds\/([^/]+)\//.exec(o.key);
        if (build && activeBuilds.has(build[1])) continue;
        dead.push(o.key);
      }
      page = [];
    };
    for await (const o of listAll(env, prefix)) {
      page.push(o);
      if (page.length >= 1000) await judge();
    }
    await judge();
    n += dead.length;
    if (!dryRun) for (let i = 0; i < dead.length; i += 1000) await env.BUCKET.delete(dead.slice(i, i + 1000));
  }
  return n;
}
