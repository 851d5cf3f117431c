// Starts a real kiln server (scripts/local-server.mjs: the bundled Worker in Miniflare's workerd, local
// R2/D1/DO state in a temp dir, the layout `wrangler dev --persist-to` uses) on 127.0.0.1.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { SERVER_NODE_FLAGS } from "../../scripts/local-server.mjs";

export const ROOT = path.resolve(import.meta.dirname, "..", "..");
export const ADMIN_TOKEN = "kiln-e2e-admin";

export interface KilnServer {
  url: string;
  port: number;
  stateDir: string;
  process: ChildProcess;
  /** Stops the server; state stays in stateDir unless `wipe` is set. */
  stop(wipe?: boolean): Promise<void>;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

/**
 * Polls `url` until `ready(res)` (default: res.ok); throws with the process output if `child` exits
 * first or `timeoutMs` passes. `what` names the process in the errors.
 */
export async function waitForHttp(url: string, child: ChildProcess, getOutput: () => string, opts: {
  timeoutMs?: number; intervalMs?: number; what?: string; ready?: (res: Response) => boolean;
} = {}): Promise<void> {
  const { timeoutMs = 60_000, intervalMs = 250, what = "kiln", ready = (res) => res.ok } = opts;
  const name = what === "kiln" ? "kiln's local server" : what;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited: ${getOutput()}`);
    try { if (ready(await fetch(url))) return; } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`${what} did not start: ${getOutput()}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Stops a process spawned with `detached: true` and its whole group: SIGTERM, then SIGKILL after 5 s. */
export async function stopProcessGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  try { process.kill(-child.pid!, "SIGTERM"); } catch { /* gone */ }
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  try { process.kill(-child.pid!, "SIGKILL"); } catch { /* gone */ }
}

const wranglerEnv = () => ({ ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" });

/**
 * Runs scripts/local-server.mjs of `root` (this checkout by default) as its own process group: D1
 * migrations applied to `stateDir` (while the Worker is bundled), `vars` over wrangler.toml's [vars]; output kept for errors
 * (and written to `logFile` when given). `script`: another one-module Worker instead of kiln, with
 * kiln's R2 bucket (the bench's ceiling).
 */
export async function startKilnAt(root: string, opts: { stateDir?: string; port?: number; vars?: Record<string, string>; logFile?: string; script?: string; inspectorPort?: number } = {}): Promise<KilnServer> {
  const stateDir = opts.stateDir ?? mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-"));
  // Port 0: workerd binds a free port itself and names it (a port chosen here could be taken by
  // another server while the Worker is bundled, and the health check would then find that one).
  const vars = { KILN_ADMIN_TOKEN: ADMIN_TOKEN, ...opts.vars };
  const args = [path.join(root, "scripts", "local-server.mjs"), "--port", String(opts.port ?? 0), "--persist-to", stateDir, "--migrate"];
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  if (opts.script) args.push("--script", opts.script);
  if (opts.inspectorPort) args.push("--inspector-port", String(opts.inspectorPort));
  const child = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...args], { cwd: root, env: wranglerEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  const log = opts.logFile ? createWriteStream(opts.logFile) : undefined;
  const onData = (d: Buffer) => {
    log?.write(d);
    output += d;
    if (output.length > 1e6) output = output.slice(-1e5);
    if (process.env.KILN_E2E_VERBOSE) process.stderr.write(d);
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const ready = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kiln's local server did not start within 90 s: ${output}`)), 90_000);
    const check = () => {
      const m = /kiln-local: ready on (http:\/\/\S+)/.exec(output);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    };
    child.stdout!.on("data", check);
    child.once("exit", (code, signal) => { clearTimeout(timer); reject(new Error(`kiln's local server exited (${code ?? signal}): ${output}`)); });
  });
  const url = ready;
  const port = Number(new URL(url).port);
  await waitForHttp(`${url}/healthz`, child, () => output, { timeoutMs: 30_000 });
  return {
    url, port, stateDir, process: child,
    async stop(wipe = false) {
      await stopProcessGroup(child);
      log?.end();
      if (wipe) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** kiln of this checkout, with a deployed Worker's request body limit (100 MB) unless `vars` says otherwise. */
export async function startKiln(opts: { stateDir?: string; port?: number; vars?: Record<string, string> } = {}): Promise<KilnServer> {
  return await startKilnAt(ROOT, { ...opts, vars: { KILN_MAX_REQUEST_BYTES: String(100 * 1024 * 1024), ...opts.vars } });
}

/** Whether a command exists on PATH (e2e tests that need a real client skip loudly without it). */
export function have(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
}
