/**
 * The GarbageCollector Durable Object: one instance (`idFromName("gc")`) runs one collection at a
 * time (retention, cache eviction, mark and sweep: src/storage/gc.ts), started by POST /v1/gc and by
 * the daily cron. Pushes, pulls and builds do not wait for it: every delete it makes re-checks in D1
 * that nothing uses the row, and writers pin what they are about to use.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { collectGarbage, failAbandonedRuns, finishGcRun, startGcRun, type GcOptions, type GcReport } from "../storage/gc";

export interface GcSettings {
  /** Default grace period: nothing younger is collected. */
  graceMs: number;
  cacheMaxAgeMs: number;
  cacheBudgetBytes: number | null;
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

/** KILN_GC_GRACE_SECONDS (3600), KILN_CACHE_MAX_AGE_DAYS (30), KILN_CACHE_BUDGET_BYTES (none). */
export function gcSettings(env: Env): GcSettings {
  return {
    graceMs: positive(env.KILN_GC_GRACE_SECONDS, "KILN_GC_GRACE_SECONDS", 3600)! * 1000,
    cacheMaxAgeMs: positive(env.KILN_CACHE_MAX_AGE_DAYS, "KILN_CACHE_MAX_AGE_DAYS", 30)! * 24 * 3600 * 1000,
    cacheBudgetBytes: positive(env.KILN_CACHE_BUDGET_BYTES, "KILN_CACHE_BUDGET_BYTES", null),
  };
}

export type CollectAnswer = { status: "done"; report: GcReport } | { status: "busy"; id: string; startedAt: number } | { status: "failed"; id: string; error: string };

export class GarbageCollector extends DurableObject<Env> {
  private current: { id: string; startedAt: number } | null = null;

  /** Runs one collection now, unless one is running (then says which). */
  async collect(req: { dryRun: boolean; graceMs?: number; trigger: GcOptions["trigger"] }): Promise<CollectAnswer> {
    if (this.current) return { status: "busy", ...this.current };
    const settings = gcSettings(this.env);
    const id = crypto.randomUUID();
    const startedAt = Date.now();
    this.current = { id, startedAt };
    try {
      await failAbandonedRuns(this.env, startedAt);
      const opts: GcOptions = { dryRun: req.dryRun, graceMs: req.graceMs ?? settings.graceMs, trigger: req.trigger, cacheMaxAgeMs: settings.cacheMaxAgeMs, cacheBudgetBytes: settings.cacheBudgetBytes };
      await startGcRun(this.env, id, opts, startedAt);
      try {
        const report = await collectGarbage(this.env, id, opts);
        await finishGcRun(this.env, id, "done", report);
        return { status: "done", report };
      } catch (err) {
        console.error("garbage collection failed", err);
        const error = err instanceof Error ? err.message : String(err);
        await finishGcRun(this.env, id, "failed", { error });
        return { status: "failed", id, error };
      }
    } finally {
      this.current = null;
    }
  }
}

/** The one collector's stub. */
export function garbageCollector(env: Env): DurableObjectStub<GarbageCollector> {
  return env.GARBAGE_COLLECTOR.get(env.GARBAGE_COLLECTOR.idFromName("gc"));
}
