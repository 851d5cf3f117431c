/**
 * Garbage collection: retention policies, then mark and sweep, run by the GarbageCollector Durable
 * Object (src/gc/collector.ts) one collection at a time while pushes, pulls and builds go on.
 *
 * Marks: tags (after retention), and from each marked manifest its index children, its referrers
 * (manifests whose subject it is) and its config and layers; untagged manifests younger than their
 * age (the grace period, or the matching policy's `untaggedOlderThanDays`); build cache entries
 * (after eviction); running builds (their contexts, their repositories' links, their staging
 * objects); upload sessions (their staged chunks); pull-through records used within
 * KILN_PULL_THROUGH_MAX_AGE_DAYS; anything younger than the grace period. Everything else is swept.
 * The marks are rows of gc_marks in D1, read and written a page at a time (see "the collection" below).
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
 * Whether a policy deletes a tag, given its rank among the repository's tags by last push (0: the
 * most recent; ties by name). Kept: tags matching `keepTags`, and the `keepLast` most recently
 * pushed. Of the rest, all go when `keepLast` is set and `olderThanDays` is not; with
 * `olderThanDays`, only those last pushed longer ago. Without either, none. Decided one tag at a
 * time, so a collection reads a repository's tags a page at a time.
 */
export function tagDies(policy: RetentionPolicy, rank: number, tag: { tag: string; updatedAt: number }, now: number): boolean {
  if (policy.keepLast === undefined && policy.olderThanDays === undefined) return false;
  if (rank < (policy.keepLast ?? 0)) return false;
  if ((policy.keepTags ?? []).some((p) => patternMatches(p, tag.tag))) return false;
  return policy.olderThanDays === undefined || tag.updatedAt < now - policy.olderThanDays * DAY_MS;
}

/** Whether a policy deletes any tag at all (else a collection does not read the repository's tags). */
function prunesTags(policy: RetentionPolicy | undefined): policy is RetentionPolicy {
  return policy !== undefined && (policy.keepLast !== undefined || policy.olderThanDays !== undefined);
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
  /** Pull-through records not used for this long expire, so their blobs can go (null or absent: never). */
  pullThroughMaxAgeMs?: number | null;
  /** Lists in the report are cut at this many items (default 1,000); the counts are complete. */
  listLimit?: number;
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
    /** Pull-through records (upstream links and manifests) unused for KILN_PULL_THROUGH_MAX_AGE_DAYS. */
    pullThrough: number;
  };
  /** Blob bytes deleted (or that would be). */
  bytesFreed: number;
  /** Lists in the report are cut at this many items; the counts below them are complete. */
  listLimit: number;
  counts: { tags: number; manifests: number; blobs: number };
  /** Time slices the collection took (it continues in the collector's alarm when one runs out). */
  slices: number;
}

const LIST_LIMIT = 1000;

export async function startGcRun(env: Env, progress: GcProgress): Promise<void> {
  const { id, opts, startedAt } = progress;
  await env.DB.prepare("INSERT INTO gc_runs (id, started_at, dry_run, grace_ms, trigger, status, progress) VALUES (?, ?, ?, ?, ?, 'running', ?)")
    .bind(id, startedAt, opts.dryRun ? 1 : 0, opts.graceMs, opts.trigger, JSON.stringify(progress)).run();
}

/** Saves a running collection's progress (after each slice), so the next slice continues it. */
export async function saveGcProgress(env: Env, progress: GcProgress): Promise<void> {
  await env.DB.prepare("UPDATE gc_runs SET progress = ? WHERE id = ? AND status = 'running'").bind(JSON.stringify(progress), progress.id).run();
}

/** A running collection's saved progress, or null (unknown, or not running any more). */
export async function loadGcProgress(env: Env, id: string): Promise<GcProgress | null> {
  const row = await env.DB.prepare("SELECT progress FROM gc_runs WHERE id = ? AND status = 'running'").bind(id).first<{ progress: string | null }>();
  return row?.progress ? (JSON.parse(row.progress) as GcProgress) : null;
}

export async function finishGcRun(env: Env, id: string, status: "done" | "failed", report: GcReport | { error: string }): Promise<void> {
  await env.DB.prepare("UPDATE gc_runs SET status = ?, finished_at = ?, report = ?, progress = NULL WHERE id = ?")
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
  /** A running collection's step and slices so far. */
  progress?: { phase: string; slices: number };
}

/** The most recent collections first. */
export async function listGcRuns(env: Env, limit = 20): Promise<GcRunRecord[]> {
  type Row = { id: string; status: string; dry_run: number; trigger: string; started_at: number; finished_at: number | null; report: string | null; phase: string | null; slices: number | null };
  const { results } = await env.DB.prepare(
    `SELECT id, status, dry_run, trigger, started_at, finished_at, report,
       json_extract(progress, '$.phase') AS phase, json_extract(progress, '$.report.slices') AS slices
     FROM gc_runs ORDER BY started_at DESC LIMIT ?`,
  ).bind(Math.min(Math.max(limit, 1), 200)).all<Row>();
  return results.map((r) => ({
    id: r.id, status: r.status, dryRun: r.dry_run === 1, trigger: r.trigger, startedAt: r.started_at, finishedAt: r.finished_at,
    report: r.report ? (JSON.parse(r.report) as GcReport) : null,
    ...(r.status === "running" && r.phase ? { progress: { phase: r.phase, slices: r.slices ?? 0 } } : {}),
  }));
}

/** A run a collector that died left "running": marked failed, so GET /v1/gc does not show it running forever. */
export async function failAbandonedRuns(env: Env, before: number): Promise<void> {
  await env.DB.prepare("UPDATE gc_runs SET status = 'failed', finished_at = ?, report = ? WHERE status = 'running' AND started_at < ?")
    .bind(Date.now(), JSON.stringify({ error: "the collector stopped before finishing" }), before).run();
}

