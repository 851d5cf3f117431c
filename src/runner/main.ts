// `kiln runner --server URL --token T [--work-dir D] [--concurrency N] [--allow-host-network]`
// Claims RUN jobs from kiln and runs them under runc. Needs root, runc and overlayfs.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { KilnClient } from "./client";
import { LayerStore } from "./layers";
import { mountsUnder, unmount } from "./rootfs";
import { cleanupContainers, RUNC_ROOT } from "./step";
import { executeClaimed } from "./worker";

export interface RunnerOptions {
  server: string;
  token: string;
  workDir: string;
  concurrency: number;
  allowHostNetwork: boolean;
  leaseSeconds?: number;
  runnerId?: string;
  platforms: string[];
  /** Stop after this many jobs (tests). */
  maxJobs?: number;
  /** Upper bound of the layer cache in bytes (least recently used layers go first). */
  cacheMaxBytes: number;
}

const USAGE = "usage: kiln runner --server URL --token TOKEN [--work-dir DIR] [--concurrency N] [--allow-host-network] [--cache-max-gb G] [--lease-seconds S] [--runner-id ID]";

export function parseRunnerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): RunnerOptions {
  const o: Partial<RunnerOptions> & { platforms: string[] } = { concurrency: 1, allowHostNetwork: false, platforms: [], cacheMaxBytes: 20 * 2 ** 30 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.startsWith("--") && a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case "--server": o.server = value(); break;
      case "--token": o.token = value(); break;
      case "--work-dir": o.workDir = value(); break;
      case "--concurrency": o.concurrency = Number(value()); break;
      case "--allow-host-network": o.allowHostNetwork = true; break;
      case "--lease-seconds": o.leaseSeconds = Number(value()); break;
      case "--runner-id": o.runnerId = value(); break;
      case "--platform": o.platforms.push(value()); break;
      case "--max-jobs": o.maxJobs = Number(value()); break;
      case "--cache-max-gb": {
        const gb = Number(value());
        if (!Number.isFinite(gb) || gb < 0) throw new Error("--cache-max-gb must be a non-negative number");
        o.cacheMaxBytes = Math.round(gb * 2 ** 30);
        break;
      }
      case "-h": case "--help": throw new Error(USAGE);
      default: throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  }
  o.server ??= env.KILN_SERVER;
  o.token ??= env.KILN_RUNNER_TOKEN ?? env.KILN_TOKEN;
  if (!o.server) throw new Error(`--server is required\n${USAGE}`);
  if (!o.token) throw new Error(`--token is required (or KILN_RUNNER_TOKEN)\n${USAGE}`);
  if (!Number.isInteger(o.concurrency) || o.concurrency! < 1) throw new Error("--concurrency must be a positive integer");
  o.workDir ??= process.getuid?.() === 0 ? "/var/lib/kiln-runner" : path.join(os.homedir(), ".cache", "kiln-runner");
  if (!o.platforms.length) o.platforms.push(`linux/${({ x64: "amd64", arm64: "arm64", arm: "arm", s390x: "s390x", ppc64: "ppc64le" } as Record<string, string>)[os.arch()] ?? os.arch()}`);
  return o as RunnerOptions;
}

async function runnerIdFor(workDir: string): Promise<string> {
  const file = path.join(workDir, "runner-id");
  try {
    return (await fs.readFile(file, "utf8")).trim();
  } catch {
    const id = `${os.hostname().replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 40)}-${randomBytes(4).toString("hex")}`;
    await fs.writeFile(file, id + "\n");
    return id;
  }
}

/** Removes what a killed runner left in its work dir: containers, mounts, job directories, unscoped cache mounts. */
export async function recoverWorkDir(workDir: string): Promise<void> {
  await cleanupContainers(RUNC_ROOT(workDir));
  for (const m of await mountsUnder(path.join(workDir, "jobs"))) await unmount(m).catch(() => {});
  await fs.rm(path.join(workDir, "jobs"), { recursive: true, force: true });
  // cache mounts of runners before cache scopes (`cache/<32 hex of the id>`) were shared by every
  // namespace: nothing reads them any more (see cacheMountDir)
  const legacy = path.join(workDir, "cache");
  const names = await fs.readdir(legacy).catch(() => null);
  if (names && names.every((n) => /^[0-9a-f]{32}$/.test(n))) await fs.rm(legacy, { recursive: true, force: true });
  const layers = path.join(workDir, "layers");
  for (const name of await fs.readdir(layers).catch(() => [] as string[])) {
    if (name.startsWith(".tmp-")) await fs.rm(path.join(layers, name), { recursive: true, force: true });
  }
}

