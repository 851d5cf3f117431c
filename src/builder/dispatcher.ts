import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { ClaimedJob, ClaimRequest, JobState, JobStatus, QueuedJob, RunJob, RunResult } from "../protocol/jobs";
import { createJobTables, expireDeadlines, expireLeases, runnerSeen, touchRunner, type JobRow } from "./job-queue";
import { builderSettings, type BuilderSettings } from "./settings";
import { leavingKey, normalizeResult, platformMatches, platformString, validateRunResult, type ClaimHolder, type LeaseOutcome, type RunnerInfo, type RunStepSink } from "./job-checks";
import { linkBlob, statRepoBlob } from "../storage/blobs";
import { storedSizes, withQuota } from "../storage/usage";
import { StorageError } from "../storage/errors";
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

export type { JobState, JobStatus } from "../protocol/jobs";
export { platformMatches, platformString, validateRunResult, type ClaimHolder, type LeaseOutcome, type RunnerInfo, type RunStepSink } from "./job-checks";

/** A runner seen this recently (a claim long-polls up to 25 s; a lease holder renews) is connected. */
const CONNECTED_MS = 60_000;

/** What enqueue answers: whether a runner of the job's platform is connected, and how long the job waits for one. */
export interface EnqueueAnswer {
  runnerConnected: boolean;
  waitMs: number;
  /** Why the job was not queued: its layers would take the repository's namespace past its quota. */
  refused?: string;
}

const DEFAULT_LEASE_SECONDS = 30;
const MAX_LEASE_SECONDS = 600;
const MAX_WAIT_MS = 25_000;
const FORWARD_RETRY_MS = 5_000;
const MAX_FORWARD_ATTEMPTS = 20;
/** Upper bound of a job token's lifetime; it dies earlier with its lease (checked on every /v2 call). */
const MAX_JOB_TOKEN_SECONDS = 24 * 3600;


