// Build benchmarks: kiln (scripts/local-server.mjs, fresh local state per repetition, plus a local runner for RUN
// steps when one works here) against `buildah bud --layers` (vfs storage in a fresh temp root per
// repetition, --isolation oci --runtime runc --network none, isolated registries.conf/policy/containers.conf),
// alternating which goes first per repetition.
//   - first build and fully cached rebuild of three Dockerfiles: COPY-only (~20 MB, 500 files), FROM a
//     busybox base + RUN + COPY, a 10-step Dockerfile
//   - COPY of a 256 MiB context into an image, against `tar -c ctx | gzip -6 | sha256sum`
//   - COPY of 100,000 one-byte files (the same pipeline as its peer), and how long GET /healthz takes
//     meanwhile (a build must not stall the server's other requests)
// kiln's time is the client's wall time from the start of POST /v1/builds (context streamed by `tar -c`
// as it is read from disk) until the build's SSE `done` event; buildah's is the wall time of the process.
//   BENCH_BUILD_REPS=3        repetitions (default min(BENCH_REPS, 3))
//   BENCH_BUILD_BUDGET_S=540  no 3rd+ repetition of the 256 MiB COPY starts when it would end past this
//                             (the module takes ~6 min on an idle 2-core machine, ~12 under load)
//   BENCH_BUILD_PARTS=copy-only,busybox-run,10-step,big,many-files   run only these figures
//   KILN_BENCH_VERBOSE=1      show the local server's and the runner's output
//   BENCH_BUILD_PROFILE=1     one extra 256 MiB build under the Worker's V8 CPU profiler (needs
//                             NODE_OPTIONS=--experimental-websocket on Node 20); summary in the figure's note.
//                             Caveat: under workerd the sampler often charges time the isolate spends waiting
//                             on R2/D1 (other isolates of the same process) to the last JS frame, so trust
//                             the process CPU figures and the step/phase times more than self times.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { ADMIN_TOKEN, ROOT, freePort, startKilnAt, stopProcessGroup, type KilnServer } from "../test/e2e/server";
import { snapshotRoot } from "../test/e2e/helpers/snapshot";
import { containerSandbox, type ContainerSandbox } from "../test/e2e/helpers/containers";
import type { BuildResult } from "../test/e2e/helpers/builds";
import { buildFixtures, type BuildFixtures } from "./fixtures/builds";
import { result, stats, type BenchContext, type BenchResult } from "./types";

const BUILD_TIMEOUT_MS = 300_000;
/** How often the SSE stream ended before `done` (then GET polling every 100 ms measured the end). */
let sseCut = 0;
/** How often the 250 ms GET poll saw the end before the SSE stream did. */
let pollWon = 0;
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

// ---------------------------------------------------------------------------------------------------
// CPU accounting from /proc

interface ProcTimes { ppid: number; comm: string; self: number; children: number }

function procTable(): Map<number, ProcTimes> {
  const out = new Map<number, ProcTimes>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // fields after comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14)
      out.set(Number(name), { ppid: Number(f[1]), comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), self: (Number(f[11]) + Number(f[12])) / CLK_TCK, children: (Number(f[13]) + Number(f[14])) / CLK_TCK });
    } catch { /* exited */ }
  }
  return out;
}

/** CPU seconds (user+sys) of a live process tree, including children it has reaped, by command name. */
function treeCpuBy(rootPid: number | undefined): Map<string, number> {
  const by = new Map<string, number>();
  if (!rootPid) return by;
  const table = procTable();
  for (const [pid, t] of table) {
    for (let p: number | undefined = pid, hops = 0; p && hops < 64; p = table.get(p)?.ppid, hops++) {
      if (p === rootPid) { by.set(t.comm, (by.get(t.comm) ?? 0) + t.self + t.children); break; }
    }
  }
  return by;
}

function treeCpu(rootPid: number | undefined): number {
  let total = 0;
  for (const v of treeCpuBy(rootPid).values()) total += v;
  return total;
}

const cpuDelta = (a: Map<string, number>, b: Map<string, number>) => {
  const d = new Map<string, number>();
  for (const [k, v] of b) d.set(k, v - (a.get(k) ?? 0));
  return d;
};

/** CPU seconds of this process's reaped children (buildah, tar, gzip, sh…). */
function reapedChildrenCpu(): number {
  return procTable().get(process.pid)?.children ?? 0;
}

// ---------------------------------------------------------------------------------------------------
// kiln

