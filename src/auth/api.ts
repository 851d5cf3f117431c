import type { Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";

/** What a /v1 caller may do. `repository` scopes come from tokens like `repository:team/*:pull,push`. */
export type ApiScope =
  | { kind: "admin" }
  | { kind: "runner" }
  | { kind: "repository"; repository: string; action: "pull" | "push" };

/**
 * The one gate for /v1 calls: throws ApiError 401 without valid credentials
 * (`Authorization: Bearer <token>`), 403 when the token lacks `scope`. Admin tokens pass every scope.
 *
 * Owner: auth (issue 2 item 4). Placeholder until implemented: accepts only the admin token.
 */
export async function requireApiScope(c: Context<{ Bindings: Env }>, scope: ApiScope): Promise<void> {
  void scope;
  const header = c.req.header("authorization") ?? "";
  const m = /^Bearer\s+(.+)$/i.exec(header);
  if (!m) throw new ApiError(401, "missing credentials: send Authorization: Bearer <token>", {}, { "WWW-Authenticate": 'Bearer realm="kiln"' });
  const admin = c.env.KILN_ADMIN_TOKEN;
  if (!admin || m[1] !== admin) throw new ApiError(401, "invalid token");
}
