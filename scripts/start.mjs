#!/usr/bin/env node
// `npm start`: kiln on http://127.0.0.1:8787 with persisted local state (R2, D1, Durable Objects),
// D1 migrations applied, and a local runner when runc and overlayfs are usable here.
//
// Environment: PORT (8787), KILN_STATE_DIR (.kiln-state), KILN_ADMIN_TOKEN (kiln-dev-token),
// KILN_NO_RUNNER=1 (no local runner), KILN_NO_TLS_GUARD=1 (the server on PORT directly),
// KILN_INSPECTOR_PORT (a V8 inspector for the Worker; none by default), KILN_RUNNER_DIR,
// KILN_START_TIMEOUT (seconds to wait for the server to answer; 90).
//
// The server is scripts/local-server.mjs: the Worker bundled once and run by Miniflare in one workerd
// (no wrangler dev: no reload proxy, watcher or inspector in the request path).
// Everything it starts (the server with its workerd, the local runner) runs in its own process
// group; any failure, Ctrl-C or SIGTERM stops those groups, so nothing is left running.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import net from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { startTlsGuard } from "./tls-guard.mjs";
import { pipeFiltered } from "./log-filter.mjs";
import { SERVER_NODE_FLAGS } from "./local-server.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const persist = path.resolve(process.env.KILN_STATE_DIR ?? path.join(root, ".kiln-state"));
const port = Number(process.env.PORT ?? "8787");
const host = "127.0.0.1";
const adminToken = process.env.KILN_ADMIN_TOKEN ?? "kiln-dev-token";
/** Worker settings `npm start` hands to the server when they are set in its environment. */
const WORKER_SETTINGS = ["KILN_HOSTS", "KILN_OUTBOUND_ALLOW", "KILN_SHARED_WORKER_CACHE", "KILN_WEBHOOK_MAX_BODY_BYTES", "KILN_MAX_CONTEXT_BYTES"];
const startTimeoutMs = Number(process.env.KILN_START_TIMEOUT ?? "90") * 1000;
const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" };
const localServer = path.join(root, "scripts", "local-server.mjs");

class StartError extends Error {}

/** Processes started here (each the leader of its own group) and the TLS guard. */
const started = { groups: [], guard: null };
let stopping = null;

/**
 * Stops every process group started here, the last started first (the runner, while the server can
 * still hear that it leaves; then the server): SIGTERM, then SIGKILL after `graceMs`.
 */
function stopAll(graceMs = 8000) {
  stopping ??= (async () => {
    for (const child of [...started.groups].reverse()) {
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once("exit", r));
      try { process.kill(-child.pid, "SIGTERM"); } catch { /* gone */ }
      await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))]);
      // The group may outlive its leader (workerd after its node): always finish it.
      try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ }
    }
    await started.guard?.close().catch(() => {});
  })();
  return stopping;
}

async function fail(message, code = 1) {
  process.stderr.write(`kiln: ${message}\n`);
  await stopAll();
  process.exit(code);
}

/** The pid and command line of the process listening on TCP `port` (Linux /proc), or null. */
function portHolder(portNumber) {
  const inodes = new Set();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text;
    try { text = readFileSync(file, "utf8"); } catch { continue; }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== "0A") continue; // 0A: LISTEN
      if (parseInt(f[1].split(":")[1], 16) === portNumber) inodes.add(f[9]);
    }
  }
  if (!inodes.size) return null;
  let pids;
  try { pids = readdirSync("/proc").filter((p) => /^\d+$/.test(p)); } catch { return null; }
  for (const pid of pids) {
    let fds;
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      let link;
      try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1])) {
        let command = "";
        try { command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" "); } catch { /* gone */ }
        if (command.length > 100) command = `${command.slice(0, 97)}...`;
        return { pid: Number(pid), command };
      }
    }
  }
  return null;
}

function describeHolder(portNumber) {
  const h = portHolder(portNumber);
  if (!h) return "something (its owner is not visible from here)";
  return h.command ? `pid ${h.pid} (${h.command})` : `pid ${h.pid}`;
}

/** Listens on `portNumber` to find out whether it is free; throws StartError naming its holder. */
async function checkPort(portNumber, what, hint) {
  const srv = net.createServer();
  try {
    await new Promise((resolve, reject) => { srv.once("error", reject); srv.listen(portNumber, host, resolve); });
  } catch (e) {
    if (e.code === "EADDRINUSE") throw new StartError(`${what} ${host}:${portNumber} is in use by ${describeHolder(portNumber)}; ${hint}`);
    if (e.code === "EACCES") throw new StartError(`${what} ${host}:${portNumber} needs privileges this user lacks; ${hint}`);
    throw new StartError(`${what} ${host}:${portNumber} cannot be opened: ${e.message}`);
  }
  await new Promise((r) => srv.close(r));
}

