import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { ClaimedJob, ClaimRequest, JobLayer, JobState, JobStatus, QueuedJob, RunJob, RunResult } from "../protocol/jobs";
import { linkBlob, statRepoBlob } from "../storage/blobs";
import { patternMatches } from "../auth/scopes";
import { mintJobToken } from "../auth/job-token";

/**
 * The queue of RUN jobs handed to runners (issue 5). One instance: `env.DISPATCHER.idFromName("default")`.
 *
 * A job is `queued` → `leased` (one runner holds a lease it renews) → `done` (result forwarded to the
 * build's BuildCoordinator exactly once). An expired lease puts the job back in the queue; a cancelled
 * build cancels its jobs (runners learn it with 410 on their next lease/log call). A job of a build goes
 * preferably to the runner that completed the previous step of that build: it is held for that runner
 * for a short while (`KILN_DISPATCH_PREFER_MS`, default 2000) before any runner may take it.
 *
 * Tenancy (issue 17): a claim names the runner token and the repositories it serves ("all" for the
 * operator's pool); only jobs whose repository matches are handed to it. The lease records that token,
 * and only it may renew, log or complete. The job's secrets live in their own column, are sent only in
 * the claim response and are dropped when the job ends; its registry credential is minted per lease
 * (job-token.ts) and is valid only while `leaseLive` says so. A completion's layer must be linked in
 * the job's repository with the stated size.
 */

/** Who claims: the runner token (its id, or "admin") and the repositories it serves. */
export interface ClaimHolder {
  tokenId: string;
  /** "all" (scope `runner`, admin) or the patterns of its `runner:<pattern>` scopes. */
  serves: "all" | string[];
  /** Origin of the claim request (the audience of the job's registry token). */
  origin: string;
}

/** What the Dispatcher calls on the BuildCoordinator (implemented by the builds engineer). */
export interface RunStepSink {
  runStepFinished(jobId: string, stepIndex: number, result: RunResult): Promise<unknown>;
  appendLog(stepIndex: number, text: string): Promise<unknown>;
}

export type { JobState, JobStatus } from "../protocol/jobs";

export interface RunnerInfo {
  runnerId: string;
  platforms: string[];
  labels: Record<string, string>;
  lastSeen: number;
}

/** Outcome of a lease renewal, log append or completion. `gone` means 410: stop and kill the step. */
export type LeaseOutcome =
  | { ok: true; leaseExpiresAt: number }
  | { ok: false; status: 400 | 403 | 404 | 409 | 410; message: string };

const DEFAULT_LEASE_SECONDS = 30;
const MAX_LEASE_SECONDS = 600;
const MAX_WAIT_MS = 25_000;
const FORWARD_RETRY_MS = 5_000;
const MAX_FORWARD_ATTEMPTS = 20;
/** Upper bound of a job token's lifetime; it dies earlier with its lease (checked on every /v2 call). */
const MAX_JOB_TOKEN_SECONDS = 24 * 3600;

interface JobRow {
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
  [key: string]: SqlStorageValue;
}

/** A runner id as announced by one runner token. */
function leavingKey(tokenId: string, runnerId: string): string {
  return `${tokenId}\n${runnerId}`;
}

export function platformString(p: RunJob["platform"]): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}

