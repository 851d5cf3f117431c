// Runs one RUN step: overlay of the job's layers + fresh upperdir, mounts, `runc run`, then the upperdir
// becomes the step's layer file. No network I/O here (see worker.ts for the protocol side).
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import { readFileSync } from "node:fs";
import path from "node:path";
import type { JobLayer, JobMount, RunJob } from "../protocol/jobs";
import { bundleConfig, completeEnv, type OciMount } from "./bundle";
import { diffEntries, writeLayerFile, type WrittenLayer } from "./differ";
import { mountOverlay, mountsUnder, resolveInRoot, resolveUser, sh, unmount } from "./rootfs";
import { getXattrs, OPAQUE_XATTR } from "./xattr";

export interface StepContext {
  workDir: string;
  /** Directory of the layer store (overlay lowerdir paths are given relative to it). */
  layersDir: string;
  /** Unpacked layer directories, bottom first. */
  layerDirs: string[];
  /** Unpacks a layer for a bind mount and returns its directory. */
  ensureLayer(layer: JobLayer): Promise<string>;
  allowHostNetwork: boolean;
  onOutput(chunk: Buffer): void;
  signal?: AbortSignal;
  /** Keep the job dir (for tests). */
  keepJobDir?: boolean;
}

export interface StepOutcome {
  status: "ok" | "failed" | "timeout" | "cancelled" | "error";
  exitCode: number | null;
  message?: string;
  /** When ok: the layer written (null when the step changed nothing). */
  layer?: WrittenLayer | null;
  /** When ok: the upperdir that stands for the layer (the caller may adopt it into the layer store). */
  upper?: string;
  jobDir: string;
}

export const RUNC_ROOT = (workDir: string) => path.join(workDir, "runc");

// ---- cache mount locks (sharing=locked) and use counts (sharing=private)
const cacheLocks = new Map<string, Promise<void>>();
const cacheInUse = new Map<string, number>();

async function lockCache(dir: string): Promise<() => void> {
  const prev = cacheLocks.get(dir) ?? Promise.resolve();
  let release!: () => void;
  const next = new Promise<void>((r) => { release = r; });
  const chained = prev.then(() => next);
  cacheLocks.set(dir, chained);
  await prev;
  return () => {
    release();
    if (cacheLocks.get(dir) === chained) cacheLocks.delete(dir);
  };
}

function safeName(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 32);
}

/** A namespace (`acme`) or `_untagged`: one path segment, never `.`, `..` or anything with `/`. */
const CACHE_SCOPE_RE = /^[a-z0-9_]+(?:[._-]+[a-z0-9_]+)*$/;

/**
 * The directory of a `--mount=type=cache` of a build in `scope` (RunJob.cacheScope):
 * `<workDir>/cache-mounts/<scope>/<sha256(id)>`. Each scope has its own tree, so a build never sees
 * another namespace's cache mounts; the id is hashed, so no id (`../x`, `a/b`, `/`) leaves it.
 */
export function cacheMountDir(workDir: string, scope: string | undefined, id: string): string {
  if (typeof scope !== "string" || scope.length > 255 || !CACHE_SCOPE_RE.test(scope)) {
    throw new Error(`RUN --mount=type=cache: the job has no valid cache scope (${JSON.stringify(scope ?? null)}); is the server older than this runner?`);
  }
  return path.join(workDir, "cache-mounts", scope, safeName(id));
}

export function runcRun(args: { runcRoot: string; bundle: string; id: string }): ReturnType<typeof spawn> {
  return spawn("runc", ["--root", args.runcRoot, "run", "--bundle", args.bundle, args.id], { stdio: ["ignore", "pipe", "pipe"] });
}

export async function killContainer(runcRoot: string, id: string): Promise<void> {
  await sh("runc", ["--root", runcRoot, "kill", id, "KILL"]);
}

export async function deleteContainer(runcRoot: string, id: string): Promise<void> {
  await sh("runc", ["--root", runcRoot, "delete", "-f", id]);
}

/** Kills and deletes every container left in a runc root (after a crash of a previous runner). */
export async function cleanupContainers(runcRoot: string): Promise<void> {
  const r = await sh("runc", ["--root", runcRoot, "list", "-q"]);
  if (r.code !== 0) return;
  for (const id of r.stdout.split("\n").filter(Boolean)) {
    await killContainer(runcRoot, id);
    await deleteContainer(runcRoot, id);
  }
}

