import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { buildAccessScope, requireApiPrincipal, requireApiScope } from "../auth/api";
import { isCliUserAgent } from "../protocol/client";
import { buildEventStream } from "../builder/event-stream";
import { startBuild } from "../builder/start";
import { authorizeBuild, parseBuildArgs, refuseAtQuota } from "../builder/authorize";
import { readLimited } from "../http/body";
import { CONTEXT_INDEX_TYPE, ingestContents, missingContents, type ContextIndexUpload } from "../context/contents";
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

/**
 * The caller of a build (or of its context upload) with tags `tag=`: push on every repository it tags
 * (untagged builds: admin). The build acts as this principal; its cache scope is the tags' namespace.
 */
async function buildCaller(c: C) {
  const url = new URL(c.req.url);
  const tags = url.searchParams.getAll("tag").concat(url.searchParams.getAll("t"));
  return authorizeBuild(await requireApiPrincipal(c), tags, url.origin);
}

buildsRoutes.post("/", async (c) => {
  const url = new URL(c.req.url);
  const q = url.searchParams;
  const { principal, tags, scope } = await buildCaller(c);
  // a namespace at its quota gets no build (its push is checked again, whole, before anything is linked)
  await refuseAtQuota(c.env, tags, url.origin);
  const contentType = c.req.header("content-type") ?? "application/x-tar";
  // a content-addressed context: the file index (its contents uploaded before, POST /v1/contexts/contents)
  let index: ContextIndexUpload | undefined;
  if (contentType.toLowerCase().startsWith(CONTEXT_INDEX_TYPE)) {
    const bytes = await readLimited(c.req.raw.body, MAX_INDEX_BYTES, () => new ApiError(413, `context index larger than ${MAX_INDEX_BYTES} bytes`));
    try {
      index = JSON.parse(new TextDecoder().decode(bytes)) as ContextIndexUpload;
    } catch {
      throw new ApiError(400, "context index is not JSON");
    }
  }
  const buildArgs = parseBuildArgs(q.getAll("build-arg"));
  const noCache = ["1", "true", "yes"].includes((q.get("no-cache") ?? "").toLowerCase());
  const started = await startBuild(c.env, c.executionCtx, {
    context: index ? { index, scope } : c.req.raw.body,
    contentType,
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

/** A context index of 200,000 entries is ~40 MB of JSON; anything larger is refused. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/**
 * /v1/contexts: the content-addressed context upload of `kiln build`. Both routes take the build's
 * `tag=` parameters and authorize exactly as POST /v1/builds; contents live in the tags' cache scope.
 */
export const contextsRoutes = new Hono<{ Bindings: Env }>();

/** `{digests: [...]}` → `{missing: [...]}`: the contents this scope has not uploaded yet. */
contextsRoutes.post("/missing", async (c) => {
  const { scope } = await buildCaller(c);
  const bytes = await readLimited(c.req.raw.body, MAX_INDEX_BYTES, () => new ApiError(413, `digest list larger than ${MAX_INDEX_BYTES} bytes`));
  let body: { digests?: unknown };
  try {
    body = JSON.parse(new TextDecoder().decode(bytes)) as { digests?: unknown };
  } catch {
    throw new ApiError(400, "expected JSON {digests: [...]}");
  }
  return c.json({ missing: await missingContents(c.env, scope, body.digests) });
});

/** A batch of contents (a tar of entries named by their sha256 hex) → what was stored. */
contextsRoutes.post("/contents", async (c) => {
  const { scope, tags } = await buildCaller(c);
  await refuseAtQuota(c.env, tags, new URL(c.req.url).origin);
  return c.json(await ingestContents(c.env, scope, c.req.raw.body), 201);
});