interface KilnRun {
  /** Wall seconds: POST start → SSE `done`. */
  total: number;
  /** Wall seconds: POST start → 202 (context streamed, ingested and stored). */
  upload: number;
  build: BuildResult;
  /** CPU seconds of the kiln server tree (the local server's node + workerd) during the build. */
  serverCpu: number;
  /** Server CPU seconds until the 202 (upload + ingest). */
  uploadCpu: number;
  /** The same by process name (workerd, node = the local server's Miniflare). */
  serverCpuBy: Map<string, number>;
  /** CPU seconds of the runner tree during the build (0 without a runner). */
  runnerCpu: number;
}

interface KilnInstance { server: KilnServer; runner?: ChildProcess; runnerDir?: string }

async function startRunner(server: KilnServer): Promise<{ child: ChildProcess; dir: string }> {
  const res = await fetch(`${server.url}/v1/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "bench-runner", scopes: ["runner"] }),
  });
  if (res.status !== 201) throw new Error(`POST /v1/tokens: ${res.status} ${await res.text()}`);
  const { token } = (await res.json()) as { token: string };
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-runner-"));
  const child = spawn(process.execPath, ["--import", "tsx", path.join(ROOT, "src/runner/main.ts"), "--server", server.url, "--token", token, "--work-dir", dir], {
    cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], detached: true,
  });
  let out = "";
  child.stdout!.on("data", (d) => { out += d; if (process.env.KILN_BENCH_VERBOSE) process.stderr.write(d); });
  child.stderr!.on("data", (d) => { out += d; if (process.env.KILN_BENCH_VERBOSE) process.stderr.write(d); });
  const deadline = Date.now() + 30_000;
  while (!/serving/.test(out)) {
    if (child.exitCode !== null) throw new Error(`runner exited: ${out.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`runner did not start: ${out.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, dir };
}

async function stopRunner(child: ChildProcess | undefined, dir: string | undefined): Promise<void> {
  if (child) await stopProcessGroup(child);
  if (!dir) return;
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n").reverse()) {
    const m = line.split(" ")[4];
    if (m?.startsWith(dir)) spawnSync("umount", ["-l", m]);
  }
  rmSync(dir, { recursive: true, force: true });
}

/**
 * kiln's local server (scripts/local-server.mjs) from a snapshot of HEAD taken once: edits to the work
 * tree during the bench change nothing that is measured. Each start bundles the snapshot anew.
 */
let snapshot: ReturnType<typeof snapshotRoot> | undefined;

/** startKiln() of test/e2e/server.ts, on the snapshot, with an inspector port for CPU profiles. */
async function startKilnSnapshot(): Promise<KilnServer> {
  if (!snapshot) {
    const snap = snapshotRoot();
    snapshot = snap;
    process.once("exit", () => snap.remove());
  }
  const inspectorPort = await freePort();
  const server = await startKilnAt(snapshot.root, { inspectorPort, logFile: process.env.KILN_BENCH_VERBOSE ? "/dev/stderr" : undefined });
  inspectorPorts.set(server.url, inspectorPort);
  return server;
}
/** Server URL → its workerd inspector port (for CPU profiles). */
export const inspectorPorts = new Map<string, number>();

export async function startKilnInstance(withRunner: boolean): Promise<KilnInstance> {
  const server = await startKilnSnapshot();
  if (!withRunner) return { server };
  try {
    const r = await startRunner(server);
    return { server, runner: r.child, runnerDir: r.dir };
  } catch (e) {
    await server.stop(true);
    throw e;
  }
}

export async function stopKilnInstance(k: KilnInstance): Promise<void> {
  await stopRunner(k.runner, k.runnerDir);
  await k.server.stop(true);
}

/** Reads the build's SSE stream until `done`; the final view it carries, or null when the stream is cut. */
async function waitDone(url: string, id: string, signal: AbortSignal): Promise<BuildResult | null> {
  const res = await fetch(`${url}/v1/builds/${id}/events`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal });
  if (!res.ok || !res.body) throw new Error(`GET events: ${res.status}`);
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let sep: number;
    while ((sep = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, sep);
      buf = buf.slice(sep + 2);
      if (!/^event: done$/m.test(frame)) continue;
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      return JSON.parse(data) as BuildResult;
    }
  }
  return null;
}

/** Polls GET /v1/builds/:id every `everyMs` until the build ends. */
async function pollDone(url: string, id: string, signal: AbortSignal, everyMs: number): Promise<BuildResult> {
  const deadline = Date.now() + BUILD_TIMEOUT_MS;
  while (!signal.aborted) {
    await new Promise((r) => setTimeout(r, everyMs));
    const res = await fetch(`${url}/v1/builds/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal }).catch(() => undefined);
    if (res?.ok) {
      const b = (await res.json()) as BuildResult;
      if (["succeeded", "failed", "cancelled"].includes(b.status)) return b;
    }
    if (Date.now() > deadline) throw new Error(`build ${id} did not finish in ${BUILD_TIMEOUT_MS / 1000} s`);
  }
  return new Promise(() => {});
}

