// Runner internals as root: tar extraction in overlay format, the upperdir differ, and RUN steps under runc
// with a busybox rootfs (no kiln server involved).
import { spawnSync } from "node:child_process";
import { createReadStream, existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import { createHash } from "node:crypto";
import path from "node:path";
import zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobLayer, RunJob } from "../../src/protocol/jobs";
import { diffEntries, writeLayerFile, type DiffEntry } from "../../src/runner/differ";
import { extractLayer, UnsafeLayerError } from "../../src/runner/extract";
import { LayerStore } from "../../src/runner/layers";
import { mountOverlay, unmount } from "../../src/runner/rootfs";
import { cacheMountDir, removeJobDir, runStep, type StepOutcome } from "../../src/runner/step";
import { recoverWorkDir } from "../../src/runner/main";
import { encodeEntryHeader, END_OF_ARCHIVE, readTar, tarPadding, type TarEntry } from "../../src/oci/tar";
import { getXattrs, setXattrs } from "../../src/runner/xattr";

const isRoot = process.getuid?.() === 0;
const haveRunc = spawnSync("runc", ["--version"]).status === 0;
const BUSYBOX = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const canRun = isRoot && haveRunc && !!BUSYBOX;
if (!canRun) console.warn("runner-step tests skipped: need root, runc and busybox-static");

