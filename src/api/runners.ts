import { Hono } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { requireApiScope, type Principal } from "../auth/api";
import { runnerServes } from "../auth/scopes";
import { ADMIN_HOLDER } from "../auth/job-token";
import type { ClaimHolder } from "../builder/dispatcher";
import type { ClaimRequest } from "../protocol/jobs";

/** The dispatcher every route and the BuildCoordinator talk to. */
export function dispatcherStub(env: Env) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
}

async function jsonBody(req: Request): Promise<Record<string, unknown>> {
  const text = await req.text();
  if (!text.trim()) return {};
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error("not an object");
    return v as Record<string, unknown>;
  } catch {
    throw new ApiError(400, "body must be a JSON object");
  }
}

/** Validates the body of POST /v1/runners/claim. */
export function parseClaimRequest(body: Record<string, unknown>): ClaimRequest {
  const { runnerId, platforms, labels, allowHostNetwork, waitSeconds, leaseSeconds } = body;
  if (typeof runnerId !== "string" || !/^[A-Za-z0-9._:@-]{1,200}$/.test(runnerId)) {
    throw new ApiError(400, "runnerId must be 1-200 characters of [A-Za-z0-9._:@-]");
  }
  const plats = platforms === undefined ? ["linux/amd64"] : platforms;
  if (!Array.isArray(plats) || !plats.length || !plats.every((p) => typeof p === "string" && /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(p))) {
    throw new ApiError(400, 'platforms must be a non-empty array like ["linux/amd64"]');
  }
  if (labels !== undefined && (typeof labels !== "object" || labels === null || Array.isArray(labels) || !Object.values(labels).every((v) => typeof v === "string"))) {
    throw new ApiError(400, "labels must be an object of strings");
  }
  for (const [k, v] of [["waitSeconds", waitSeconds], ["leaseSeconds", leaseSeconds]] as const) {
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v < 0)) throw new ApiError(400, `${k} must be a non-negative number`);
  }
  return {
    runnerId,
    platforms: plats as string[],
    labels: labels as Record<string, string> | undefined,
    allowHostNetwork: allowHostNetwork === true,
    waitSeconds: waitSeconds as number | undefined,
    leaseSeconds: leaseSeconds as number | undefined,
  };
}

/** The runner token behind a /v1/runners or /v1/jobs call: its id ("admin" for the admin token) and what it serves. */
export function runnerHolder(principal: Principal, origin: string): ClaimHolder {
  if (principal.kind === "admin") return { tokenId: ADMIN_HOLDER, serves: "all", origin };
  if (principal.kind !== "token") throw new ApiError(401, "a runner needs an API token");
  return { tokenId: principal.id, serves: runnerServes(principal.scopes), origin };
}

/**
 * /v1/runners: runners claim RUN jobs here (runner token: `runner` gets jobs of every namespace,
 * `runner:<pattern>` only jobs of matching repositories), admins list the runners seen.
 */
export const runnersRoutes = new Hono<{ Bindings: Env }>();

runnersRoutes.post("/claim", async (c) => {
  const principal = await requireApiScope(c, { kind: "runner" });
  const req = parseClaimRequest(await jsonBody(c.req.raw));
  const claimed = await dispatcherStub(c.env).claim(req, runnerHolder(principal, new URL(c.req.url).origin));
  if (!claimed) return c.body(null, 204);
  return c.json(claimed);
});

/**
 * A runner going away: its pending claims (made with this same token) end empty instead of handing it
 * a job it cannot take.
 */
runnersRoutes.post("/leave", async (c) => {
  const principal = await requireApiScope(c, { kind: "runner" });
  const body = await jsonBody(c.req.raw);
  if (typeof body.runnerId !== "string" || !body.runnerId) throw new ApiError(400, "runnerId is required");
  await dispatcherStub(c.env).leave(body.runnerId, runnerHolder(principal, new URL(c.req.url).origin).tokenId);
  return c.body(null, 204);
});

runnersRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  return c.json({ runners: await dispatcherStub(c.env).listRunners() });
});

export { jsonBody };