/** Streams `tar -c dir` into POST /v1/builds and waits for the build to end. Throws unless it succeeded. */
export async function kilnBuild(k: KilnInstance, dir: string, query: Record<string, string>): Promise<KilnRun> {
  const url = k.server.url;
  const cpu0 = treeCpuBy(k.server.process.pid);
  const rcpu0 = treeCpu(k.runner?.pid);
  const t0 = performance.now();
  const tar = spawn("tar", ["-C", dir, "--sort=name", "-cf", "-", "."], { stdio: ["ignore", "pipe", "pipe"] });
  let tarErr = "";
  tar.stderr!.on("data", (d) => { tarErr += d; });
  const res = await fetch(`${url}/v1/builds?${new URLSearchParams(query)}`, {
    method: "POST",
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/x-tar" },
    body: Readable.toWeb(tar.stdout!) as unknown as ReadableStream<Uint8Array>,
    duplex: "half",
  } as RequestInit);
  const text = await res.text();
  let body: { id?: string; error?: { message: string } } = {};
  try { body = JSON.parse(text); } catch { /* reported below */ }
  const upload = (performance.now() - t0) / 1000;
  const uploadCpu = treeCpu(k.server.process.pid) - [...cpu0.values()].reduce((a, b) => a + b, 0);
  if (res.status !== 202 || !body.id) throw new Error(`POST /v1/builds: ${res.status} ${text.slice(0, 500)} ${tarErr}`);
  const ac = new AbortController();
  let build: BuildResult;
  try {
    // SSE gives the exact end; a slow poll runs next to it, and a fast one takes over if the stream is cut.
    const sse = waitDone(url, body.id, ac.signal).catch(() => null).then((b) => {
      if (!b && !ac.signal.aborted) sseCut++;
      return b ?? pollDone(url, body.id!, ac.signal, 100);
    });
    const poll = pollDone(url, body.id, ac.signal, 250).then((b) => { if (!ac.signal.aborted) pollWon++; return b; });
    build = await Promise.race([sse, poll]);
  } finally {
    ac.abort();
  }
  const total = (performance.now() - t0) / 1000;
  const serverCpuBy = cpuDelta(cpu0, treeCpuBy(k.server.process.pid));
  const serverCpu = [...serverCpuBy.values()].reduce((a, b) => a + b, 0);
  const runnerCpu = k.runner ? treeCpu(k.runner.pid) - rcpu0 : 0;
  if (build.status !== "succeeded") {
    throw new Error(`kiln build ${body.id} ${build.status}: ${JSON.stringify(build.error ?? build.steps?.filter((s) => s.status === "failed"))}`);
  }
  return { total, upload, uploadCpu, build, serverCpu, serverCpuBy, runnerCpu };
}

// ---------------------------------------------------------------------------------------------------
// CPU profile of the Worker isolate (opt-in: BENCH_BUILD_PROFILE=1 with NODE_OPTIONS=--experimental-websocket)

interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

/** Runs `fn` with the V8 sampling profiler on kiln's Worker isolate (through Miniflare's inspector proxy). */
async function profiled<T>(server: KilnServer, fn: () => Promise<T>): Promise<{ value: T; profile: CpuProfile }> {
  const WS = (globalThis as { WebSocket?: new (url: string, init?: unknown) => WebSocket }).WebSocket;
  if (!WS) throw new Error("no WebSocket in this Node: run with NODE_OPTIONS=--experimental-websocket");
  const port = inspectorPorts.get(server.url);
  const list = (await (await fetch(`http://127.0.0.1:${port}/json`)).json()) as Array<{ webSocketDebuggerUrl: string }>;
  // The inspector proxy wants an allowed Origin.
  const ws = new WS(list[0].webSocketDebuggerUrl, { headers: { origin: "http://127.0.0.1" } });
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  let seq = 0;
  const pending = new Map<number, (m: { result?: { profile?: CpuProfile } }) => void>();
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data)) as { id?: number; result?: { profile?: CpuProfile } };
    if (m.id && pending.has(m.id)) { pending.get(m.id)!(m); pending.delete(m.id); }
  };
  const send = (method: string, params = {}) => new Promise<{ result?: { profile?: CpuProfile } }>((resolve) => {
    const id = ++seq;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });
  try {
    await send("Profiler.enable");
    await send("Profiler.setSamplingInterval", { interval: 1000 });
    await send("Profiler.start");
    const value = await fn();
    const stop = await send("Profiler.stop");
    return { value, profile: stop.result!.profile! };
  } finally {
    ws.close();
  }
}