async function waitForServer(url, child) {
  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new StartError(`kiln's server exited (${child.exitCode ?? child.signalCode}) before it answered; its output is above`);
    }
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) return;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new StartError(`kiln did not answer at ${url} within ${startTimeoutMs / 1000} s (KILN_START_TIMEOUT); the server's output is above`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function main() {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new StartError(`PORT=${process.env.PORT} is not a TCP port`);
  const otherPort = `stop it, or start kiln on another port: PORT=${port === 8787 ? 8788 : port + 1} npm start`;
  // The server listens on an internal port behind a TLS guard on the public one (see tls-guard.mjs);
  // KILN_NO_TLS_GUARD=1 runs it on the public port directly.
  const guarded = !process.env.KILN_NO_TLS_GUARD;
  await checkPort(port, "port", otherPort);
  const inspectorPort = process.env.KILN_INSPECTOR_PORT;
  if (inspectorPort) await checkPort(Number(inspectorPort), "the inspector port (KILN_INSPECTOR_PORT)", "choose another one or unset it");
  // Behind the guard, the server binds any free port itself (port 0) and names it when ready.
  let workerPort = guarded ? 0 : port;
  if (guarded) {
    // Holding the public port from here on: nothing can take it while the server starts.
    try {
      started.guard = await startTlsGuard({ listenPort: port, targetPort: () => workerPort || undefined, host });
    } catch (e) {
      if (e.code === "EADDRINUSE") throw new StartError(`port ${host}:${port} is in use by ${describeHolder(port)}; ${otherPort}`);
      throw e;
    }
  }

  const args = [localServer, "--host", host, "--port", String(workerPort), "--persist-to", persist, "--migrate", "--var", `KILN_ADMIN_TOKEN:${adminToken}`];
  // The Worker's settings (README, "Settings") pass through from this environment.
  for (const name of WORKER_SETTINGS) if (process.env[name] !== undefined) args.push("--var", `${name}:${process.env[name]}`);
  if (inspectorPort) args.push("--inspector-port", inspectorPort);
  const server = spawn(process.execPath, [...SERVER_NODE_FLAGS, ...args], { cwd: root, env: { ...env, FORCE_COLOR: process.stdout.isTTY ? "1" : "0" }, stdio: ["ignore", "pipe", "pipe"], detached: true });
  // client disconnects are not errors: the log filter keeps them out of the server log
  const showDisconnects = process.env.KILN_LOG_DISCONNECTS === "1";
  server.stdout.on("data", (d) => {
    const m = /kiln-local: ready on http:\/\/[^:\s]+:(\d+)/.exec(String(d));
    if (m && guarded) workerPort = Number(m[1]);
  });
  pipeFiltered(server.stdout, process.stdout, { showDisconnects });
  pipeFiltered(server.stderr, process.stderr, { showDisconnects });
  started.groups.push(server);
  server.on("error", (e) => { void fail(`could not run kiln's server: ${e.message}`); });

  const url = `http://${host}:${port}`;
  await waitForServer(url, server);
  if (stopping) return;
  console.log(`kiln: ${url}  state: ${persist}`);
  console.log(`kiln: admin token: ${adminToken}`);

  let runner = null;
  if (!process.env.KILN_NO_RUNNER) {
    const { default: startLocalRunner } = await import("./local-runner.mjs");
    try {
      runner = await startLocalRunner({ root, server: url, adminToken, env, stateDir: persist });
    } catch (e) {
      throw new StartError(`the local runner could not start: ${e.message}`);
    }
    if (runner) {
      started.groups.push(runner);
      runner.on("exit", (code, signal) => {
        if (!stopping) console.log(`kiln: the local runner stopped (${code ?? signal}); RUN steps wait for another runner`);
      });
    }
  }
  if (stopping) return;
  server.on("exit", (code, signal) => {
    if (stopping) return;
    void fail(`kiln's server stopped (${code ?? signal}); kiln is down`, code || 1);
  });
}

const onSignal = (signal) => {
  if (stopping) return;
  process.stderr.write(`kiln: ${signal}: stopping\n`);
  stopAll().then(() => process.exit(signal === "SIGINT" ? 130 : 143));
};
process.on("SIGINT", () => onSignal("SIGINT"));
process.on("SIGTERM", () => onSignal("SIGTERM"));
process.on("SIGHUP", () => onSignal("SIGHUP"));

try {
  await main();
} catch (e) {
  await fail(e instanceof StartError ? e.message : `npm start failed: ${e.stack ?? e}`);
}
