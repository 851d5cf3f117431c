import { Hono } from "hono";
import type { Env } from "./env";
import { ApiError, OciError } from "./errors";

export { BuildCoordinator } from "./build/coordinator";
export { Dispatcher } from "./build/dispatcher";

const app = new Hono<{ Bindings: Env }>();

app.get("/", (c) => c.json({ name: "kiln", registry: "/v2/", api: "/v1/" }));
app.get("/healthz", (c) => c.text("ok"));

app.onError((err, c) => {
  if (err instanceof OciError || err instanceof ApiError) return err.toResponse();
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

export default app;
