#!/usr/bin/env node
// kiln's local server: the Worker bundled once, run by Miniflare's own API in one workerd on 127.0.0.1.
//
// `wrangler dev` puts a reload proxy (a second Worker that buffers requests across reloads), an esbuild
// watcher and an inspector in front of the Worker; under large uploads its proxy held the next request
// of a kept-alive connection for minutes and answered 503 "Your worker restarted mid-request" after a
// refused body. Here requests go from the socket straight to the Worker: the bundle is the one
// `wrangler deploy --dry-run` makes, the bindings are the ones wrangler reads from wrangler.toml
// (`unstable_getMiniflareWorkerOptions`), and state lives in the same on-disk layout as
// `wrangler dev --persist-to <dir>` (`<dir>/v3/{d1,r2,do}`), so `wrangler d1 migrations apply --local
// --persist-to <dir>` prepares it. wrangler runs only while bundling (two short-lived processes).
//
//   node scripts/local-server.mjs --port 8787 --persist-to .kiln-state [--host 127.0.0.1] [--migrate]
//        [--var NAME:value]... [--inspector-port N] [--script worker.js]
// --migrate applies the D1 migrations (`wrangler d1 migrations apply kiln --local --persist-to`, or a copy
// of a state this machine migrated before when the state is new) while
// the Worker is bundled; --script runs that one-module Worker instead of kiln (with kiln's R2 bucket).
// prints `kiln-local: ready on http://…` once it answers; SIGTERM/SIGINT dispose of workerd and exit.
// --port 0 lets workerd bind any free port (named in that line): no other process can take it between
// choosing and binding, as one could while the Worker is bundled.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Node flags for the process that runs this server: it only starts workerd and relays its log lines,
 * so a small young generation and heap cap suffice (idle RSS of this node 184 → 139 MiB).
 */
export const SERVER_NODE_FLAGS = ["--max-semi-space-size=1", "--max-old-space-size=96"];

