// Mounts, path resolution inside a rootfs, and users from the image's /etc/passwd and /etc/group.
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";

export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout!.on("data", (d) => { stdout += d; });
    p.stderr!.on("data", (d) => { stderr += d; });
    p.on("error", reject);
    p.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    if (p.stdin) {
      p.stdin.on("error", () => {});
      p.stdin.end(opts.input);
    }
  });
}

export async function shOk(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr.trim() || `exit ${r.code}`}`);
  return r.stdout;
}

/**
 * Mounts an overlay of `lowers` (bottom first) at `target`. Paths are given relative to `cwd` (the layer
 * store) to keep the option string short; redirect_dir/metacopy are turned off so every change is
 * copied up in full and the upperdir alone describes the layer.
 */
export async function mountOverlay(opts: { lowers: string[]; upper?: string; work?: string; target: string; cwd: string }): Promise<void> {
  const rel = (p: string) => {
    const r = path.relative(opts.cwd, p);
    return r.startsWith("..") ? p : r;
  };
  const lowers = [...opts.lowers].reverse().map(rel).join(":");
  let base = `lowerdir=${lowers}`;
  if (opts.upper) base += `,upperdir=${rel(opts.upper)},workdir=${rel(opts.work!)}`;
  const tries = [`${base},redirect_dir=off,metacopy=off,index=off`, `${base},index=off`, base];
  let last = "";
  for (const o of tries) {
    const r = await sh("mount", ["-t", "overlay", "overlay", "-o", o, opts.target], { cwd: opts.cwd });
    if (r.code === 0) return;
    last = r.stderr.trim();
  }
  throw new Error(`mount -t overlay at ${opts.target} failed: ${last}`);
}

export async function unmount(target: string): Promise<void> {
  const r = await sh("umount", [target]);
  if (r.code !== 0) {
    const lazy = await sh("umount", ["-l", target]);
    if (lazy.code !== 0 && !/not mounted|no mount point/i.test(lazy.stderr)) throw new Error(`umount ${target}: ${lazy.stderr.trim()}`);
  }
}

/** Mount points under `dir` (deepest first), from /proc/self/mountinfo. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await fs.readFile("/proc/self/mountinfo", "utf8");
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return info
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => !!m)
    .map((m) => m.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/**
 * Resolves `p` inside `root` the way the container would see it: symlinks are followed but never leave
 * the root (absolute link targets restart at the root). Returns the path relative to root and whether
 * it exists.
 */
export async function resolveInRoot(root: string, p: string): Promise<{ rel: string; exists: boolean; firstMissing: string | null }> {
  let todo = p.split("/").filter((s) => s && s !== ".");
  const done: string[] = [];
  let hops = 0;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === "..") { done.pop(); continue; }
    const full = path.join(root, ...done, part);
    let st;
    try {
      st = await fs.lstat(full);
    } catch {
      done.push(part);
      const rel = [...done, ...todo.filter((t) => t !== ".")].join("/");
      return { rel, exists: false, firstMissing: done.join("/") };
    }
    if (st.isSymbolicLink()) {
      if (++hops > 40) throw new Error(`too many symlinks resolving ${p}`);
      const link = await fs.readlink(full);
      const parts = link.split("/").filter((s) => s && s !== ".");
      if (link.startsWith("/")) done.length = 0;
      todo = [...parts, ...todo];
      continue;
    }
    done.push(part);
  }
  return { rel: done.join("/"), exists: true, firstMissing: null };
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

function parseColonFile(text: string): string[][] {
  return text.split("\n").filter((l) => l && !l.startsWith("#")).map((l) => l.split(":"));
}

async function readInRoot(root: string, p: string): Promise<string> {
  const r = await resolveInRoot(root, p);
  if (!r.exists) return "";
  try {
    return await fs.readFile(path.join(root, r.rel), "utf8");
  } catch {
    return "";
  }
}

/** Resolves a Dockerfile USER ("", "name", "uid", "uid:gid", "name:group") against the rootfs. */
export async function resolveUser(root: string, user: string): Promise<ResolvedUser> {
  const [u, g] = (user || "0").split(":", 2);
  const passwd = parseColonFile(await readInRoot(root, "/etc/passwd"));
  const groups = parseColonFile(await readInRoot(root, "/etc/group"));
  let entry: string[] | undefined;
  let uid: number;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    entry = passwd.find((e) => Number(e[2]) === uid);
  } else {
    entry = passwd.find((e) => e[0] === u);
    if (!entry) throw new Error(`unable to find user ${u}: no matching entries in passwd file`);
    uid = Number(entry[2]);
  }
  let gid = entry ? Number(entry[3]) : 0;
  if (g !== undefined && g !== "") {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const ge = groups.find((e) => e[0] === g);
      if (!ge) throw new Error(`unable to find group ${g}: no matching entries in group file`);
      gid = Number(ge[2]);
    }
  }
  const name = entry?.[0];
  const additionalGids = g === undefined && name
    ? groups.filter((e) => (e[3] ?? "").split(",").includes(name)).map((e) => Number(e[2]))
    : [];
  // The primary group is listed too (as docker does), so `id` shows it among the groups.
  return { uid, gid, additionalGids: [...new Set([gid, ...additionalGids])], home: entry?.[5] || "/" };
}
