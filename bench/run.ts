// `npm run bench`: runs every bench module (kiln and its peer alternating, several repetitions), writes
// bench/results/latest.json and rewrites the README's Performance section between
// <!-- bench:start --> and <!-- bench:end -->.
//   BENCH_REPS=5            repetitions per figure
//   BENCH_ONLY=registry,…   run only these modules (the others keep their previous figures)
//   BENCH_DRY=1             print the table only; write neither latest.json nor the README
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { higherIsBetter, type BenchContext, type BenchResult } from "./types";

process.env.CLOUDFLARE_CF_FETCH_ENABLED = "false";
process.env.WRANGLER_SEND_METRICS = "false";

const BENCH = import.meta.dirname;
const ROOT = path.resolve(BENCH, "..");
const MODULES = ["registry", "parser", "builds", "gc", "contexts"];
const LATEST = path.join(BENCH, "results", "latest.json");
const README = path.join(ROOT, "README.md");

export interface Machine { cores: number; cpu: string; memoryGiB: number; kernel: string; node: string }
export interface ModuleRun { date: string; commit?: string; loadAvg?: number; reps: number; durationS: number; results: BenchResult[]; error?: string; server?: string }

/** The server kiln ran under in this run of the bench (older runs: wrangler dev). */
const SERVER = "scripts/local-server.mjs";
/** Modules whose figures need no server. */
const SERVERLESS = new Set(["parser"]);
export interface BenchFile { date: string; commit: string; machine: Machine; modules: Record<string, ModuleRun>; results: BenchResult[] }

const head = () => spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).stdout.trim();

export function machine(): Machine {
  let cpu = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m) cpu = m[1].trim();
  } catch { /* not Linux */ }
  return { cores: os.cpus().length, cpu, memoryGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version };
}

const fmt = (v: number | undefined, unit: string) => {
  if (v === undefined || !Number.isFinite(v)) return "–";
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return `${v.toFixed(digits)} ${unit}`;
};

export function table(file: BenchFile): string {
  const m = file.machine;
  const commits = Object.entries(file.modules).map(([n, r]) => `${n} at ${r.commit ?? "?"} (${r.date.slice(0, 16).replace("T", " ")} UTC, ${r.reps} reps${r.loadAvg !== undefined ? `, load average ${r.loadAvg} at start` : ""})`).join(", ");
  const served = Object.entries(file.modules).filter(([n]) => !SERVERLESS.has(n));
  const lean = served.filter(([, r]) => r.server === SERVER).map(([n]) => n);
  const old = served.filter(([, r]) => r.server !== SERVER).map(([n]) => n);
  const runs = [
    lean.length ? `under \`${SERVER}\` (the bundled Worker run by Miniflare's API in one workerd) for ${lean.join(", ")}` : "",
    old.length ? `under \`wrangler dev\` for ${old.join(", ")} (measured before the switch)` : "",
  ].filter(Boolean).join(", ");
  const lines = [
    `Measured ${commits} on ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}; kiln runs in local workerd with R2/D1 simulated on disk, ${runs}. Median of the samples, spread = min–max; ratio = kiln ÷ peer (units ending in /s: higher is better, else lower is better). Raw samples: \`bench/results/latest.json\`; rerun with \`npm run bench\`.`,
    "",
    "| figure | what was timed | kiln median (spread) | peer | peer median (spread) | kiln/peer |",
    "|---|---|---|---|---|---|",
  ];
  for (const r of file.results) {
    const spread = (s: { min: number; max: number }) => s.min === s.max ? "" : ` (${fmt(s.min, "").trim()}–${fmt(s.max, "").trim()})`;
    const kiln = r.kiln.samples.length ? `${fmt(r.kiln.median, r.unit)}${spread(r.kiln)}` : "failed";
    const peer = r.peer ? `${fmt(r.peer.median, r.unit)}${spread(r.peer)}` : "–";
    let ratio = "–";
    if (r.ratio !== undefined && Number.isFinite(r.ratio)) {
      const better = higherIsBetter(r.unit) ? r.ratio > 1 : r.ratio < 1;
      ratio = `${r.ratio.toFixed(2)}${better ? " ✓" : ""}`;
    }
    const what = r.note ? `${r.what} — ${r.note}` : r.what;
    lines.push(`| \`${r.name}\` | ${what.replace(/\|/g, "\\|")} | ${kiln} | ${r.peer?.name ?? "–"} | ${peer} | ${ratio} |`);
  }
  return lines.join("\n");
}

export function writeReadme(file: BenchFile): void {
  const block = `<!-- bench:start -->\n${table(file)}\n<!-- bench:end -->`;
  let readme = existsSync(README) ? readFileSync(README, "utf8") : "";
  const re = /<!-- bench:start -->[\s\S]*?<!-- bench:end -->/;
  if (re.test(readme)) readme = readme.replace(re, block);
  else readme = `${readme.trimEnd()}\n\n## Performance\n\n${block}\n`;
  writeFileSync(README, readme);
}

async function main() {
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const only = process.env.BENCH_ONLY?.split(",").map((s) => s.trim()).filter(Boolean);
  const ctx: BenchContext = { reps, log: (msg) => process.stderr.write(`${msg}\n`) };
  const previous: BenchFile | undefined = existsSync(LATEST) ? JSON.parse(readFileSync(LATEST, "utf8")) : undefined;
  const modules: Record<string, ModuleRun> = { ...(previous?.modules ?? {}) };

  for (const name of MODULES) {
    if (only && !only.includes(name)) continue;
    const file = path.join(BENCH, `${name}.ts`);
    if (!existsSync(file)) { ctx.log(`bench: ${name}: bench/${name}.ts not there yet, skipped`); continue; }
    ctx.log(`bench: ${name}`);
    const t0 = performance.now();
    const commit = head();
    const loadAvg = Math.round(os.loadavg()[0] * 10) / 10; // other work on the machine skews figures
    try {
      const mod = (await import(pathToFileURL(file).href)) as { run?: (c: BenchContext) => Promise<BenchResult[]>; default?: (c: BenchContext) => Promise<BenchResult[]> };
      const fn = mod.run ?? mod.default;
      if (typeof fn !== "function") throw new Error(`bench/${name}.ts exports neither run() nor a default function`);
      const results = await fn(ctx);
      modules[name] = { date: new Date().toISOString(), commit, loadAvg, reps, durationS: Math.round((performance.now() - t0) / 1000), results, server: SERVER };
    } catch (e) {
      ctx.log(`bench: ${name} failed: ${(e as Error).stack ?? e}`);
      modules[name] = { date: new Date().toISOString(), commit, loadAvg, reps, durationS: Math.round((performance.now() - t0) / 1000), results: modules[name]?.results ?? [], error: String((e as Error).message ?? e) };
    }
  }

  const out: BenchFile = {
    date: new Date().toISOString(),
    commit: head(),
    machine: machine(),
    modules,
    results: MODULES.flatMap((n) => modules[n]?.results ?? []),
  };
  process.stdout.write(`${table(out)}\n`);
  if (process.env.BENCH_DRY) return;
  mkdirSync(path.dirname(LATEST), { recursive: true });
  writeFileSync(LATEST, `${JSON.stringify(out, null, 2)}\n`);
  writeReadme(out);
  ctx.log(`bench: wrote ${path.relative(ROOT, LATEST)} and the README Performance section`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
}
