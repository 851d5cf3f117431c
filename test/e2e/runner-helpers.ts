// Runner processes for e2e tests: start `src/runner/main.ts`, stop it, clean up after a SIGKILL.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ADMIN_TOKEN, ROOT } from "./server";

export interface RunnerProcess {
  child: ChildProcess;
  workDir: string;
  output: () => string;
  /** SIGTERM (or the given signal) to the runner's process group; waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `src/runner/main.ts` as its own process group. */
export async function startRunner(server: string, opts: { workDir?: string; leaseSeconds?: number; token?: string; runnerId?: string; concurrency?: number } = {}): Promise<RunnerProcess> {
  const workDir = opts.workDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "kiln-runner-e2e-")));
  const args = ["--import", "tsx", path.join(ROOT, "src/runner/main.ts"), "--server", server, "--token", opts.token ?? ADMIN_TOKEN, "--work-dir", workDir];
  if (opts.leaseSeconds) args.push("--lease-seconds", String(opts.leaseSeconds));
  if (opts.runnerId) args.push("--runner-id", opts.runnerId);
  if (opts.concurrency) args.push("--concurrency", String(opts.concurrency));
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let out = "";
  child.stdout!.on("data", (d) => { out += d; if (process.env.KILN_E2E_VERBOSE) process.stderr.write(d); });
  child.stderr!.on("data", (d) => { out += d; if (process.env.KILN_E2E_VERBOSE) process.stderr.write(d); });
  return {
    child, workDir, output: () => out,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      try { process.kill(-child.pid!, signal); } catch {}
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      try { process.kill(-child.pid!, "SIGKILL"); } catch {}
    },
  };
}

/** Kills containers a SIGKILLed runner left running, unmounts and removes its work dir. */
export async function wipeRunnerDir(workDir: string): Promise<void> {
  const runcRoot = path.join(workDir, "runc");
  for (const id of spawnSync("runc", ["--root", runcRoot, "list", "-q"]).stdout?.toString().split("\n").filter(Boolean) ?? []) {
    spawnSync("runc", ["--root", runcRoot, "kill", id, "KILL"]);
    spawnSync("runc", ["--root", runcRoot, "delete", "-f", id]);
  }
  const mounts = (await fs.readFile("/proc/self/mountinfo", "utf8")).split("\n").map((l) => l.split(" ")[4]).filter((m) => m?.startsWith(workDir));
  for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
  await fs.rm(workDir, { recursive: true, force: true });
}

