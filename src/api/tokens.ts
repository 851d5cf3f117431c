/** /v1/tokens (admin): create API tokens with scopes, list them (never the secrets), revoke them. */
import { Hono } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { requireApiScope } from "../auth/api";
import { ScopeError, formatScope, parseScopes } from "../auth/scopes";
import { createToken, listTokens, revokeToken } from "../storage/tokens";

export const tokensRoutes = new Hono<{ Bindings: Env }>();

tokensRoutes.post("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, "body must be JSON: { name, scopes }");
  }
  if (!body || typeof body !== "object" || Array.isArray(body)) throw new ApiError(400, "body must be a JSON object: { name, scopes }");
  const { name, scopes } = body as { name?: unknown; scopes?: unknown };
  if (typeof name !== "string" || !name.trim() || name.length > 200) {
    throw new ApiError(400, "name must be a non-empty string of at most 200 characters");
  }
  let parsed;
  try {
    parsed = parseScopes(scopes);
  } catch (err) {
    if (err instanceof ScopeError) throw new ApiError(400, err.message);
    throw err;
  }
  const { id, token } = await createToken(c.env, name.trim(), parsed);
  return c.json({ id, token, name: name.trim(), scopes: parsed.map(formatScope) }, 201);
});

tokensRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const tokens = await listTokens(c.env);
  return c.json({
    tokens: tokens.map((t) => ({
      id: t.id,
      name: t.name,
      scopes: t.scopes.map(formatScope),
      createdAt: new Date(t.createdAt).toISOString(),
      revoked: t.revokedAt !== null,
      ...(t.revokedAt !== null ? { revokedAt: new Date(t.revokedAt).toISOString() } : {}),
    })),
  });
});

tokensRoutes.delete("/:id", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const id = c.req.param("id");
  if (!(await revokeToken(c.env, id))) throw new ApiError(404, `no token ${id}`);
  return c.body(null, 204);
});
