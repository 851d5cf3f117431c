/**
 * The GarbageCollector Durable Object: one instance (`idFromName("gc")`) runs one collection at a
 * time (retention, cache eviction, mark and sweep: src/storage/gc.ts), started by POST /v1/gc and by
 * the daily cron. Pushes, pulls and builds do not wait for it: every delete it makes re-checks in D1
 * that nothing uses the row, and writers pin what they are about to use.
 *
 * A collection runs in time slices of KILN_GC_SLICE_SECONDS: after each one its progress is saved in
 * D1 (gc_runs.progress) and the next slice follows, in the same request while the caller waits, else
 * in the object's alarm. An alarm set at the start of each slice also picks the collection up after
 * the object was restarted mid-slice.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import {
  collectFor, failAbandonedRuns, finishGcRun, loadGcProgress, newCollection, saveGcProgress, startGcRun,
  type GcOptions, type GcProgress, type GcReport,
} from "../storage/gc";

export interface GcSettings {
  /** Default grace period: nothing younger is collected. */
  graceMs: number;
  cacheMaxAgeMs: number;
  cacheBudgetBytes: number | null;
  /** Pull-through records unused for this long expire (null: never). */
  pullThroughMaxAgeMs: number | null;
  /** Work per time slice before the collection continues in the next one. */
  sliceMs: number;
}

function positive(v: string | undefined, name: string, fallback: number | null): number | null {
  if (v === undefined || v.trim() === "") return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`${name}=${JSON.stringify(v)} is not a non-negative number; using ${fallback ?? "none"}`);
    return fallback;
  }
  return n;
}

const DAY_MS = 24 * 3600 * 1000;

/**
 * KILN_GC_GRACE_SECONDS (3600), KILN_CACHE_MAX_AGE_DAYS (30), KILN_CACHE_BUDGET_BYTES (none),
 * KILN_PULL_THROUGH_MAX_AGE_DAYS (30; 0 keeps them forever), KILN_GC_SLICE_SECONDS (10).
 */
export function gcSettings(env: Env): GcSettings {
  const pullDays = positive(env.KILN_PULL_THROUGH_MAX_AGE_DAYS, "KILN_PULL_THROUGH_MAX_AGE_DAYS", 30)!;
  return {
    graceMs: positive(env.KILN_GC_GRACE_SECONDS, "KILN_GC_GRACE_SECONDS", 3600)! * 1000,
    cacheMaxAgeMs: positive(env.KILN_CACHE_MAX_AGE_DAYS, "KILN_CACHE_MAX_AGE_DAYS", 30)! * DAY_MS,
    cacheBudgetBytes: positive(env.KILN_CACHE_BUDGET_BYTES, "KILN_CACHE_BUDGET_BYTES", null),
    pullThroughMaxAgeMs: pullDays === 0 ? null : pullDays * DAY_MS,
    sliceMs: Math.max(0.05, positive(env.KILN_GC_SLICE_SECONDS, "KILN_GC_SLICE_SECONDS", 10)!) * 1000,
  };
}

export type CollectAnswer =
  | { status: "done"; report: GcReport }
  | { status: "running"; id: string; startedAt: number }
  | { status: "busy"; id: string; startedAt: number }
  | { status: "failed"; id: string; error: string };

/** The running collection, in the object's storage (its progress is in D1). */
interface Current { id: string; startedAt: number; sliceMs: number }

/** Pause between slices run by the alarm, so requests to D1 and R2 get their turn. */
const PAUSE_MS = 200;
/** An alarm this long after a slice starts continues the collection if the object died meanwhile. */
const WATCHDOG_MS = 60_000;

export class GarbageCollector extends DurableObject<Env> {
  /** A slice is running in this instance (the alarm then leaves it alone). */
  private slicing = false;
  /** The collection this instance is starting or running, for a refusal before it is in storage. */
  private active: Current | null = null;

