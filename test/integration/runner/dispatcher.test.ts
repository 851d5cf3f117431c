import { SELF, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Dispatcher, RunStepSink } from "../../../src/builder/dispatcher";
import type { ClaimedJob, RunJob, RunResult } from "../../../src/protocol/jobs";
import { pushBlob, randomBytes } from "../registry/helpers";

const ADMIN = "kiln-test-admin";
const BASE = "http://kiln.test";
const digest = (c: string) => `sha256:${c.repeat(64)}`;

let seq = 0;
/** Each test runs on its own architecture so jobs left by other tests never match. */
function arch(): string {
  return `t${Date.now().toString(36)}${seq++}`;
}

function job(buildId: string, stepIndex: number, architecture: string, extra: Partial<RunJob> = {}): RunJob {
  return {
    jobId: `${buildId}-${stepIndex}-${crypto.randomUUID()}`, buildId, stepIndex,
    platform: { os: "linux", architecture }, layers: [], args: ["/bin/sh", "-c", "true"], env: [], workdir: "/",
    user: "", network: "none", mounts: [], timeoutSeconds: 60, repository: "test/app", registryToken: "t",
    sourceDateEpoch: 0, cacheScope: "test", ...extra,
  };
}

const stub = () => env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));

interface Recorded { finished: { buildId: string; jobId: string; stepIndex: number; result: RunResult }[]; logs: { buildId: string; stepIndex: number; text: string }[] }

async function record(): Promise<Recorded> {
  const rec: Recorded = { finished: [], logs: [] };
  await runInDurableObject(stub(), (d: Dispatcher) => {
    d.sinkOverride = (buildId: string): RunStepSink => ({
      async runStepFinished(jobId, stepIndex, result) { rec.finished.push({ buildId, jobId, stepIndex, result }); },
      async appendLog(stepIndex, text) { rec.logs.push({ buildId, stepIndex, text }); },
    });
  });
  return rec;
}

