import type { Env } from "../env";

/** The D1 `builds` table: one row per build for listing and authorization (state lives in the DO). */
export interface BuildRow {
  id: string;
  status: string;
  contextDigest: string | null;
  repository: string | null;
  tags: string[];
  imageDigest: string | null;
  error: string | null;
  /** What started it: `cli`, `api` or `webhook` (null for builds recorded before migration 0014). */
  trigger: BuildTrigger | null;
  /** The commit of a webhook build. */
  commit: string | null;
  /** A finished build's steps and how many were cache hits (null while it runs, and for older builds). */
  steps: { total: number; cached: number } | null;
  createdAt: number;
  updatedAt: number;
}

export type BuildTrigger = "cli" | "api" | "webhook" | "dashboard";

interface RawRow {
  id: string;
  status: string;
  context_digest: string | null;
  repository: string | null;
  tags: string;
  image_digest: string | null;
  error: string | null;
  trigger: string | null;
  source_commit: string | null;
  steps_total?: number | null;
  steps_cached?: number | null;
  created_at: number;
  updated_at: number;
}

const fromRaw = (r: RawRow): BuildRow => ({
  id: r.id,
  status: r.status,
  contextDigest: r.context_digest,
  repository: r.repository,
  tags: JSON.parse(r.tags || "[]"),
  imageDigest: r.image_digest,
  error: r.error,
  trigger: r.trigger === "cli" || r.trigger === "api" || r.trigger === "webhook" || r.trigger === "dashboard" ? r.trigger : null,
  commit: r.source_commit ?? null,
  steps: r.steps_total === null || r.steps_total === undefined ? null : { total: r.steps_total, cached: r.steps_cached ?? 0 },
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

export async function insertBuild(
  env: Env,
  b: { id: string; contextDigest: string | null; repository: string | null; tags: string[]; trigger?: BuildTrigger; commit?: string },
): Promise<void> {
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO builds (id, status, context_digest, repository, tags, created_at, updated_at, trigger, source_commit) VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?5, ?6, ?7)
     ON CONFLICT(id) DO UPDATE SET context_digest = COALESCE(?2, context_digest), repository = ?3, tags = ?4, updated_at = ?5,
       trigger = COALESCE(?6, trigger), source_commit = COALESCE(?7, source_commit)`,
  )
    .bind(b.id, b.contextDigest, b.repository, JSON.stringify(b.tags), now, b.trigger ?? null, b.commit ?? null)
    .run();
}

export async function updateBuildStatus(env: Env, id: string, status: string, extra: { imageDigest?: string; error?: string; steps?: { total: number; cached: number } } = {}): Promise<void> {
  await env.DB.prepare("UPDATE builds SET status = ?, image_digest = COALESCE(?, image_digest), error = COALESCE(?, error), steps_total = COALESCE(?, steps_total), steps_cached = COALESCE(?, steps_cached), updated_at = ? WHERE id = ?")
    .bind(status, extra.imageDigest ?? null, extra.error ?? null, extra.steps?.total ?? null, extra.steps?.cached ?? null, Date.now(), id)
    .run();
}

export async function getBuildRow(env: Env, id: string): Promise<BuildRow | null> {
  const r = await env.DB.prepare("SELECT * FROM builds WHERE id = ?").bind(id).first<RawRow>();
  return r ? fromRaw(r) : null;
}

/**
 * Newest first; `repository` and `status` filter when given, `repositoryPrefixes` keeps builds whose
 * repository starts with one of them (an empty list: none).
 */
export async function listBuilds(
  env: Env, opts: { repository?: string; status?: string; repositoryPrefixes?: string[]; limit?: number } = {},
): Promise<BuildRow[]> {
  const limit = Math.min(Math.max(opts.limit ?? 50, 1), 500);
  const where: string[] = [];
  const binds: unknown[] = [];
  if (opts.repository) { where.push("repository = ?"); binds.push(opts.repository); }
  if (opts.status) { where.push("status = ?"); binds.push(opts.status); }
  if (opts.repositoryPrefixes) {
    if (opts.repositoryPrefixes.length === 0) return [];
    where.push(`(${opts.repositoryPrefixes.map(() => "substr(repository, 1, ?) = ?").join(" OR ")})`);
    for (const p of opts.repositoryPrefixes) binds.push(p.length, p);
  }
  const sql = `SELECT * FROM builds ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at DESC LIMIT ?`;
  const { results } = await env.DB.prepare(sql).bind(...binds, limit).all<RawRow>();
  return results.map(fromRaw);
}