// ------------------------------------------------------------------ the collection
//
// A collection is a list of phases, each done a page at a time: no query returns more than PAGE rows
// and no step keeps more than one page in memory. What is decided (kept manifests, dead tags, links,
// cache entries…) is written to gc_marks in D1, and the rest is decided in SQL against those marks
// (NOT EXISTS), paged by key. After each page the progress (phase, cursor, the report so far) is a
// small JSON value: the collector saves it after each time slice and continues in the next.

/** Most rows a step reads (or decides) at once, unless KILN_GC_PAGE_ROWS says otherwise. */
export const GC_PAGE = 1000;

/** The page size: KILN_GC_PAGE_ROWS (10 to 5,000), else GC_PAGE. */
export function gcPage(env: Env): number {
  const n = Number(env.KILN_GC_PAGE_ROWS ?? "");
  return Number.isInteger(n) && n >= 10 && n <= 5000 ? n : GC_PAGE;
}

type Phase =
  | "start" | "builds" | "retention" | "propagate" | "judge-manifests" | "delete-tags" | "delete-manifests"
  | "builds-again" | "links" | "cache-adopt" | "cache" | "pull-through" | "blobs"
  | "context-contents" | "contexts" | "context-data" | "objects" | "cleanup" | "done";

const PHASES: Phase[] = [
  "start", "builds", "retention", "propagate", "judge-manifests", "delete-tags", "delete-manifests",
  "builds-again", "links", "cache-adopt", "cache", "pull-through", "blobs",
  "context-contents", "contexts", "context-data", "objects", "cleanup", "done",
];

type CursorValue = string | number | boolean | null;

/** A collection in progress: everything the next step needs (JSON, saved between slices). */
export interface GcProgress {
  id: string;
  opts: GcOptions;
  startedAt: number;
  /** Nothing created (or hit) after this is collected. */
  cutoff: number;
  /** Pull-through records used before this expire (-1: never). */
  pullCutoff: number;
  phase: Phase;
  /** Where the current phase stopped (phase-specific keys). */
  cursor: Record<string, CursorValue>;
  report: GcReport;
}

/** A new collection's progress: nothing done yet. */
export function newCollection(id: string, opts: GcOptions, startedAt = Date.now()): GcProgress {
  const cutoff = startedAt - opts.graceMs;
  const maxAge = opts.pullThroughMaxAgeMs ?? null;
  return {
    id, opts, startedAt, cutoff,
    pullCutoff: maxAge === null ? -1 : Math.min(cutoff, startedAt - maxAge),
    phase: "start", cursor: {},
    report: {
      id, dryRun: opts.dryRun, trigger: opts.trigger, graceSeconds: Math.round(opts.graceMs / 1000), startedAt, finishedAt: 0, durationMs: 0,
      retention: [], deleted: { tags: [], manifests: [], links: 0, blobs: [], cacheEntries: 0, contexts: 0, objects: 0, pullThrough: 0 },
      bytesFreed: 0, listLimit: opts.listLimit ?? LIST_LIMIT, counts: { tags: 0, manifests: 0, blobs: 0 }, slices: 0,
    },
  };
}

/**
 * Runs steps of `p` until it is done or `budgetMs` has passed (at least one step); true when done.
 * The caller saves `p` (saveGcProgress) to continue it later.
 */
export async function collectFor(env: Env, p: GcProgress, budgetMs: number): Promise<boolean> {
  const until = Date.now() + budgetMs;
  p.report.slices++;
  do {
    if (p.phase === "done") break;
    if (await STEPS[p.phase](env, p)) {
      p.phase = PHASES[PHASES.indexOf(p.phase) + 1];
      p.cursor = {};
    }
    await new Promise((r) => setTimeout(r, 0)); // requests to the same isolate go first
  } while (Date.now() < until);
  if (p.phase !== "done") return false;
  p.report.finishedAt = Date.now();
  p.report.durationMs = p.report.finishedAt - p.startedAt;
  return true;
}

/** One whole collection at once (retention, cache eviction, mark, sweep); `dryRun` decides the same and deletes nothing. */
export async function collectGarbage(env: Env, id: string, opts: GcOptions): Promise<GcReport> {
  const p = newCollection(id, opts);
  await collectFor(env, p, Number.POSITIVE_INFINITY);
  return p.report;
}

/** One page of a phase; true when the phase is finished. */
type Step = (env: Env, p: GcProgress) => Promise<boolean>;

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

/** Runs statements in D1 batches of a few at a time. */
async function batched(env: Env, stmts: D1PreparedStatement[], size = 25): Promise<D1Result[]> {
  const out: D1Result[] = [];
  for (let i = 0; i < stmts.length; i += size) out.push(...(await env.DB.batch(stmts.slice(i, i + size))));
  return out;
}

const pushLimited = (report: GcReport, list: string[], item: string) => {
  if (list.length < report.listLimit) list.push(item);
};

interface Mark { kind: string; repo?: string; key: string; ref?: string | null; at?: number | null; round?: number }

/** Writes marks of run `run` (kept if already there). */
async function addMarks(env: Env, run: string, marks: Mark[]): Promise<void> {
  const stmts: D1PreparedStatement[] = [];
  for (let i = 0; i < marks.length; i += 14) {
    const part = marks.slice(i, i + 14);
    stmts.push(env.DB.prepare(`INSERT OR IGNORE INTO gc_marks (run, kind, repo, key, ref, at, round) VALUES ${part.map(() => "(?, ?, ?, ?, ?, ?, ?)").join(",")}`)
      .bind(...part.flatMap((m) => [run, m.kind, m.repo ?? "", m.key, m.ref ?? null, m.at ?? null, m.round ?? 0])));
  }
  if (stmts.length) await batched(env, stmts);
}

/** Those of `keys` marked `kind` (repo '') in run `run`. */
async function markedAmong(env: Env, run: string, kinds: string[], keys: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  const unique = [...new Set(keys)];
  for (let i = 0; i < unique.length; i += 90) {
    const part = unique.slice(i, i + 90);
    const rows = await all<{ key: string }>(env,
      `SELECT key FROM gc_marks WHERE run = ? AND kind IN (${kinds.map(() => "?").join(",")}) AND repo = '' AND key IN (${part.map(() => "?").join(",")})`,
      run, ...kinds, ...part);
    for (const r of rows) found.add(r.key);
  }
  return found;
}