/** Self and inclusive time per function of a CPU profile, as "12.3 s name (line)" lists. */
function summarizeProfile(p: CpuProfile, top = 8): { self: string; total: string } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (id: number) => {
    const f = byId.get(id)!.callFrame;
    return f.functionName ? f.functionName : f.url ? `(anonymous ${f.url.split("/").pop()}:${f.lineNumber})` : "(native)";
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (p.timeDeltas[i] ?? 0) / 1e6;
    self.set(name(p.samples[i]), (self.get(name(p.samples[i])) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = p.samples[i]; id !== undefined; id = parent.get(id)) {
      const k = name(id);
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + dt);
    }
  }
  const list = (m: Map<string, number>) => [...m.entries()].filter(([k]) => k !== "(root)").sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ");
  return { self: list(self), total: list(total) };
}

// ---------------------------------------------------------------------------------------------------
// buildah and the pipeline peer

interface PeerRun { total: number; cpu: number }

function buildahEnv(sb: ContainerSandbox): NodeJS.ProcessEnv {
  return { ...sb.env, BUILDAH_ISOLATION: "oci" };
}

async function timedProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = BUILD_TIMEOUT_MS): Promise<PeerRun> {
  const cpu0 = reapedChildrenCpu();
  const t0 = performance.now();
  const r = await new Promise<{ code: number; out: string }>((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout!.on("data", (d) => { out += d; });
    child.stderr!.on("data", (d) => { out += d; });
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("close", (code) => { clearTimeout(timer); resolve({ code: code ?? 1, out }); });
  });
  const total = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.out.slice(-3000)}`);
  return { total, cpu: reapedChildrenCpu() - cpu0 };
}

function buildah(sb: ContainerSandbox, root: string, dir: string, dockerfile: string, tag: string): Promise<PeerRun> {
  return timedProcess("buildah", [
    "--root", path.join(root, "root"), "--runroot", path.join(root, "runroot"), "--storage-driver", "vfs",
    "--registries-conf", sb.env.CONTAINERS_REGISTRIES_CONF!,
    "bud", "--signature-policy", sb.policy, "--layers", "--isolation", "oci", "--runtime", "runc", "--network", "none",
    "-t", tag, "-f", path.join(dir, dockerfile), dir,
  ], buildahEnv(sb));
}

function removeBuildahRoot(sb: ContainerSandbox, root: string): void {
  spawnSync("buildah", ["--root", path.join(root, "root"), "--runroot", path.join(root, "runroot"), "--storage-driver", "vfs", "rm", "--all"], { env: buildahEnv(sb) });
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n").reverse()) {
    const m = line.split(" ")[4];
    if (m?.startsWith(root)) spawnSync("umount", ["-l", m]);
  }
  rmSync(root, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------------
// Probes

/** Why kiln cannot run RUN steps here (null when a probe build with a RUN step succeeds). */
async function probeRun(fx: BuildFixtures, log: (m: string) => void): Promise<string | null> {
  if (process.getuid?.() !== 0) return "the local runner needs root";
  if (spawnSync("runc", ["--version"]).status !== 0) return "runc is not installed";
  let k: KilnInstance | undefined;
  try {
    k = await startKilnInstance(true);
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-probe-"));
    const { writeFileSync, copyFileSync } = await import("node:fs");
    copyFileSync(path.join(fx.busyboxRun, "busybox"), path.join(dir, "busybox"));
    writeFileSync(path.join(dir, "Dockerfile"), 'FROM scratch\nLABEL probe=1\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","true"]\n');
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 60_000);
    try {
      await Promise.race([
        kilnBuild(k, dir, { tag: "bench/probe:latest" }),
        new Promise((_, reject) => ac.signal.addEventListener("abort", () => reject(new Error("the RUN probe did not finish in 60 s")))),
      ]);
    } finally {
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
    }
    return null;
  } catch (e) {
    const msg = String((e as Error).message ?? e).replace(/\s+/g, " ").slice(0, 300);
    log(`bench builds: RUN probe failed: ${msg}`);
    return msg;
  } finally {
    if (k) await stopKilnInstance(k);
  }
}

// ---------------------------------------------------------------------------------------------------
// The bench

interface Scenario {
  key: string;
  title: string;
  dir: string;
  dockerfile: string;
  needsRun: boolean;
}

interface Samples {
  kiln: KilnRun[];
  peer: PeerRun[];
}

const sec = (x: number) => `${x.toFixed(2)} s`;
const med = (xs: number[]) => stats(xs).median;

/** Where kiln's time went, from the median sample's parts. */
function kilnProfile(runs: KilnRun[]): string {
  if (!runs.length) return "";
  const upload = med(runs.map((r) => r.upload));
  const after = med(runs.map((r) => r.total - r.upload));
  const stepTotals = new Map<string, number[]>();
  for (const r of runs) {
    for (const s of r.build.steps ?? []) {
      const k = `${s.index} ${s.instruction.length > 40 ? `${s.instruction.slice(0, 40)}…` : s.instruction}`;
      (stepTotals.get(k) ?? stepTotals.set(k, []).get(k)!).push(s.durationMs ?? 0);
    }
  }
  const steps = [...stepTotals.entries()].map(([k, v]) => ({ k, ms: med(v) })).sort((a, b) => b.ms - a.ms);
  const stepSum = steps.reduce((a, s) => a + s.ms, 0);
  const statuses = runs[0].build.steps?.map((s) => s.status).join("/") ?? "";
  const parts = [
    `kiln: POST→202 (upload+ingest) ${sec(upload)}, 202→done ${sec(after)} (steps' durationMs sum ${Math.round(stepSum)} ms, so ${sec(Math.max(0, after - stepSum / 1000))} between steps: scheduling, D1, manifest push; slowest ${steps.slice(0, 2).map((s) => `[${s.k}] ${Math.round(s.ms)} ms`).join(", ")})`,
    `kiln server CPU ${sec(med(runs.map((r) => r.serverCpu)))} (${sec(med(runs.map((r) => r.uploadCpu)))} until the 202; ${["workerd", "node"].map((c) => `${c === "node" ? "miniflare node" : c} ${sec(med(runs.map((r) => r.serverCpuBy.get(c) ?? 0)))}`).join(", ")})`,
  ];
  const rc = med(runs.map((r) => r.runnerCpu));
  if (rc > 0) parts.push(`runner CPU ${sec(rc)}`);
  parts.push(`steps ${statuses}`);
  return parts.join("; ");
}