let tmp: string;
beforeAll(async () => { tmp = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-runner-t-")); });
afterAll(async () => {
  if (!tmp) return;
  for (const l of (await fs.readFile("/proc/self/mountinfo", "utf8")).split("\n")) {
    const m = l.split(" ")[4];
    if (m?.startsWith(tmp)) spawnSync("umount", ["-l", m]);
  }
  await fs.rm(tmp, { recursive: true, force: true });
});

type Header = Omit<TarEntry, "body" | "size">;

function tarOf(entries: { h: Header; data?: string }[]): Buffer {
  const parts: Uint8Array[] = [];
  for (const { h, data } of entries) {
    const size = data ? Buffer.byteLength(data) : 0;
    parts.push(...encodeEntryHeader(h, size));
    if (data) { parts.push(Buffer.from(data)); parts.push(tarPadding(size)); }
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}
const H = (p: string, type: Header["type"], extra: Partial<Header> = {}): Header => ({ path: p, type, mode: type === "dir" ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 1000, ...extra });

/** A one-file tar whose path the writer refuses to write (an archive made elsewhere). */
function rawFileTar(name: string, data: string): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write("0000644\0", 100, "ascii");
  h.write("0000000\0", 108, "ascii");
  h.write("0000000\0", 116, "ascii");
  h.write(Buffer.byteLength(data).toString(8).padStart(11, "0") + "\0", 124, "ascii");
  h.write("00000001750\0", 136, "ascii");
  h.write("0", 156, "ascii");
  h.write("ustar\0" + "00", 257, "ascii");
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "ascii");
  return Buffer.concat([h, Buffer.from(data), tarPadding(Buffer.byteLength(data)), END_OF_ARCHIVE]);
}

/** The entry paths of a tar (a gzipped layer file, or bytes), directories without their trailing "/". */
async function tarPaths(src: string | Buffer): Promise<string[]> {
  const bytes = typeof src === "string" ? zlib.gunzipSync(await fs.readFile(src)) : src;
  const names: string[] = [];
  for await (const e of readTar(new Blob([new Uint8Array(bytes)]).stream())) names.push(e.header.path.replace(/\/$/, ""));
  return names;
}

async function* once(b: Buffer) { yield b; }

/** A summary of entries: "path type" plus link/size details, in archive order. */
function summary(entries: DiffEntry[]): string[] {
  return entries.map(({ header: h }) => `${h.path} ${h.type}${h.linkname ? ` -> ${h.linkname}` : ""}${h.type === "file" ? ` ${h.size}` : ""}`);
}

describe.skipIf(!isRoot)("layer extraction (overlay format)", () => {
  it("applies whiteouts and opaque markers, keeps hardlinks and modes, and round-trips through the reader", async () => {
    const dest = await fs.mkdtemp(path.join(tmp, "x-"));
    const tar = tarOf([
      { h: H("etc", "dir") },
      { h: H("etc/passwd", "file", { mode: 0o600, uid: 5, gid: 6 }), data: "root:x:0:0::/root:/bin/sh\n" },
      { h: H("etc/link", "hardlink", { linkname: "etc/passwd" }) },
      { h: H("etc/.wh.shadow", "file") },
      { h: H("var", "dir", { mode: 0o1777 }) },
      { h: H("var/.wh..wh..opq", "file") },
      { h: H("bin/sh", "symlink", { linkname: "/bin/busybox" }) },
      { h: H(`deep/${"d".repeat(120)}/file`, "file"), data: "long name" },
    ]);
    const names: string[] = [];
    names.push(...(await tarPaths(tar)));
    expect(names).toContain(`deep/${"d".repeat(120)}/file`);
    await extractLayer(once(tar), dest);
    const passwd = await fs.lstat(path.join(dest, "etc/passwd"));
    expect(passwd.mode & 0o7777).toBe(0o600);
    expect([passwd.uid, passwd.gid, passwd.nlink]).toEqual([5, 6, 2]);
    const wh = await fs.lstat(path.join(dest, "etc/shadow"));
    expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
    expect((await fs.lstat(path.join(dest, "var"))).mode & 0o7777).toBe(0o1777);
    expect((await getXattrs([path.join(dest, "var"), path.join(dest, "etc")], "trusted.overlay.opaque")).map((v) => v?.toString() ?? null)).toEqual(["y", null]);
    expect(await fs.readlink(path.join(dest, "bin/sh"))).toBe("/bin/busybox");
    expect(await fs.readFile(path.join(dest, `deep/${"d".repeat(120)}/file`), "utf8")).toBe("long name");
  });

  it("refuses entries that escape the root or go through a symlink", async () => {
    const d1 = await fs.mkdtemp(path.join(tmp, "x-"));
    await expect(extractLayer(once(rawFileTar("../../etc/evil", "x")), d1)).rejects.toBeInstanceOf(UnsafeLayerError);
    const outside = await fs.mkdtemp(path.join(tmp, "outside-"));
    const d2 = await fs.mkdtemp(path.join(tmp, "x-"));
    await expect(extractLayer(once(tarOf([
      { h: H("escape", "symlink", { linkname: outside }) },
      { h: H("escape/pwned", "file"), data: "x" },
    ])), d2)).rejects.toBeInstanceOf(UnsafeLayerError);
    expect(await fs.readdir(outside)).toEqual([]);
  });
});

describe.skipIf(!isRoot)("upperdir differ", () => {
  it("turns creations, changes, deletions and a replaced directory into exactly the expected entries", async () => {
    const base = await fs.mkdtemp(path.join(tmp, "d-"));
    const [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map((d) => path.join(base, d));
    for (const d of [lower, upper, work, merged]) await fs.mkdir(d);
    await fs.mkdir(path.join(lower, "etc"));
    await fs.writeFile(path.join(lower, "etc/keep"), "keep");
    await fs.writeFile(path.join(lower, "etc/change"), "old");
    await fs.writeFile(path.join(lower, "etc/remove"), "bye");
    await fs.mkdir(path.join(lower, "olddir/sub"), { recursive: true });
    await fs.writeFile(path.join(lower, "olddir/sub/f"), "x");
    await fs.mkdir(path.join(lower, "replaced"));
    await fs.writeFile(path.join(lower, "replaced/old"), "x");
    await mountOverlay({ lowers: [lower], upper, work, target: merged, cwd: base });
    try {
      await fs.writeFile(path.join(merged, "etc/change"), "new content");
      await fs.rm(path.join(merged, "etc/remove"));
      await fs.rm(path.join(merged, "olddir"), { recursive: true });
      await fs.rm(path.join(merged, "replaced"), { recursive: true });
      await fs.mkdir(path.join(merged, "replaced"));
      await fs.writeFile(path.join(merged, "replaced/new"), "n");
      await fs.mkdir(path.join(merged, "new/dir"), { recursive: true });
      await fs.writeFile(path.join(merged, "new/dir/a"), "aaa");
      await fs.link(path.join(merged, "new/dir/a"), path.join(merged, "new/b"));
      await fs.symlink("dir/a", path.join(merged, "new/link"));
      await setXattrs([{ path: path.join(merged, "new/b"), name: "user.kiln", value: "v1" }]);
    } finally {
      await unmount(merged);
    }
    const entries = await diffEntries(upper, 0);
    expect(summary(entries)).toEqual([
      "etc dir",
      "etc/change file 11",
      "etc/.wh.remove file 0",
      "new dir",
      "new/b file 3",
      "new/dir dir",
      "new/dir/a hardlink -> new/b",
      "new/link symlink -> dir/a",
      ".wh.olddir file 0",
      "replaced dir",
      "replaced/.wh..wh..opq file 0",
      "replaced/new file 1",
    ]);
    expect(entries.every((e) => e.header.mtime === 0)).toBe(true);
    expect(entries.find((e) => e.header.path === "new/b")!.header.xattrs).toEqual({ "user.kiln": Buffer.from("v1") });
    expect(entries.find((e) => e.header.path === "replaced")!.header.xattrs).toBeUndefined();

    // The layer file reads back to the same entries, and it is reproducible.
    const l1 = await writeLayerFile(entries, path.join(base, "l1.tar.gz"));
    const l2 = await writeLayerFile(await diffEntries(upper, 0), path.join(base, "l2.tar.gz"));
    expect(l2.digest).toBe(l1.digest);
    const back: string[] = [];
    const dest = await fs.mkdtemp(path.join(tmp, "back-"));
    back.push(...(await tarPaths(l1.path)));
    expect(back).toEqual(entries.map((e) => e.header.path));
    await extractLayer(createReadStream(l1.path).pipe(zlib.createGunzip()), dest);
    expect((await getXattrs([path.join(dest, "new/b")], "user.kiln"))[0]?.toString()).toBe("v1");
    expect((await getXattrs([path.join(dest, "replaced")], "trusted.overlay.opaque"))[0]?.toString()).toBe("y");
  });
});

describe("cache mount directories", () => {
  it("are <workDir>/cache-mounts/<scope>/<hash of id>: no id leaves its scope's directory", () => {
    const root = "/var/lib/kiln-runner";
    const inScope = (scope: string, id: string) => {
      const dir = cacheMountDir(root, scope, id);
      expect(path.dirname(dir), `${scope} ${id}`).toBe(path.join(root, "cache-mounts", scope));
      expect(path.basename(dir)).toMatch(/^[0-9a-f]{32}$/);
      return dir;
    };
    for (const id of ["go", "/root/.cache", "../b/go", "../../../etc", "..", ".", "a/b", "", "\u0000"]) inScope("a", id);
    expect(inScope("a", "go")).toBe(inScope("a", "go"));
    expect(inScope("a", "go")).not.toBe(inScope("b", "go"));
    expect(inScope("a", "go")).not.toBe(inScope("a", "go2"));
    expect(inScope("_untagged", "go")).not.toBe(inScope("a", "go"));
    expect(inScope("my-team.x_y", "go")).toBeTruthy();
    for (const bad of ["", ".", "..", "../a", "a/b", "/a", "A", "a b", "-a", "a.", undefined]) {
      expect(() => cacheMountDir(root, bad, "go"), String(bad)).toThrow(/cache scope/);
    }
  });
});

describe.skipIf(!canRun)("a runner's work dir at start", () => {
  it("drops the unscoped cache mounts of older runners and keeps the scoped ones", async () => {
    const wd = await fs.mkdtemp(path.join(tmp, "recover-"));
    const legacy = path.join(wd, "cache", "0123456789abcdef0123456789abcdef");
    await fs.mkdir(legacy, { recursive: true });
    await fs.writeFile(path.join(legacy, "marker"), "shared by every namespace");
    const scoped = cacheMountDir(wd, "acme", "go");
    await fs.mkdir(scoped, { recursive: true });
    await fs.writeFile(path.join(scoped, "marker"), "acme's");
    await recoverWorkDir(wd);
    expect(existsSync(path.join(wd, "cache"))).toBe(false);
    expect(await fs.readFile(path.join(scoped, "marker"), "utf8")).toBe("acme's");
    // a `cache` directory that is not the old layout is not the runner's to remove
    await fs.mkdir(path.join(wd, "cache", "notes"), { recursive: true });
    await recoverWorkDir(wd);
    expect(existsSync(path.join(wd, "cache", "notes"))).toBe(true);
  });
});

describe.skipIf(!canRun)("RUN steps under runc", () => {
  let workDir: string;
  let store: LayerStore;
  let busyboxLayer: JobLayer;
  let shellLayer: JobLayer;
  const outcomes: StepOutcome[] = [];

  const job = (args: string[], layers: JobLayer[], extra: Partial<RunJob> = {}): RunJob => ({
    jobId: `job-${Math.random().toString(36).slice(2)}`, buildId: "b", stepIndex: 0, platform: { os: "linux", architecture: "amd64" },
    layers, args, env: ["PATH=/bin"], workdir: "/", user: "", network: "none", mounts: [], timeoutSeconds: 60,
    repository: "t/t", registryToken: "", sourceDateEpoch: 0, cacheScope: "t", ...extra,
  });

  async function run(j: RunJob, signal?: AbortSignal, allowHostNetwork = false): Promise<StepOutcome & { output: string }> {
    let output = "";
    const layerDirs = j.layers.map((l) => store.pathOf(l.diffId));
    const o = await runStep(j, {
      workDir, layersDir: store.dir, layerDirs, ensureLayer: async (l) => store.pathOf(l.diffId), allowHostNetwork,
      onOutput: (b) => { output += b.toString(); }, signal,
    });
    outcomes.push(o);
    return { ...o, output };
  }

  /** Runs a step and adopts its upper as the layer (like a runner after upload). */
  async function layerOf(j: RunJob): Promise<{ layer: JobLayer; entries: string[] }> {
    const o = await run(j);
    expect(o.status, o.output + (o.message ?? "")).toBe("ok");
    const entries: string[] = [];
    entries.push(...(await tarPaths(o.layer!.path)));
    const layer = { digest: o.layer!.digest, diffId: o.layer!.diffId, mediaType: o.layer!.mediaType, size: o.layer!.size };
    await store.adopt(layer.diffId, o.upper!);
    return { layer, entries };
  }

  beforeAll(async () => {
    workDir = await fs.mkdtemp(path.join(tmp, "w-"));
    store = new LayerStore(workDir);
    const src = await fs.mkdtemp(path.join(tmp, "bb-"));
    await fs.mkdir(path.join(src, "bin"));
    await fs.copyFile(BUSYBOX!, path.join(src, "bin/busybox"));
    await fs.chmod(path.join(src, "bin/busybox"), 0o755);
    const written = await writeLayerFile(await diffEntries(src, 0), path.join(tmp, "busybox.tar.gz"));
    busyboxLayer = { digest: written.digest, diffId: written.diffId, mediaType: written.mediaType, size: written.size };
    await store.unpack(busyboxLayer, createReadStream(written.path));
    shellLayer = (await layerOf(job(["/bin/busybox", "--install", "-s", "/bin"], [busyboxLayer]))).layer;
  });

  afterAll(async () => {
    for (const o of outcomes) await removeJobDir(o.jobDir).catch(() => {});
  });

  it("unpacks zstd and uncompressed layers too", async () => {
    const tar = tarOf([{ h: H("z", "dir") }, { h: H("z/file", "file"), data: "zstd!" }]);
    const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
    const plain: JobLayer = { digest: sha(tar), diffId: sha(tar), mediaType: "application/vnd.oci.image.layer.v1.tar", size: tar.length };
    expect(await fs.readFile(path.join(await store.unpack(plain, once(tar)), "z/file"), "utf8")).toBe("zstd!");
    await fs.rm(store.pathOf(plain.diffId), { recursive: true });
    const z = spawnSync("zstd", ["-q", "-c"], { input: tar });
    if (z.status !== 0) return; // no zstd binary here
    const zl: JobLayer = { digest: sha(z.stdout), diffId: sha(tar), mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", size: z.stdout.length };
    expect(await fs.readFile(path.join(await store.unpack(zl, once(z.stdout)), "z/file"), "utf8")).toBe("zstd!");
  });

  it("rejects a layer whose content does not match its digest", async () => {
    const bad = { ...busyboxLayer, diffId: `sha256:${"1".repeat(64)}` };
    await expect(store.unpack(bad, createReadStream(path.join(tmp, "busybox.tar.gz")))).rejects.toThrow(/diffID/);
    expect(await store.has(bad.diffId)).toBe(false);
  });

  it("runs the command with env, workdir and user, streams its output and diffs only its changes", async () => {
    const base = [busyboxLayer, shellLayer];
    const { layer: users } = await layerOf(job(["/bin/sh", "-c", "mkdir -p /etc /home/app && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' > /etc/group && echo 'staff:x:50:app' >> /etc/group && chown 1000:1000 /home/app"], base));
    const o = await run(job(["/bin/sh", "-c", "echo out; echo err >&2; id; pwd; echo $GREETING; echo $HOME; touch $HOME/mine"], [...base, users], { env: ["PATH=/bin", "GREETING=hello"], workdir: "/work/dir", user: "app" }));
    expect(o.status, o.output).toBe("ok");
    expect(o.output).toContain("out\n");
    expect(o.output).toContain("err\n");
    expect(o.output).toMatch(/uid=1000\(app\) gid=1000\(app\) groups=\S*50\(staff\)/);
    // stdout and stderr are two pipes: "err" may arrive anywhere among the stdout lines
    expect(o.output.replace("err\n", "")).toContain("/work/dir\nhello\n/home/app\n");
    const entries = await diffEntries(o.upper!, 0);
    expect(summary(entries)).toEqual(["home dir", "home/app dir", "home/app/mine file 0", "work dir", "work/dir dir"]);
    expect(entries.find((e) => e.header.path === "home/app/mine")!.header.uid).toBe(1000);
  });

  it("creates, changes and deletes files through a chain of steps", async () => {
    const base = [busyboxLayer, shellLayer];
    const s1 = await layerOf(job(["/bin/sh", "-c", "mkdir -p /data/sub && echo one > /data/a && echo two > /data/b && echo x > /data/sub/x"], base));
    expect(s1.entries).toEqual(["data", "data/a", "data/b", "data/sub", "data/sub/x"]);
    const s2 = await layerOf(job(["/bin/sh", "-c", "echo changed > /data/a && rm /data/b && rm -r /data/sub"], [...base, s1.layer]));
    expect(s2.entries).toEqual(["data", "data/a", "data/.wh.b", "data/.wh.sub"]);
    const o = await run(job(["/bin/sh", "-c", "cat /data/a; ls /data"], [...base, s1.layer, s2.layer]));
    expect(o.output).toBe("changed\na\n");
    expect(o.layer).toBeNull();
  });

  it("refuses namespaces, mounts and keyrings inside a step (seccomp, docker's capabilities)", async () => {
    const o = await run(job(["/bin/sh", "-c", "unshare -U true && echo userns-allowed; unshare -m true && echo mountns-allowed; mount -t tmpfs tmpfs /mnt && echo mount-allowed; echo still-running; ls / > /dev/null && echo fs-ok"], [busyboxLayer, shellLayer]));
    expect(o.output).toContain("still-running");
    expect(o.output).toContain("fs-ok");
    expect(o.output).not.toMatch(/userns-allowed|mountns-allowed|mount-allowed/);
  });

  it("fails with the exit code and keeps no layer", async () => {
    const o = await run(job(["/bin/sh", "-c", "echo before; touch /junk; exit 7"], [busyboxLayer, shellLayer]));
    expect(o.status).toBe("failed");
    expect(o.exitCode).toBe(7);
    expect(o.output).toContain("before");
    expect(o.layer).toBeUndefined();
  });

  it("kills a step that runs past its timeout, and one that is cancelled, within seconds", async () => {
    let t = Date.now();
    const o = await run(job(["/bin/sh", "-c", "sleep 60"], [busyboxLayer, shellLayer], { timeoutSeconds: 1 }));
    expect(o.status).toBe("timeout");
    expect(Date.now() - t).toBeLessThan(6000);
    const ac = new AbortController();
    t = Date.now();
    setTimeout(() => ac.abort(), 1000);
    const c = await run(job(["/bin/sh", "-c", "sleep 60"], [busyboxLayer, shellLayer]), ac.signal);
    expect(c.status).toBe("cancelled");
    expect(Date.now() - t).toBeLessThan(6000);
    expect(spawnSync("runc", ["--root", path.join(workDir, "runc"), "list", "-q"]).stdout.toString().trim()).toBe("");
  });

  it("keeps cache mounts between steps, never in the layer, and removes the mount points it created", async () => {
    const base = [busyboxLayer, shellLayer];
    const mounts = [{ type: "cache" as const, target: "/root/.cache/tool", id: "tool" }];
    const first = await run(job(["/bin/sh", "-c", "echo 1 >> /root/.cache/tool/count; echo made > /made"], base, { mounts }));
    expect(first.status).toBe("ok");
    expect(summary(await diffEntries(first.upper!, 0))).toEqual(["made file 5"]);
    const second = await run(job(["/bin/sh", "-c", "cat /root/.cache/tool/count; echo 1 >> /root/.cache/tool/count"], base, { mounts }));
    expect(second.output).toBe("1\n");
    expect(second.layer).toBeNull();
    const tmpfs = await run(job(["/bin/sh", "-c", "echo x > /scratch/file"], base, { mounts: [{ type: "tmpfs", target: "/scratch" }] }));
    expect(tmpfs.status).toBe("ok");
    expect(tmpfs.layer).toBeNull();
  });

  it("keeps cache mounts per cache scope: the same id in another scope is another directory", async () => {
    const base = [busyboxLayer, shellLayer];
    const mounts = [{ type: "cache" as const, target: "/c", id: "shared-id" }];
    const a = await run(job(["/bin/sh", "-c", "echo from-a > /c/marker"], base, { mounts, cacheScope: "tenant-a" }));
    expect(a.status, a.output + (a.message ?? "")).toBe("ok");
    const b = await run(job(["/bin/sh", "-c", "cat /c/marker 2>/dev/null || echo none; echo from-b > /c/marker"], base, { mounts, cacheScope: "tenant-b" }));
    expect(b.output).toBe("none\n");
    const a2 = await run(job(["/bin/sh", "-c", "cat /c/marker"], base, { mounts, cacheScope: "tenant-a" }));
    expect(a2.output).toBe("from-a\n");
    // an id that names a path stays a name inside its scope's directory
    const climb = await run(job(["/bin/sh", "-c", "ls -A /c; echo climbed > /c/x"], base, { mounts: [{ type: "cache", target: "/c", id: "../tenant-a/" + "x".repeat(8) }], cacheScope: "tenant-b" }));
    expect(climb.output).toBe("");
    expect(await fs.readdir(path.join(workDir, "cache-mounts", "tenant-a"))).toHaveLength(1);
    expect(await fs.readdir(path.join(workDir, "cache-mounts", "tenant-b"))).toHaveLength(2);
    expect(existsSync(path.join(workDir, "cache-mounts", "tenant-a", "x".repeat(8)))).toBe(false);
    // a job without a valid scope gets no cache mount at all
    const none = await run(job(["/bin/sh", "-c", "true"], base, { mounts, cacheScope: undefined as unknown as string }));
    expect(none.status).toBe("error");
    expect(none.message).toMatch(/cache scope/);
  });

  it("mounts secrets read-only and keeps them out of the layer and the bundle", async () => {
    const secret = "s3cr3t-value-42";
    const o = await run(job(["/bin/sh", "-c", "test \"$(cat /run/secrets/token)\" = s3cr3t-value-42 && cp /run/secrets/token /tmp-copy-check 2>/dev/null; rm -f /tmp-copy-check; echo $TOKEN_ENV | wc -c; echo nope > /run/secrets/token || echo readonly"], [busyboxLayer, shellLayer], {
      mounts: [{ type: "secret", target: "", id: "token" }, { type: "secret", target: "", id: "token", env: "TOKEN_ENV" }],
      secrets: { token: secret },
    }));
    expect(o.status, o.output).toBe("ok");
    expect(o.output).toContain("16\n");
    expect(o.output).toContain("readonly");
    expect(o.layer).toBeNull();
    const leftovers = spawnSync("grep", ["-rl", secret, o.jobDir]).stdout.toString();
    expect(leftovers).toBe("");
  });

  it("has no network but loopback, unless the step asks for host networking and the runner allows it", async () => {
    const base = [busyboxLayer, shellLayer];
    const ifaces = (out: string) => out.split("\n").slice(2).map((l) => l.split(":")[0].trim()).filter(Boolean).sort();
    const none = await run(job(["/bin/sh", "-c", "cat /proc/net/dev"], base));
    expect(none.status).toBe("ok");
    expect(ifaces(none.output)).toEqual(["lo"]);
    const hostIfaces = ifaces(await fs.readFile("/proc/net/dev", "utf8"));
    const host = await run(job(["/bin/sh", "-c", "cat /proc/net/dev"], base, { network: "host" }), undefined, true);
    expect(ifaces(host.output)).toEqual(hostIfaces);
    const refused = await run(job(["/bin/sh", "-c", "true"], base, { network: "host" }));
    expect(refused.status).toBe("error");
    expect(refused.message).toMatch(/--allow-host-network/);
  });

  it("gives a bind mount a read-only view of other layers", async () => {
    const { layer: data } = await layerOf(job(["/bin/sh", "-c", "mkdir /src && echo from-stage > /src/f"], [busyboxLayer, shellLayer]));
    const o = await run(job(["/bin/sh", "-c", "cat /mnt/f; touch /mnt/g || echo ro"], [busyboxLayer, shellLayer], {
      mounts: [{ type: "bind", target: "/mnt", source: "/src", fromLayers: [busyboxLayer, shellLayer, data] }],
    }));
    expect(o.output).toContain("from-stage\n");
    expect(o.output).toContain("ro\n");
    expect(o.layer).toBeNull();
  });

  it("evicts least recently used layers beyond the cache budget, never those in use", async () => {
    const { layer: extra } = await layerOf(job(["/bin/sh", "-c", "echo gc > /gc"], [busyboxLayer, shellLayer]));
    await store.markUsed(busyboxLayer.diffId);
    const removed = await store.gc(0, new Set([shellLayer.diffId, busyboxLayer.diffId]));
    expect(removed).toContain(extra.diffId);
    expect(removed).not.toContain(shellLayer.diffId);
    expect(await store.has(extra.diffId)).toBe(false);
    expect(await store.has(busyboxLayer.diffId)).toBe(true);
    expect(await store.has(shellLayer.diffId)).toBe(true);
  });
});
