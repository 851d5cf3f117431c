// Issue 17, findings 5 and 6: runner pools, lease holders, secrets, per-lease registry credentials and
// checked completions, against the real Worker and Dispatcher in workerd.
import { SELF, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Dispatcher, RunStepSink } from "../../../src/builder/dispatcher";
import type { ClaimedJob, JobStatus, QueuedJob, RunResult } from "../../../src/protocol/jobs";
import { pushBlob, randomBytes, sha256 } from "../registry/helpers";

const ADMIN = "kiln-test-admin";
const BASE = "http://kiln.test";
const LAYER = "application/vnd.oci.image.layer.v1.tar+gzip";

let seq = 0;
/** Each test runs on its own architecture so jobs left by other tests never match. */
const arch = () => `ten${Date.now().toString(36)}${seq++}`;
/** A namespace no other test uses. */
const ns = (p: string) => `${p}${Date.now().toString(36)}${seq++}`;

const stub = () => env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));

function job(repository: string, architecture: string, extra: Partial<QueuedJob> = {}): QueuedJob {
  const buildId = `bt-${crypto.randomUUID().slice(0, 8)}`;
  return {
    jobId: `${buildId}-1-${crypto.randomUUID().slice(0, 8)}`, buildId, stepIndex: 1,
    platform: { os: "linux", architecture }, layers: [], args: ["/bin/sh", "-c", "true"], env: [], workdir: "/",
    user: "", network: "none", mounts: [], timeoutSeconds: 60, repository, sourceDateEpoch: 0, cacheScope: repository.split("/")[0], ...extra,
  };
}

async function call(path: string, token: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const body = init.body === undefined ? undefined : typeof init.body === "string" || init.body instanceof Uint8Array ? init.body : JSON.stringify(init.body);
  return SELF.fetch(`${BASE}${path}`, {
    method: init.method ?? (body === undefined ? "GET" : "POST"),
    headers: { authorization: `Bearer ${token}`, ...(typeof init.body === "object" && !(init.body instanceof Uint8Array) ? { "content-type": "application/json" } : {}), ...init.headers },
    body,
  });
}

async function createToken(scopes: string[]): Promise<{ id: string; token: string }> {
  const res = await call("/v1/tokens", ADMIN, { body: { name: "tenancy", scopes } });
  expect(res.status, await res.clone().text()).toBe(201);
  return res.json();
}

async function claim(token: string, architecture: string, extra: Record<string, unknown> = {}): Promise<ClaimedJob | null> {
  const res = await call("/v1/runners/claim", token, { body: { runnerId: `r-${architecture}`, platforms: [`linux/${architecture}`], waitSeconds: 0, ...extra } });
  if (res.status === 204) return null;
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as ClaimedJob;
}

async function record(): Promise<RunResult[]> {
  const finished: RunResult[] = [];
  await runInDurableObject(stub(), (d: Dispatcher) => {
    d.sinkOverride = (): RunStepSink => ({
      async runStepFinished(_jobId, _stepIndex, result) { finished.push(result); },
      async appendLog() {},
    });
  });
  return finished;
}

/** The raw row of a job in the Dispatcher's SQLite. */
async function row(jobId: string): Promise<{ job_json: string; secrets_json: string | null; runner_token: string | null; state: string }> {
  return await runInDurableObject(stub(), (_d: Dispatcher, state: DurableObjectState) =>
    state.storage.sql.exec<{ job_json: string; secrets_json: string | null; runner_token: string | null; state: string }>(
      "SELECT job_json, secrets_json, runner_token, state FROM jobs WHERE job_id = ?", jobId,
    ).one(),
  );
}

/** Uploads `bytes` to `repo` through the blob API with `token` (POST session, PUT ?digest=). */
async function upload(repo: string, token: string, bytes: Uint8Array): Promise<{ start: number; put?: number; digest: string }> {
  const digest = await sha256(bytes);
  const start = await call(`/v2/${repo}/blobs/uploads/`, token, { method: "POST" });
  await start.arrayBuffer();
  if (start.status !== 202) return { start: start.status, digest };
  const url = new URL(start.headers.get("location")!, BASE);
  url.searchParams.set("digest", digest);
  const put = await call(url.pathname + url.search, token, { method: "PUT", body: bytes, headers: { "content-type": "application/octet-stream" } });
  await put.arrayBuffer();
  return { start: start.status, put: put.status, digest };
}

