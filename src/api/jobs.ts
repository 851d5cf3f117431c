import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { requireApiScope } from "../auth/api";
import { LEASE_HEADER, type JobState, type QueuedJob, type RunResult } from "../protocol/jobs";
import { validateRunResult, type LeaseOutcome } from "../builder/dispatcher";
import { isRepositoryName } from "../auth/scopes";
import { dispatcherStub, jsonBody, runnerHolder } from "./runners";

/** The id of the runner token calling (only the token holding a lease may use it). */
async function holderId(c: Context<{ Bindings: Env }>): Promise<string> {
  return runnerHolder(await requireApiScope(c, { kind: "runner" }), new URL(c.req.url).origin).tokenId;
}

const MAX_LOG_CHUNK = 1024 * 1024;

function answer(outcome: LeaseOutcome, ok: () => Response): Response {
  if (outcome.ok) return ok();
  throw new ApiError(outcome.status, outcome.message);
}

/** /v1/jobs/:id/{lease,logs,complete}: the runner side of a claimed RUN job. */
export const jobsRoutes = new Hono<{ Bindings: Env }>();

jobsRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const state = c.req.query("state");
  if (state && !["queued", "leased", "done", "cancelled"].includes(state)) throw new ApiError(400, "state must be queued, leased, done or cancelled");
  const limit = Math.min(1000, Math.max(1, Number(c.req.query("limit") ?? 100) || 100));
  return c.json({ jobs: await dispatcherStub(c.env).listJobs(state as JobState | undefined, limit) });
});

jobsRoutes.get("/:id", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const status = await dispatcherStub(c.env).jobStatus(c.req.param("id"));
  if (!status) throw new ApiError(404, `job ${c.req.param("id")} not found`);
  return c.json(status);
});

jobsRoutes.post("/:id/lease", async (c) => {
  const tokenId = await holderId(c);
  const body = await jsonBody(c.req.raw);
  if (typeof body.leaseId !== "string") throw new ApiError(400, "leaseId is required");
  const leaseSeconds = typeof body.leaseSeconds === "number" ? body.leaseSeconds : undefined;
  const outcome = await dispatcherStub(c.env).renewLease(c.req.param("id"), body.leaseId, tokenId, leaseSeconds);
  return answer(outcome, () => c.json({ leaseExpiresAt: outcome.ok ? outcome.leaseExpiresAt : 0 }));
});

jobsRoutes.post("/:id/logs", async (c) => {
  const tokenId = await holderId(c);
  const leaseId = c.req.header(LEASE_HEADER) ?? c.req.query("leaseId");
  if (!leaseId) throw new ApiError(400, `send the lease id in the ${LEASE_HEADER} header`);
  const len = Number(c.req.header("content-length") ?? "0");
  if (len > MAX_LOG_CHUNK) throw new ApiError(413, `log chunks are limited to ${MAX_LOG_CHUNK} bytes`);
  const text = await c.req.text();
  if (text.length > MAX_LOG_CHUNK) throw new ApiError(413, `log chunks are limited to ${MAX_LOG_CHUNK} bytes`);
  const outcome = await dispatcherStub(c.env).appendLog(c.req.param("id"), leaseId, tokenId, text);
  return answer(outcome, () => c.body(null, 204));
});

jobsRoutes.post("/:id/complete", async (c) => {
  const tokenId = await holderId(c);
  const body = await jsonBody(c.req.raw);
  const leaseId = typeof body.leaseId === "string" ? body.leaseId : c.req.header(LEASE_HEADER);
  if (!leaseId) throw new ApiError(400, "leaseId is required");
  const bad = validateRunResult(body.result);
  if (bad) throw new ApiError(400, bad);
  const outcome = await dispatcherStub(c.env).complete(c.req.param("id"), leaseId, tokenId, body.result as RunResult);
  return answer(outcome, () => c.json({ ok: true }));
});

// ---- admin: queue a job by hand and cancel a build's jobs (operations and tests; builds use RPC).

jobsRoutes.post("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const job = (await jsonBody(c.req.raw)) as unknown as QueuedJob;
  if (typeof job.jobId !== "string" || typeof job.buildId !== "string" || typeof job.stepIndex !== "number" || !Array.isArray(job.args) || !job.platform) {
    throw new ApiError(400, "body must be a RunJob (jobId, buildId, stepIndex, platform, layers, args, repository, …)");
  }
  if (typeof job.repository !== "string" || !isRepositoryName(job.repository)) throw new ApiError(400, "repository must be a repository name");
  // Each lease gets its own registry token at claim time; one sent here is ignored.
  delete job.registryToken;
  await dispatcherStub(c.env).enqueue(job);
  return c.json({ jobId: job.jobId }, 202);
});

jobsRoutes.post("/cancel", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const body = await jsonBody(c.req.raw);
  if (typeof body.buildId !== "string") throw new ApiError(400, "buildId is required");
  await dispatcherStub(c.env).cancelBuild(body.buildId);
  return c.body(null, 204);
});
