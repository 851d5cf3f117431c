// The runner process against a real kiln server (wrangler dev): jobs queued by hand through the admin
// API, layers fetched from and uploaded to kiln's registry, lease expiry after a SIGKILLed runner, cancel.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobLayer, JobStatus, RunJob } from "../../src/protocol/jobs";
import { diffEntries, writeLayerFile } from "../../src/runner/differ";
import { readTar } from "../../src/oci/tar";
import { KilnClient } from "../../src/runner/client";
import { createHash, randomBytes } from "node:crypto";
import { ADMIN_TOKEN, startKiln, type KilnServer } from "./server";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const BUSYBOX = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
const canRun = process.getuid?.() === 0 && spawnSync("runc", ["--version"]).status === 0 && !!BUSYBOX;
if (!canRun) console.warn("runner-protocol tests skipped: need root, runc and busybox-static");

const REPO = "e2e/runner";
const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };

async function pushBlob(server: string, repo: string, file: string, digest: string, size: number): Promise<void> {
  const start = await fetch(`${server}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: auth });
  expect(start.status).toBe(202);
  const url = new URL(start.headers.get("location")!, server);
  url.searchParams.set("digest", digest);
  const put = await fetch(url, {
    method: "PUT", headers: { ...auth, "content-type": "application/octet-stream", "content-length": String(size) },
    body: await fs.readFile(file),
  });
  expect(put.status, await put.clone().text()).toBe(201);
}

async function jobStatus(server: string, jobId: string): Promise<JobStatus> {
  const res = await fetch(`${server}/v1/jobs/${jobId}`, { headers: auth });
  expect(res.status).toBe(200);
  return (await res.json()) as JobStatus;
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe.skipIf(!canRun)("runner process against kiln", () => {
  let kiln: KilnServer;
  let busybox: JobLayer;
  const runners: RunnerProcess[] = [];

  const job = (buildId: string, args: string[], extra: Partial<RunJob> = {}): RunJob => ({
    jobId: `${buildId}-${Math.random().toString(36).slice(2, 10)}`, buildId, stepIndex: 1, platform: { os: "linux", architecture: "amd64" },
    layers: [busybox], args, env: ["PATH=/bin"], workdir: "/", user: "", network: "none", mounts: [], timeoutSeconds: 120,
    repository: REPO, registryToken: ADMIN_TOKEN, sourceDateEpoch: 0, cacheScope: "e2e", ...extra,
  });

  async function enqueue(j: RunJob): Promise<void> {
    const res = await fetch(`${kiln.url}/v1/jobs`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(j) });
    expect(res.status).toBe(202);
  }

  beforeAll(async () => {
    kiln = await startKiln({ vars: { KILN_DISPATCH_PREFER_MS: "0" } });
    const src = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-bb-"));
    await fs.mkdir(path.join(src, "bin"));
    await fs.copyFile(BUSYBOX!, path.join(src, "bin/busybox"));
    await fs.chmod(path.join(src, "bin/busybox"), 0o755);
    const w = await writeLayerFile(await diffEntries(src, 0), path.join(src, "..", `bb-${path.basename(src)}.tar.gz`));
    busybox = { digest: w.digest, diffId: w.diffId, mediaType: w.mediaType, size: w.size };
    await pushBlob(kiln.url, REPO, w.path, w.digest, w.size);
  });

  afterAll(async () => {
    for (const r of runners) { await r.stop("SIGKILL"); await wipeRunnerDir(r.workDir); }
    await kiln?.stop(true);
  });

  it("runs a job, uploads its layer to the registry and completes it", async () => {
    const r = await startRunner(kiln.url, { leaseSeconds: 5 });
    runners.push(r);
    const j = job("proto-ok", ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir /x && /bin/busybox echo hi > /x/y && /bin/busybox echo to-the-log"]);
    await enqueue(j);
    const st = await waitFor("the job to finish", async () => { const s = await jobStatus(kiln.url, j.jobId); return s.state === "done" && s; });
    expect(st.result?.ok, JSON.stringify(st.result) + r.output()).toBe(true);
    const layer = st.result!.ok ? st.result!.layer! : null;
    expect(layer?.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    const blob = await fetch(`${kiln.url}/v2/${REPO}/blobs/${layer!.digest}`, { headers: auth });
    expect(blob.status).toBe(200);
    const names: string[] = [];
    for await (const e of readTar(blob.body!.pipeThrough(new DecompressionStream("gzip")))) names.push(e.header.path.replace(/\/$/, ""));
    expect(names).toEqual(["x", "x/y"]);
  });

  it("hands the job of a SIGKILLed runner to another runner once the lease expires", async () => {
    for (const r of runners.splice(0)) { await r.stop(); await wipeRunnerDir(r.workDir); }
    const a = await startRunner(kiln.url, { leaseSeconds: 2, runnerId: "runner-a" });
    runners.push(a);
    const j = job("proto-kill", ["/bin/busybox", "sh", "-c", "/bin/busybox sleep 4; /bin/busybox echo done > /done"]);
    await enqueue(j);
    await waitFor("runner A to take the job", async () => (await jobStatus(kiln.url, j.jobId)).runnerId === "runner-a");
    await new Promise((r) => setTimeout(r, 1000));
    await a.stop("SIGKILL");
    await wipeRunnerDir(a.workDir); // the container a killed runner leaves behind
    runners.splice(runners.indexOf(a), 1);
    const b = await startRunner(kiln.url, { leaseSeconds: 5, runnerId: "runner-b" });
    runners.push(b);
    const st = await waitFor("the job to finish on runner B", async () => { const s = await jobStatus(kiln.url, j.jobId); return s.state === "done" && s; });
    expect(st.runnerId).toBe("runner-b");
    expect(st.attempts).toBe(1);
    expect(st.result?.ok, JSON.stringify(st.result)).toBe(true);
  });

  it("kills the container within seconds when the build is cancelled", async () => {
    const r = runners[runners.length - 1];
    const j = job("proto-cancel", ["/bin/busybox", "sleep", "300"]);
    await enqueue(j);
    const runcRoot = path.join(r.workDir, "runc");
    const list = () => spawnSync("runc", ["--root", runcRoot, "list", "-q"]).stdout?.toString().trim() ?? "";
    await waitFor("the container to start", async () => list() !== "");
    const t = Date.now();
    const res = await fetch(`${kiln.url}/v1/jobs/cancel`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ buildId: "proto-cancel" }) });
    expect(res.status).toBe(204);
    await waitFor("the container to be gone", async () => list() === "", 15_000);
    expect(Date.now() - t).toBeLessThan(10_000);
    expect((await jobStatus(kiln.url, j.jobId)).state).toBe("cancelled");
    await waitFor("the runner to abandon the job", async () => /abandoned/.test(r.output()), 10_000);
  });

  it("runs jobs side by side with --concurrency", async () => {
    for (const r of runners.splice(0)) { await r.stop(); await wipeRunnerDir(r.workDir); }
    const r = await startRunner(kiln.url, { leaseSeconds: 5, concurrency: 2, runnerId: "twin" });
    runners.push(r);
    const jobs = [1, 2].map((n) => job(`proto-par-${n}`, ["/bin/busybox", "sh", "-c", `/bin/busybox sleep 3; /bin/busybox echo ${n} > /n`]));
    for (const j of jobs) await enqueue(j);
    const runcRoot = path.join(r.workDir, "runc");
    await waitFor("two containers at once", async () => (spawnSync("runc", ["--root", runcRoot, "list", "-q"]).stdout?.toString().trim().split("\n").filter(Boolean).length ?? 0) === 2, 20_000);
    for (const j of jobs) {
      const st = await waitFor("the job to finish", async () => { const s = await jobStatus(kiln.url, j.jobId); return s.state === "done" && s; });
      expect(st.result?.ok, JSON.stringify(st.result)).toBe(true);
    }
  });

  it("uploads a large layer in chunks", async () => {
    const file = path.join(os.tmpdir(), `kiln-chunked-${process.pid}.bin`);
    const data = randomBytes(2.5 * 1024 * 1024);
    await fs.writeFile(file, data);
    const digest = `sha256:${createHash("sha256").update(data).digest("hex")}`;
    try {
      await new KilnClient(kiln.url, ADMIN_TOKEN).uploadBlob(REPO, ADMIN_TOKEN, file, digest, data.length, 1024 * 1024);
    } finally {
      await fs.rm(file, { force: true });
    }
    const res = await fetch(`${kiln.url}/v2/${REPO}/blobs/${digest}`, { headers: auth });
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
  });
});
