import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { buildAccessScope, requireApiScope } from "../auth/api";
import { isCliUserAgent } from "../protocol/client";
import { buildEventStream } from "../builder/event-stream";
import { startBuild, parseTag } from "../builder/start";
import { buildPrincipalOf } from "../auth/build-principal";
import { getBuildRow, listBuilds } from "../storage/builds";

/** /v1/builds: start (POST), inspect (GET), follow (GET …/events, SSE), cancel (DELETE). */
export const buildsRoutes = new Hono<{ Bindings: Env }>();

type C = Context<{ Bindings: Env }>;

const coordinator = (c: C, id: string) => c.env.BUILD_COORDINATOR.get(c.env.BUILD_COORDINATOR.idFromName(id));

/**
 * The build's row when the caller may see it (pull on its repository; admin for untagged builds).
 * A build the caller may not see answers 404 exactly like a missing one: nothing about another
 * tenant's builds leaks, not even which repository they push to. Seeing but lacking `push` (cancel)
 * is a 403.
 */
async function authorizedRow(c: C, id: string, action: "pull" | "push") {
  const row = await getBuildRow(c.env, id);
  const scope = (a: "pull" | "push") => buildAccessScope(row?.repository ?? null, a);
  const notFound = new ApiError(404, `build ${id} not found`);
  if (!row) throw notFound;
  await requireApiScope(c, scope("pull")).catch((e) => {
    throw e instanceof ApiError && e.status === 403 ? notFound : e;
  });
  if (action === "push") await requireApiScope(c, scope("push"));
  return row;
}

buildsRoutes.post("/", async (c) => {
  const url = new URL(c.req.url);
  const q = url.searchParams;
  const tags = q.getAll("tag").concat(q.getAll("t"));
  const repos = new Set(tags.map((t) => parseTag(t, url.origin).repository));
  // the build acts as this caller: push on every repository it tags (untagged builds: admin)
  let caller = repos.size === 0 ? await requireApiScope(c, { kind: "admin" }) : undefined;
  for (const repository of repos) caller = await requireApiScope(c, { kind: "repository", repository, action: "push" });
  const principal = buildPrincipalOf(caller!);
  const buildArgs: Record<string, string> = {};
  for (const kv of q.getAll("build-arg")) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new ApiError(400, `invalid build-arg ${JSON.stringify(kv)}: expected K=V`);
    buildArgs[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const noCache = ["1", "true", "yes"].includes((q.get("no-cache") ?? "").toLowerCase());
  const started = await startBuild(c.env, c.executionCtx, {
    context: c.req.raw.body,
    contentType: c.req.header("content-type") ?? "application/x-tar",
    dockerfilePath: q.get("dockerfile") ?? undefined,
    tags,
    buildArgs,
    target: q.get("target") || undefined,
    noCache,
    platform: q.get("platform") || undefined,
    origin: url.origin,
    principal,
    trigger: { kind: isCliUserAgent(c.req.header("user-agent")) ? "cli" : "api" },
  });
  return c.json(started, 202);
});

buildsRoutes.get("/", async (c) => {
  const repository = c.req.query("repository");
  if (repository) await requireApiScope(c, { kind: "repository", repository, action: "pull" });
  else await requireApiScope(c, { kind: "admin" });
  const rows = await listBuilds(c.env, { repository, limit: Number(c.req.query("limit") ?? 50) });
  return c.json({ builds: rows.map((r) => ({ id: r.id, status: r.status, repository: r.repository, tags: r.tags, digest: r.imageDigest, trigger: r.trigger, ...(r.commit ? { commit: r.commit } : {}), createdAt: r.createdAt, updatedAt: r.updatedAt })) });
});

buildsRoutes.get("/:id", async (c) => {
  const id = c.req.param("id");
  await authorizedRow(c, id, "pull");
  const view = await coordinator(c, id).getBuild();
  if (!view) {
    // A build that never reached its coordinator (a git push whose source could not be fetched or
    // ingested) lives only in its D1 row.
    const row = await getBuildRow(c.env, id);
    if (!row) throw new ApiError(404, `build ${id} not found`);
    return c.json({ id, status: row.status, steps: [], createdAt: row.createdAt, ...(row.error ? { error: { message: row.error } } : {}) });
  }
  return c.json(view);
});

buildsRoutes.get("/:id/events", async (c) => {
  const id = c.req.param("id");
  await authorizedRow(c, id, "pull");
  // A reconnect's Last-Event-ID: the stream continues after that event.
  const res = await buildEventStream(c.env, c.executionCtx, id, c.req.header("last-event-id"));
  if (!res) throw new ApiError(404, `build ${id} not found`);
  return res;
});

buildsRoutes.delete("/:id", async (c) => {
  const id = c.req.param("id");
  await authorizedRow(c, id, "push");
  const view = await coordinator(c, id).cancel();
  if (!view) throw new ApiError(404, `build ${id} not found`);
  return c.json(view);
});