async function post(path: string, body: unknown, headers: Record<string, string> = {}, token = ADMIN): Promise<Response> {
  return SELF.fetch(`${BASE}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function claim(runnerId: string, architecture: string, extra: Record<string, unknown> = {}): Promise<ClaimedJob | null> {
  const res = await post("/v1/runners/claim", { runnerId, platforms: [`linux/${architecture}`], waitSeconds: 0, ...extra });
  if (res.status === 204) return null;
  expect(res.status).toBe(200);
  return (await res.json()) as ClaimedJob;
}

/** A successful result whose layer was really uploaded to the job's repository (else the completion is refused). */
async function okResult(repo = "test/app"): Promise<RunResult> {
  const bytes = randomBytes(64);
  return { ok: true, layer: { digest: await pushBlob(repo, bytes), diffId: digest("b"), mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: bytes.length } };
}

describe("dispatcher: claim", () => {
  it("needs credentials and a valid body", async () => {
    expect((await post("/v1/runners/claim", { runnerId: "r", waitSeconds: 0 }, {}, "wrong")).status).toBe(401);
    const bad = await post("/v1/runners/claim", { runnerId: "has space" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/runnerId/);
    expect((await post("/v1/runners/claim", { runnerId: "r", platforms: "linux/amd64" })).status).toBe(400);
  });

  it("answers 204 when there is nothing, and hands a queued job to exactly one runner", async () => {
    const a = arch();
    expect(await claim("r1", a)).toBeNull();
    const j = job("b-claim", 0, a);
    await stub().enqueue(j);
    await stub().enqueue(j); // idempotent
    const got = await claim("r1", a);
    const { registryToken: queuedToken, ...queued } = j;
    expect(got?.job).toEqual({ ...queued, registryToken: expect.any(String) });
    expect(got!.job.registryToken).not.toBe(queuedToken); // minted for the lease, not what was queued
    expect(got!.leaseExpiresAt).toBeGreaterThan(Date.now());
    expect(await claim("r2", a)).toBeNull();
  });

  it("matches platforms", async () => {
    const a = arch();
    await stub().enqueue(job("b-plat", 0, a));
    expect(await claim("r1", "other")).toBeNull();
    const res = await post("/v1/runners/claim", { runnerId: "r1", platforms: ["linux/other", `linux/${a}`], waitSeconds: 0 });
    expect(res.status).toBe(200);
  });

  it("long-polls until a job arrives", async () => {
    const a = arch();
    const started = Date.now();
    const pending = post("/v1/runners/claim", { runnerId: "r1", platforms: [`linux/${a}`], waitSeconds: 10 });
    await new Promise((r) => setTimeout(r, 400));
    const j = job("b-poll", 0, a);
    await stub().enqueue(j);
    const res = await pending;
    expect(res.status).toBe(200);
    expect(((await res.json()) as ClaimedJob).job.jobId).toBe(j.jobId);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("gives --network=host steps to runners that allow host networking", async () => {
    const a = arch();
    const j = job("b-host", 0, a, { network: "host" });
    await stub().enqueue(j);
    expect(await claim("plain", a)).toBeNull();
    expect((await claim("hosty", a, { allowHostNetwork: true }))?.job.jobId).toBe(j.jobId);
  });

  it("ends the pending long-polls of a runner that leaves", async () => {
    const a = arch();
    const pending = post("/v1/runners/claim", { runnerId: `leaver-${a}`, platforms: [`linux/${a}`], waitSeconds: 20 });
    await new Promise((r) => setTimeout(r, 300));
    expect((await post("/v1/runners/leave", { runnerId: `leaver-${a}` })).status).toBe(204);
    await stub().enqueue(job("b-leave", 0, a));
    expect((await pending).status).toBe(204);
    expect(await claim(`other-${a}`, a)).not.toBeNull();
  });

  it("lists unfinished jobs for admins", async () => {
    const a = arch();
    const j = job("b-list", 0, a);
    await stub().enqueue(j);
    const res = await SELF.fetch(`${BASE}/v1/jobs?state=queued&limit=1000`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { jobs: { jobId: string; state: string }[] };
    expect(body.jobs.find((x) => x.jobId === j.jobId)?.state).toBe("queued");
    expect((await SELF.fetch(`${BASE}/v1/jobs?state=nope`, { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(400);
    await claim("r-list", a);
  });

  it("lists runners it has seen", async () => {
    const a = arch();
    await claim(`seen-${a}`, a);
    const res = await SELF.fetch(`${BASE}/v1/runners`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const body = (await res.json()) as { runners: { runnerId: string }[] };
    expect(body.runners.map((r) => r.runnerId)).toContain(`seen-${a}`);
  });
});

describe("dispatcher: leases", () => {
  it("renews the lease of the holder and refuses anyone else with 410", async () => {
    const a = arch();
    await stub().enqueue(job("b-renew", 0, a));
    const got = (await claim("r1", a, { leaseSeconds: 5 }))!;
    const ok = await post(`/v1/jobs/${got.job.jobId}/lease`, { leaseId: got.leaseId, leaseSeconds: 20 });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { leaseExpiresAt: number }).leaseExpiresAt).toBeGreaterThan(got.leaseExpiresAt);
    expect((await post(`/v1/jobs/${got.job.jobId}/lease`, { leaseId: "not-mine" })).status).toBe(410);
    expect((await post(`/v1/jobs/nope/lease`, { leaseId: "x" })).status).toBe(404);
  });

  it("puts a job back in the queue when its lease expires; the old holder is told 410", async () => {
    const rec = await record();
    const a = arch();
    const j = job("b-expire", 0, a);
    await stub().enqueue(j);
    const first = (await claim("r1", a, { leaseSeconds: 1 }))!;
    expect((await post(`/v1/jobs/${j.jobId}/lease`, { leaseId: first.leaseId, leaseSeconds: 1 })).status).toBe(200);
    expect(await claim("r2", a)).toBeNull();
    await new Promise((r) => setTimeout(r, 1300));
    const second = (await claim("r2", a, { leaseSeconds: 30 }))!;
    expect(second.job.jobId).toBe(j.jobId);
    expect(second.leaseId).not.toBe(first.leaseId);
    expect((await post(`/v1/jobs/${j.jobId}/lease`, { leaseId: first.leaseId })).status).toBe(410);
    expect((await post(`/v1/jobs/${j.jobId}/logs`, "late output", { "kiln-lease-id": first.leaseId, "content-type": "text/plain" })).status).toBe(410);
    expect((await post(`/v1/jobs/${j.jobId}/complete`, { leaseId: first.leaseId, result: await okResult() })).status).toBe(410);
    expect((await post(`/v1/jobs/${j.jobId}/complete`, { leaseId: second.leaseId, result: await okResult() })).status).toBe(200);
    expect(rec.finished.filter((f) => f.jobId === j.jobId)).toHaveLength(1);
    expect((await stub().jobStatus(j.jobId))!.attempts).toBe(1);
  });

  it("requeues through the alarm without any claim", async () => {
    const a = arch();
    const j = job("b-alarm", 0, a);
    await stub().enqueue(j);
    await claim("r1", a, { leaseSeconds: 1 });
    await new Promise((r) => setTimeout(r, 2000));
    expect((await stub().jobStatus(j.jobId))!.state).toBe("queued");
  });

  it("fails the step after the job lost its lease too many times", async () => {
    const rec = await record();
    const a = arch();
    const j = job("b-lost", 2, a);
    await stub().enqueue(j);
    for (let i = 0; i < 3; i++) {
      const got = (await claim(`r${i}`, a, { leaseSeconds: 1 }))!;
      expect(got.job.jobId).toBe(j.jobId);
      expect((await post(`/v1/jobs/${j.jobId}/lease`, { leaseId: got.leaseId, leaseSeconds: 1 })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1100));
    }
    expect(await claim("r9", a)).toBeNull();
    for (let i = 0; i < 20 && !rec.finished.some((f) => f.jobId === j.jobId); i++) await new Promise((r) => setTimeout(r, 200));
    const f = rec.finished.find((x) => x.jobId === j.jobId)!;
    expect(f.stepIndex).toBe(2);
    expect(f.result.ok).toBe(false);
    expect(f.result.ok === false && f.result.message).toMatch(/lease expired/);
  });
});

describe("dispatcher: unacknowledged claims", () => {
  it("requeues a claim nobody acknowledged after a short while, without counting an attempt", async () => {
    const a = arch();
    const j = job("b-ack", 0, a);
    await stub().enqueue(j);
    const got = (await claim("vanished", a, { leaseSeconds: 300 }))!;
    expect(got.leaseExpiresAt - Date.now()).toBeLessThanOrEqual(10_000);
    await runInDurableObject(stub(), (_d: Dispatcher, state: DurableObjectState) => {
      state.storage.sql.exec("UPDATE jobs SET lease_expires_at = ? WHERE job_id = ?", Date.now() - 1, j.jobId);
    });
    const again = (await claim("alive", a, { leaseSeconds: 300 }))!;
    expect(again.job.jobId).toBe(j.jobId);
    expect((await stub().jobStatus(j.jobId))!.attempts).toBe(0);
    const renewed = await post(`/v1/jobs/${j.jobId}/lease`, { leaseId: again.leaseId, leaseSeconds: 300 });
    expect(((await renewed.json()) as { leaseExpiresAt: number }).leaseExpiresAt - Date.now()).toBeGreaterThan(250_000);
  });
});

describe("dispatcher: logs and completion", () => {
  it("forwards logs of the lease holder to the build", async () => {
    const rec = await record();
    const a = arch();
    await stub().enqueue(job("b-logs", 3, a));
    const got = (await claim("r1", a))!;
    const res = await post(`/v1/jobs/${got.job.jobId}/logs`, "hello\nworld\n", { "kiln-lease-id": got.leaseId, "content-type": "text/plain" });
    expect(res.status).toBe(204);
    expect(rec.logs).toContainEqual({ buildId: "b-logs", stepIndex: 3, text: "hello\nworld\n" });
    expect((await post(`/v1/jobs/${got.job.jobId}/logs`, "x", { "content-type": "text/plain" })).status).toBe(400);
  });

  it("validates results and forwards a completion exactly once", async () => {
    const rec = await record();
    const a = arch();
    await stub().enqueue(job("b-done", 1, a));
    const got = (await claim("r1", a))!;
    const id = got.job.jobId;
    const bad = await post(`/v1/jobs/${id}/complete`, { leaseId: got.leaseId, result: { ok: true, layer: { digest: "md5:x" } } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/digest/);
    expect((await post(`/v1/jobs/${id}/complete`, { leaseId: got.leaseId, result: { ok: "yes" } })).status).toBe(400);
    const fail: RunResult = { ok: false, exitCode: 3, message: "exit 3: boom" };
    expect((await post(`/v1/jobs/${id}/complete`, { leaseId: got.leaseId, result: fail })).status).toBe(200);
    expect((await post(`/v1/jobs/${id}/complete`, { leaseId: got.leaseId, result: fail })).status).toBe(200);
    expect((await post(`/v1/jobs/${id}/complete`, { leaseId: "other", result: fail })).status).toBe(410);
    expect((await post(`/v1/jobs/${id}/lease`, { leaseId: got.leaseId })).status).toBe(410);
    expect(rec.finished.filter((f) => f.jobId === id)).toEqual([{ buildId: "b-done", jobId: id, stepIndex: 1, result: fail }]);
    expect((await stub().jobStatus(id))!.state).toBe("done");
  });

  it("keeps retrying a completion the coordinator did not accept", async () => {
    const rec = await record();
    let failOnce = true;
    await runInDurableObject(stub(), (d: Dispatcher) => {
      const inner = d.sinkOverride!;
      d.sinkOverride = (b) => ({
        async runStepFinished(jobId, stepIndex, result) {
          if (failOnce) { failOnce = false; throw new Error("coordinator down"); }
          return inner(b).runStepFinished(jobId, stepIndex, result);
        },
        appendLog: (s, t) => inner(b).appendLog(s, t),
      });
    });
    const a = arch();
    await stub().enqueue(job("b-retry", 0, a));
    const got = (await claim("r1", a))!;
    expect((await post(`/v1/jobs/${got.job.jobId}/complete`, { leaseId: got.leaseId, result: await okResult() })).status).toBe(200);
    // (jobs of earlier tests that no runner of their platform took fail after KILN_RUNNER_WAIT_SECONDS)
    const mine = () => rec.finished.filter((f) => f.jobId === got.job.jobId);
    expect(mine()).toHaveLength(0);
    for (let i = 0; i < 50 && !mine().length; i++) await new Promise((r) => setTimeout(r, 200));
    expect(mine().map((f) => f.jobId)).toEqual([got.job.jobId]);
  });
});

describe("dispatcher: cancel", () => {
  it("cancels queued and running jobs of a build and refuses their runner with 410", async () => {
    const rec = await record();
    const a = arch();
    const running = job("b-cancel", 0, a);
    const queued = job("b-cancel", 1, a);
    await stub().enqueue(running);
    const got = (await claim("r1", a))!;
    await stub().enqueue(queued);
    await stub().cancelBuild("b-cancel");
    expect((await post(`/v1/jobs/${running.jobId}/lease`, { leaseId: got.leaseId })).status).toBe(410);
    const logs = await post(`/v1/jobs/${running.jobId}/logs`, "more", { "kiln-lease-id": got.leaseId, "content-type": "text/plain" });
    expect(logs.status).toBe(410);
    expect(((await logs.json()) as { error: { message: string } }).error.message).toMatch(/cancelled/);
    expect((await post(`/v1/jobs/${running.jobId}/complete`, { leaseId: got.leaseId, result: await okResult() })).status).toBe(410);
    expect(await claim("r2", a)).toBeNull();
    await stub().enqueue(job("b-cancel", 2, a));
    expect(await claim("r2", a)).toBeNull();
    expect(rec.finished.filter((f) => f.buildId === "b-cancel")).toHaveLength(0);
    expect((await stub().jobStatus(queued.jobId))!.state).toBe("cancelled");
  });
});

describe("dispatcher: preference", () => {
  it("holds the next step of a build for the runner that ran the previous one, then lets others take it", async () => {
    await record();
    const a = arch();
    await stub().enqueue(job("b-pref", 0, a));
    const first = (await claim("warm", a))!;
    expect((await post(`/v1/jobs/${first.job.jobId}/complete`, { leaseId: first.leaseId, result: await okResult() })).status).toBe(200);

    const next = job("b-pref", 1, a);
    await stub().enqueue(next);
    expect(await claim("cold", a)).toBeNull();
    expect((await claim("warm", a))?.job.jobId).toBe(next.jobId);

    // When the warm runner does not come, another runner takes the job once the hold ran out.
    const third = job("b-pref", 2, a);
    await stub().enqueue(third);
    expect(await claim("cold", a)).toBeNull();
    const res = await post("/v1/runners/claim", { runnerId: "cold", platforms: [`linux/${a}`], waitSeconds: 5 });
    expect(res.status).toBe(200);
    expect(((await res.json()) as ClaimedJob).job.jobId).toBe(third.jobId);
  });

  it("does not hold jobs of a build no runner has worked on", async () => {
    const a = arch();
    await stub().enqueue(job("b-fresh", 0, a));
    expect(await claim("anyone", a)).not.toBeNull();
  });
});