/** SQL: the manifest (repo, digest) was judged dead by this run (?1). */
const deadManifest = (repo: string, digest: string) =>
  `EXISTS (SELECT 1 FROM gc_marks x WHERE x.run = ?1 AND x.kind = 'dead-manifest' AND x.repo = ${repo} AND x.key = ${digest})`;

/** Deletes up to `limit` rows of a rowid table chosen by `where`; true when fewer were left. */
async function deleteSome(env: Env, table: string, where: string, binds: unknown[], limit = 5 * gcPage(env)): Promise<boolean> {
  const r = await env.DB.prepare(`DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table} WHERE ${where} LIMIT ${limit})`).bind(...binds).run();
  return (r.meta.changes ?? 0) < limit;
}

const STEPS: Record<Phase, Step> = {
  // marks a run that stopped (a collector that died) left behind
  start: (env, p) => deleteSome(env, "gc_marks", "run <> ?", [p.id]),

  builds: markBuilds,
  // builds that started since the first read: their repositories keep their links too
  "builds-again": markBuilds,

  retention: retentionStep,

  /**
   * Kept manifests mark their index children, then their referrers, a round (frontier) at a time,
   * paged by (manifest, what it names): a page marks at most GC_PAGE manifests however many children
   * or referrers one manifest has (one index pushed into many repositories costs a quota once).
   */
  async propagate(env, p) {
    const c = p.cursor;
    const round = (c.round as number | undefined) ?? 0;
    const referrers = c.stage === "referrers";
    // the pairs (g: a manifest kept in this round, k: a manifest it names or a referrer of it)
    const pairs = referrers
      // (by subject: ordered by digest, SQLite would read every manifest of the repository per mark)
      ? "FROM gc_marks g JOIN manifests k INDEXED BY manifests_subject ON k.repo = g.repo AND k.subject = g.key"
      : "FROM gc_marks g JOIN manifest_refs r ON r.repo = g.repo AND r.manifest = g.key";
    const named = referrers ? "k.digest" : "r.ref";
    const inRound = `g.run = ?1 AND g.kind = 'manifest' AND g.round = ?2 AND (g.repo, g.key, ${named}) > (?3, ?4, ?5)`;
    const lo = [(c.repo as string | undefined) ?? "", (c.key as string | undefined) ?? "", (c.ref as string | undefined) ?? ""];
    const [hi] = await all<{ repo: string; key: string; ref: string }>(env,
      `SELECT g.repo AS repo, g.key AS key, ${named} AS ref ${pairs} WHERE ${inRound} ORDER BY g.repo, g.key, ${named} LIMIT 1 OFFSET ${gcPage(env) - 1}`,
      p.id, round, ...lo);
    const marked = await env.DB.prepare(
      `INSERT OR IGNORE INTO gc_marks (run, kind, repo, key, round)
       SELECT DISTINCT ?1, 'manifest', m.repo, m.digest, ?2 + 1 ${pairs} JOIN manifests m ON m.repo = g.repo AND m.digest = ${named}
       WHERE ${inRound} AND (?6 IS NULL OR (g.repo, g.key, ${named}) <= (?6, ?7, ?8))`,
    ).bind(p.id, round, ...lo, hi?.repo ?? null, hi?.key ?? null, hi?.ref ?? null).run();
    const changed = ((c.changed as number | undefined) ?? 0) + (marked.meta.changes ?? 0);
    if (hi) {
      p.cursor = { round, stage: referrers ? "referrers" : "children", repo: hi.repo, key: hi.key, ref: hi.ref, changed };
      return false;
    }
    if (!referrers) {
      // signatures, SBOMs: they go with their subject
      p.cursor = { round, stage: "referrers", changed };
      return false;
    }
    if (changed === 0) return true;
    p.cursor = { round: round + 1, changed: 0 };
    return false;
  },

  /** Manifests not marked (and older than the collection: pushes meanwhile stay) are dead. */
  async "judge-manifests"(env, p) {
    const c = p.cursor;
    const rows = await all<{ repo: string; digest: string; created_at: number; kept: number }>(env,
      `SELECT m.repo, m.digest, m.created_at,
         EXISTS (SELECT 1 FROM gc_marks g WHERE g.run = ?1 AND g.kind = 'manifest' AND g.repo = m.repo AND g.key = m.digest) AS kept
       FROM manifests m WHERE (m.repo, m.digest) > (?2, ?3) ORDER BY m.repo, m.digest LIMIT ${gcPage(env)}`,
      p.id, (c.repo as string | undefined) ?? "", (c.digest as string | undefined) ?? "");
    const policies = await listRetention(env);
    const dead = rows.filter((m) => !m.kept && m.created_at < p.startedAt);
    for (const m of dead) {
      pushLimited(p.report, policyReport(p, policyFor(policies, m.repo)?.pattern ?? "(untagged, no policy)").manifests, `${m.repo}@${m.digest}`);
      pushLimited(p.report, p.report.deleted.manifests, `${m.repo}@${m.digest}`);
    }
    p.report.counts.manifests += dead.length;
    await addMarks(env, p.id, dead.map((m) => ({ kind: "dead-manifest", repo: m.repo, key: m.digest, at: m.created_at })));
    if (rows.length < gcPage(env)) return true;
    p.cursor = { repo: rows[rows.length - 1].repo, digest: rows[rows.length - 1].digest };
    return false;
  },

  /** A tag re-pushed meanwhile (other digest or time) stays. */
  async "delete-tags"(env, p) {
    if (p.opts.dryRun) return true;
    const c = p.cursor;
    const rows = await all<{ repo: string; key: string; ref: string; at: number }>(env,
      `SELECT repo, key, ref, at FROM gc_marks WHERE run = ? AND kind = 'dead-tag' AND (repo, key) > (?, ?) ORDER BY repo, key LIMIT ${gcPage(env)}`,
      p.id, (c.repo as string | undefined) ?? "", (c.key as string | undefined) ?? "");
    await batched(env, rows.map((t) => env.DB.prepare("DELETE FROM tags WHERE repo = ? AND tag = ? AND digest = ? AND updated_at = ?").bind(t.repo, t.key, t.ref, t.at)));
    if (rows.length < gcPage(env)) return true;
    p.cursor = { repo: rows[rows.length - 1].repo, key: rows[rows.length - 1].key };
    return false;
  },

  /**
   * Deletes dead manifests (and their refs). Each delete re-checks in SQL that the manifest is still
   * untagged, that no existing manifest names it (a parent goes first, so a child whose index is
   * deleted in the same run follows in a later round), that its subject is gone (a referrer follows
   * its subject likewise, and stays with a subject tagged again since it was judged) and that no push
   * pinned it.
   */
  async "delete-manifests"(env, p) {
    if (p.opts.dryRun) return true;
    const c = p.cursor;
    const round = (c.round as number | undefined) ?? 0;
    const rows = await all<{ repo: string; key: string; at: number }>(env,
      `SELECT repo, key, at FROM gc_marks WHERE run = ? AND kind = 'dead-manifest' AND round = 0 AND (repo, key) > (?, ?) ORDER BY repo, key LIMIT ${gcPage(env)}`,
      p.id, (c.repo as string | undefined) ?? "", (c.key as string | undefined) ?? "");
    let deleted = (c.deleted as number | undefined) ?? 0;
    await pool(rows, WIDTH, async (m) => {
      const [del] = await env.DB.batch([
        env.DB.prepare(
          `DELETE FROM manifests WHERE repo = ?1 AND digest = ?2 AND created_at = ?3
             AND NOT EXISTS (SELECT 1 FROM tags WHERE repo = ?1 AND digest = ?2)
             AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repo = ?1 AND ref = ?2)
             AND NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repo = ?1 AND s.digest = (SELECT subject FROM manifests WHERE repo = ?1 AND digest = ?2))
             AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE digest = ?2 AND expires_at > ?4)`,
        ).bind(m.repo, m.key, m.at, Date.now()),
        env.DB.prepare("DELETE FROM manifest_refs WHERE repo = ?1 AND manifest = ?2 AND NOT EXISTS (SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2)")
          .bind(m.repo, m.key),
      ]);
      if (del.meta.changes) {
        deleted++;
        // done: later rounds skip it (the mark stays for the blobs' judgement)
        await env.DB.prepare("UPDATE gc_marks SET round = 1 WHERE run = ? AND kind = 'dead-manifest' AND repo = ? AND key = ?").bind(p.id, m.repo, m.key).run();
      }
    });
    if (rows.length === gcPage(env)) {
      p.cursor = { round, repo: rows[rows.length - 1].repo, key: rows[rows.length - 1].key, deleted };
      return false;
    }
    if (deleted === 0 || round >= 7) return true;
    p.cursor = { round: round + 1, deleted: 0 };
    return false;
  },

  /** A repository keeps a blob link only while a manifest of it uses it, or a build of it runs. */
  async links(env, p) {
    const c = p.cursor;
    const rows = await all<{ repo: string; digest: string; dead: number }>(env,
      `SELECT l.repo, l.digest, (l.created_at < ?2
         AND NOT EXISTS (SELECT 1 FROM gc_marks x WHERE x.run = ?1 AND x.kind = 'build-repo' AND x.repo = l.repo AND x.key = '')
         AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.repo = l.repo AND r.ref = l.digest AND NOT ${deadManifest("r.repo", "r.manifest")})
         AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = l.digest AND NOT ${deadManifest("m.repo", "m.digest")})) AS dead
       FROM repo_blobs l WHERE (l.repo, l.digest) > (?3, ?4) ORDER BY l.repo, l.digest LIMIT ${gcPage(env)}`,
      p.id, p.cutoff, (c.repo as string | undefined) ?? "", (c.digest as string | undefined) ?? "");
    const dead = rows.filter((l) => l.dead);
    p.report.deleted.links += dead.length;
    await addMarks(env, p.id, dead.map((l) => ({ kind: "dead-link", repo: l.repo, key: l.digest })));
    if (!p.opts.dryRun) {
      const now = Date.now();
      await batched(env, dead.map((l) => env.DB.prepare(
        `DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2 AND created_at < ?3
           AND NOT EXISTS (SELECT 1 FROM manifest_refs WHERE repo = ?1 AND ref = ?2)
           AND NOT EXISTS (SELECT 1 FROM blob_pins WHERE digest = ?2 AND expires_at > ?4)`,
      ).bind(l.repo, l.digest, p.cutoff, now)), 10);
    }
    if (rows.length < gcPage(env)) return true;
    p.cursor = { repo: rows[rows.length - 1].repo, digest: rows[rows.length - 1].digest };
    return false;
  },

  "cache-adopt": adoptLegacyCacheEntries,
  cache: evictCache,

  /** Upstream links not used since the pull-through cutoff, then manifests no live link names. */
  async "pull-through"(env, p) {
    if (p.pullCutoff < 0) return true;
    const c = p.cursor;
    if (c.stage !== "manifests") {
      const rows = await all<{ host: string; repository: string; digest: string; dead: number }>(env,
        `SELECT host, repository, digest, MAX(used_at, linked_at) < ?1 AS dead FROM upstream_links WHERE (host, repository, digest) > (?2, ?3, ?4)
         ORDER BY host, repository, digest LIMIT ${gcPage(env)}`,
        p.pullCutoff, (c.host as string | undefined) ?? "", (c.repository as string | undefined) ?? "", (c.digest as string | undefined) ?? "");
      const dead = rows.filter((r) => r.dead);
      p.report.deleted.pullThrough += dead.length;
      if (!p.opts.dryRun) {
        // a use meanwhile (used_at refreshed) keeps the record
        await batched(env, dead.map((r) => env.DB.prepare("DELETE FROM upstream_links WHERE host = ? AND repository = ? AND digest = ? AND MAX(used_at, linked_at) < ?")
          .bind(r.host, r.repository, r.digest, p.pullCutoff)));
      }
      const last = rows[rows.length - 1];
      p.cursor = rows.length < gcPage(env) ? { stage: "manifests" } : { host: last.host, repository: last.repository, digest: last.digest };
      return false;
    }
    const live = "(um.fetched_at >= ?1 OR EXISTS (SELECT 1 FROM upstream_links u WHERE u.digest = um.digest AND MAX(u.used_at, u.linked_at) >= ?1))";
    const rows = await all<{ digest: string; dead: number }>(env,
      `SELECT digest, NOT ${live} AS dead FROM upstream_manifests um WHERE digest > ?2 ORDER BY digest LIMIT ${gcPage(env)}`,
      p.pullCutoff, (c.digest as string | undefined) ?? "");
    const dead = rows.filter((r) => r.dead);
    p.report.deleted.pullThrough += dead.length;
    if (!p.opts.dryRun) {
      await batched(env, dead.map((r) => env.DB.prepare(`DELETE FROM upstream_manifests AS um WHERE digest = ?2 AND NOT ${live}`).bind(p.pullCutoff, r.digest)));
    }
    if (rows.length < gcPage(env)) return true;
    p.cursor = { stage: "manifests", digest: rows[rows.length - 1].digest };
    return false;
  },

  /**
   * Blobs older than the cutoff that nothing kept uses: no live link, no reference or manifest of a
   * live manifest, no kept cache entry, no unexpired pull-through record. A real run deletes each
   * through collectBlob, which re-checks every use (and pins) in one batch.
   */
  async blobs(env, p) {
    const c = p.cursor;
    const rows = await all<{ digest: string; size: number; dead: number }>(env,
      `SELECT b.digest, b.size, (b.created_at < ?2
         AND NOT EXISTS (SELECT 1 FROM repo_blobs l WHERE l.digest = b.digest
           AND NOT EXISTS (SELECT 1 FROM gc_marks x WHERE x.run = ?1 AND x.kind = 'dead-link' AND x.repo = l.repo AND x.key = l.digest))
         AND NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = b.digest AND NOT ${deadManifest("r.repo", "r.manifest")})
         AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest AND NOT ${deadManifest("m.repo", "m.digest")})
         AND NOT EXISTS (SELECT 1 FROM cache_entries ce WHERE ce.layer = b.digest
           AND NOT EXISTS (SELECT 1 FROM gc_marks x WHERE x.run = ?1 AND x.kind = 'dead-cache' AND x.repo = '' AND x.key = ce.key))
         AND NOT EXISTS (SELECT 1 FROM upstream_links u WHERE u.digest = b.digest AND MAX(u.used_at, u.linked_at) >= ?3)
         AND NOT EXISTS (SELECT 1 FROM upstream_manifests um WHERE um.digest = b.digest AND um.fetched_at >= ?3)) AS dead
       FROM blobs b WHERE b.digest > ?4 ORDER BY b.digest LIMIT ${gcPage(env)}`,
      p.id, p.cutoff, p.pullCutoff, (c.digest as string | undefined) ?? "");
    const dead = rows.filter((b) => b.dead);
    const report = p.report;
    if (p.opts.dryRun) {
      for (const b of dead) {
        pushLimited(report, report.deleted.blobs, b.digest);
        report.bytesFreed += b.size;
      }
      report.counts.blobs += dead.length;
    } else {
      await pool(dead, WIDTH, async (b) => {
        if (!(await collectBlob(env, b.digest))) return; // used again meanwhile: collectBlob re-checked
        await env.BUCKET.delete(`layer-index/${b.digest.replace(":", "/")}`);
        pushLimited(report, report.deleted.blobs, b.digest);
        report.counts.blobs++;
        report.bytesFreed += b.size;
      });
    }
    if (rows.length < gcPage(env)) return true;
    p.cursor = { digest: rows[rows.length - 1].digest };
    return false;
  },

  "context-contents": contextContents,
  contexts: sweepContexts,
  "context-data": sweepContextData,
  objects: sweepOrphanObjects,

  cleanup: (env, p) => deleteSome(env, "gc_marks", "run = ?", [p.id]),
  done: async () => true,
};