function run(cmd, args, opts) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${path.basename(cmd)} ${args.slice(0, 2).join(" ")} exited ${code ?? signal}:\n${err}${out}`));
    });
  });
}

// Reads wrangler.toml with wrangler's own reader (vars, R2, D1, Durable Objects, compatibility).
const READ_CONFIG = `
import { unstable_getMiniflareWorkerOptions, unstable_readConfig } from "wrangler";
const { workerOptions } = unstable_getMiniflareWorkerOptions("wrangler.toml");
const { name } = unstable_readConfig({ config: "wrangler.toml" });
process.stdout.write(JSON.stringify({ name, workerOptions }));
`;

function wranglerEnv(env) {
  return { ...env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" };
}

/** The Worker's name and Miniflare options (bindings, compatibility) from `root`'s wrangler.toml. */
export async function readWorkerConfig({ root = ROOT, env = process.env }) {
  const { name, workerOptions } = JSON.parse(await run(process.execPath, ["--input-type=module", "-e", READ_CONFIG], { cwd: root, env: wranglerEnv(env) }));
  // modulesRules describe how wrangler's bundler treats imports; a bundle is already one module.
  delete workerOptions.modulesRules;
  return { name, workerOptions };
}

/**
 * Bundles the Worker of `root` into `outDir` exactly as `wrangler deploy` would, and reads its
 * Miniflare options from wrangler.toml; both wrangler processes run at once and exit.
 */
export async function prepareWorker({ root = ROOT, outDir, env = process.env }) {
  const wrangler = path.join(root, "node_modules", ".bin", "wrangler");
  const [, config] = await Promise.all([
    run(wrangler, ["deploy", "--dry-run", "--outdir", outDir], { cwd: root, env: { ...wranglerEnv(env), WRANGLER_LOG: "warn" } }),
    readWorkerConfig({ root, env }),
  ]);
  return { ...config, scriptPath: path.join(outDir, "index.js") };
}

/**
 * Another Worker module (`script`, one self-contained ES module) under the same runtime with kiln's
 * R2 bucket and compatibility settings: the bench's bare Worker, the ceiling of the local data path.
 */
async function prepareScript({ root = ROOT, script, env = process.env }) {
  const { workerOptions: w } = await readWorkerConfig({ root, env });
  return {
    name: path.basename(script).replace(/\.[^.]*$/, ""),
    scriptPath: path.resolve(script),
    workerOptions: { compatibilityDate: w.compatibilityDate, compatibilityFlags: w.compatibilityFlags, r2Buckets: w.r2Buckets, bindings: {} },
  };
}

/** `wrangler d1 migrations apply kiln --local --persist-to <persist>`; throws with its output. */
async function wranglerMigrate({ root, persist, env }) {
  const wrangler = path.join(root, "node_modules", ".bin", "wrangler");
  try {
    await run(wrangler, ["d1", "migrations", "apply", "kiln", "--local", "--persist-to", persist], { cwd: root, env: wranglerEnv(env) });
  } catch (e) {
    throw new Error(`applying the D1 migrations failed: ${e.message}`);
  }
}

/**
 * Where a freshly migrated D1 state of these migrations (and this wrangler) is kept for reuse: named by
 * the hash of every migration file, so a changed or added migration never reuses an old one.
 */
function migratedTemplateDir(root) {
  const hash = createHash("sha256");
  const dir = path.join(root, "migrations");
  for (const f of readdirSync(dir).filter((n) => n.endsWith(".sql")).sort()) hash.update(`${f}\0`).update(readFileSync(path.join(dir, f))).update("\0");
  try { hash.update(readFileSync(path.join(root, "node_modules", "wrangler", "package.json"))); } catch { /* no wrangler: the apply below says so */ }
  return path.join(os.tmpdir(), `kiln-d1-migrated-${hash.digest("hex").slice(0, 24)}`);
}

/**
 * The D1 migrations applied to the state under `persist`. A state with no D1 yet gets a copy of one
 * this machine migrated before from nothing (wrangler's apply takes ~10 s, the copy milliseconds; the
 * e2e suite starts a fresh state per file); an existing state is brought up to date by wrangler.
 */
export async function applyMigrations({ root = ROOT, persist, env = process.env }) {
  const d1 = path.join(persist, "v3", "d1");
  if (existsSync(d1)) return await wranglerMigrate({ root, persist, env });
  const template = migratedTemplateDir(root);
  if (existsSync(path.join(template, "complete"))) {
    cpSync(path.join(template, "d1"), d1, { recursive: true });
    return;
  }
  await wranglerMigrate({ root, persist, env });
  // Keep a copy for the next fresh state: written aside, then renamed into place (another server may race).
  const staging = `${template}.${process.pid}.${Date.now()}`;
  try {
    cpSync(d1, path.join(staging, "d1"), { recursive: true });
    writeFileSync(path.join(staging, "complete"), "");
    renameSync(staging, template);
  } catch {
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * Starts kiln on http://host:port with state under `persist` (wrangler's layout) and `vars` over
 * wrangler.toml's [vars]. Returns { url, dispose }. `onStdio(stdout, stderr)` receives workerd's output
 * (the Worker's console and errors); by default it goes to this process's.
 */
export async function startLocalServer({ root = ROOT, host = "127.0.0.1", port, persist, vars = {}, inspectorPort, migrate = false, script, onStdio, env = process.env }) {
  const outDir = mkdtempSync(path.join(os.tmpdir(), "kiln-bundle-"));
  let mf;
  try {
    const [{ name, scriptPath, workerOptions }] = await Promise.all([
      script ? prepareScript({ root, script, env }) : prepareWorker({ root, outDir, env }),
      migrate ? applyMigrations({ root, persist, env }) : undefined,
    ]);
    const { Miniflare, Log, LogLevel } = await import(pathToFileURL(path.join(root, "node_modules", "miniflare", "dist", "src", "index.js")).href);
    mf = new Miniflare({
      host,
      port,
      inspectorPort,
      cf: false, // no request.cf download: there is no internet here and kiln does not read it
      log: new Log(LogLevel.WARN),
      logRequests: false,
      defaultPersistRoot: path.join(path.resolve(persist), "v3"),
      handleRuntimeStdio: onStdio ?? ((stdout, stderr) => { stdout.pipe(process.stdout); stderr.pipe(process.stderr); }),
      // The Worker's console: one line each, errors and warnings on stderr (as wrangler dev prints them).
      structuredWorkerdLogs: true,
      handleStructuredLogs: ({ level, message }) => {
        const line = level === "error" || level === "warn" ? `[${level.toUpperCase()}] ${message}\n` : `${message}\n`;
        (level === "error" || level === "warn" ? process.stderr : process.stdout).write(line);
      },
      workers: [{
        ...workerOptions,
        name,
        modules: true,
        scriptPath,
        modulesRoot: path.dirname(scriptPath),
        bindings: { ...workerOptions.bindings, ...vars },
      }],
    });
    const url = await mf.ready;
    return {
      url: url.href.replace(/\/$/, ""),
      async dispose() {
        try { await mf.dispose(); } finally { rmSync(outDir, { recursive: true, force: true }); }
      },
    };
  } catch (e) {
    await mf?.dispose().catch(() => {});
    rmSync(outDir, { recursive: true, force: true });
    throw e;
  }
}

function parseArgs(argv) {
  const opts = { host: "127.0.0.1", vars: {} };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--migrate") { opts.migrate = true; continue; }
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    i++;
    if (flag === "--port") opts.port = Number(value);
    else if (flag === "--host") opts.host = value;
    else if (flag === "--persist-to") opts.persist = value;
    else if (flag === "--inspector-port") opts.inspectorPort = Number(value);
    else if (flag === "--script") opts.script = value;
    else if (flag === "--var") {
      const at = value.indexOf(":");
      if (at < 1) throw new Error(`--var ${value}: expected NAME:value`);
      opts.vars[value.slice(0, at)] = value.slice(at + 1);
    } else throw new Error(`unknown option ${flag}`);
  }
  if (!Number.isInteger(opts.port)) throw new Error("--port is required");
  if (!opts.persist) throw new Error("--persist-to is required");
  return opts;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  let server;
  let stopping = false;
  const stop = async (code) => {
    if (stopping) return;
    stopping = true;
    await server?.dispose().catch(() => {});
    process.exit(code);
  };
  process.on("SIGTERM", () => void stop(143));
  process.on("SIGINT", () => void stop(130));
  process.on("SIGHUP", () => void stop(129));
  try {
    server = await startLocalServer(parseArgs(process.argv.slice(2)));
    if (stopping) await server.dispose();
    else process.stdout.write(`kiln-local: ready on ${server.url}\n`);
  } catch (e) {
    process.stderr.write(`kiln-local: ${e.code === "EADDRINUSE" ? e.message : (e.stack ?? e)}\n`);
    await stop(1);
  }
}
