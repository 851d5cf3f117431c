/**
 * OCI Distribution Spec v1.1 (/v2). One catch-all handler: repository names contain `/`, so the
 * path is parsed from its end (see route.ts), then dispatched by capability.
 */
import { Hono } from "hono";
import type { Env } from "../env";
import { authorizeRegistry, setRegistryRouteKind } from "../auth/registry";
import { OciError } from "../errors";
import { StorageError } from "../storage/errors";
import { registryError } from "./errors";
import { discardRefusedBody } from "../http/body";
import { handleBlob } from "./blobs";
import { type Ctx, unsupportedMethod } from "./http";
import { handleCatalog, handleReferrers, handleTags } from "./listing";
import { handleManifest } from "./manifests";
import { parseRoute, requireRepositoryName } from "./route";
import { handleUpload } from "./uploads";

export const registryRoutes = new Hono<{ Bindings: Env }>();

const API_VERSION = { "Docker-Distribution-API-Version": "registry/2.0" };

async function ping(c: Ctx): Promise<Response> {
  if (c.req.method !== "GET" && c.req.method !== "HEAD") return unsupportedMethod(c);
  await authorizeRegistry(c, undefined, "pull");
  return new Response("{}", { status: 200, headers: { "Content-Type": "application/json", ...API_VERSION } });
}

async function dispatch(c: Ctx): Promise<Response> {
  const pathname = new URL(c.req.url).pathname;
  const route = parseRoute(pathname.replace(/^\/v2/, ""));
  if (!route) throw new OciError("NAME_UNKNOWN", "no such registry endpoint", { status: 404, detail: { path: pathname } });
  setRegistryRouteKind(c, route.kind);
  switch (route.kind) {
    case "ping":
      return ping(c);
    case "catalog":
      return handleCatalog(c);
  }
  requireRepositoryName(route.name);
  switch (route.kind) {
    case "tags":
      return handleTags(c, route.name);
    case "manifest":
      return handleManifest(c, route.name, route.reference);
    case "upload":
      return handleUpload(c, route.name, route.id);
    case "blob":
      return handleBlob(c, route.name, route.digest);
    case "referrers":
      return handleReferrers(c, route.name, route.digest);
  }
}

/** Every /v2 response (errors included) carries the API version header. */
async function registry(c: Ctx): Promise<Response> {
  let res: Response;
  try {
    res = await dispatch(c);
  } catch (err) {
    if (err instanceof StorageError) res = registryError(err).toResponse();
    else if (err instanceof OciError) res = err.toResponse();
    else throw err;
    await discardRefusedBody(c.req.raw);
  }
  for (const [k, v] of Object.entries(API_VERSION)) res.headers.set(k, v);
  return res;
}

registryRoutes.all("/", registry);
registryRoutes.all("/*", registry);