function policyReport(p: GcProgress, pattern: string): { pattern: string; tags: string[]; manifests: string[] } {
  let r = p.report.retention.find((x) => x.pattern === pattern);
  if (!r) p.report.retention.push((r = { pattern, tags: [], manifests: [] }));
  return r;
}

/**
 * Running builds (queued, running, or ended within the grace period): their repositories keep every
 * link and manifest (layers are linked, children pushed by digest before the manifest or index
 * exists), their contexts and staging objects stay.
 */
async function markBuilds(env: Env, p: GcProgress): Promise<boolean> {
  const rows = await all<{ id: string; repository: string | null; tags: string; context_digest: string | null }>(env,
    `SELECT id, repository, tags, context_digest FROM builds WHERE (status IN ('queued', 'running') OR updated_at >= ?) AND id > ? ORDER BY id LIMIT ${gcPage(env)}`,
    p.cutoff, (p.cursor.id as string | undefined) ?? "");
  const marks: Mark[] = [];
  for (const b of rows) {
    marks.push({ kind: "build", key: b.id });
    if (b.context_digest) marks.push({ kind: "context", key: b.context_digest });
    if (b.repository) marks.push({ kind: "build-repo", repo: b.repository, key: "" });
    // every repository it tags (`repo:tag`)
    for (const t of JSON.parse(b.tags || "[]") as string[]) marks.push({ kind: "build-repo", repo: t.slice(0, t.lastIndexOf(":")), key: "" });
  }
  await addMarks(env, p.id, marks);
  if (rows.length < gcPage(env)) return true;
  p.cursor = { id: rows[rows.length - 1].id };
  return false;
}

