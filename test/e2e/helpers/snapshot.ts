// A frozen copy of the committed tree for benchmarks: `wrangler dev` reloads the Worker whenever a file
// under the repository changes, and other engineers edit files while a bench runs ("Your worker
// restarted mid-request"). `git archive HEAD` into a temp dir (node_modules symlinked) keeps it still.
import { spawn, spawnSync } from "node:child_process";
import { createWriteStream, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ADMIN_TOKEN, freePort, ROOT, stopProcessGroup, waitForHttp, type KilnServer } from "../server";

export function snapshotRoot(rev = "HEAD"): { root: string; rev: string; remove(): void } {
  const root = mkdtempSync(path.join(os.tmpdir(), "kiln-snapshot-"));
  const sha = spawnSync("git", ["rev-parse", "--short", rev], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
  const r = spawnSync("sh", ["-c", `git archive --format=tar ${rev} | tar -x -C '${root}'`], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`git archive: ${r.stderr}`);
  symlinkSync(path.join(ROOT, "node_modules"), path.join(root, "node_modules"));
  return { root, rev: sha, remove: () => rmSync(root, { recursive: true, force: true }) };
}

const wranglerEnv = () => ({ ...process.env, CLOUDFLARE_CF_FETCH_ENABLED: "false", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" });

/** `startKiln()` from another checkout (e.g. a snapshot): wrangler dev on a free 127.0.0.1 port, fresh state. */
export async function startKilnAt(root: string, opts: { stateDir?: string; port?: number; logFile?: string } = {}): Promise<KilnServer> {
  const stateDir = opts.stateDir ?? mkdtempSync(path.join(os.tmpdir(), "kiln-bench-"));
  const port = opts.port ?? (await freePort());
  const wrangler = path.join(ROOT, "node_modules", ".bin", "wrangler");
  const mig = spawnSync(wrangler, ["d1", "migrations", "apply", "kiln", "--local", "--persist-to", stateDir], { cwd: root, env: wranglerEnv(), encoding: "utf8" });
  if (mig.status !== 0) throw new Error(`migrations failed: ${mig.stderr}${mig.stdout}`);
  const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--persist-to", stateDir, "--show-interactive-dev-session=false",
    "--inspector-port", String(await freePort()), "--var", `KILN_ADMIN_TOKEN:${ADMIN_TOKEN}`];
  const child = spawn(wrangler, args, { cwd: root, env: wranglerEnv(), stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  const log = opts.logFile ? createWriteStream(opts.logFile) : undefined;
  const onData = (d: Buffer) => { log?.write(d); output += d; if (output.length > 1e6) output = output.slice(-1e5); };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/healthz`, child, () => output, { timeoutMs: 90_000 });
  return {
    url, port, stateDir, process: child,
    async stop(wipe = false) {
      await stopProcessGroup(child);
      if (wipe) rmSync(stateDir, { recursive: true, force: true });
    },
  };
}
