// Issue 17, findings 5 and 6, against a real kiln server (wrangler dev): runner pools by namespace,
// per-lease job registry tokens limited to the job's blobs, completions only from the lease holder with
// a layer that exists in the job's repository, secrets only for the lease holder and gone when the job
// ends. Jobs are driven by hand through the claim API; the last tests run a real runner under runc.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClaimedJob, JobStatus, QueuedJob, RunResult } from "../../src/protocol/jobs";
import { diffEntries, writeLayerFile } from "../../src/runner/differ";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { BUSYBOX, contextDir, createToken, tarOf, waitForBuild, type BuildResult, type CreatedToken } from "./helpers";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const canRunRunner = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);
if (!canRunRunner) console.warn("tenancy-runners: the real-runner tests are skipped (need root, runc and busybox-static)");
const LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";

describe("tenancy: runners, job credentials and completions", () => {
  let kiln: KilnServer;
  let tenantA: CreatedToken;
  let tenantB: CreatedToken;
  let runnerA: CreatedToken;
  let runnerB: CreatedToken;
  let pool: CreatedToken;
  let tmp: string;
  const runners: RunnerProcess[] = [];

  async function call(pathname: string, token: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
    const raw = init.body instanceof Uint8Array || typeof init.body === "string";
    return fetch(`${kiln.url}${pathname}`, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: { authorization: `Bearer ${token}`, ...(init.body !== undefined && !raw ? { "content-type": "application/json" } : {}), ...init.headers },
      body: init.body === undefined ? undefined : raw ? (init.body as BodyInit) : JSON.stringify(init.body),
    });
  }

  let seq = 0;
  /** Queues a job by hand (admin) on a platform no real runner serves. */
  async function enqueue(repository: string, extra: Partial<QueuedJob> = {}): Promise<QueuedJob> {
    const buildId = `tr-${Date.now().toString(36)}-${seq++}`;
    const job: QueuedJob = {
      jobId: `${buildId}-1`, buildId, stepIndex: 1, platform: { os: "linux", architecture: "tenancy" }, layers: [],
      args: ["/bin/true"], env: [], workdir: "/", user: "", network: "none", mounts: [], timeoutSeconds: 60,
      repository, sourceDateEpoch: 0, cacheScope: repository.split("/")[0], ...extra,
    };
    const res = await call("/v1/jobs", ADMIN_TOKEN, { body: job });
    expect(res.status, await res.clone().text()).toBe(202);
    return job;
  }

  async function claim(token: string, opts: { platform?: string; waitSeconds?: number } = {}): Promise<ClaimedJob | null> {
    const res = await call("/v1/runners/claim", token, { body: { runnerId: `by-hand-${token.slice(-6)}`, platforms: [opts.platform ?? "linux/tenancy"], waitSeconds: opts.waitSeconds ?? 0 } });
    if (res.status === 204) return null;
    expect(res.status, await res.clone().text()).toBe(200);
    const got = (await res.json()) as ClaimedJob;
    // Acknowledge at once (as a runner does), so the lease lasts its full length.
    expect((await call(`/v1/jobs/${got.job.jobId}/lease`, token, { body: { leaseId: got.leaseId } })).status).toBe(200);
    return got;
  }

  async function jobStatus(jobId: string): Promise<JobStatus> {
    const res = await call(`/v1/jobs/${jobId}`, ADMIN_TOKEN);
    expect(res.status).toBe(200);
    return (await res.json()) as JobStatus;
  }

  /** Uploads bytes through the blob API (POST session, PUT ?digest=); the statuses of both calls. */
  async function upload(repo: string, token: string, bytes: Uint8Array, digest: string): Promise<{ start: number; put?: number }> {
    const start = await call(`/v2/${repo}/blobs/uploads/`, token, { method: "POST" });
    await start.arrayBuffer();
    if (start.status !== 202) return { start: start.status };
    const url = new URL(start.headers.get("location")!, kiln.url);
    url.searchParams.set("digest", digest);
    const put = await call(url.pathname + url.search, token, { method: "PUT", body: bytes, headers: { "content-type": "application/octet-stream" } });
    await put.arrayBuffer();
    return { start: start.status, put: put.status };
  }

  /** A real gzip tar layer holding `files`. */
  async function makeLayer(files: Record<string, string>): Promise<{ bytes: Uint8Array; layer: { digest: string; diffId: string; mediaType: string; size: number } }> {
    const dir = await fs.mkdtemp(path.join(tmp, "layer-"));
    for (const [name, content] of Object.entries(files)) await fs.writeFile(path.join(dir, name), content);
    const w = await writeLayerFile(await diffEntries(dir, 0), `${dir}.tar.gz`);
    return { bytes: new Uint8Array(await fs.readFile(w.path)), layer: { digest: w.digest, diffId: w.diffId, mediaType: w.mediaType, size: w.size } };
  }

  /** Submits a build as `token` (multipart: context tar and optional secrets). */
  async function submit(token: string, tag: string, files: Record<string, string | Uint8Array>, secrets?: Record<string, string>): Promise<string> {
    const dir = contextDir(files);
    if (files.busybox) execFileSync("chmod", ["0755", path.join(dir, "busybox")]);
    const boundary = `kiln-${Date.now()}`;
    const parts: Buffer[] = [];
    if (secrets) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="secrets"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(secrets)}\r\n`));
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context.tar"\r\nContent-Type: application/x-tar\r\n\r\n`), await tarOf(dir), Buffer.from(`\r\n--${boundary}--\r\n`));
    const res = await fetch(`${kiln.url}/v1/builds?tag=${encodeURIComponent(tag)}`, {
      method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": `multipart/form-data; boundary=${boundary}` }, body: Buffer.concat(parts),
    });
    const body = (await res.json()) as { id: string };
    expect(res.status, JSON.stringify(body)).toBe(202);
    return body.id;
  }

  async function build(id: string, token: string): Promise<BuildResult> {
    const res = await call(`/v1/builds/${id}`, token);
    expect(res.status).toBe(200);
    return (await res.json()) as BuildResult;
  }

  /** The queued job of a build (its RUN step), once the build got there. */
  async function queuedJobOf(buildId: string): Promise<JobStatus> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const res = await call("/v1/jobs?state=queued&limit=1000", ADMIN_TOKEN);
      const found = ((await res.json()) as { jobs: JobStatus[] }).jobs.find((j) => j.buildId === buildId);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no queued job of ${buildId}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Runs `sql` on the SQLite file of every Durable Object of `className` in the server's state dir. */
  function durableRows(className: string, sql: string): string {
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".sqlite") && p.includes(className)) files.push(p);
      }
    };
    walk(kiln.stateDir);
    expect(files.length).toBeGreaterThan(0);
    let out = "";
    for (const f of files) {
      const r = spawnSync("sqlite3", ["-readonly", "-json", f, sql], { encoding: "utf8" });
      if (r.status === 0) out += r.stdout;
    }
    return out;
  }

  /** The row of a job in the Dispatcher's jobs table. */
  const dispatcherRows = (jobId: string) => durableRows("Dispatcher", `SELECT * FROM jobs WHERE job_id = '${jobId.replace(/'/g, "''")}'`);
  /** The stored spec of every build (BuildCoordinator state). */
  const buildSpecs = () => durableRows("BuildCoordinator", "SELECT v FROM meta WHERE k = 'spec'");

  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "kiln-e2e-tenancy-runners-"));
    kiln = await startKiln({ vars: { KILN_DISPATCH_PREFER_MS: "0" } });
    tenantA = await createToken(kiln.url, ["repository:a/*:pull,push"], "tenant-a");
    tenantB = await createToken(kiln.url, ["repository:b/*:pull,push"], "tenant-b");
    runnerA = await createToken(kiln.url, ["runner:a/*"], "runner-a");
    runnerB = await createToken(kiln.url, ["runner:b/*"], "runner-b");
    pool = await createToken(kiln.url, ["runner"], "pool");
  }, 120_000);

  afterAll(async () => {
    for (const r of runners) { await r.stop("SIGKILL"); await wipeRunnerDir(r.workDir); }
    await kiln?.stop(true);
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  it("a runner:b/* runner never receives a job of a/app; runner:a/* and the pool do", async () => {
    const j1 = await enqueue("a/app");
    const t = Date.now();
    expect(await claim(runnerB.token, { waitSeconds: 2 })).toBeNull(); // 204 while the a/ job waits
    expect(Date.now() - t).toBeGreaterThanOrEqual(1500);
    const got = await claim(runnerA.token);
    expect(got?.job.jobId).toBe(j1.jobId);
    const st = await jobStatus(j1.jobId);
    expect([st.state, st.runnerTokenId, st.repository]).toEqual(["leased", runnerA.id, "a/app"]);

    const j2 = await enqueue("a/app");
    expect(await claim(runnerB.token)).toBeNull();
    expect((await claim(pool.token))?.job.jobId).toBe(j2.jobId);
    expect((await jobStatus(j2.jobId)).runnerTokenId).toBe(pool.id);

    const j3 = await enqueue("b/app");
    expect((await claim(runnerB.token))?.job.jobId).toBe(j3.jobId);
  });

  it("a job's registry token uploads blobs to its repository only: no manifest, tag, delete or other repository", async () => {
    const { bytes, layer } = await makeLayer({ "ok.txt": "fine\n" });
    const secretB = new TextEncoder().encode(`b private ${Date.now()}`);
    const secretBDigest = `sha256:${createHash("sha256").update(secretB).digest("hex")}`;
    expect((await upload("b/private", tenantB.token, secretB, secretBDigest)).put).toBe(201);

    await enqueue("a/app");
    const got = (await claim(runnerA.token))!;
    const t = got.job.registryToken;
    expect(t).toBeTruthy();
    expect(await upload("a/app", t, bytes, layer.digest)).toEqual({ start: 202, put: 201 });
    expect((await call(`/v2/a/app/blobs/${layer.digest}`, t)).status).toBe(200);

    const manifest = JSON.stringify({
      schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: layer.digest, size: layer.size }, layers: [],
    });
    const mt = { "content-type": "application/vnd.oci.image.manifest.v1+json" };
    for (const [what, pathname, init] of [
      ["PUT a tag", "/v2/a/app/manifests/hijacked", { method: "PUT", body: manifest, headers: mt }],
      ["DELETE a tag", "/v2/a/app/manifests/latest", { method: "DELETE" }],
      ["DELETE a blob", `/v2/a/app/blobs/${layer.digest}`, { method: "DELETE" }],
      ["list tags", "/v2/a/app/tags/list", {}],
      ["read another repository", `/v2/b/private/blobs/${secretBDigest}`, {}],
      ["upload to another repository", "/v2/b/private/blobs/uploads/", { method: "POST" }],
      ["upload to another repository of a/", "/v2/a/other/blobs/uploads/", { method: "POST" }],
      ["catalog", "/v2/_catalog", {}],
    ] as const) {
      const res = await call(pathname, t, init as { method?: string; body?: unknown; headers?: Record<string, string> });
      const text = await res.text();
      expect(res.status, `${what}: ${text}`).toBe(403);
    }
    expect((await call(`/v2/a/app/blobs/${layer.digest}`, ADMIN_TOKEN)).status).toBe(200); // not deleted
    expect((await call("/v2/a/app/manifests/hijacked", ADMIN_TOKEN)).status).toBe(404); // not tagged
    // Not an API credential either.
    expect((await call("/v1/runners/claim", t, { body: { runnerId: "x", waitSeconds: 0 } })).status).toBe(401);

    // Completed: the token is dead.
    expect((await call(`/v1/jobs/${got.job.jobId}/complete`, runnerA.token, { body: { leaseId: got.leaseId, result: { ok: true, layer } } })).status).toBe(200);
    const more = await makeLayer({ "late.txt": "late\n" });
    expect((await upload("a/app", t, more.bytes, more.layer.digest)).start).toBe(401);
    expect((await call(`/v2/a/app/blobs/${layer.digest}`, t)).status).toBe(401);
  });

  it("a job's registry token dies when its runner token is revoked", async () => {
    const doomed = await createToken(kiln.url, ["runner:a/**"], "doomed");
    await enqueue("a/app");
    const got = (await claim(doomed.token))!;
    const first = await makeLayer({ "1.txt": "1\n" });
    expect((await upload("a/app", got.job.registryToken, first.bytes, first.layer.digest)).put).toBe(201);
    expect((await call(`/v1/tokens/${doomed.id}`, ADMIN_TOKEN, { method: "DELETE" })).status).toBe(204);
    const second = await makeLayer({ "2.txt": "2\n" });
    const res = await call("/v2/a/app/blobs/uploads/", got.job.registryToken, { method: "POST" });
    expect(res.status).toBe(401);
    expect(await res.text()).toMatch(/revoked/);
    expect((await upload("a/app", got.job.registryToken, second.bytes, second.layer.digest)).start).toBe(401);
    expect((await call(`/v1/jobs/${got.job.jobId}/lease`, doomed.token, { body: { leaseId: got.leaseId } })).status).toBe(401);
  });

  it("another runner token cannot renew or complete with the holder's lease id", async () => {
    const j = await enqueue("a/app");
    const got = (await claim(runnerA.token))!;
    const forged: RunResult = { ok: false, exitCode: 0, message: "forged by another runner" };
    const complete = await call(`/v1/jobs/${j.jobId}/complete`, pool.token, { body: { leaseId: got.leaseId, result: forged } });
    expect(complete.status).toBe(403);
    expect(((await complete.json()) as { error: { message: string } }).error.message).toMatch(/another runner token/);
    expect((await call(`/v1/jobs/${j.jobId}/lease`, pool.token, { body: { leaseId: got.leaseId } })).status).toBe(403);
    const st = await jobStatus(j.jobId);
    expect([st.state, st.result]).toEqual(["leased", null]);
    expect((await call(`/v1/jobs/${j.jobId}/complete`, runnerA.token, { body: { leaseId: got.leaseId, result: { ok: false, exitCode: 1, message: "real" } } })).status).toBe(200);
    expect((await jobStatus(j.jobId)).result).toEqual({ ok: false, exitCode: 1, message: "real" });
  });

  it("a completion naming a layer not uploaded to the job's repository is refused and the build does not ship it", async () => {
    const id = await submit(tenantA.token, "a/forged:1", { Dockerfile: "FROM scratch\nRUN [\"/x\"]\n" });
    const queued = await queuedJobOf(id);
    expect(queued.repository).toBe("a/forged");
    const got = (await claim(runnerA.token, { platform: "linux/amd64" }))!;
    expect(got.job.jobId).toBe(queued.jobId);
    const complete = (layer: { digest: string; diffId: string; mediaType: string; size: number }) =>
      call(`/v1/jobs/${got.job.jobId}/complete`, runnerA.token, { body: { leaseId: got.leaseId, result: { ok: true, layer } } });

    // Never uploaded anywhere.
    const evil = await makeLayer({ "evil.txt": "pwned\n" });
    const never = await complete(evil.layer);
    expect(never.status).toBe(400);
    expect(((await never.json()) as { error: { message: string } }).error.message).toMatch(/not uploaded to a\/forged/);
    // Uploaded, but to another tenant's repository (B's own blob).
    expect((await upload("b/evil", tenantB.token, evil.bytes, evil.layer.digest)).put).toBe(201);
    expect((await complete(evil.layer)).status).toBe(400);
    // In the repository, but not with the stated size.
    const good = await makeLayer({ "good.txt": "the real result\n" });
    expect((await upload("a/forged", got.job.registryToken, good.bytes, good.layer.digest)).put).toBe(201);
    expect((await complete({ ...good.layer, size: good.layer.size + 1 })).status).toBe(400);
    await new Promise((r) => setTimeout(r, 500));
    const still = await build(id, tenantA.token);
    expect(still.status).toBe("running");
    expect(JSON.stringify(still)).not.toContain(evil.layer.digest);
    expect((await jobStatus(got.job.jobId)).state).toBe("leased");

    // The genuine layer is accepted, and it is what the image ships.
    expect((await complete(good.layer)).status).toBe(200);
    const done = await waitForBuild(kiln.url, tenantA.token, id, 60_000);
    expect(done.status, JSON.stringify(done.error)).toBe("succeeded");
    const m = await call(`/v2/a/forged/manifests/1`, tenantA.token, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(m.status).toBe(200);
    const layers = ((await m.json()) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
    expect(layers).toEqual([good.layer.digest]);
  });

  it("secrets reach only the lease holder, never GET /v1/jobs/:id, and leave the Dispatcher's state when the job ends", async () => {
    const secret = `tenant-a-secret-${Date.now()}-9d2e`;
    const id = await submit(tenantA.token, "a/secret:1", { Dockerfile: "FROM scratch\nRUN --mount=type=secret,id=tok [\"/x\"]\n" }, { tok: secret });
    const queued = await queuedJobOf(id);
    expect(JSON.stringify(queued)).not.toContain(secret);
    expect(await claim(runnerB.token, { platform: "linux/amd64" })).toBeNull();
    const got = (await claim(runnerA.token, { platform: "linux/amd64" }))!;
    expect(got.job.jobId).toBe(queued.jobId);
    expect(got.job.secrets).toEqual({ tok: secret });
    const status = await call(`/v1/jobs/${got.job.jobId}`, ADMIN_TOKEN);
    expect(await status.text()).not.toContain(secret);
    const list = await call("/v1/jobs?limit=1000", ADMIN_TOKEN);
    expect(await list.text()).not.toContain(secret);
    // While the job lives the Dispatcher keeps them (a re-queue hands them to the next holder) ...
    expect(dispatcherRows(got.job.jobId)).toContain(secret);
    expect(buildSpecs()).toContain(secret);
    expect((await call(`/v1/jobs/${got.job.jobId}/complete`, runnerA.token, { body: { leaseId: got.leaseId, result: { ok: false, exitCode: 2, message: "failed on purpose" } } })).status).toBe(200);
    expect((await waitForBuild(kiln.url, tenantA.token, id, 60_000)).status).toBe("failed");
    // ... and not once it ended.
    const rows = dispatcherRows(got.job.jobId);
    expect(rows).toContain(got.job.jobId);
    expect(rows).not.toContain(secret);
    expect(await (await call(`/v1/jobs/${got.job.jobId}`, ADMIN_TOKEN)).text()).not.toContain(secret);
    // The build that ended keeps no copy either.
    expect(buildSpecs()).toContain(id);
    expect(buildSpecs()).not.toContain(secret);

    // Cancelled builds drop them too.
    const id2 = await submit(tenantA.token, "a/secret:2", { Dockerfile: "FROM scratch\nRUN --mount=type=secret,id=tok [\"/y\"]\n" }, { tok: secret });
    const q2 = await queuedJobOf(id2);
    expect(dispatcherRows(q2.jobId)).toContain(secret);
    expect((await call(`/v1/builds/${id2}`, tenantA.token, { method: "DELETE" })).status).toBe(200);
    const deadline = Date.now() + 10_000;
    while ((await jobStatus(q2.jobId)).state !== "cancelled" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    expect(dispatcherRows(q2.jobId)).not.toContain(secret);
    expect(buildSpecs()).not.toContain(secret);
  });

  describe.skipIf(!canRunRunner)("with real runners", () => {
    const BASE = ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox","--install","-s","/bin"]'];

    it("a runner:a/* runner builds a/ images (layers read and uploaded with the job token) and leaves b/ jobs to the pool", async () => {
      const r = await startRunner(kiln.url, { token: runnerA.token, runnerId: "runner-a", leaseSeconds: 5 });
      runners.push(r);
      const secret = `real-runner-secret-${Date.now()}`;
      const files = {
        Dockerfile: [...BASE, "RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len && echo made > /made", ""].join("\n"),
        busybox: readFileSync(BUSYBOX),
      };
      const a = await waitForBuild(kiln.url, tenantA.token, await submit(tenantA.token, "a/real:1", files, { tok: secret }), 180_000);
      expect(a.status, JSON.stringify(a.error) + r.output()).toBe("succeeded");

      const idB = await submit(tenantB.token, "b/real:1", files, { tok: secret });
      const qb = await queuedJobOf(idB);
      await new Promise((res) => setTimeout(res, 3000));
      const stB = await jobStatus(qb.jobId);
      expect([stB.state, stB.runnerId]).toEqual(["queued", null]); // runner-a is idle but may not take it
      const p = await startRunner(kiln.url, { token: pool.token, runnerId: "pool", leaseSeconds: 5 });
      runners.push(p);
      const b = await waitForBuild(kiln.url, tenantB.token, idB, 180_000);
      expect(b.status, JSON.stringify(b.error) + p.output()).toBe("succeeded");
      const byB = await jobStatus(qb.jobId);
      expect([byB.runnerId, byB.runnerTokenId]).toEqual(["pool", pool.id]);
      expect(dispatcherRows(qb.jobId)).not.toContain(secret);
      expect(buildSpecs()).not.toContain(secret);
    }, 400_000);
  });
});