/**
 * One repository at a time: its retention policy's dead tags (its tags read a page at a time, most
 * recently pushed first), then its kept manifests seeded a page of digests at a time: tagged by a
 * tag that stays, younger than their age (the grace period or the policy's untaggedOlderThanDays),
 * or every one while a build of the repository runs.
 */
async function retentionStep(env: Env, p: GcProgress): Promise<boolean> {
  const c = p.cursor;
  if (typeof c.repo !== "string") {
    const [next] = await all<{ name: string | null }>(env,
      "SELECT MIN(name) AS name FROM (SELECT MIN(repo) AS name FROM tags WHERE repo > ?1 UNION ALL SELECT MIN(repo) FROM manifests WHERE repo > ?1)",
      (c.after as string | undefined) ?? "");
    if (!next?.name) return true;
    const building = await env.DB.prepare("SELECT 1 AS x FROM gc_marks WHERE run = ? AND kind = 'build-repo' AND repo = ? AND key = ''").bind(p.id, next.name).first();
    p.cursor = { repo: next.name, stage: "tags", building: building !== null, rank: 0 };
    return false;
  }
  const repo = c.repo;
  const policy = policyFor(await listRetention(env), repo);
  if (c.stage === "tags") {
    if (!prunesTags(policy?.policy)) {
      p.cursor = { ...c, stage: "seed" };
      return false;
    }
    const at = (c.at as number | undefined) ?? Number.MAX_SAFE_INTEGER;
    const rows = await all<{ tag: string; digest: string; updated_at: number }>(env,
      `SELECT tag, digest, updated_at FROM tags WHERE repo = ?1 AND (updated_at < ?2 OR (updated_at = ?2 AND tag > ?3))
       ORDER BY updated_at DESC, tag LIMIT ${gcPage(env)}`, repo, at, (c.tag as string | undefined) ?? "");
    let rank = c.rank as number;
    const dead: Mark[] = [];
    for (const t of rows) {
      if (tagDies(policy!.policy, rank++, { tag: t.tag, updatedAt: t.updated_at }, p.startedAt)) {
        dead.push({ kind: "dead-tag", repo, key: t.tag, ref: t.digest, at: t.updated_at });
        pushLimited(p.report, policyReport(p, policy!.pattern).tags, `${repo}:${t.tag}`);
        pushLimited(p.report, p.report.deleted.tags, `${repo}:${t.tag}`);
      }
    }
    p.report.counts.tags += dead.length;
    await addMarks(env, p.id, dead);
    const last = rows[rows.length - 1];
    p.cursor = rows.length < gcPage(env) ? { ...c, stage: "seed", at: null, tag: null } : { ...c, rank, at: last.updated_at, tag: last.tag };
    return false;
  }
  const untaggedDays = policy?.policy.untaggedOlderThanDays;
  const untaggedCutoff = untaggedDays === undefined ? p.cutoff : Math.min(p.cutoff, p.startedAt - untaggedDays * DAY_MS);
  const from = (c.digest as string | undefined) ?? "";
  const [hi] = await all<{ digest: string }>(env,
    `SELECT digest FROM manifests WHERE repo = ? AND digest > ? ORDER BY digest LIMIT 1 OFFSET ${gcPage(env) - 1}`, repo, from);
  await env.DB.prepare(
    `INSERT OR IGNORE INTO gc_marks (run, kind, repo, key, round)
     SELECT ?1, 'manifest', m.repo, m.digest, 0 FROM manifests m
     WHERE m.repo = ?2 AND m.digest > ?3 AND (?4 IS NULL OR m.digest <= ?4)
       AND (m.created_at >= ?5 OR ?6 OR EXISTS (SELECT 1 FROM tags t WHERE t.repo = m.repo AND t.digest = m.digest
         AND NOT EXISTS (SELECT 1 FROM gc_marks d WHERE d.run = ?1 AND d.kind = 'dead-tag' AND d.repo = t.repo AND d.key = t.tag
           AND d.ref = t.digest AND d.at = t.updated_at)))`,
  ).bind(p.id, repo, from, hi?.digest ?? null, untaggedCutoff, c.building ? 1 : 0).run();
  p.cursor = hi ? { ...c, digest: hi.digest } : { after: repo };
  return false;
}