const layerOf = (digest: string, size: number): RunResult => ({ ok: true, layer: { digest, diffId: `sha256:${"d".repeat(64)}`, mediaType: LAYER, size } });

describe("runner pools", () => {
  it("POST /v1/tokens accepts runner:<pattern> and refuses malformed ones", async () => {
    const res = await call("/v1/tokens", ADMIN, { body: { name: "pool", scopes: ["runner:team/*", "runner:other/**", "runner"] } });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { scopes: string[] }).scopes).toEqual(["runner:team/*", "runner:other/**", "runner"]);
    for (const bad of ["runner:", "runner:Team/x", "runner:a:b", "runner:a//b"]) {
      const r = await call("/v1/tokens", ADMIN, { body: { name: "bad", scopes: [bad] } });
      expect(r.status, bad).toBe(400);
    }
    const listed = await call("/v1/tokens", ADMIN);
    expect(JSON.stringify(await listed.json())).toContain("runner:team/*");
  });

  it("a runner:<pattern> token receives only jobs of matching repositories; runner and admin serve all", async () => {
    const a = ns("a"), b = ns("b");
    const arc = arch();
    const onlyB = await createToken([`runner:${b}/*`]);
    const onlyA = await createToken([`runner:${a}/*`]);
    const pool = await createToken(["runner"]);
    const j1 = job(`${a}/app`, arc);
    await stub().enqueue(j1);
    // The b runner sees nothing while an a job waits, and may still call the runner routes.
    expect(await claim(onlyB.token, arc)).toBeNull();
    const long = await call("/v1/runners/claim", onlyB.token, { body: { runnerId: "b-poll", platforms: [`linux/${arc}`], waitSeconds: 1 } });
    expect(long.status).toBe(204);
    const gotA = await claim(onlyA.token, arc);
    expect(gotA?.job.jobId).toBe(j1.jobId);
    expect((await stub().jobStatus(j1.jobId))!.runnerTokenId).toBe(onlyA.id);

    const j2 = job(`${a}/deep/app`, arc); // `*` stays within one segment
    await stub().enqueue(j2);
    expect(await claim(onlyA.token, arc)).toBeNull();
    expect(await claim(onlyB.token, arc)).toBeNull();
    expect((await claim(pool.token, arc))?.job.jobId).toBe(j2.jobId);
    expect((await stub().jobStatus(j2.jobId))!.runnerTokenId).toBe(pool.id);

    const j3 = job(`${b}/app`, arc);
    await stub().enqueue(j3);
    expect((await claim(onlyB.token, arc))?.job.jobId).toBe(j3.jobId);

    const j4 = job(`${a}/x`, arc);
    await stub().enqueue(j4);
    const byAdmin = await claim(ADMIN, arc);
    expect(byAdmin?.job.jobId).toBe(j4.jobId);
    expect((await stub().jobStatus(j4.jobId))!.runnerTokenId).toBe("admin");
  });

  it("another runner token naming a runner id cannot end that runner's long-polls", async () => {
    const arc = arch();
    const mine = await createToken([`runner:${ns("l")}/*`]);
    const other = await createToken(["runner"]);
    const repo = `${ns("l")}/app`;
    const owner = await createToken([`runner:${repo}`]);
    const pending = call("/v1/runners/claim", owner.token, { body: { runnerId: `victim-${arc}`, platforms: [`linux/${arc}`], waitSeconds: 10 } });
    await new Promise((r) => setTimeout(r, 300));
    for (const t of [mine, other]) expect((await call("/v1/runners/leave", t.token, { body: { runnerId: `victim-${arc}` } })).status).toBe(204);
    const j = job(repo, arc);
    await stub().enqueue(j);
    const res = await pending;
    expect(res.status).toBe(200); // still polling: the job reached it
    expect(((await res.json()) as ClaimedJob).job.jobId).toBe(j.jobId);
    // Its own token still ends them.
    const again = call("/v1/runners/claim", owner.token, { body: { runnerId: `victim-${arc}`, platforms: [`linux/${arc}`], waitSeconds: 10 } });
    await new Promise((r) => setTimeout(r, 300));
    expect((await call("/v1/runners/leave", owner.token, { body: { runnerId: `victim-${arc}` } })).status).toBe(204);
    await stub().enqueue(job(repo, arc));
    expect((await again).status).toBe(204);
  });

  it("repository tokens are not runners", async () => {
    const t = await createToken([`repository:${ns("a")}/*:pull,push`]);
    expect((await call("/v1/runners/claim", t.token, { body: { runnerId: "x", waitSeconds: 0 } })).status).toBe(403);
  });
});