export async function startRunner(o: RunnerOptions, signal?: AbortSignal): Promise<void> {
  const log = (msg: string) => console.log(`[kiln runner] ${msg}`);
  await fs.mkdir(o.workDir, { recursive: true, mode: 0o700 });
  await recoverWorkDir(o.workDir);
  const runnerId = o.runnerId ?? (await runnerIdFor(o.workDir));
  const client = new KilnClient(o.server, o.token);
  const store = new LayerStore(o.workDir);
  log(`${runnerId} serving ${o.server} (${o.platforms.join(", ")}; work dir ${o.workDir}; concurrency ${o.concurrency})`);
  let jobs = 0;
  const inUse = new Map<string, number>();
  const loop = async (slot: number) => {
    let backoff = 500;
    while (!signal?.aborted && (o.maxJobs === undefined || jobs < o.maxJobs)) {
      let claimed;
      try {
        claimed = await client.claim({ runnerId, platforms: o.platforms, allowHostNetwork: o.allowHostNetwork, leaseSeconds: o.leaseSeconds, waitSeconds: 20 }, signal);
        backoff = 500;
      } catch (e) {
        if (signal?.aborted) return;
        log(`claim failed (slot ${slot}): ${(e as Error).message}; retrying in ${backoff} ms`);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 10_000);
        continue;
      }
      if (!claimed) continue;
      jobs++;
      const { job } = claimed;
      log(`job ${job.jobId}: build ${job.buildId} step ${job.stepIndex}: ${JSON.stringify(job.args)}`);
      const started = Date.now();
      const used = [...job.layers, ...job.mounts.flatMap((m) => m.fromLayers ?? [])].map((l) => l.diffId);
      for (const d of used) inUse.set(d, (inUse.get(d) ?? 0) + 1);
      let result;
      try {
        result = await executeClaimed(claimed, { client, store, workDir: o.workDir, allowHostNetwork: o.allowHostNetwork, leaseSeconds: o.leaseSeconds, log });
      } finally {
        for (const d of used) { const n = (inUse.get(d) ?? 1) - 1; if (n > 0) inUse.set(d, n); else inUse.delete(d); }
      }
      // The step's own layer (its warm rootfs) counts as just used; the oldest layers go when over budget.
      store.gc(o.cacheMaxBytes, new Set(inUse.keys())).then((gone) => {
        if (gone.length) log(`layer cache: removed ${gone.length} least recently used layer(s)`);
      }).catch((e) => log(`layer cache gc failed: ${(e as Error).message}`));
      const took = ((Date.now() - started) / 1000).toFixed(1);
      if (!result) log(`job ${job.jobId}: abandoned after ${took}s`);
      else if (result.ok) log(`job ${job.jobId}: done in ${took}s${result.layer ? `, layer ${result.layer.digest}` : ", no changes"}`);
      else log(`job ${job.jobId}: failed in ${took}s (exit ${result.exitCode})`);
    }
  };
  const leave = () => {
    log("stopping: no new jobs; running ones finish first");
    client.leave(runnerId).catch((e) => log(`could not tell the server: ${(e as Error).message}`));
  };
  signal?.addEventListener("abort", leave, { once: true });
  await Promise.all(Array.from({ length: o.concurrency }, (_, i) => loop(i)));
  signal?.removeEventListener("abort", leave);
}

/** Entry point of `kiln runner …`; resolves to the exit code. */
export async function runnerMain(argv: string[]): Promise<number> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let opts: RunnerOptions;
  try {
    opts = parseRunnerArgs(argv);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  await startRunner(opts, ac.signal);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  runnerMain(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
    console.error(`[kiln runner] ${(e as Error).stack ?? e}`);
    process.exit(1);
  });
}