/**
 * Drops cache entries (D1 row, then the R2 entry) unused for too long or past their scope's budget.
 * Entries are read per scope, most recently hit first; the scope's running total of distinct layer
 * bytes travels in the cursor, and whether an entry's layer was counted already is asked of D1.
 */
async function evictCache(env: Env, p: GcProgress): Promise<boolean> {
  const c = p.cursor;
  const { opts, cutoff } = p;
  type Row = { key: string; scope: string; layer: string | null; size: number; last_hit_at: number; seen: number };
  const started = typeof c.scope === "string";
  const scope = (c.scope as string | undefined) ?? "";
  const at = (c.at as number | undefined) ?? 0;
  const key = (c.key as string | undefined) ?? "";
  // a layer kept by an entry of the same scope on an earlier page
  const seen = `(ce.scope = ?1 AND ce.layer IS NOT NULL AND EXISTS (SELECT 1 FROM cache_entries c2 WHERE c2.scope = ce.scope AND c2.layer = ce.layer
      AND (c2.last_hit_at > ?2 OR (c2.last_hit_at = ?2 AND c2.key <= ?3))
      AND NOT EXISTS (SELECT 1 FROM gc_marks x WHERE x.run = ?4 AND x.kind = 'dead-cache' AND x.repo = '' AND x.key = c2.key)))`;
  const rows = await all<Row>(env,
    `SELECT ce.key, ce.scope, ce.layer, ce.size, ce.last_hit_at, ${started ? seen : "0"} AS seen FROM cache_entries ce
     ${started ? "WHERE ce.scope > ?1 OR (ce.scope = ?1 AND (ce.last_hit_at < ?2 OR (ce.last_hit_at = ?2 AND ce.key > ?3)))" : ""}
     ORDER BY ce.scope, ce.last_hit_at DESC, ce.key LIMIT ${gcPage(env)}`,
    ...(started ? [scope, at, key, p.id] : []));
  const staleBefore = Math.min(cutoff, p.startedAt - opts.cacheMaxAgeMs);
  let current = scope;
  let spent = (c.spent as number | undefined) ?? 0;
  const kept = new Set<string>(); // `scope\nlayer` kept on this page
  const dead: Row[] = [];
  for (const r of rows) {
    if (r.scope !== current) {
      current = r.scope;
      spent = 0;
    }
    const counted = r.layer !== null && (kept.has(`${r.scope}\n${r.layer}`) || (r.scope === scope && r.seen === 1));
    // an entry hit within the grace period may be in use by a build right now
    if (r.last_hit_at >= cutoff) {
      if (r.layer && !counted) {
        spent += r.size;
        kept.add(`${r.scope}\n${r.layer}`);
      }
      continue;
    }
    if (r.last_hit_at < staleBefore) {
      dead.push(r);
      continue;
    }
    if (opts.cacheBudgetBytes !== null && r.layer && !counted && spent + r.size > opts.cacheBudgetBytes) {
      dead.push(r);
      continue;
    }
    if (r.layer && !counted) {
      spent += r.size;
      kept.add(`${r.scope}\n${r.layer}`);
    }
  }
  p.report.deleted.cacheEntries += dead.length;
  await addMarks(env, p.id, dead.map((d) => ({ kind: "dead-cache", key: d.key, at: d.last_hit_at })));
  if (!opts.dryRun) {
    await pool(dead, WIDTH, async (d) => {
      // a hit meanwhile keeps the entry
      const r = await env.DB.prepare("DELETE FROM cache_entries WHERE key = ? AND last_hit_at = ?").bind(d.key, d.last_hit_at).run();
      if (r.meta.changes) await env.BUCKET.delete(cacheObjectKey(d.key));
    });
  }
  if (rows.length < gcPage(env)) return true;
  const last = rows[rows.length - 1];
  p.cursor = { scope: last.scope, at: last.last_hit_at, key: last.key, spent };
  return false;
}

