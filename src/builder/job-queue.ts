/**
 * The Dispatcher's job table and the rules that move jobs without a runner's call: expired leases,
 * RUN steps that waited too long for a runner of their platform, and RUN steps past their timeout.
 */
import type { JobState, RunResult } from "../protocol/jobs";
import { platformMatches } from "./job-checks";
import { secondsText, type BuilderSettings } from "./settings";

export interface JobRow {
  job_id: string;
  build_id: string;
  step_index: number;
  platform: string;
  network: string;
  job_json: string;
  state: JobState;
  enqueued_at: number;
  preferred_runner: string | null;
  hold_until: number;
  runner_id: string | null;
  lease_id: string | null;
  lease_expires_at: number | null;
  attempts: number;
  result_json: string | null;
  forwarded: number;
  forward_attempts: number;
  next_forward_at: number | null;
  acked: number;
  repository: string | null;
  runner_token: string | null;
  secrets_json: string | null;
  wait_until: number | null;
  timeout_at: number | null;
  [key: string]: SqlStorageValue;
}

/** Creates (and migrates) the Dispatcher's tables. */
export function createJobTables(sql: SqlStorage): void {
  sql.exec(`
    CREATE TABLE IF NOT EXISTS jobs (
      job_id TEXT PRIMARY KEY,
      build_id TEXT NOT NULL,
      step_index INTEGER NOT NULL,
      platform TEXT NOT NULL,
      network TEXT NOT NULL,
      job_json TEXT NOT NULL,
      state TEXT NOT NULL,
      enqueued_at INTEGER NOT NULL,
      preferred_runner TEXT,
      hold_until INTEGER NOT NULL DEFAULT 0,
      runner_id TEXT,
      lease_id TEXT,
      lease_expires_at INTEGER,
      attempts INTEGER NOT NULL DEFAULT 0,
      result_json TEXT,
      forwarded INTEGER NOT NULL DEFAULT 0,
      forward_attempts INTEGER NOT NULL DEFAULT 0,
      next_forward_at INTEGER,
      acked INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, enqueued_at);
    CREATE INDEX IF NOT EXISTS jobs_build ON jobs(build_id);
    CREATE TABLE IF NOT EXISTS build_runner (build_id TEXT PRIMARY KEY, runner_id TEXT NOT NULL, at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS cancelled_builds (build_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS runners (runner_id TEXT PRIMARY KEY, platforms TEXT NOT NULL, labels TEXT NOT NULL, last_seen INTEGER NOT NULL);
  `);
  const cols = sql.exec<{ name: string }>("PRAGMA table_info(jobs)").toArray().map((c) => c.name);
  if (!cols.includes("acked")) sql.exec("ALTER TABLE jobs ADD COLUMN acked INTEGER NOT NULL DEFAULT 0");
  // Issue 17: the job's repository (who may claim it), the runner token holding the lease, and the
  // job's secrets apart from job_json (dropped when the job ends).
  if (!cols.includes("repository")) sql.exec("ALTER TABLE jobs ADD COLUMN repository TEXT");
  if (!cols.includes("runner_token")) sql.exec("ALTER TABLE jobs ADD COLUMN runner_token TEXT");
  if (!cols.includes("secrets_json")) sql.exec("ALTER TABLE jobs ADD COLUMN secrets_json TEXT");
  // Deadlines (issue 11): until when a queued job waits for a runner of its platform; when a leased one times out.
  if (!cols.includes("wait_until")) sql.exec("ALTER TABLE jobs ADD COLUMN wait_until INTEGER");
  if (!cols.includes("timeout_at")) sql.exec("ALTER TABLE jobs ADD COLUMN timeout_at INTEGER");
  // Jobs queued by an older version carried secrets and a registry token in job_json: unfinished ones
  // cannot be handed out safely any more (no repository to match), finished ones lose them.
  sql.exec("UPDATE jobs SET state = 'cancelled', lease_id = NULL WHERE repository IS NULL AND state IN ('queued', 'leased')");
  sql.exec("UPDATE jobs SET job_json = '{}' WHERE repository IS NULL AND job_json != '{}'");
}

