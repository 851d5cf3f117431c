#!/usr/bin/env node
// `npm start`: kiln on http://127.0.0.1:8787 with persisted local state (R2, D1, Durable Objects),
// D1 migrations applied, and a local runner when runc and overlayfs are usable here.
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { freePort, startTlsGuard } from "./tls-guard.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const persist = process.env.KILN_STATE_DIR ?? path.join(root, ".kiln-state");
const port = process.env.PORT ?? "8787";
const adminToken = process.env.KILN_ADMIN_TOKEN ?? "kiln-dev-token";
const env = { ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false" };
const wrangler = path.join(root, "node_modules", ".bin", "wrangler");

const migrate = spawnSync(wrangler, ["d1", "migrations", "apply", "kiln", "--local", "--persist-to", persist], {
  cwd: root, env, stdio: ["ignore", "inherit", "inherit"],
});
if (migrate.status !== 0) process.exit(migrate.status ?? 1);

// wrangler dev listens on an internal port behind a TLS guard on the public one (see tls-guard.mjs);
// KILN_NO_TLS_GUARD=1 runs wrangler dev on the public port directly.
const guarded = !process.env.KILN_NO_TLS_GUARD;
const workerPort = guarded ? String(await freePort()) : port;
const server = spawn(wrangler, [
  "dev", "--ip", "127.0.0.1", "--port", workerPort, "--persist-to", persist,
  "--var", `KILN_ADMIN_TOKEN:${adminToken}`, "--show-interactive-dev-session=false",
], { cwd: root, env, stdio: "inherit" });

const guard = guarded ? await startTlsGuard({ listenPort: port, targetPort: workerPort }) : null;
console.log(`kiln: http://127.0.0.1:${port}  state: ${persist}`);
console.log(`kiln: admin token: ${adminToken}`);

let runner;
const startRunner = process.env.KILN_NO_RUNNER ? null : await import("./local-runner.mjs").catch(() => null);
if (startRunner) runner = await startRunner.default({ root, server: `http://127.0.0.1:${port}`, adminToken, env });

const stop = () => { runner?.kill("SIGTERM"); server.kill("SIGTERM"); guard?.close(); };
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
server.on("exit", (code) => { runner?.kill("SIGTERM"); guard?.close(); process.exit(code ?? 0); });
