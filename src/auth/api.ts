import type { Context } from "hono";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { type Principal, authenticate, resolveCredentials } from "./principal";
import { grantedActions } from "./scopes";

export { authenticate, type Principal } from "./principal";
export { mintRegistryToken } from "./registry-token";

/** What a /v1 caller may do. `repository` scopes come from tokens like `repository:team/*:pull,push`. */
export type ApiScope =
  | { kind: "admin" }
  | { kind: "runner" }
  | { kind: "repository"; repository: string; action: "pull" | "push" };

/** Whether `principal` holds `scope` on /v1. Admin (the admin token or an `admin`-scoped token) holds every scope. */
export function principalHasScope(principal: Principal, scope: ApiScope): boolean {
  if (principal.kind === "admin") return true;
  if (principal.kind !== "token") return false;
  if (principal.scopes.some((s) => s.kind === "admin")) return true;
  switch (scope.kind) {
    case "admin":
      return false;
    case "runner":
      return principal.scopes.some((s) => s.kind === "runner");
    case "repository":
      return grantedActions(principal.scopes, scope.repository).has(scope.action);
  }
}

/**
 * The scope that reads (`pull`) or cancels (`push`) a build: that action on the repository it pushes
 * to; admin for an untagged build. /v1/builds and the dashboard decide a build's visibility with it.
 */
export function buildAccessScope(repository: string | null, action: "pull" | "push"): ApiScope {
  return repository ? { kind: "repository", repository, action } : { kind: "admin" };
}

function describe(scope: ApiScope): string {
  return scope.kind === "repository" ? `repository:${scope.repository}:${scope.action}` : scope.kind;
}

const CHALLENGE = { "WWW-Authenticate": 'Bearer realm="kiln"' };

/**
 * The one gate for /v1 calls: throws ApiError 401 without valid credentials
 * (`Authorization: Bearer <token>`, the admin token or an API token; Basic with the token as password
 * works too), 403 when the token lacks `scope`. Admin tokens pass every scope. Registry Bearer tokens
 * (from /v2/token) are not accepted on /v1. Returns the principal.
 */
export async function requireApiScope(c: Context<{ Bindings: Env }>, scope: ApiScope): Promise<Principal> {
  return assertPrincipalScope(await requireApiPrincipal(c), scope);
}

/** The /v1 caller (401 without valid credentials, as requireApiScope), before any scope is checked. */
export async function requireApiPrincipal(c: Context<{ Bindings: Env }>): Promise<Principal> {
  const creds = await resolveCredentials(c);
  if (creds.status === "none") throw new ApiError(401, "missing credentials: send Authorization: Bearer <token>", {}, CHALLENGE);
  if (creds.status === "invalid") throw new ApiError(401, `invalid credentials: ${creds.reason}`, {}, CHALLENGE);
  const principal = creds.principal;
  if (principal.kind === "registry") throw new ApiError(401, "registry tokens are valid only on /v2; use an API token", {}, CHALLENGE);
  return principal;
}

/** `principal` when it holds `scope`, else the 403 of /v1 (the dashboard's forms reuse it with the session's principal). */
export function assertPrincipalScope(principal: Principal, scope: ApiScope): Principal {
  if (!principalHasScope(principal, scope)) throw new ApiError(403, `token lacks scope ${describe(scope)}`);
  return principal;
}

/** Like requireApiScope but returns null for anonymous callers (still 401 for invalid credentials). */
export async function optionalApiPrincipal(c: Context<{ Bindings: Env }>): Promise<Principal | null> {
  const creds = await resolveCredentials(c);
  if (creds.status === "invalid") throw new ApiError(401, `invalid credentials: ${creds.reason}`, {}, CHALLENGE);
  return authenticate(c);
}