/** Whether a runner platform ("linux/amd64", "linux/arm64/v8") can run a job platform. */
export function platformMatches(jobPlatform: string, runnerPlatforms: string[]): boolean {
  const [jos, jarch, jvar] = jobPlatform.split("/");
  return runnerPlatforms.some((rp) => {
    const [ros, rarch, rvar] = rp.split("/");
    if (ros !== jos || rarch !== jarch) return false;
    return !jvar || !rvar || jvar === rvar;
  });
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** Validates a RunResult sent by a runner; returns a message when it is malformed. */
export function validateRunResult(r: unknown): string | null {
  if (!r || typeof r !== "object") return "result must be an object";
  const o = r as Record<string, unknown>;
  if (o.ok === true) {
    if (o.layer === null) return null;
    const l = o.layer as Record<string, unknown> | undefined;
    if (!l || typeof l !== "object") return "result.layer must be a layer descriptor or null";
    if (typeof l.digest !== "string" || !DIGEST_RE.test(l.digest)) return "result.layer.digest must be sha256:<64 hex>";
    if (typeof l.diffId !== "string" || !DIGEST_RE.test(l.diffId)) return "result.layer.diffId must be sha256:<64 hex>";
    if (typeof l.mediaType !== "string" || !l.mediaType) return "result.layer.mediaType must be a string";
    if (typeof l.size !== "number" || !Number.isSafeInteger(l.size) || l.size < 0) return "result.layer.size must be a non-negative integer";
    return null;
  }
  if (o.ok === false) {
    if (!(o.exitCode === null || (typeof o.exitCode === "number" && Number.isInteger(o.exitCode)))) return "result.exitCode must be an integer or null";
    if (typeof o.message !== "string") return "result.message must be a string";
    return null;
  }
  return "result.ok must be true or false";
}

function normalizeResult(r: RunResult): RunResult {
  if (r.ok) {
    if (!r.layer) return { ok: true, layer: null };
    const l: JobLayer = { digest: r.layer.digest, diffId: r.layer.diffId, mediaType: r.layer.mediaType, size: r.layer.size };
    return { ok: true, layer: l };
  }
  const message = r.message.length > 65536 ? r.message.slice(-65536) : r.message;
  return { ok: false, exitCode: r.exitCode, message };
}

export class Dispatcher extends DurableObject<Env> {
  private sql: SqlStorage;
  private waiters = new Set<() => void>();
  /** Runners that said they are going away (leavingKey → when): their pending long-polls end empty. */
  private leaving = new Map<string, number>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
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
    const cols = this.sql.exec<{ name: string }>("PRAGMA table_info(jobs)").toArray().map((c) => c.name);
    if (!cols.includes("acked")) this.sql.exec("ALTER TABLE jobs ADD COLUMN acked INTEGER NOT NULL DEFAULT 0");
    // Issue 17: the job's repository (who may claim it), the runner token holding the lease, and the
    // job's secrets apart from job_json (dropped when the job ends).
    if (!cols.includes("repository")) this.sql.exec("ALTER TABLE jobs ADD COLUMN repository TEXT");
    if (!cols.includes("runner_token")) this.sql.exec("ALTER TABLE jobs ADD COLUMN runner_token TEXT");
    if (!cols.includes("secrets_json")) this.sql.exec("ALTER TABLE jobs ADD COLUMN secrets_json TEXT");
    // Jobs queued by an older version carried secrets and a registry token in job_json: unfinished ones
    // cannot be handed out safely any more (no repository to match), finished ones lose them.
    this.sql.exec("UPDATE jobs SET state = 'cancelled', lease_id = NULL WHERE repository IS NULL AND state IN ('queued', 'leased')");
    this.sql.exec("UPDATE jobs SET job_json = '{}' WHERE repository IS NULL AND job_json != '{}'");
  }

  /**
   * A claim answered to a runner that has gone away meanwhile (a long-poll whose client disconnected)
   * must not hold the job for a whole lease: a fresh lease lasts only this long until the runner
   * acknowledges it with its first renewal, log or completion, and such an unacknowledged expiry does
   * not count as a lost attempt.
   */
  private ackMs(): number {
    const v = Number(this.var("KILN_CLAIM_ACK_SECONDS"));
    return Math.round((Number.isFinite(v) && v > 0 ? v : 10) * 1000);
  }

  private var(name: string): string | undefined {
    const v = (this.env as unknown as Record<string, unknown>)[name];
    return typeof v === "string" && v !== "" ? v : undefined;
  }
  private preferMs(): number {
    const v = Number(this.var("KILN_DISPATCH_PREFER_MS"));
    return Number.isFinite(v) && v >= 0 ? v : 2000;
  }
  private hostNetworkWaitMs(): number {
    const v = Number(this.var("KILN_HOST_NETWORK_WAIT_MS"));
    return Number.isFinite(v) && v >= 0 ? v : 30_000;
  }
  private maxAttempts(): number {
    const v = Number(this.var("KILN_JOB_MAX_ATTEMPTS"));
    return Number.isInteger(v) && v > 0 ? v : 3;
  }
  private leaseMs(requested?: number): number {
    const envDefault = Number(this.var("KILN_RUNNER_LEASE_SECONDS"));
    let s = requested ?? (Number.isFinite(envDefault) && envDefault > 0 ? envDefault : DEFAULT_LEASE_SECONDS);
    if (!Number.isFinite(s)) s = DEFAULT_LEASE_SECONDS;
    s = Math.min(MAX_LEASE_SECONDS, Math.max(1, s));
    return Math.round(s * 1000);
  }

  /** Tests replace the coordinator with a recorder (set through runInDurableObject). */
  sinkOverride: ((buildId: string) => RunStepSink) | null = null;

  private coordinator(buildId: string): RunStepSink {
    if (this.sinkOverride) return this.sinkOverride(buildId);
    const ns = this.env.BUILD_COORDINATOR;
    return ns.get(ns.idFromName(buildId)) as unknown as RunStepSink;
  }

  private row(jobId: string): JobRow | null {
    return this.sql.exec<JobRow>("SELECT * FROM jobs WHERE job_id = ?", jobId).toArray()[0] ?? null;
  }

  private wake(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  private async scheduleAlarm(): Promise<void> {
    const next = this.sql
      .exec<{ t: number | null }>(
        `SELECT MIN(t) AS t FROM (
           SELECT MIN(lease_expires_at) AS t FROM jobs WHERE state = 'leased'
           UNION ALL SELECT MIN(next_forward_at) AS t FROM jobs WHERE state = 'done' AND forwarded IN (0, 2)
           UNION ALL SELECT MIN(hold_until) AS t FROM jobs WHERE state = 'queued' AND hold_until > ?)`,
        Date.now(),
      )
      .one().t;
    if (next === null) {
      await this.ctx.storage.deleteAlarm();
      return;
    }
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > next || current < Date.now()) await this.ctx.storage.setAlarm(Math.max(next, Date.now() + 10));
  }

  // ---- RPC for the BuildCoordinator ----

  /**
   * Queues a RUN job (idempotent by jobId: a job already known is left as it is). The job's layers
   * (rootfs and bind-mount sources) are linked into `job.repository` first, so the runner can fetch
   * them with the job's registry token before any image of the build is pushed. Its secrets are kept
   * apart from the job and any `registryToken` is dropped (each lease gets its own).
   */
  async enqueue(queued: QueuedJob): Promise<void> {
    const { secrets, registryToken: _ignored, ...job } = queued;
    void _ignored;
    if (this.row(job.jobId)) return;
    this.prune(Date.now());
    const digests = new Set([...job.layers, ...job.mounts.flatMap((m) => m.fromLayers ?? [])].map((l) => l.digest));
    for (const digest of digests) {
      try {
        await linkBlob(this.env, job.repository, digest);
      } catch (err) {
        // The runner reports a clear BLOB_UNKNOWN for the step when it cannot fetch the layer.
        console.error("dispatcher: cannot link layer", digest, "to", job.repository, err);
      }
    }
    if (this.row(job.jobId)) return;
    const now = Date.now();
    const cancelled = this.sql.exec("SELECT 1 FROM cancelled_builds WHERE build_id = ?", job.buildId).toArray().length > 0;
    const preferred = this.sql.exec<{ runner_id: string }>("SELECT runner_id FROM build_runner WHERE build_id = ?", job.buildId).toArray()[0]?.runner_id ?? null;
    const keepSecrets = !cancelled && secrets && Object.keys(secrets).length ? JSON.stringify(secrets) : null;
    this.sql.exec(
      `INSERT INTO jobs (job_id, build_id, step_index, platform, network, job_json, state, enqueued_at, preferred_runner, hold_until, repository, secrets_json)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      job.jobId, job.buildId, job.stepIndex, platformString(job.platform), job.network, JSON.stringify(job),
      cancelled ? "cancelled" : "queued", now, preferred, preferred ? now + this.preferMs() : 0, job.repository, keepSecrets,
    );
    await this.scheduleAlarm();
    this.wake();
  }

  private lastPrune = 0;
  /** Forgets finished jobs, cancellations and runners after a day (at most once an hour). */
  private prune(now: number): void {
    if (now - this.lastPrune < 3600_000) return;
    this.lastPrune = now;
    const day = now - 24 * 3600_000;
    this.sql.exec("DELETE FROM jobs WHERE enqueued_at < ? AND (state = 'cancelled' OR (state = 'done' AND forwarded = 1))", day);
    this.sql.exec("DELETE FROM cancelled_builds WHERE at < ?", day);
    this.sql.exec("DELETE FROM build_runner WHERE at < ?", day);
    this.sql.exec("DELETE FROM runners WHERE last_seen < ?", now - 7 * 24 * 3600_000);
  }

  /** Cancels every job of a build that is not finished; later enqueues of it are cancelled at once. */
  async cancelBuild(buildId: string): Promise<void> {
    this.sql.exec("INSERT OR REPLACE INTO cancelled_builds (build_id, at) VALUES (?, ?)", buildId, Date.now());
    this.sql.exec("UPDATE jobs SET state = 'cancelled', lease_id = NULL, secrets_json = NULL WHERE build_id = ? AND state IN ('queued', 'leased')", buildId);
    await this.scheduleAlarm();
  }

  /** The state of a job (for tests and diagnostics). */
  async jobStatus(jobId: string): Promise<JobStatus | null> {
    const r = this.row(jobId);
    if (!r) return null;
    return {
      jobId: r.job_id, buildId: r.build_id, stepIndex: r.step_index, state: r.state, repository: r.repository ?? "",
      runnerId: r.runner_id, runnerTokenId: r.runner_token, leaseId: r.lease_id, leaseExpiresAt: r.lease_expires_at, attempts: r.attempts,
      result: r.result_json ? (JSON.parse(r.result_json) as RunResult) : null, forwarded: r.forwarded === 1,
    };
  }

  /** Jobs that are not finished (queued or leased), oldest first, or those of one state. */
  async listJobs(state?: JobState, limit = 100): Promise<JobStatus[]> {
    const rows = state
      ? this.sql.exec<JobRow>("SELECT job_id FROM jobs WHERE state = ? ORDER BY enqueued_at LIMIT ?", state, limit).toArray()
      : this.sql.exec<JobRow>("SELECT job_id FROM jobs WHERE state IN ('queued', 'leased') ORDER BY enqueued_at LIMIT ?", limit).toArray();
    const out: JobStatus[] = [];
    for (const r of rows) {
      const st = await this.jobStatus(r.job_id);
      if (st) out.push(st);
    }
    return out;
  }

  async listRunners(): Promise<RunnerInfo[]> {
    return this.sql
      .exec<{ runner_id: string; platforms: string; labels: string; last_seen: number }>("SELECT * FROM runners ORDER BY runner_id")
      .toArray()
      .map((r) => ({ runnerId: r.runner_id, platforms: JSON.parse(r.platforms), labels: JSON.parse(r.labels), lastSeen: r.last_seen }));
  }

  // ---- runner protocol ----

  /**
   * Hands out the next job this runner may run (platform, network, and a repository its token serves),
   * waiting up to `waitSeconds` (max 25) for one. The answer carries a registry token for this lease
   * and the job's secrets.
   */
  async claim(req: ClaimRequest, holder: ClaimHolder): Promise<ClaimedJob | null> {
    const waitMs = Math.min(MAX_WAIT_MS, Math.max(0, (req.waitSeconds ?? 25) * 1000));
    const started = Date.now();
    const deadline = started + waitMs;
    const left = () => (this.leaving.get(leavingKey(holder.tokenId, req.runnerId)) ?? 0) >= started;
    this.sql.exec(
      "INSERT OR REPLACE INTO runners (runner_id, platforms, labels, last_seen) VALUES (?, ?, ?, ?)",
      req.runnerId, JSON.stringify(req.platforms), JSON.stringify(req.labels ?? {}), Date.now(),
    );
    for (;;) {
      if (left()) return null;
      const got = await this.tryClaim(req, holder);
      if (got) return got;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return null;
      // Wake on enqueue/requeue, or re-check periodically (holds for preferred runners run out).
      await new Promise<void>((resolve) => {
        const done = () => { clearTimeout(t); this.waiters.delete(done); resolve(); };
        const t = setTimeout(done, Math.min(remaining, 500));
        this.waiters.add(done);
      });
    }
  }

  /**
   * A runner shutting down: its long-polls in flight end without a job (so none is handed to it). Only
   * the polls made with the same runner token end: another token naming the runner id changes nothing.
   */
  async leave(runnerId: string, tokenId: string): Promise<void> {
    this.leaving.set(leavingKey(tokenId, runnerId), Date.now());
    for (const [id, at] of this.leaving) if (at < Date.now() - 60_000) this.leaving.delete(id);
    this.wake();
  }

  private async tryClaim(req: ClaimRequest, holder: ClaimHolder): Promise<ClaimedJob | null> {
    const now = Date.now();
    this.expireLeases(now);
    const candidates = this.sql.exec<JobRow>("SELECT * FROM jobs WHERE state = 'queued' ORDER BY enqueued_at, step_index").toArray();
    const hostWait = this.hostNetworkWaitMs();
    const serves = (repository: string | null) =>
      repository !== null && (holder.serves === "all" || holder.serves.some((p) => patternMatches(p, repository)));
    const pick = candidates.find(
      (r) =>
        serves(r.repository) &&
        platformMatches(r.platform, req.platforms) &&
        (!r.preferred_runner || r.preferred_runner === req.runnerId || r.hold_until <= now) &&
        // --network=host steps wait for a runner that allows it; after a while any runner takes them
        // (and fails them with a clear message) so the build does not hang.
        (r.network !== "host" || req.allowHostNetwork === true || now - r.enqueued_at >= hostWait),
    );
    if (!pick) return null;
    const leaseId = crypto.randomUUID();
    const leaseExpiresAt = now + Math.min(this.leaseMs(req.leaseSeconds), this.ackMs());
    this.sql.exec(
      "UPDATE jobs SET state = 'leased', acked = 0, runner_id = ?, runner_token = ?, lease_id = ?, lease_expires_at = ? WHERE job_id = ? AND state = 'queued'",
      req.runnerId, holder.tokenId, leaseId, leaseExpiresAt, pick.job_id,
    );
    const job = JSON.parse(pick.job_json) as Omit<RunJob, "registryToken" | "secrets">;
    let registryToken: string;
    try {
      const ttl = Math.min(MAX_JOB_TOKEN_SECONDS, Math.max(600, (job.timeoutSeconds || 3600) + 1800));
      registryToken = await mintJobToken(this.env, holder.origin, pick.repository!, { jobId: pick.job_id, leaseId, runnerTokenId: holder.tokenId }, ttl);
    } catch (err) {
      this.sql.exec(
        "UPDATE jobs SET state = 'queued', runner_id = NULL, runner_token = NULL, lease_id = NULL, lease_expires_at = NULL WHERE job_id = ? AND lease_id = ?",
        pick.job_id, leaseId,
      );
      throw err;
    }
    await this.scheduleAlarm();
    const secrets = pick.secrets_json ? (JSON.parse(pick.secrets_json) as Record<string, string>) : undefined;
    return { job: { ...job, registryToken, ...(secrets ? { secrets } : {}) }, leaseId, leaseExpiresAt };
  }

  /**
   * Whether `leaseId` of `jobId` is alive and held by runner token `tokenId` (the job's registry token
   * is valid only then).
   */
  async leaseLive(jobId: string, leaseId: string, tokenId: string): Promise<boolean> {
    const r = this.row(jobId);
    return !!r && r.state === "leased" && r.lease_id === leaseId && r.runner_token === tokenId && (r.lease_expires_at ?? 0) > Date.now();
  }

  /** Requeues jobs whose lease passed; fails them after too many lost leases. */
  private expireLeases(now: number): void {
    const expired = this.sql.exec<JobRow>("SELECT * FROM jobs WHERE state = 'leased' AND lease_expires_at <= ?", now).toArray();
    if (!expired.length) return;
    for (const r of expired) {
      if (!r.acked) {
        // Never acknowledged: the claim most likely did not reach a runner. Not an attempt.
        this.sql.exec("UPDATE jobs SET state = 'queued', runner_id = NULL, lease_id = NULL, lease_expires_at = NULL WHERE job_id = ?", r.job_id);
        continue;
      }
      const attempts = r.attempts + 1;
      if (attempts >= this.maxAttempts()) {
        const result: RunResult = { ok: false, exitCode: null, message: `runner lost the job ${attempts} times (lease expired); giving up` };
        this.sql.exec(
          "UPDATE jobs SET state = 'done', attempts = ?, lease_id = NULL, secrets_json = NULL, result_json = ?, forwarded = 0, next_forward_at = ? WHERE job_id = ?",
          attempts, JSON.stringify(result), now, r.job_id,
        );
      } else {
        // A requeued job is no longer held for a preferred runner: whoever is free takes it.
        this.sql.exec(
          "UPDATE jobs SET state = 'queued', attempts = ?, runner_id = NULL, lease_id = NULL, lease_expires_at = NULL, preferred_runner = NULL, hold_until = 0 WHERE job_id = ?",
          attempts, r.job_id,
        );
      }
    }
    this.wake();
  }

  private checkLease(jobId: string, leaseId: string | undefined, tokenId: string): { row: JobRow } | { outcome: LeaseOutcome } {
    this.expireLeases(Date.now());
    const r = this.row(jobId);
    if (!r) return { outcome: { ok: false, status: 404, message: `job ${jobId} not found` } };
    if (r.state === "cancelled") return { outcome: { ok: false, status: 410, message: "the build was cancelled" } };
    if (r.state !== "leased" || !leaseId || r.lease_id !== leaseId) {
      return { outcome: { ok: false, status: 410, message: "lease lost: the job was re-queued or handed to another runner" } };
    }
    if (r.runner_token !== tokenId) {
      return { outcome: { ok: false, status: 403, message: "this lease is held by another runner token" } };
    }
    if (!r.acked) {
      this.sql.exec("UPDATE jobs SET acked = 1 WHERE job_id = ?", jobId);
      r.acked = 1;
    }
    return { row: r };
  }

  /** Renews a lease. 410 when the job was cancelled, re-queued or its lease lost; 403 from another runner token. */
  async renewLease(jobId: string, leaseId: string, tokenId: string, leaseSeconds?: number): Promise<LeaseOutcome> {
    const c = this.checkLease(jobId, leaseId, tokenId);
    if ("outcome" in c) { await this.scheduleAlarm(); return c.outcome; }
    const leaseExpiresAt = Date.now() + this.leaseMs(leaseSeconds);
    this.sql.exec("UPDATE jobs SET lease_expires_at = ? WHERE job_id = ?", leaseExpiresAt, jobId);
    await this.scheduleAlarm();
    return { ok: true, leaseExpiresAt };
  }

  /** Forwards output of a running job to its build log. 410 when the job is cancelled or the lease lost. */
  async appendLog(jobId: string, leaseId: string | undefined, tokenId: string, text: string): Promise<LeaseOutcome> {
    const c = this.checkLease(jobId, leaseId, tokenId);
    if ("outcome" in c) return c.outcome;
    if (text) {
      try {
        await this.coordinator(c.row.build_id).appendLog(c.row.step_index, text);
      } catch (err) {
        console.error("dispatcher: appendLog failed", jobId, err);
      }
    }
    return { ok: true, leaseExpiresAt: c.row.lease_expires_at ?? 0 };
  }

  /**
   * Records the result of a job from its lease holder (that lease id, from that runner token) and
   * forwards it to the coordinator exactly once. A layer must be linked in the job's repository with the
   * stated size (400 otherwise; the job stays leased). A repeated completion with the same lease after
   * success answers ok without forwarding again. The job's secrets are forgotten.
   */
  async complete(jobId: string, leaseId: string, tokenId: string, result: RunResult): Promise<LeaseOutcome> {
    const bad = validateRunResult(result);
    if (bad) return { ok: false, status: 409, message: bad };
    const r0 = this.row(jobId);
    if (r0 && r0.state === "done" && r0.lease_id === leaseId && leaseId && r0.runner_token === tokenId) return { ok: true, leaseExpiresAt: 0 };
    const c0 = this.checkLease(jobId, leaseId, tokenId);
    if ("outcome" in c0) return c0.outcome;
    const normalized = normalizeResult(result);
    if (normalized.ok && normalized.layer) {
      const { digest, size } = normalized.layer;
      const repository = c0.row.repository ?? "";
      const stat = await statRepoBlob(this.env, repository, digest);
      if (!stat) return { ok: false, status: 400, message: `layer ${digest} was not uploaded to ${repository}: upload it with the job's registry token before completing` };
      if (stat.size !== size) return { ok: false, status: 400, message: `layer ${digest} in ${repository} has ${stat.size} bytes, not ${size}` };
    }
    // The lease may have changed while the layer was checked.
    const c = this.checkLease(jobId, leaseId, tokenId);
    if ("outcome" in c) return c.outcome;
    const now = Date.now();
    this.sql.exec(
      "UPDATE jobs SET state = 'done', result_json = ?, forwarded = 0, next_forward_at = ?, lease_expires_at = NULL, secrets_json = NULL WHERE job_id = ?",
      JSON.stringify(normalized), now + FORWARD_RETRY_MS, jobId,
    );
    if (normalized.ok) {
      this.sql.exec("INSERT OR REPLACE INTO build_runner (build_id, runner_id, at) VALUES (?, ?, ?)", c.row.build_id, c.row.runner_id, now);
    }
    await this.scheduleAlarm();
    await this.forward(jobId);
    return { ok: true, leaseExpiresAt: 0 };
  }

  /** Sends a recorded result to the coordinator; retried by the alarm until it is accepted. */
  private async forward(jobId: string): Promise<void> {
    const r = this.row(jobId);
    if (!r || r.state !== "done" || r.forwarded === 1 || !r.result_json) return;
    if (r.forwarded === 2 && (r.next_forward_at ?? 0) > Date.now()) return; // in flight
    // Claim the forward first so a concurrent alarm does not send it again.
    // (If this instance dies while forwarding, the alarm sends it again after next_forward_at.)
    this.sql.exec("UPDATE jobs SET forwarded = 2, next_forward_at = ? WHERE job_id = ?", Date.now() + 30_000, jobId);
    try {
      await this.coordinator(r.build_id).runStepFinished(r.job_id, r.step_index, JSON.parse(r.result_json) as RunResult);
      this.sql.exec("UPDATE jobs SET forwarded = 1, next_forward_at = NULL WHERE job_id = ?", jobId);
    } catch (err) {
      const attempts = r.forward_attempts + 1;
      console.error("dispatcher: runStepFinished failed", jobId, attempts, err);
      if (attempts >= MAX_FORWARD_ATTEMPTS) {
        this.sql.exec("UPDATE jobs SET forwarded = 1, forward_attempts = ?, next_forward_at = NULL WHERE job_id = ?", attempts, jobId);
      } else {
        this.sql.exec(
          "UPDATE jobs SET forwarded = 0, forward_attempts = ?, next_forward_at = ? WHERE job_id = ?",
          attempts, Date.now() + FORWARD_RETRY_MS, jobId,
        );
      }
      await this.scheduleAlarm();
    }
  }

  override async alarm(): Promise<void> {
    const now = Date.now();
    this.expireLeases(now);
    const pending = this.sql
      .exec<{ job_id: string }>("SELECT job_id FROM jobs WHERE state = 'done' AND forwarded IN (0, 2) AND next_forward_at <= ?", now)
      .toArray();
    for (const p of pending) await this.forward(p.job_id);
    // Holds that ran out: wake waiting claims so other runners pick the job up.
    this.wake();
    await this.scheduleAlarm();
  }
}