function peerProfile(name: string, runs: PeerRun[]): string {
  return runs.length ? `${name} CPU ${sec(med(runs.map((r) => r.cpu)))}` : "";
}

/** Runs `fn` while GET /healthz is asked every 250 ms (one at a time), recording each answer's latency in ms. */
async function whileProbing<T>(url: string, latencies: number[], fn: () => Promise<T>): Promise<T> {
  let done = false;
  const probe = (async () => {
    while (!done) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(60_000) });
        await res.text();
        latencies.push(performance.now() - t0);
      } catch {
        latencies.push(performance.now() - t0); // timed out or refused: counted as what it cost
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  try {
    return await fn();
  } finally {
    done = true;
    await probe;
  }
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const reps = Number(process.env.BENCH_BUILD_REPS ?? Math.min(ctx.reps, 3));
  const budgetS = Number(process.env.BENCH_BUILD_BUDGET_S ?? 540);
  const parts = process.env.BENCH_BUILD_PARTS?.split(",").map((p) => p.trim()).filter(Boolean);
  const want = (key: string) => !parts || parts.includes(key);
  const missing = ["buildah", "runc", "tar", "gzip", "sha256sum"].filter((c) => spawnSync("sh", ["-c", `command -v ${c}`]).status !== 0);
  const t0 = performance.now();
  const fx = buildFixtures(ctx.log);
  // Page cache: read every context once so neither side pays the first disk read.
  for (const d of [fx.copyOnly, fx.busyboxRun, fx.tenStep, fx.big, fx.manyFiles]) spawnSync("sh", ["-c", `tar -C '${d}' -cf - . > /dev/null`]);

  const noRun = want("busybox-run") || want("10-step") ? await probeRun(fx, ctx.log) : "not probed";
  ctx.log(`bench builds: RUN steps ${noRun ? `unavailable (${noRun})` : "work with the local runner"}; ${reps} repetitions`);

  const scenarios: Scenario[] = [
    { key: "copy-only", title: "COPY-only (FROM scratch, 3 COPY of ~20 MB / 500 files, ENV, LABEL, CMD)", dir: fx.copyOnly, dockerfile: "Dockerfile", needsRun: false },
    { key: "busybox-run", title: "FROM a busybox base (COPY busybox-static + RUN --install) + RUN writing 200 files and 2 MiB + COPY of ~5 MB", dir: fx.busyboxRun, dockerfile: "Dockerfile", needsRun: true },
    {
      key: "10-step",
      title: noRun ? "10-step Dockerfile (FROM scratch + 10: ENV/COPY/WORKDIR/LABEL/CMD; no RUN: no runner)" : "10-step Dockerfile (FROM scratch + 10: ENV/COPY busybox/RUN --install/WORKDIR/COPY/LABEL/RUN/COPY/COPY/CMD)",
      dir: fx.tenStep, dockerfile: noRun ? "Dockerfile.norun" : "Dockerfile", needsRun: false,
    },
  ];
  const first = new Map<string, Samples>(scenarios.map((s) => [s.key, { kiln: [], peer: [] }]));
  const cached = new Map<string, Samples>(scenarios.map((s) => [s.key, { kiln: [], peer: [] }]));
  const big: Samples = { kiln: [], peer: [] };
  const many: Samples = { kiln: [], peer: [] };
  /** GET /healthz latencies (ms) while the 100,000-file context was uploaded and built. */
  const healthMs: number[] = [];
  const errors = new Map<string, string>();
  const fail = (key: string, side: string, e: unknown) => {
    const msg = `${side}: ${String((e as Error).message ?? e).replace(/\s+/g, " ").slice(0, 400)}`;
    ctx.log(`bench builds: ${key} ${msg}`);
    if (!errors.has(key)) errors.set(key, msg);
  };

  const sb = containerSandbox();
  const runKiln = async (rep: number, phase: "scenarios" | "big" | "many") => {
    let k: KilnInstance | undefined;
    try {
      k = await startKilnInstance(!noRun && phase === "scenarios");
      if (phase === "scenarios") for (const s of scenarios) {
        if ((s.needsRun && noRun) || !want(s.key)) continue;
        const q = { tag: `bench/${s.key}:r${rep}`, dockerfile: s.dockerfile };
        try {
          const a = await kilnBuild(k, s.dir, q);
          first.get(s.key)!.kiln.push(a);
          const b = await kilnBuild(k, s.dir, q);
          if (b.build.steps?.some((x) => x.status !== "cached")) ctx.log(`bench builds: kiln ${s.key} rebuild not fully cached: ${b.build.steps.map((x) => x.status).join(",")}`);
          cached.get(s.key)!.kiln.push(b);
          ctx.log(`bench builds: rep ${rep} kiln ${s.key}: first ${sec(a.total)}, cached ${sec(b.total)}`);
        } catch (e) { fail(s.key, "kiln", e); }
      }
      if (phase === "many") try {
        const kk = k;
        const r = await whileProbing(kk.server.url, healthMs, () => kilnBuild(kk, fx.manyFiles, { tag: `bench/many:r${rep}` }));
        many.kiln.push(r);
        ctx.log(`bench builds: rep ${rep} kiln 100,000 one-byte files: ${sec(r.total)} (upload ${sec(r.upload)}); /healthz up to ${Math.round(Math.max(0, ...healthMs))} ms`);
      } catch (e) { fail("many-files", "kiln", e); }
      if (phase === "big") try {
        const r = await kilnBuild(k, fx.big, { tag: `bench/big:r${rep}` });
        big.kiln.push(r);
        ctx.log(`bench builds: rep ${rep} kiln 256 MiB COPY: ${sec(r.total)} (upload ${sec(r.upload)})`);
      } catch (e) { fail("big", "kiln", e); }
    } catch (e) {
      fail("server", "kiln", e);
    } finally {
      if (k) await stopKilnInstance(k);
    }
  };
  const runPeer = async (rep: number, phase: "scenarios" | "big" | "many") => {
    if (phase === "scenarios") {
      const root = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-buildah-"));
      try {
        for (const s of scenarios) {
        if (!want(s.key)) continue;
        try {
          const a = await buildah(sb, root, s.dir, s.dockerfile, `bench-${s.key}:r${rep}`);
          first.get(s.key)!.peer.push(a);
          const b = await buildah(sb, root, s.dir, s.dockerfile, `bench-${s.key}:r${rep}`);
          cached.get(s.key)!.peer.push(b);
          ctx.log(`bench builds: rep ${rep} buildah ${s.key}: first ${sec(a.total)}, cached ${sec(b.total)}`);
        } catch (e) { fail(s.key, "buildah", e); }
        }
      } finally {
        removeBuildahRoot(sb, root);
      }
    }
    if (phase === "many") try {
      const r = await timedProcess("bash", ["-c", `set -o pipefail; tar -C '${fx.manyFiles}' --sort=name -cf - . | gzip -6 | sha256sum > /dev/null`], process.env);
      many.peer.push(r);
      ctx.log(`bench builds: rep ${rep} 100,000 files tar|gzip -6|sha256sum: ${sec(r.total)}`);
    } catch (e) { fail("many-files", "pipeline", e); }
    if (phase === "big") try {
      const r = await timedProcess("bash", ["-c", `set -o pipefail; tar -C '${fx.big}' --sort=name -cf - . | gzip -6 | sha256sum > /dev/null`], process.env);
      big.peer.push(r);
      ctx.log(`bench builds: rep ${rep} tar|gzip -6|sha256sum: ${sec(r.total)}`);
    } catch (e) { fail("big", "pipeline", e); }
  };

  // Scenarios first (every repetition), then the 256 MiB COPY: twice, a third time when the budget allows.
  if (!missing.length) {
    if (scenarios.some((s) => want(s.key))) {
      for (let rep = 0; rep < reps; rep++) {
        if (rep % 2 === 0) { await runKiln(rep, "scenarios"); await runPeer(rep, "scenarios"); }
        else { await runPeer(rep, "scenarios"); await runKiln(rep, "scenarios"); }
      }
    }
    if (want("many-files")) {
      // two repetitions at most: the figure is about the order of magnitude (147 s before issue 16)
      for (let rep = 0; rep < Math.min(reps, 2); rep++) {
        if (rep % 2 === 0) { await runKiln(rep, "many"); await runPeer(rep, "many"); }
        else { await runPeer(rep, "many"); await runKiln(rep, "many"); }
      }
    }
    if (want("big")) {
      let last = 0;
      for (let rep = 0; rep < reps; rep++) {
        const elapsed = (performance.now() - t0) / 1000;
        if (rep >= 2 && elapsed + last > budgetS) {
          ctx.log(`bench builds: 256 MiB COPY: stopping after ${rep} repetition(s): another (~${Math.round(last)} s) would pass the ${budgetS} s budget (BENCH_BUILD_BUDGET_S)`);
          break;
        }
        const r0 = performance.now();
        if (rep % 2 === 0) { await runKiln(rep, "big"); await runPeer(rep, "big"); }
        else { await runPeer(rep, "big"); await runKiln(rep, "big"); }
        last = (performance.now() - r0) / 1000;
      }
    }
  }
  rmSync(sb.dir, { recursive: true, force: true });

  // Opt-in: one more kiln 256 MiB build (not counted) under the V8 CPU profiler of the Worker isolate.
  let profileNote = "";
  if (process.env.BENCH_BUILD_PROFILE && want("big") && !missing.length) {
    let k: KilnInstance | undefined;
    try {
      k = await startKilnInstance(false);
      const kk = k;
      const { value, profile } = await profiled(kk.server, () => kilnBuild(kk, fx.big, { tag: "bench/big:profile" }));
      const file = path.join(os.tmpdir(), "kiln-bench-copy-256MiB.cpuprofile");
      writeFileSync(file, JSON.stringify(profile));
      const sum = summarizeProfile(profile);
      profileNote = `CPU profile of the Worker isolate in an extra ${sec(value.total)} build (${file}): self ${sum.self}; inclusive ${sum.total}`;
      ctx.log(`bench builds: ${profileNote}`);
    } catch (e) {
      ctx.log(`bench builds: profile failed: ${(e as Error).message}`);
    } finally {
      if (k) await stopKilnInstance(k);
    }
  }

  const out: BenchResult[] = [];
  const timedWhat = "wall time: kiln = POST /v1/builds (context streamed from `tar -c`) → SSE `done` (upload, ingest, layers, image push); buildah = the `buildah bud` process";
  for (const s of scenarios) {
    if (!want(s.key)) continue;
    const skipped = s.needsRun && noRun ? `kiln skipped: RUN steps cannot run here (${noRun.slice(0, 160)}); buildah measured for reference` : "";
    const err = errors.get(s.key) ?? errors.get("server");
    for (const [phase, samples, what] of [
      ["first", first.get(s.key)!, `${s.title}: first build (kiln: new local server state dir${noRun ? "" : " and runner work dir"}, start not timed; buildah: fresh vfs root); ${timedWhat}`],
      ["cached", cached.get(s.key)!, `${s.title}: fully cached rebuild right after the first (same context); ${timedWhat}`],
    ] as const) {
      const note = [skipped, err ? `errors: ${err}` : "", kilnProfile(samples.kiln), peerProfile("buildah", samples.peer)].filter(Boolean).join("; ");
      out.push(result({
        name: `builds.${s.key}.${phase}`, what, unit: "s",
        kiln: samples.kiln.map((r) => r.total),
        peer: { name: "buildah bud --layers (vfs)", samples: samples.peer.map((r) => r.total) },
        note: note || undefined,
      }));
    }
  }
  if (want("big")) {
    const err = errors.get("big") ?? errors.get("server");
    const note = [err ? `errors: ${err}` : "", kilnProfile(big.kiln), peerProfile("pipeline", big.peer),
      profileNote, big.kiln.length ? `kiln ${(fx.bigBytes / 2 ** 20 / med(big.kiln.map((r) => r.total))).toFixed(1)} MiB/s, pipeline ${(fx.bigBytes / 2 ** 20 / med(big.peer.map((r) => r.total))).toFixed(1)} MiB/s` : ""].filter(Boolean).join("; ");
    out.push(result({
      name: "builds.copy-256MiB",
      what: "`COPY . /data/` of a 256 MiB context (192 MiB incompressible in 24 files + 64 MiB text in 2048 files) on a fresh state; wall time: kiln = POST (uncompressed tar streamed from `tar -c`) → SSE `done`; peer = `tar -c ctx | gzip -6 | sha256sum`",
      unit: "s",
      kiln: big.kiln.map((r) => r.total),
      peer: { name: "tar | gzip -6 | sha256sum", samples: big.peer.map((r) => r.total) },
      note: note || undefined,
    }));
  }
  if (want("many-files")) {
    const err = errors.get("many-files") ?? errors.get("server");
    const sorted = [...healthMs].sort((a, b) => a - b);
    const health = sorted.length ? `GET /healthz every 250 ms meanwhile: ${sorted.length} answered, median ${Math.round(sorted[sorted.length >> 1])} ms, max ${Math.round(sorted[sorted.length - 1])} ms` : "";
    out.push(result({
      name: "builds.copy-100k-files",
      what: "`COPY m /m/` of a context of 100,000 one-byte files (100 directories) on a fresh state; wall time: kiln = POST (uncompressed tar streamed from `tar -c`) → SSE `done`; peer = `tar -c ctx | gzip -6 | sha256sum` (target ≤ 10 s, other requests unaffected)",
      unit: "s",
      kiln: many.kiln.map((r) => r.total),
      peer: { name: "tar | gzip -6 | sha256sum", samples: many.peer.map((r) => r.total) },
      note: [err ? `errors: ${err}` : "", kilnProfile(many.kiln), health].filter(Boolean).join("; ") || undefined,
    }));
    out.push(result({
      name: "builds.copy-100k-files.healthz",
      what: "latency of GET /healthz (every 250 ms, one at a time) while the 100,000-file context is uploaded and built (the issue saw it time out)",
      unit: "ms",
      kiln: healthMs,
      note: health || undefined,
    }));
  }
  snapshot?.remove();
  snapshot = undefined;
  if (sseCut) ctx.log(`bench builds: the SSE stream ended before \`done\` ${sseCut} time(s); GET polling every 100 ms took over`);
  if (pollWon) ctx.log(`bench builds: a GET poll (every 250 ms) saw the end before the SSE \`done\` event arrived ${pollWon} time(s)`);
  if (missing.length) for (const r of out) r.note = `not run: missing ${missing.join(", ")}`;
  ctx.log(`bench builds: done in ${Math.round((performance.now() - t0) / 1000)} s`);
  return out;
}

export default run;