function hostFile(p: string, fallback: string): string {
  try {
    return readFileSync(p, "utf8");
  } catch {
    return fallback;
  }
}

interface PreparedMounts {
  mounts: OciMount[];
  env: string[];
  release: (() => void)[];
  innerMounts: string[]; // host mounts we made (unmounted after the run)
}

async function prepareUserMounts(job: RunJob, ctx: StepContext, jobDir: string): Promise<PreparedMounts> {
  const out: PreparedMounts = { mounts: [], env: [], release: [], innerMounts: [] };
  let n = 0;
  for (const m of job.mounts as JobMount[]) {
    n++;
    switch (m.type) {
      case "cache": {
        const id = m.id || m.target;
        let dir = cacheMountDir(ctx.workDir, job.cacheScope, id);
        if (m.sharing === "locked") out.release.push(await lockCache(dir));
        else if (m.sharing === "private" && (cacheInUse.get(dir) ?? 0) > 0) dir = path.join(jobDir, `cache-private-${n}`);
        let created = false;
        try {
          await fs.mkdir(dir, { recursive: false, mode: m.mode ?? 0o755 });
          created = true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") {
            await fs.mkdir(path.dirname(dir), { recursive: true });
            await fs.mkdir(dir, { mode: m.mode ?? 0o755 });
            created = true;
          } else if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
        }
        if (created) {
          await fs.chown(dir, m.uid ?? 0, m.gid ?? 0);
          await fs.chmod(dir, m.mode ?? 0o755);
        }
        cacheInUse.set(dir, (cacheInUse.get(dir) ?? 0) + 1);
        out.release.push(() => cacheInUse.set(dir, (cacheInUse.get(dir) ?? 1) - 1));
        out.mounts.push({ destination: m.target, type: "bind", source: dir, options: ["rbind", m.readonly ? "ro" : "rw"] });
        break;
      }
      case "secret": {
        const id = m.id || path.posix.basename(m.target || "");
        const value = id ? job.secrets?.[id] : undefined;
        if (value === undefined) {
          if (m.required) throw new Error(`secret ${id} is required but was not provided`);
          break;
        }
        if (m.env) out.env.push(`${m.env}=${value}`);
        if (m.env && !m.target) break;
        const file = path.join(jobDir, "secrets", String(n));
        await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
        await fs.writeFile(file, value, { mode: 0o600 });
        await fs.chown(file, m.uid ?? 0, m.gid ?? 0);
        await fs.chmod(file, m.mode ?? 0o400);
        out.mounts.push({ destination: m.target || `/run/secrets/${id}`, type: "bind", source: file, options: ["bind", "ro", "nosuid", "nodev", "noexec"] });
        break;
      }
      case "tmpfs": {
        const opts = ["nosuid", "nodev"];
        if (m.size) opts.push(`size=${m.size}`);
        out.mounts.push({ destination: m.target, type: "tmpfs", source: "tmpfs", options: opts });
        break;
      }
      case "bind": {
        if (!m.fromLayers) throw new Error(`RUN --mount=type=bind,target=${m.target}: the job carries no layers for its source`);
        const lowers: string[] = [];
        for (const l of m.fromLayers) lowers.push(await ctx.ensureLayer(l));
        const base = path.join(jobDir, `bind-${n}`);
        for (const d of ["upper", "work", "root"]) await fs.mkdir(path.join(base, d), { recursive: true });
        if (!lowers.length) {
          await fs.mkdir(path.join(base, "empty"), { recursive: true });
          lowers.push(path.join(base, "empty"));
        }
        const root = path.join(base, "root");
        await mountOverlay({ lowers, upper: path.join(base, "upper"), work: path.join(base, "work"), target: root, cwd: ctx.layersDir });
        out.innerMounts.push(root);
        const src = await resolveInRoot(root, m.source || "/");
        if (!src.exists) throw new Error(`RUN --mount=type=bind: source ${m.source || "/"} not found`);
        out.mounts.push({ destination: m.target, type: "bind", source: path.join(root, src.rel), options: ["rbind", m.readonly === false ? "rw" : "ro"] });
        break;
      }
    }
  }
  return out;
}

