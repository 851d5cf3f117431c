import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { optionalApiPrincipal, principalHasScope, requireApiScope } from "../auth/api";
import { parseScope, patternMatches, ScopeError } from "../auth/scopes";
import { isPathComponent } from "../oci/names";
import { garbageCollector } from "../gc/collector";
import { deleteRetention, listGcRuns, listRetention, putRetention, type RetentionPolicy } from "../storage/gc";
import { deleteQuota, getQuota, listQuotas, namespaceUsage, putQuota } from "../storage/usage";

/**
 * Storage lifecycle (admin, except usage): /v1/gc (collections and their reports), /v1/retention
 * (policies per repository pattern), /v1/quotas (bytes per namespace), /v1/usage.
 */
export const gcRoutes = new Hono<{ Bindings: Env }>();
export const retentionRoutes = new Hono<{ Bindings: Env }>();
export const quotasRoutes = new Hono<{ Bindings: Env }>();
export const usageRoutes = new Hono<{ Bindings: Env }>();

type C = Context<{ Bindings: Env }>;

const MAX_GRACE_SECONDS = 365 * 24 * 3600;
/** How long POST /v1/gc waits for the report (`?wait=`) before answering 202 with the run's id. */
const DEFAULT_WAIT_SECONDS = 25;
const MAX_WAIT_SECONDS = 300;

gcRoutes.post("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const dry = c.req.query("dryRun") ?? c.req.query("dry-run") ?? "";
  const dryRun = ["1", "true", "yes"].includes(dry.toLowerCase());
  const grace = c.req.query("graceSeconds");
  let graceMs: number | undefined;
  if (grace !== undefined) {
    if (!/^\d+$/.test(grace) || Number(grace) > MAX_GRACE_SECONDS) throw new ApiError(400, `graceSeconds must be a whole number of seconds from 0 to ${MAX_GRACE_SECONDS}, not ${JSON.stringify(grace)}`);
    graceMs = Number(grace) * 1000;
  }
  const wait = c.req.query("wait") ?? String(DEFAULT_WAIT_SECONDS);
  if (!/^\d+$/.test(wait) || Number(wait) > MAX_WAIT_SECONDS) throw new ApiError(400, `wait must be a whole number of seconds from 0 to ${MAX_WAIT_SECONDS}, not ${JSON.stringify(wait)}`);
  const answer = await garbageCollector(c.env).collect({ dryRun, graceMs, trigger: "api", waitMs: Number(wait) * 1000 });
  if (answer.status === "busy") throw new ApiError(409, `a collection is running (id ${answer.id}, started ${new Date(answer.startedAt).toISOString()}); try again when it has finished`, { running: answer.id });
  if (answer.status === "failed") throw new ApiError(500, `the collection failed: ${answer.error}`, { id: answer.id });
  // still running after `wait`: it goes on in the background; GET /v1/gc shows its report when it ends
  if (answer.status === "running") return c.json({ id: answer.id, status: "running", startedAt: answer.startedAt }, 202);
  return c.json(answer.report);
});

gcRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const limit = Number(c.req.query("limit") ?? 20);
  return c.json({ runs: await listGcRuns(c.env, Number.isFinite(limit) ? limit : 20) });
});

/** The repository pattern after /v1/retention/ (it contains slashes and stars). */
function patternParam(c: C): string {
  const path = decodeURIComponent(new URL(c.req.url).pathname);
  const pattern = path.replace(/^\/v1\/retention\/?/, "");
  try {
    parseScope(`repository:${pattern}:pull`);
  } catch (e) {
    if (e instanceof ScopeError) throw new ApiError(400, `invalid repository pattern ${JSON.stringify(pattern)}: use a repository name, "*" within a segment or "**" across segments (team/*, team/**)`);
    throw e;
  }
  return pattern;
}

function nonNegativeInt(v: unknown, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ApiError(400, `${what} must be a whole number ≥ 0`);
  return v;
}