describe("lease holder", () => {
  it("only the runner token holding the lease may renew, log or complete it", async () => {
    const finished = await record();
    const repo = `${ns("h")}/app`;
    const arc = arch();
    const first = await createToken(["runner"]);
    const second = await createToken(["runner"]);
    const j = job(repo, arc);
    await stub().enqueue(j);
    const got = (await claim(first.token, arc))!;
    const id = j.jobId;
    const fail: RunResult = { ok: false, exitCode: 1, message: "forged" };
    for (const [path, init] of [
      [`/v1/jobs/${id}/lease`, { body: { leaseId: got.leaseId } }],
      [`/v1/jobs/${id}/logs`, { body: "stolen", headers: { "kiln-lease-id": got.leaseId, "content-type": "text/plain" } }],
      [`/v1/jobs/${id}/complete`, { body: { leaseId: got.leaseId, result: fail } }],
    ] as const) {
      const res = await call(path, second.token, init);
      expect(res.status, path).toBe(403);
      expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/another runner token/);
    }
    // Not even the admin token may complete a lease some runner token holds.
    expect((await call(`/v1/jobs/${id}/complete`, ADMIN, { body: { leaseId: got.leaseId, result: fail } })).status).toBe(403);
    expect(finished).toHaveLength(0);
    expect((await stub().jobStatus(id))!.state).toBe("leased");
    expect((await call(`/v1/jobs/${id}/lease`, first.token, { body: { leaseId: got.leaseId } })).status).toBe(200);
    const bytes = randomBytes(100);
    const digest = await pushBlob(repo, bytes);
    expect((await call(`/v1/jobs/${id}/complete`, first.token, { body: { leaseId: got.leaseId, result: layerOf(digest, bytes.length) } })).status).toBe(200);
    // A repeat by the other token is not the holder's idempotent retry.
    expect((await call(`/v1/jobs/${id}/complete`, second.token, { body: { leaseId: got.leaseId, result: layerOf(digest, bytes.length) } })).status).toBe(410);
    expect(finished).toEqual([layerOf(digest, bytes.length)]);
  });
});

describe("completion", () => {
  it("refuses a layer that is not in the job's repository or has another size; the job stays leased", async () => {
    const finished = await record();
    const repo = `${ns("c")}/app`;
    const other = `${ns("c")}/other`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    const j = job(repo, arc);
    await stub().enqueue(j);
    const got = (await claim(runner.token, arc))!;
    const complete = (result: RunResult) => call(`/v1/jobs/${j.jobId}/complete`, runner.token, { body: { leaseId: got.leaseId, result } });

    const never = await complete(layerOf(`sha256:${"e".repeat(64)}`, 10));
    expect(never.status).toBe(400);
    expect(((await never.json()) as { error: { message: string } }).error.message).toMatch(/not uploaded to/);
    const foreign = randomBytes(80);
    const foreignDigest = await pushBlob(other, foreign); // stored, but linked only in another repository
    expect((await complete(layerOf(foreignDigest, foreign.length))).status).toBe(400);
    const own = randomBytes(90);
    const ownDigest = await pushBlob(repo, own);
    const wrongSize = await complete(layerOf(ownDigest, own.length + 1));
    expect(wrongSize.status).toBe(400);
    expect(((await wrongSize.json()) as { error: { message: string } }).error.message).toMatch(/90 bytes/);
    expect(finished).toHaveLength(0);
    expect((await stub().jobStatus(j.jobId))!.state).toBe("leased");
    expect((await complete(layerOf(ownDigest, own.length))).status).toBe(200);
    expect(finished).toEqual([layerOf(ownDigest, own.length)]);
  });
});

