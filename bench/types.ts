// Shared shapes of `npm run bench` (bench/run.ts runs every bench module and writes bench/results/latest.json).

export interface Stats { samples: number[]; median: number; min: number; max: number }

export interface BenchResult {
  /** Short id, e.g. `registry.push.200MB.monolithic`. */
  name: string;
  /** What was timed, in words (one line for the README table). */
  what: string;
  /** `s`, `ms`, `req/s`, `MiB`, … — units ending in `/s` are higher-is-better, everything else lower-is-better. */
  unit: string;
  kiln: Stats;
  peer?: Stats & { name: string };
  /** kiln median / peer median. */
  ratio?: number;
  note?: string;
}

export interface BenchContext {
  /** Repetitions per figure (BENCH_REPS, default 5). */
  reps: number;
  /** Progress output (stderr). */
  log(message: string): void;
}

/**
 * A bench module (bench/registry.ts, bench/parser.ts, bench/builds.ts): exports `run` (or a default
 * function) returning its figures; bench/run.ts imports it dynamically and skips modules that are missing.
 */
export interface BenchModule {
  run(ctx: BenchContext): Promise<BenchResult[]>;
}

export function stats(samples: number[]): Stats {
  if (samples.length === 0) return { samples: [], median: NaN, min: NaN, max: NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { samples, median, min: sorted[0], max: sorted[sorted.length - 1] };
}

export const higherIsBetter = (unit: string) => /\/s$/.test(unit);

/** A result from kiln and (optionally) peer samples; ratio = kiln median / peer median. */
export function result(r: { name: string; what: string; unit: string; kiln: number[]; peer?: { name: string; samples: number[] }; note?: string }): BenchResult {
  const kiln = stats(r.kiln);
  const out: BenchResult = { name: r.name, what: r.what, unit: r.unit, kiln };
  if (r.peer && r.peer.samples.length) {
    out.peer = { name: r.peer.name, ...stats(r.peer.samples) };
    if (out.peer.median > 0 && Number.isFinite(kiln.median)) out.ratio = kiln.median / out.peer.median;
  }
  if (r.note) out.note = r.note;
  return out;
}

/** Wall time of `fn` in seconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}