/**
 * Cache entries written before the D1 index existed get a row (scope unknown: ""), so the collector
 * marks their layers and can age them out; their last hit counts from when they were written.
 */
async function adoptLegacyCacheEntries(env: Env, p: GcProgress): Promise<boolean> {
  const page = await env.BUCKET.list({ prefix: "cache/sha256/", cursor: (p.cursor.r2 as string | undefined) ?? undefined, limit: gcPage(env) });
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
  if (!page.truncated) return true;
  p.cursor = { r2: page.cursor };
  return false;
}

/**
 * Packs that uploaded context contents live in (content-addressed contexts, migration 0013), marked
 * `pack`. A namespace's contents no build used for the cache's age (KILN_CACHE_MAX_AGE_DAYS) are
 * forgotten first, and pieces of a large file whose upload stopped a day ago; the packs the rest name are kept.
 */
async function contextContents(env: Env, p: GcProgress): Promise<boolean> {
  const c = p.cursor;
  const staleBefore = p.startedAt - p.opts.cacheMaxAgeMs;
  const stage = (c.stage as string | undefined) ?? "forget-contents";
  if (stage === "forget-contents") {
    if (p.opts.dryRun || (await deleteSome(env, "context_contents", "last_used_at < ?", [staleBefore], gcPage(env)))) p.cursor = { stage: "forget-pieces" };
    return false;
  }
  if (stage === "forget-pieces") {
    if (p.opts.dryRun || (await deleteSome(env, "context_pieces", "created_at < ?", [p.startedAt - DAY_MS], gcPage(env)))) p.cursor = { stage: "pieces" };
    return false;
  }
  if (stage === "pieces") {
    const rows = await all<{ pack: string }>(env, `SELECT DISTINCT pack FROM context_pieces WHERE pack > ? ORDER BY pack LIMIT ${gcPage(env)}`, (c.pack as string | undefined) ?? "");
    await addMarks(env, p.id, rows.map((r) => ({ kind: "pack", key: r.pack })));
    p.cursor = rows.length < gcPage(env) ? { stage: "contents" } : { stage, pack: rows[rows.length - 1].pack };
    return false;
  }
  const rows = await all<{ scope: string; sha256: string; parts: string; last_used_at: number }>(env,
    `SELECT scope, sha256, parts, last_used_at FROM context_contents WHERE (scope, sha256) > (?, ?) ORDER BY scope, sha256 LIMIT ${gcPage(env)}`,
    (c.scope as string | undefined) ?? "", (c.sha256 as string | undefined) ?? "");
  const packs = new Set<string>();
  for (const r of rows) {
    if (r.last_used_at < staleBefore) continue; // forgotten (or, in a dry run, would be)
    try {
      for (const part of JSON.parse(r.parts) as { pack: string }[]) packs.add(part.pack);
    } catch {
      /* unreadable row: names nothing */
    }
  }
  await addMarks(env, p.id, [...packs].map((k) => ({ kind: "pack", key: k })));
  if (rows.length < gcPage(env)) return true;
  p.cursor = { stage, scope: rows[rows.length - 1].scope, sha256: rows[rows.length - 1].sha256 };
  return false;
}

/** One listed page of R2 objects under `prefix` (with custom metadata) after `cursor`. */
async function listPage(env: Env, prefix: string, cursor: string | undefined): Promise<{ objects: R2Object[]; next: string | null }> {
  // `include` makes R2 return custom metadata (a context pack's `location`)
  const page = await env.BUCKET.list({ prefix, cursor, limit: gcPage(env), include: ["customMetadata"] } as R2ListOptions);
  return { objects: page.objects, next: page.truncated ? page.cursor : null };
}

/**
 * Deletes context packs (with their file indexes) no running build and no uploaded content uses,
 * older than the cutoff, a listed page at a time. A pack's pointer is listed before its indexes
 * (`contexts/sha256/<hex>` < `…<hex>.index/…`); the last pack judged travels in the cursor. Every
 * pointer's data object is marked `ctx-data` for the next phase.
 */
