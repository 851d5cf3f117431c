/**
 * /v1/repositories/:name (the name may contain `/`): GET → { name, public };
 * PUT { public: boolean } (admin, or a token with push on the repository) marks it public for anonymous pull.
 */
import { Hono } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { optionalApiPrincipal, principalHasScope, requireApiScope } from "../auth/api";
import { isRepositoryName } from "../auth/scopes";
import { getRepositoryVisibility, setRepositoryPublic } from "../storage/tokens";

export const repositoriesRoutes = new Hono<{ Bindings: Env }>();

function repositoryName(raw: string): string {
  let name: string;
  try {
    name = decodeURIComponent(raw);
  } catch {
    throw new ApiError(400, "invalid repository name");
  }
  if (!isRepositoryName(name)) throw new ApiError(400, `invalid repository name ${JSON.stringify(name)}`);
  return name;
}

repositoriesRoutes.get("/:name{.+}", async (c) => {
  const name = repositoryName(c.req.param("name"));
  const principal = await optionalApiPrincipal(c);
  const repo = await getRepositoryVisibility(c.env, name);
  const visible = repo?.public || (principal && principalHasScope(principal, { kind: "repository", repository: name, action: "pull" }));
  if (!visible) {
    if (!principal) await requireApiScope(c, { kind: "repository", repository: name, action: "pull" });
    // Same answer for "missing" and "not yours", so names do not leak.
    throw new ApiError(404, `no repository ${name}`);
  }
  if (!repo) throw new ApiError(404, `no repository ${name}`);
  return c.json({ name: repo.name, public: repo.public });
});

repositoriesRoutes.put("/:name{.+}", async (c) => {
  const name = repositoryName(c.req.param("name"));
  await requireApiScope(c, { kind: "repository", repository: name, action: "push" });
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, "body must be JSON: { public: true|false }");
  }
  const value = (body as { public?: unknown } | null)?.public;
  if (typeof value !== "boolean") throw new ApiError(400, "public must be true or false");
  await setRepositoryPublic(c.env, name, value);
  return c.json({ name, public: value });
});