describe("secrets", () => {
  it("go only to the lease holder, survive a re-queue, and are dropped when the job ends", async () => {
    await record();
    const repo = `${ns("s")}/app`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    const secret = `s3cr3t-${crypto.randomUUID()}`;
    const j = job(repo, arc, { secrets: { tok: secret }, mounts: [{ type: "secret", id: "tok", target: "/run/secrets/tok" }] });
    await stub().enqueue(j);
    let r = await row(j.jobId);
    expect(r.job_json).not.toContain(secret);
    expect(r.secrets_json).toContain(secret);

    const first = (await claim(runner.token, arc, { leaseSeconds: 1 }))!;
    expect(first.job.secrets).toEqual({ tok: secret });
    expect((await call(`/v1/jobs/${j.jobId}/lease`, runner.token, { body: { leaseId: first.leaseId, leaseSeconds: 1 } })).status).toBe(200);
    const status = await call(`/v1/jobs/${j.jobId}`, ADMIN);
    expect(await status.text()).not.toContain(secret);
    await new Promise((res) => setTimeout(res, 1300));
    // Re-queued after the lease expired: the next holder gets the secrets again.
    const second = (await claim(runner.token, arc))!;
    expect(second.job.jobId).toBe(j.jobId);
    expect(second.job.secrets).toEqual({ tok: secret });
    expect((await call(`/v1/jobs/${j.jobId}/complete`, runner.token, { body: { leaseId: second.leaseId, result: { ok: false, exitCode: 1, message: "x" } } })).status).toBe(200);
    r = await row(j.jobId);
    expect(r.state).toBe("done");
    expect(r.secrets_json).toBeNull();
    expect(JSON.stringify(r)).not.toContain(secret);
    const done = (await (await call(`/v1/jobs/${j.jobId}`, ADMIN)).json()) as JobStatus;
    expect(done.state).toBe("done");
    expect(JSON.stringify(done)).not.toContain(secret);
  });

  it("are dropped when the build is cancelled, queued or leased", async () => {
    const repo = `${ns("s")}/app`;
    const arc = arch();
    const secret = `cancel-${crypto.randomUUID()}`;
    const leased = job(repo, arc, { secrets: { a: secret } });
    const queued = job(repo, `${arc}x`, { buildId: leased.buildId, secrets: { a: secret } });
    await stub().enqueue(leased);
    await stub().enqueue(queued);
    expect((await claim(ADMIN, arc))?.job.secrets).toEqual({ a: secret });
    await stub().cancelBuild(leased.buildId);
    for (const id of [leased.jobId, queued.jobId]) {
      const r = await row(id);
      expect(r.state).toBe("cancelled");
      expect(JSON.stringify(r)).not.toContain(secret);
    }
  });
});