async function sweepContexts(env: Env, p: GcProgress): Promise<boolean> {
  const { objects, next } = await listPage(env, "contexts/sha256/", (p.cursor.r2 as string | undefined) ?? undefined);
  let lastHex = (p.cursor.hex as string | undefined) ?? "";
  let lastDead = p.cursor.dead === true;
  const pointers = objects.flatMap((o) => {
    const m = /^contexts\/sha256\/([0-9a-f]{64})$/.exec(o.key);
    return m ? [{ hex: m[1], uploaded: o.uploaded.getTime(), location: o.customMetadata?.location }] : [];
  });
  const digests = pointers.map((x) => `sha256:${x.hex}`);
  const kept = await markedAmong(env, p.id, ["pack", "context"], digests);
  // a build that started after the running builds were read may use an existing (old) pack: its
  // upload of the same bytes wrote nothing, so the pack's age does not say it is in use
  for (const d of await activeBuildContexts(env, p, digests.filter((d) => !kept.has(d)))) kept.add(d);
  await addMarks(env, p.id, pointers.flatMap((x) => (x.location ? [{ kind: "ctx-data", key: x.location }] : [])));
  const deadPacks: string[] = [];
  const deadIndexes: string[] = [];
  for (const o of objects) {
    const m = /^contexts\/sha256\/([0-9a-f]{64})(?:\.index\/([0-9a-f]{64})\.json)?$/.exec(o.key);
    if (!m) continue;
    if (!m[2]) {
      lastHex = m[1];
      lastDead = !kept.has(`sha256:${m[1]}`) && o.uploaded.getTime() < p.cutoff;
      if (lastDead) deadPacks.push(`sha256:${m[1]}`);
    } else if (m[1] === lastHex && lastDead) {
      deadIndexes.push(o.key);
    }
  }
  p.report.deleted.contexts += deadPacks.length;
  if (!p.opts.dryRun) {
    for (const d of deadPacks) await deleteContext(env, d);
    if (deadIndexes.length) await env.BUCKET.delete(deadIndexes);
  }
  if (!next) return true;
  p.cursor = { r2: next, hex: lastHex, dead: lastDead };
  return false;
}

/** Those of `digests` (context packs) that a build running now, or ended within the grace period, uses. */
async function activeBuildContexts(env: Env, p: GcProgress, digests: string[]): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < digests.length; i += 90) {
    const part = digests.slice(i, i + 90);
    const rows = await all<{ d: string }>(env,
      `SELECT DISTINCT context_digest AS d FROM builds WHERE context_digest IN (${part.map(() => "?").join(",")}) AND (status IN ('queued', 'running') OR updated_at >= ?)`,
      ...part, p.cutoff);
    out.push(...rows.map((r) => r.d));
  }
  return out;
}

/** Data objects of packs whose pointer was never written (an interrupted upload), older than the cutoff. */
async function sweepContextData(env: Env, p: GcProgress): Promise<boolean> {
  const { objects, next } = await listPage(env, "contexts/data/", (p.cursor.r2 as string | undefined) ?? undefined);
  const old = objects.filter((o) => o.uploaded.getTime() < p.cutoff).map((o) => o.key);
  const pointed = await markedAmong(env, p.id, ["ctx-data"], old);
  const orphans = old.filter((k) => !pointed.has(k));
  p.report.deleted.contexts += orphans.length;
  if (!p.opts.dryRun && orphans.length) await env.BUCKET.delete(orphans);
  if (!next) return true;
  p.cursor = { r2: next };
  return false;
}

/**
 * Those of `keys` (one listed page) that a D1 row names: a staged upload chunk, a blob's own object
 * (write once: blobs.object_key) or one of a blob's segments. Asked per page, so a store of any size
 * never needs every key in memory.
 */
async function recordedAmong(env: Env, keys: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < keys.length; i += 30) {
    const part = keys.slice(i, i + 30);
    const marks = part.map(() => "?").join(",");
    const sql = `SELECT key FROM upload_chunks WHERE key IN (${marks})
      UNION SELECT object_key AS key FROM blobs WHERE object_key IN (${marks}) AND segments = 0
      UNION SELECT key FROM blob_segments WHERE key IN (${marks})`;
    const { results } = await env.DB.prepare(sql).bind(...part, ...part, ...part).all<{ key: string }>();
    for (const r of results) found.add(r.key);
  }
  return found;
}

const ORPHAN_PREFIXES = ["tmp/", "uploads/", "blobs/objects/"];

/**
 * Deletes R2 objects older than the cutoff under the prefixes of interrupted writes (`tmp/`,
 * `uploads/`, `blobs/objects/`) that no D1 row refers to, a listed page at a time; staging of
 * running builds (`tmp/builds/<id>/`) stays.
 */
async function sweepOrphanObjects(env: Env, p: GcProgress): Promise<boolean> {
  const i = (p.cursor.prefix as number | undefined) ?? 0;
  const { objects, next } = await listPage(env, ORPHAN_PREFIXES[i], (p.cursor.r2 as string | undefined) ?? undefined);
  const old = objects.filter((o) => o.uploaded.getTime() < p.cutoff);
  const recorded = await recordedAmong(env, old.map((o) => o.key));
  const buildOf = (key: string) => /^tmp\/builds\/([^/]+)\//.exec(key)?.[1];
  const running = await markedAmong(env, p.id, ["build"], old.flatMap((o) => buildOf(o.key) ?? []));
  const dead = old.filter((o) => !recorded.has(o.key) && !running.has(buildOf(o.key) ?? "\n")).map((o) => o.key);
  p.report.deleted.objects += dead.length;
  if (!p.opts.dryRun && dead.length) await env.BUCKET.delete(dead);
  if (next) p.cursor = { prefix: i, r2: next };
  else if (i + 1 < ORPHAN_PREFIXES.length) p.cursor = { prefix: i + 1 };
  else return true;
  return false;
}
