// Running external commands (skopeo, umoci, podman, docker-registry) from e2e tests and benches.
import { spawn, type SpawnOptions } from "node:child_process";

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command to completion; never throws on a non-zero exit (check `code`). */
export function run(cmd: string, args: string[], opts: SpawnOptions & { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => { stdout += d; });
    child.stderr!.on("data", (d) => { stderr += d; });
    const timer = opts.timeoutMs ? setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs) : undefined;
    child.on("error", (e) => { clearTimeout(timer); reject(e); });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin!.end(opts.input ?? "");
  });
}

/** Runs a command and throws with its output when it fails. */
export async function runOk(cmd: string, args: string[], opts: SpawnOptions & { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r;
}

/** Resident set size in bytes of a process and all its descendants (Linux /proc). */
export async function treeRss(rootPid: number): Promise<number> {
  return (await treeRssByCommand(rootPid)).total;
}

/** RSS of a process tree, in total and per command name (`workerd`, `node`, …). */
export async function treeRssByCommand(rootPid: number): Promise<{ total: number; byCommand: Record<string, number> }> {
  const { readdir, readFile } = await import("node:fs/promises");
  const parents = new Map<number, number>();
  const rss = new Map<number, number>();
  const comm = new Map<number, string>();
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    try {
      const stat = await readFile(`/proc/${pid}/stat`, "utf8");
      // comm may contain spaces/parens: fields after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(pid, Number(rest[1]));
      comm.set(pid, stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")));
      const status = await readFile(`/proc/${pid}/status`, "utf8");
      const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
      rss.set(pid, m ? Number(m[1]) * 1024 : 0);
    } catch { /* process exited */ }
  }
  let total = 0;
  const byCommand: Record<string, number> = {};
  for (const pid of parents.keys()) {
    for (let p: number | undefined = pid, hops = 0; p && hops < 64; p = parents.get(p), hops++) {
      if (p === rootPid) {
        const r = rss.get(pid) ?? 0;
        total += r;
        const c = comm.get(pid) ?? "?";
        byCommand[c] = (byCommand[c] ?? 0) + r;
        break;
      }
    }
  }
  return { total, byCommand };
}