describe("job registry credential", () => {
  it("is minted per lease and only reads and uploads blobs of the job's repository", async () => {
    await record();
    const repo = `${ns("t")}/app`;
    const other = `${ns("t")}/other`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    const base = randomBytes(50);
    const baseDigest = await pushBlob(other, base); // a base layer kept elsewhere: enqueue links it into the job's repository
    const j = job(repo, arc, { layers: [{ digest: baseDigest, diffId: `sha256:${"f".repeat(64)}`, mediaType: LAYER, size: base.length }] });
    await stub().enqueue(j);
    const got = (await claim(runner.token, arc))!;
    const t = got.job.registryToken;
    const sub = JSON.parse(atob(t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub as string;
    expect(sub).toBe(`job:${j.jobId}:${got.leaseId}:${runner.id}`);

    // Reads the base layer through the job's repository and uploads a layer there.
    const read = await call(`/v2/${repo}/blobs/${baseDigest}`, t);
    expect(read.status).toBe(200);
    expect(new Uint8Array(await read.arrayBuffer())).toEqual(base);
    const up = await upload(repo, t, randomBytes(70));
    expect([up.start, up.put]).toEqual([202, 201]);
    expect((await call(`/v2/${repo}/blobs/${up.digest}`, t, { method: "HEAD" })).status).toBe(200);

    // Everything else is refused.
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: up.digest, size: 70 }, layers: [] });
    const denied: [string, string, Record<string, unknown>][] = [
      ["PUT manifest tag", `/v2/${repo}/manifests/latest`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } }],
      ["PUT manifest digest", `/v2/${repo}/manifests/${await sha256(manifest)}`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } }],
      ["GET manifest", `/v2/${repo}/manifests/latest`, {}],
      ["DELETE tag", `/v2/${repo}/manifests/latest`, { method: "DELETE" }],
      ["DELETE blob", `/v2/${repo}/blobs/${up.digest}`, { method: "DELETE" }],
      ["tags", `/v2/${repo}/tags/list`, {}],
      ["catalog", `/v2/_catalog`, {}],
      ["other repo read", `/v2/${other}/blobs/${baseDigest}`, {}],
      ["other repo upload", `/v2/${other}/blobs/uploads/`, { method: "POST" }],
      ["mount from other repo", `/v2/${repo}/blobs/uploads/?mount=${baseDigest}&from=${other}`, { method: "POST" }],
    ];
    for (const [what, path, init] of denied) {
      const res = await call(path, t, init as never);
      await res.arrayBuffer();
      // A mount the caller may not read falls back to a plain upload session (202), never a link (201).
      if (what.startsWith("mount")) expect(res.status, what).toBe(202);
      else expect(res.status, what).toBe(403);
    }
    // Not an API credential.
    expect((await call("/v1/runners/claim", t, { body: { runnerId: "x", waitSeconds: 0 } })).status).toBe(401);
    expect((await call(`/v1/jobs/${j.jobId}/lease`, t, { body: { leaseId: got.leaseId } })).status).toBe(401);
  });

  it("dies when the job completes", async () => {
    await record();
    const repo = `${ns("t")}/app`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    await stub().enqueue(job(repo, arc));
    const got = (await claim(runner.token, arc))!;
    const t = got.job.registryToken;
    const up = await upload(repo, t, randomBytes(33));
    expect(up.put).toBe(201);
    expect((await call(`/v1/jobs/${got.job.jobId}/complete`, runner.token, { body: { leaseId: got.leaseId, result: layerOf(up.digest, 33) } })).status).toBe(200);
    expect((await upload(repo, t, randomBytes(34))).start).toBe(401);
    expect((await call(`/v2/${repo}/blobs/${up.digest}`, t)).status).toBe(401);
  });

  it("dies when its runner token is revoked", async () => {
    const repo = `${ns("t")}/app`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    await stub().enqueue(job(repo, arc));
    const got = (await claim(runner.token, arc))!;
    const t = got.job.registryToken;
    expect((await upload(repo, t, randomBytes(20))).put).toBe(201);
    expect((await call(`/v1/tokens/${runner.id}`, ADMIN, { method: "DELETE" })).status).toBe(204);
    const after = await call(`/v2/${repo}/blobs/uploads/`, t, { method: "POST" });
    expect(after.status).toBe(401);
    expect(await after.text()).toMatch(/revoked/);
  });

  it("dies when the job is re-leased or cancelled", async () => {
    const repo = `${ns("t")}/app`;
    const arc = arch();
    const runner = await createToken(["runner"]);
    const j = job(repo, arc);
    await stub().enqueue(j);
    const first = (await claim(runner.token, arc, { leaseSeconds: 1 }))!;
    expect((await call(`/v1/jobs/${j.jobId}/lease`, runner.token, { body: { leaseId: first.leaseId, leaseSeconds: 1 } })).status).toBe(200);
    expect((await upload(repo, first.job.registryToken, randomBytes(10))).put).toBe(201);
    await new Promise((res) => setTimeout(res, 1300));
    // Expired: dead even before anyone claims it again.
    expect((await upload(repo, first.job.registryToken, randomBytes(11))).start).toBe(401);
    const second = (await claim(runner.token, arc))!;
    expect(second.leaseId).not.toBe(first.leaseId);
    expect(second.job.registryToken).not.toBe(first.job.registryToken);
    expect((await upload(repo, first.job.registryToken, randomBytes(12))).start).toBe(401);
    expect((await upload(repo, second.job.registryToken, randomBytes(13))).put).toBe(201);
    await stub().cancelBuild(j.buildId);
    expect((await upload(repo, second.job.registryToken, randomBytes(14))).start).toBe(401);
  });
});
