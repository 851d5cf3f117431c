import { Hono } from "hono";
import type { Env } from "./env";
import { ApiError, OciError } from "./errors";
import { registryRoutes } from "./registry/index";
import { tokenServiceRoutes } from "./auth/token-service";
import { tokensRoutes } from "./api/tokens";
import { repositoriesRoutes } from "./api/repositories";
import { dockerfileRoutes } from "./api/dockerfile";
import { buildsRoutes, contextsRoutes } from "./api/builds";
import { runnersRoutes } from "./api/runners";
import { jobsRoutes } from "./api/jobs";
import { hooksRoutes, webhooksRoutes } from "./api/webhooks";
import { upstreamsRoutes } from "./api/upstreams";
import { uiRoutes } from "./ui/index";
import { purgeStaleUploads } from "./storage/uploads";
import { gcRoutes, quotasRoutes, retentionRoutes, usageRoutes } from "./api/lifecycle";
import { garbageCollector } from "./gc/collector";
import { discardRefusedBody } from "./http/body";
import { requestBodyLimit } from "./http/body-limit";

export { BuildCoordinator } from "./builder/coordinator";
export { Dispatcher } from "./builder/dispatcher";
export { GarbageCollector } from "./gc/collector";

const app = new Hono<{ Bindings: Env }>();

/** Errors workerd raises when the client's connection ends before the request was read or answered. */
function isClientDisconnect(err: unknown, method: string): boolean {
  const m = err instanceof Error ? err.message : "";
  if (/Broken pipe|Connection reset by peer|The client closed the connection/i.test(m)) return true;
  // while an upload's body is read, a lost connection is the client's
  return /^Network connection lost\.?$/.test(m) && ["POST", "PUT", "PATCH"].includes(method);
}

// Bodies over KILN_MAX_REQUEST_BYTES get the 413 a deployed Worker would give (src/http/body-limit.ts).
app.use("*", requestBodyLimit());

app.get("/", (c) => c.json({ name: "kiln", registry: "/v2/", api: "/v1/" }));
app.get("/healthz", (c) => c.text("ok"));

// Registry: the token endpoint first, then the OCI Distribution API.
app.route("/v2/token", tokenServiceRoutes);
app.route("/v2", registryRoutes);

// Control plane API.
app.route("/v1/tokens", tokensRoutes);
app.route("/v1/repositories", repositoriesRoutes);
app.route("/v1/dockerfile", dockerfileRoutes);
app.route("/v1/builds", buildsRoutes);
app.route("/v1/contexts", contextsRoutes);
app.route("/v1/runners", runnersRoutes);
app.route("/v1/jobs", jobsRoutes);
app.route("/v1/webhooks", webhooksRoutes);
app.route("/v1/hooks", hooksRoutes);
app.route("/v1/upstreams", upstreamsRoutes);
app.route("/v1/gc", gcRoutes);
app.route("/v1/retention", retentionRoutes);
app.route("/v1/quotas", quotasRoutes);
app.route("/v1/usage", usageRoutes);

// The web dashboard (server-rendered; signs in with an API token, authorizes as /v1 does).
app.route("/ui", uiRoutes);

app.onError(async (err, c) => {
  if (err instanceof OciError || err instanceof ApiError) {
    await discardRefusedBody(c.req.raw);
    return err.toResponse();
  }
  // A client that went away mid-request (an aborted upload, a closed event stream) is not a failure
  // of kiln: one info line, not an error with a stack.
  if (isClientDisconnect(err, c.req.method)) {
    console.log(`client went away during ${c.req.method} ${c.req.path}: ${(err as Error).message}`);
    return new Response(null, { status: 499 });
  }
  console.error("unhandled error", c.req.method, c.req.path, err);
  if (c.req.path.startsWith("/v2")) {
    return new OciError("UNSUPPORTED", "internal error", { status: 500 }).toResponse();
  }
  return new ApiError(500, "internal error").toResponse();
});

app.notFound((c) => {
  if (c.req.path.startsWith("/v2")) return new OciError("NAME_UNKNOWN", "not found", { status: 404 }).toResponse();
  return new ApiError(404, `no route for ${c.req.method} ${c.req.path}`).toResponse();
});

export default {
  fetch: app.fetch,
  /**
   * Daily: drop upload sessions nobody finished within a week (their staged chunks with them), then
   * run one garbage collection (retention policies first).
   */
  async scheduled(_controller: ScheduledController, env: Env, ctx: ExecutionContext): Promise<void> {
    ctx.waitUntil((async () => {
      await purgeStaleUploads(env);
      await garbageCollector(env).collect({ dryRun: false, trigger: "cron", waitMs: 25_000 }); // a longer one goes on in the collector's alarm
    })());
  },
} satisfies ExportedHandler<Env>;
