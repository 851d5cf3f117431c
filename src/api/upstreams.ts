import { Hono } from "hono";
import { requireApiScope } from "../auth/api";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { isPathComponent } from "../oci/names";
import { deleteUpstream, listUpstreams, putUpstream } from "../storage/upstreams";

/** /v1/upstreams: where `FROM <host>/…` pulls from, with credentials and mirrors (admin). */
export const upstreamsRoutes = new Hono<{ Bindings: Env }>();

/** A namespace: the first segment of a repository name. */

const HOST = /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:]+\])(?::[0-9]{1,5})?$/;

function checkUrl(value: unknown, what: string): string {
  if (typeof value !== "string") throw new ApiError(400, `${what} must be a URL string`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ApiError(400, `${what} is not a valid URL: ${value}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new ApiError(400, `${what} must be http(s): ${value}`);
  return value.replace(/\/+$/, "");
}

upstreamsRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  return c.json({ upstreams: await listUpstreams(c.env) });
});

upstreamsRoutes.put("/:host", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const host = c.req.param("host").toLowerCase();
  if (!HOST.test(host)) throw new ApiError(400, `invalid registry host: ${host}`);
  let body: { endpoint?: unknown; username?: unknown; password?: unknown; mirrors?: unknown; namespaces?: unknown };
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, "body must be JSON: { endpoint, username?, password?, mirrors?, namespaces? }");
  }
  const endpoint = checkUrl(body.endpoint, "endpoint");
  if (body.username !== undefined && typeof body.username !== "string") throw new ApiError(400, "username must be a string");
  if (body.password !== undefined && typeof body.password !== "string") throw new ApiError(400, "password must be a string");
  if ((body.username === undefined) !== (body.password === undefined)) throw new ApiError(400, "give both username and password, or neither");
  if (body.mirrors !== undefined && !Array.isArray(body.mirrors)) throw new ApiError(400, "mirrors must be an array of URLs");
  const mirrors = ((body.mirrors as unknown[]) ?? []).map((m, i) => checkUrl(m, `mirrors[${i}]`));
  // the namespaces whose builds may use the credentials; absent: all (the operator's rate-limit account)
  if (body.namespaces !== undefined && !Array.isArray(body.namespaces)) throw new ApiError(400, "namespaces must be an array of namespace names");
  const namespaces = body.namespaces === undefined ? undefined : [...new Set((body.namespaces as unknown[]).map((n, i) => {
    if (typeof n !== "string" || !isPathComponent(n)) throw new ApiError(400, `namespaces[${i}] is not a namespace name (the first segment of a repository, e.g. "acme"): ${JSON.stringify(n)}`);
    return n;
  }))].sort();
  await putUpstream(c.env, host, { endpoint, username: body.username as string | undefined, password: body.password as string | undefined, mirrors, namespaces });
  const saved = (await listUpstreams(c.env)).find((u) => u.host === host);
  return c.json(saved, 200);
});

upstreamsRoutes.delete("/:host", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const host = c.req.param("host").toLowerCase();
  if (!(await deleteUpstream(c.env, host))) throw new ApiError(404, `no upstream configured for ${host}`);
  return c.body(null, 204);
});