export class Dispatcher extends DurableObject<Env> {
  private sql: SqlStorage;
  private waiters = new Set<() => void>();
  /** Runners that said they are going away (leavingKey → when): their pending long-polls end empty. */
  private leaving = new Map<string, number>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    createJobTables(this.sql);
  }

  private settings(): BuilderSettings {
    return builderSettings(this.env);
  }

  /** A fresh lease lasts only this long until its runner acknowledges it (see KILN_CLAIM_ACK_SECONDS). */
  private leaseMs(requested?: number): number {
    let sec = requested ?? this.settings().leaseSeconds;
    if (!Number.isFinite(sec)) sec = DEFAULT_LEASE_SECONDS;
    sec = Math.min(MAX_LEASE_SECONDS, Math.max(1, sec));
    return Math.round(sec * 1000);
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
           UNION ALL SELECT MIN(hold_until) AS t FROM jobs WHERE state = 'queued' AND hold_until > ?
           UNION ALL SELECT MIN(wait_until) AS t FROM jobs WHERE state = 'queued'
           UNION ALL SELECT MIN(timeout_at) AS t FROM jobs WHERE state = 'leased')`,
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
   * apart from the job and any `registryToken` is dropped (each lease gets its own). Answers whether a
   * runner of the job's platform is connected now and how long the job waits for one (then it fails
   * with `no runner for <platform>` unless a runner of that platform offered itself meanwhile).
   */
  async enqueue(queued: QueuedJob): Promise<EnqueueAnswer> {
    const { secrets, registryToken: _ignored, ...job } = queued;
    void _ignored;
    const waitMs = this.settings().runnerWaitMs;
    const answer = (): EnqueueAnswer => ({ runnerConnected: runnerSeen(this.sql, platformString(job.platform), Date.now() - CONNECTED_MS), waitMs });
    if (this.row(job.jobId)) return answer();
    this.prune(Date.now());
    const digests = [...new Set([...job.layers, ...job.mounts.flatMap((m) => m.fromLayers ?? [])].map((l) => l.digest))];
    // The layers count in the repository's namespace once linked: reserved in its quota first, or
    // the job is refused (DENIED naming usage and quota) with nothing linked and nothing queued.
    try {
      await withQuota(this.env, [{ repo: job.repository, content: await storedSizes(this.env, digests) }], async () => {
        for (const digest of digests) {
          try {
            await linkBlob(this.env, job.repository, digest);
          } catch (err) {
            // The runner reports a clear BLOB_UNKNOWN for the step when it cannot fetch the layer.
            console.error("dispatcher: cannot link layer", digest, "to", job.repository, err);
          }
        }
      });
    } catch (err) {
      if (err instanceof StorageError && err.code === "DENIED") return { ...answer(), refused: err.message };
      throw err;
    }
    if (this.row(job.jobId)) return answer();
    const now = Date.now();
    const cancelled = this.sql.exec("SELECT 1 FROM cancelled_builds WHERE build_id = ?", job.buildId).toArray().length > 0;
    const preferred = this.sql.exec<{ runner_id: string }>("SELECT runner_id FROM build_runner WHERE build_id = ?", job.buildId).toArray()[0]?.runner_id ?? null;
    const keepSecrets = !cancelled && secrets && Object.keys(secrets).length ? JSON.stringify(secrets) : null;
    this.sql.exec(
      `INSERT INTO jobs (job_id, build_id, step_index, platform, network, job_json, state, enqueued_at, preferred_runner, hold_until, repository, secrets_json, wait_until)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      job.jobId, job.buildId, job.stepIndex, platformString(job.platform), job.network, JSON.stringify(job),
      cancelled ? "cancelled" : "queued", now, preferred, preferred ? now + this.settings().dispatchPreferMs : 0, job.repository, keepSecrets, now + waitMs,
    );
    await this.scheduleAlarm();
    this.wake();
    return answer();
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
    const now = Date.now();
    const leased = new Map<string, { jobId: string; buildId: string; step: number }>();
    for (const j of this.sql.exec<{ job_id: string; build_id: string; step_index: number; runner_id: string }>(
      "SELECT job_id, build_id, step_index, runner_id FROM jobs WHERE state = 'leased' AND runner_id IS NOT NULL ORDER BY enqueued_at",
    )) leased.set(j.runner_id, { jobId: j.job_id, buildId: j.build_id, step: j.step_index });
    return this.sql
      .exec<{ runner_id: string; platforms: string; labels: string; last_seen: number }>("SELECT * FROM runners ORDER BY runner_id")
      .toArray()
      .map((r) => ({
        runnerId: r.runner_id, platforms: JSON.parse(r.platforms), labels: JSON.parse(r.labels), lastSeen: r.last_seen,
        online: now - r.last_seen < CONNECTED_MS || leased.has(r.runner_id), currentJob: leased.get(r.runner_id) ?? null,
      }));
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
    const hostWait = this.settings().hostNetworkWaitMs;
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
    const leaseExpiresAt = now + Math.min(this.leaseMs(req.leaseSeconds), this.settings().claimAckMs);
    const job = JSON.parse(pick.job_json) as Omit<RunJob, "registryToken" | "secrets">;
    // The command's timeout runs on the runner; a minute more covers the layer upload.
    const timeoutAt = job.timeoutSeconds > 0 ? now + job.timeoutSeconds * 1000 + 60_000 : null;
    this.sql.exec(
      "UPDATE jobs SET state = 'leased', acked = 0, runner_id = ?, runner_token = ?, lease_id = ?, lease_expires_at = ?, timeout_at = ? WHERE job_id = ? AND state = 'queued'",
      req.runnerId, holder.tokenId, leaseId, leaseExpiresAt, timeoutAt, pick.job_id,
    );
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

  /** Requeues jobs whose lease passed, fails those past a deadline (job-queue.ts); wakes claims when any changed. */
  private expireLeases(now: number): void {
    const s = this.settings();
    const leases = expireLeases(this.sql, now, s);
    const deadlines = expireDeadlines(this.sql, now, s);
    if (leases || deadlines) this.wake();
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
    touchRunner(this.sql, r.runner_id, Date.now());
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