/** Whether a runner of `platform` offered itself (claimed, or worked on a job) since `since`. */
export function runnerSeen(sql: SqlStorage, platform: string, since: number): boolean {
  const rows = sql.exec<{ platforms: string }>("SELECT platforms FROM runners WHERE last_seen >= ?", since).toArray();
  return rows.some((r) => platformMatches(platform, JSON.parse(r.platforms) as string[]));
}

/** A runner holding a lease is alive: it counts as connected for its platforms. */
export function touchRunner(sql: SqlStorage, runnerId: string | null, now: number): void {
  if (runnerId) sql.exec("UPDATE runners SET last_seen = ? WHERE runner_id = ?", now, runnerId);
}

function failJob(sql: SqlStorage, jobId: string, now: number, message: string, attempts?: number): void {
  const result: RunResult = { ok: false, exitCode: null, message };
  sql.exec(
    "UPDATE jobs SET state = 'done', attempts = COALESCE(?, attempts), lease_id = NULL, lease_expires_at = NULL, secrets_json = NULL, result_json = ?, forwarded = 0, next_forward_at = ? WHERE job_id = ?",
    attempts ?? null, JSON.stringify(result), now, jobId,
  );
}

/**
 * Step deadlines. A queued job whose wait ran out fails with `no runner for <platform>` when no runner
 * of its platform offered itself during the wait (otherwise runners are only busy: it waits another
 * round). A leased job past its timeout (the job's timeoutSeconds and a minute for the upload) fails.
 * Returns whether a job changed.
 */
export function expireDeadlines(sql: SqlStorage, now: number, s: BuilderSettings): boolean {
  let changed = false;
  const waiting = sql.exec<JobRow>("SELECT * FROM jobs WHERE state = 'queued' AND wait_until IS NOT NULL AND wait_until <= ?", now).toArray();
  for (const r of waiting) {
    if (runnerSeen(sql, r.platform, now - s.runnerWaitMs)) {
      sql.exec("UPDATE jobs SET wait_until = ? WHERE job_id = ?", now + s.runnerWaitMs, r.job_id);
      continue;
    }
    failJob(sql, r.job_id, now, `no runner for ${r.platform}: none offered itself within ${secondsText(s.runnerWaitMs)} (KILN_RUNNER_WAIT_SECONDS)`);
    changed = true;
  }
  const late = sql.exec<JobRow>("SELECT * FROM jobs WHERE state = 'leased' AND timeout_at IS NOT NULL AND timeout_at <= ?", now).toArray();
  for (const r of late) {
    const { timeoutSeconds } = JSON.parse(r.job_json) as { timeoutSeconds?: number };
    failJob(sql, r.job_id, now, `the RUN step did not finish within its timeout of ${timeoutSeconds ?? "?"} s (KILN_RUN_TIMEOUT_SECONDS)`);
    changed = true;
  }
  return changed;
}

export function expireLeases(sql: SqlStorage, now: number, s: BuilderSettings): boolean {
  const expired = sql.exec<JobRow>("SELECT * FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?", now).toArray();
  if (!expired.length) return false;
  for (const r of expired) {
    if (!r.acked) {
      // Never acknowledged: the claim most likely did not reach a runner. Not an attempt.
      sql.exec("UPDATE jobs SET state = 'queued', runner_id = NULL, lease_id = NULL, lease_expires_at = NULL WHERE job_id = ?", r.job_id);
      continue;
    }
    const attempts = r.attempts + 1;
    if (attempts >= s.jobMaxAttempts) {
      const result: RunResult = { ok: false, exitCode: null, message: `runner lost the job ${attempts} times (lease expired); giving up` };
      sql.exec(
        "UPDATE jobs SET state = 'done', attempts = ?, lease_id = NULL, secrets_json = NULL, result_json = ?, forwarded = 0, next_forward_at = ? WHERE job_id = ?",
        attempts, JSON.stringify(result), now, r.job_id,
      );
    } else {
      // A requeued job is no longer held for a preferred runner: whoever is free takes it.
      sql.exec(
        "UPDATE jobs SET state = 'queued', attempts = ?, runner_id = NULL, lease_id = NULL, lease_expires_at = NULL, preferred_runner = NULL, hold_until = 0 WHERE job_id = ?",
        attempts, r.job_id,
      );
    }
  }
  return true;
}