/**
 * Runs the step. Never throws for failures of the command (see `status`); throws only on runner
 * problems (mount failures, bad layers), after cleaning up.
 */
export async function runStep(job: RunJob, ctx: StepContext): Promise<StepOutcome> {
  const jobDir = path.join(ctx.workDir, "jobs", `${job.jobId.replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 80)}-${randomBytes(4).toString("hex")}`);
  const upper = path.join(jobDir, "upper");
  const work = path.join(jobDir, "work");
  const merged = path.join(jobDir, "rootfs");
  const bundle = path.join(jobDir, "bundle");
  const runcRoot = RUNC_ROOT(ctx.workDir);
  for (const d of [upper, work, merged, bundle, runcRoot]) await fs.mkdir(d, { recursive: true, mode: 0o755 });
  await fs.chmod(upper, 0o755);
  let lowers = ctx.layerDirs;
  if (!lowers.length) {
    await fs.mkdir(path.join(jobDir, "empty"), { recursive: true });
    lowers = [path.join(jobDir, "empty")];
  }
  let prepared: PreparedMounts | undefined;
  let mountedRoot = false;
  let keepUpper = false;
  const containerId = `kiln-${safeName(job.jobId).slice(0, 12)}-${randomBytes(3).toString("hex")}`;
  try {
    if (job.network === "host" && !ctx.allowHostNetwork) {
      return { status: "error", exitCode: null, jobDir, message: "this step asks for --network=host, which this runner does not allow (start it with --allow-host-network)" };
    }
    await mountOverlay({ lowers, upper, work, target: merged, cwd: ctx.layersDir });
    mountedRoot = true;

    let user;
    try {
      user = await resolveUser(merged, job.user);
    } catch (e) {
      return { status: "error", exitCode: null, jobDir, message: (e as Error).message };
    }
    try {
      prepared = await prepareUserMounts(job, ctx, jobDir);
    } catch (e) {
      return { status: "error", exitCode: null, jobDir, message: (e as Error).message };
    }

    // /etc/hosts, /etc/resolv.conf, /etc/hostname are bind mounts, never part of the layer.
    const hostNetwork = job.network === "host";
    const etc = path.join(jobDir, "etc");
    await fs.mkdir(etc, { recursive: true });
    await fs.writeFile(path.join(etc, "hosts"), hostNetwork ? hostFile("/etc/hosts", "127.0.0.1\tlocalhost\n") : "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tkiln\n");
    await fs.writeFile(path.join(etc, "resolv.conf"), hostNetwork ? hostFile("/etc/resolv.conf", "") : "");
    await fs.writeFile(path.join(etc, "hostname"), "kiln\n");
    const etcMounts: OciMount[] = ["hosts", "resolv.conf", "hostname"].map((f) => ({
      destination: `/etc/${f}`, type: "bind", source: path.join(etc, f), options: ["rbind", "rprivate"],
    }));
    const extraMounts = [...etcMounts, ...prepared.mounts];

    // Mount points that do not exist yet are created by runc in the upperdir: note them to remove them.
    // Their existing parent directories get copied up only because of that: note their metadata too.
    const created: string[] = [];
    const parents = new Map<string, { mode: number; uid: number; gid: number }>();
    for (const dest of ["/proc", "/dev", "/sys", ...extraMounts.map((m) => m.destination)]) {
      const r = await resolveInRoot(merged, dest);
      const parts = r.rel.split("/");
      const first = r.firstMissing ? r.firstMissing.split("/").length : parts.length + 1;
      for (let i = parts.length; i >= first; i--) created.push(parts.slice(0, i).join("/"));
      for (let i = Math.min(first - 1, parts.length - 1); i >= 1; i--) {
        const rel = parts.slice(0, i).join("/");
        if (parents.has(rel)) continue;
        const st = await fs.lstat(path.join(merged, rel)).catch(() => null);
        if (st?.isDirectory()) parents.set(rel, { mode: st.mode, uid: st.uid, gid: st.gid });
      }
    }

    const config = bundleConfig({
      rootfs: merged,
      args: job.args,
      env: completeEnv([...job.env, ...prepared.env], user.home),
      cwd: job.workdir || "/",
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids,
      hostNetwork,
      hostname: "kiln",
      mounts: extraMounts,
    });
    await fs.writeFile(path.join(bundle, "config.json"), JSON.stringify(config), { mode: 0o600 });

    // ---- run
    const child = runcRun({ runcRoot, bundle, id: containerId });
    let stopReason: "timeout" | "cancelled" | null = null;
    const stop = (why: "timeout" | "cancelled") => {
      if (stopReason) return;
      stopReason = why;
      void killContainer(runcRoot, containerId);
      // runc run may not have created the container yet: kill it too after a moment.
      setTimeout(() => { if (child.exitCode === null) { void killContainer(runcRoot, containerId); child.kill("SIGKILL"); } }, 3000).unref();
    };
    const timer = job.timeoutSeconds > 0 ? setTimeout(() => stop("timeout"), job.timeoutSeconds * 1000) : undefined;
    const onAbort = () => stop("cancelled");
    if (ctx.signal?.aborted) onAbort();
    ctx.signal?.addEventListener("abort", onAbort);
    let runcErr = "";
    child.stdout!.on("data", (d: Buffer) => ctx.onOutput(d));
    child.stderr!.on("data", (d: Buffer) => { ctx.onOutput(d); runcErr = (runcErr + d.toString()).slice(-2000); });
    const exitCode: number = await new Promise((resolve) => {
      child.on("error", (e) => { runcErr += String(e); resolve(-1); });
      child.on("close", (code, signal) => resolve(code ?? (signal ? 128 + 9 : -1)));
    });
    clearTimeout(timer);
    ctx.signal?.removeEventListener("abort", onAbort);
    await deleteContainer(runcRoot, containerId);
    for (const m of prepared.innerMounts.reverse()) await unmount(m).catch(() => {});
    prepared.innerMounts = [];

    if (stopReason === "timeout") return { status: "timeout", exitCode: null, jobDir, message: `timed out after ${job.timeoutSeconds}s` };
    if (stopReason === "cancelled") return { status: "cancelled", exitCode: null, jobDir, message: "cancelled" };
    if (exitCode !== 0) return { status: "failed", exitCode, jobDir };

    // ---- layer
    await unmount(merged);
    mountedRoot = false;
    created.sort((a, b) => b.split("/").length - a.split("/").length);
    for (const rel of new Set(created)) {
      const p = path.join(upper, rel);
      try {
        const st = await fs.lstat(p);
        if (st.isDirectory()) await fs.rmdir(p);
        else if (st.isFile() && st.size === 0) await fs.unlink(p);
      } catch { /* not there or not empty: the command put something there */ }
    }
    const copiedUp = [...parents.keys()].sort((a, b) => b.split("/").length - a.split("/").length);
    const opaque = await getXattrs(copiedUp.map((rel) => path.join(upper, rel)), OPAQUE_XATTR);
    for (const [i, rel] of copiedUp.entries()) {
      const p = path.join(upper, rel);
      const before = parents.get(rel)!;
      try {
        const st = await fs.lstat(p);
        if (!st.isDirectory() || opaque[i]) continue;
        if (st.mode !== before.mode || st.uid !== before.uid || st.gid !== before.gid) continue;
        if ((await fs.readdir(p)).length === 0) await fs.rmdir(p);
      } catch { /* not copied up */ }
    }
    const entries = await diffEntries(upper, job.sourceDateEpoch);
    if (!entries.length) return { status: "ok", exitCode: 0, layer: null, jobDir };
    const layer = await writeLayerFile(entries, path.join(jobDir, "layer.tar.gz"));
    keepUpper = true;
    return { status: "ok", exitCode: 0, layer, upper, jobDir };
  } finally {
    for (const r of prepared?.release ?? []) r();
    for (const m of prepared?.innerMounts ?? []) await unmount(m).catch(() => {});
    if (mountedRoot) {
      await deleteContainer(runcRoot, containerId).catch(() => {});
      await unmount(merged).catch(() => {});
    }
    // Secrets and the bundle (which may hold secret env) go right away.
    await fs.rm(path.join(jobDir, "secrets"), { recursive: true, force: true });
    await fs.rm(bundle, { recursive: true, force: true });
    void keepUpper;
  }
}

/** Removes a job directory (after its layer was uploaded and its upper adopted or not). */
export async function removeJobDir(jobDir: string): Promise<void> {
  for (const m of await mountsUnder(jobDir)) await unmount(m).catch(() => {});
  await fs.rm(jobDir, { recursive: true, force: true });
}