  /**
   * Starts a collection, unless one is running (then says which), and runs its slices while the caller
   * waits (`waitMs`; 0: none): its report when it ends within that, else `running` (it goes on in the
   * alarm; GET /v1/gc shows the report when it ends). `sliceMs` overrides the setting.
   */
  async collect(req: { dryRun: boolean; graceMs?: number; trigger: GcOptions["trigger"]; waitMs?: number; sliceMs?: number }): Promise<CollectAnswer> {
    const running = this.active ?? (await this.ctx.storage.get<Current>("current"));
    if (running) return { status: "busy", id: running.id, startedAt: running.startedAt };
    const settings = gcSettings(this.env);
    const startedAt = Date.now();
    const waitUntil = startedAt + (req.waitMs ?? 25_000);
    const opts: GcOptions = {
      dryRun: req.dryRun, graceMs: req.graceMs ?? settings.graceMs, trigger: req.trigger, cacheMaxAgeMs: settings.cacheMaxAgeMs,
      cacheBudgetBytes: settings.cacheBudgetBytes, pullThroughMaxAgeMs: settings.pullThroughMaxAgeMs,
    };
    const progress = newCollection(crypto.randomUUID(), opts, startedAt);
    const current: Current = { id: progress.id, startedAt, sliceMs: req.sliceMs ?? settings.sliceMs };
    if (this.active) return { status: "busy", id: this.active.id, startedAt: this.active.startedAt };
    this.active = current;
    this.slicing = true;
    try {
      await this.ctx.storage.put("current", current);
      try {
        await failAbandonedRuns(this.env, startedAt);
        await startGcRun(this.env, progress);
      } catch (err) {
        await this.end();
        throw err;
      }
      while (Date.now() < waitUntil) {
        const answer = await this.slice(current, progress);
        if (answer) return answer;
      }
      await this.ctx.storage.setAlarm(Date.now() + (progress.report.slices ? PAUSE_MS : 0));
      return { status: "running", id: current.id, startedAt };
    } finally {
      this.slicing = false;
      this.active = null;
    }
  }

  /** The next slice of the running collection (if this instance is not running one already). */
  override async alarm(): Promise<void> {
    const current = await this.ctx.storage.get<Current>("current");
    if (!current || this.slicing) return;
    this.slicing = true;
    try {
      const progress = await loadGcProgress(this.env, current.id);
      if (!progress) {
        // its run row is gone or ended: nothing to continue
        await this.ctx.storage.delete("current");
        return;
      }
      if (!(await this.slice(current, progress))) await this.ctx.storage.setAlarm(Date.now() + PAUSE_MS);
    } finally {
      this.slicing = false;
    }
  }

  /** Runs one slice and saves its progress; the answer when the collection ended (done or failed). */
  private async slice(current: Current, progress: GcProgress): Promise<CollectAnswer | null> {
    await this.ctx.storage.setAlarm(Date.now() + current.sliceMs + WATCHDOG_MS);
    let done: boolean;
    try {
      done = await collectFor(this.env, progress, current.sliceMs);
    } catch (err) {
      console.error("garbage collection failed", err);
      const error = err instanceof Error ? err.message : String(err);
      await finishGcRun(this.env, current.id, "failed", { error });
      await this.end();
      return { status: "failed", id: current.id, error };
    }
    if (!done) {
      await saveGcProgress(this.env, progress);
      return null;
    }
    await finishGcRun(this.env, current.id, "done", progress.report);
    await this.end();
    return { status: "done", report: progress.report };
  }

  private async end(): Promise<void> {
    await this.ctx.storage.delete("current");
    await this.ctx.storage.deleteAlarm();
  }
}

/** The one collector's stub. */
export function garbageCollector(env: Env): DurableObjectStub<GarbageCollector> {
  return env.GARBAGE_COLLECTOR.get(env.GARBAGE_COLLECTOR.idFromName("gc"));
}