function parsePolicy(body: unknown): RetentionPolicy {
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new ApiError(400, 'body must be JSON: {"keepLast"?: N, "keepTags"?: ["latest", "v*"], "untaggedOlderThanDays"?: N, "olderThanDays"?: N}');
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) => !["keepLast", "keepTags", "untaggedOlderThanDays", "olderThanDays"].includes(k));
  if (unknown.length) throw new ApiError(400, `unknown field(s) ${unknown.join(", ")}: a policy has keepLast, keepTags, untaggedOlderThanDays, olderThanDays`);
  const policy: RetentionPolicy = {};
  const keepLast = nonNegativeInt(b.keepLast, "keepLast");
  if (keepLast !== undefined) policy.keepLast = keepLast;
  if (b.keepTags !== undefined) {
    if (!Array.isArray(b.keepTags) || !b.keepTags.every((t) => typeof t === "string" && /^[A-Za-z0-9_.*-]{1,128}$/.test(t))) {
      throw new ApiError(400, 'keepTags must be an array of tag patterns (tag characters and "*", e.g. "latest", "v*")');
    }
    policy.keepTags = b.keepTags as string[];
  }
  const untagged = nonNegativeInt(b.untaggedOlderThanDays, "untaggedOlderThanDays");
  if (untagged !== undefined) policy.untaggedOlderThanDays = untagged;
  const older = nonNegativeInt(b.olderThanDays, "olderThanDays");
  if (older !== undefined) policy.olderThanDays = older;
  return policy;
}

retentionRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  return c.json({ policies: await listRetention(c.env) });
});

retentionRoutes.put("/*", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const pattern = patternParam(c);
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    body = null;
  }
  const policy = parsePolicy(body);
  await putRetention(c.env, pattern, policy);
  return c.json({ pattern, policy });
});

retentionRoutes.delete("/*", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const pattern = patternParam(c);
  if (!(await deleteRetention(c.env, pattern))) throw new ApiError(404, `no retention policy for ${pattern}`);
  return c.body(null, 204);
});

function namespaceParam(c: C): string {
  const ns = c.req.param("namespace") ?? "";
  if (!isPathComponent(ns)) throw new ApiError(400, `invalid namespace ${JSON.stringify(ns)}: the first segment of a repository name (e.g. "acme" of acme/app)`);
  return ns;
}

quotasRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  return c.json({ quotas: await listQuotas(c.env) });
});

quotasRoutes.get("/:namespace", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const namespace = namespaceParam(c);
  const bytes = await getQuota(c.env, namespace);
  if (bytes === null) throw new ApiError(404, `no quota for namespace ${namespace}`);
  const [usage] = await namespaceUsage(c.env, [namespace]);
  return c.json({ namespace, bytes, usage: usage?.bytes ?? 0, stagedBytes: usage?.stagedBytes ?? 0 });
});

quotasRoutes.put("/:namespace", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const namespace = namespaceParam(c);
  let body: { bytes?: unknown } | null;
  try {
    body = await c.req.json();
  } catch {
    body = null;
  }
  const bytes = body?.bytes;
  if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) throw new ApiError(400, 'body must be JSON {"bytes": N} with N a whole number of bytes ≥ 0');
  await putQuota(c.env, namespace, bytes);
  return c.json({ namespace, bytes });
});

quotasRoutes.delete("/:namespace", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const namespace = namespaceParam(c);
  if (!(await deleteQuota(c.env, namespace))) throw new ApiError(404, `no quota for namespace ${namespace}`);
  return c.body(null, 204);
});

/**
 * Usage per namespace. An admin sees every namespace; another token only the namespaces whose whole
 * tree its pull scopes cover (`acme/**`, `**`): a token for one repository learns nothing of the rest.
 */
usageRoutes.get("/", async (c) => {
  const principal = await optionalApiPrincipal(c);
  if (!principal || principal.kind === "registry") return requireApiScope(c, { kind: "admin" }).then(() => c.json({})); // the gate's 401
  if (principalHasScope(principal, { kind: "admin" })) return c.json({ namespaces: await namespaceUsage(c.env) });
  const scopes = principal.kind === "token" ? principal.scopes : [];
  const pulls = scopes.flatMap((s) => (s.kind === "repository" && s.actions.includes("pull") ? [s.pattern] : []));
  const visible = (ns: string) => pulls.some((p) => patternMatches(p, `${ns}/**`));
  // only the namespaces the token may see are summed (a tenant's request never reads the whole
  // store), unless a pattern's first segment is a wildcard (then every namespace is a candidate)
  const named = pulls.map((p) => p.split("/")[0]);
  const only = named.some((n) => n.includes("*")) ? undefined : named.filter(visible);
  // quotas are the admin's business, usage of a namespace its readers'
  return c.json({ namespaces: (await namespaceUsage(c.env, only)).filter((u) => visible(u.namespace)) });
});
