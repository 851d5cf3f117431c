/**
 * Who a build acts as (DESIGN.md, "Tenancy and trust"). Every image a build reads (FROM, COPY --from,
 * RUN --mount from=, ONBUILD bases) is a pull authorized for this principal exactly as /v2 would
 * authorize it; public repositories stay readable by all.
 *
 * - `admin`: the admin token (or a token with the `admin` scope).
 * - `token`: an API token. Its scopes are read again at every check, so revoking the token (or the
 *   token losing a scope) stops the build's reads at once.
 * - `webhook`: a git push. It holds the rights recorded with the webhook: pull on the image's
 *   namespace, pull and push on the image's repository.
 */
import type { Env } from "../env";
import type { Principal } from "./principal";
import { formatScope, grantedActions, parseScope, type TokenScope } from "./scopes";
import { findLiveTokenById, isRepositoryPublic } from "../storage/tokens";

export type BuildPrincipal =
  | { kind: "admin" }
  | { kind: "token"; id: string; name: string }
  | { kind: "webhook"; id: string; scopes: string[] };

/** The principal a build submitted by `p` acts as. */
export function buildPrincipalOf(p: Principal): BuildPrincipal {
  if (p.kind === "admin") return { kind: "admin" };
  if (p.kind === "token") {
    if (p.scopes.some((s) => s.kind === "admin")) return { kind: "admin" };
    return { kind: "token", id: p.id, name: p.name };
  }
  // registry JWTs never reach /v1 (requireApiScope refuses them)
  throw new Error("a registry token cannot submit builds");
}

/** The rights a webhook's builds hold: pull on the image's namespace, pull and push on the image. */
export function webhookPrincipal(webhookId: string, image: string): BuildPrincipal {
  const scopes: TokenScope[] = [
    { kind: "repository", pattern: `${namespaceOf(image)}/**`, actions: ["pull"] },
    { kind: "repository", pattern: image, actions: ["pull", "push"] },
  ];
  return { kind: "webhook", id: webhookId, scopes: scopes.map(formatScope) };
}

/** The namespace of a repository: its first path segment (`acme` of `acme/app`). */
export function namespaceOf(repository: string): string {
  return repository.split("/")[0];
}

/** How a principal is shown in logs and errors (never a secret). */
export function describePrincipal(p: BuildPrincipal): string {
  switch (p.kind) {
    case "admin":
      return "the admin token";
    case "token":
      return `token ${p.name} (${p.id})`;
    case "webhook":
      return `webhook ${p.id}`;
  }
}

/** The scopes the principal holds now; null when its token was revoked. */
async function currentScopes(env: Env, p: BuildPrincipal): Promise<TokenScope[] | null> {
  switch (p.kind) {
    case "admin":
      return [{ kind: "admin" }];
    case "token":
      return (await findLiveTokenById(env, p.id))?.scopes ?? null;
    case "webhook":
      return p.scopes.flatMap((s) => {
        try {
          return [parseScope(s)];
        } catch {
          return [];
        }
      });
  }
}

/** Whether a build acting as `p` may pull `repository` of kiln's registry (public repositories: always). */
export async function buildMayPull(env: Env, p: BuildPrincipal, repository: string): Promise<boolean> {
  const scopes = await currentScopes(env, p);
  if (scopes && grantedActions(scopes, repository).has("pull")) return true;
  return await isRepositoryPublic(env, repository);
}
