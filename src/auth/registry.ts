import type { Context } from "hono";
import type { Env } from "../env";
import { OciError } from "../errors";
import { type Principal, resolveCredentials } from "./principal";
import { JOB_TOKEN_ROUTES, isJobSubject } from "./job-token";
import { type TokenScope, grantedActions } from "./scopes";
import { findLiveTokenById, isRepositoryPublic, listPublicRepositories } from "../storage/tokens";
import { publicRepositoryCache } from "./cache";

export type RegistryAction = "pull" | "push" | "delete";

/** The scope a client must ask the token endpoint for to do `action` (what docker asks for on push). */
const CHALLENGE_ACTIONS: Record<RegistryAction, string> = { pull: "pull", push: "pull,push", delete: "delete" };

/**
 * `Bearer realm="<origin>/v2/token",service="<host>"[,scope="…"][,error="…"]`: where to get a token.
 * `repo` undefined: no scope (the /v2/ ping), except for _catalog which names `registry:catalog:*`.
 */
export function registryChallenge(c: Context<{ Bindings: Env }>, repo: string | undefined, action: RegistryAction, error?: string): string {
  const url = new URL(c.req.url);
  let header = `Bearer realm="${url.origin}/v2/token",service="${url.host}"`;
  if (repo) header += `,scope="repository:${repo}:${CHALLENGE_ACTIONS[action]}"`;
  else if (url.pathname.endsWith("/_catalog")) header += `,scope="registry:catalog:*"`;
  if (error) header += `,error="${error}"`;
  return header;
}

const API_VERSION = { "Docker-Distribution-API-Version": "registry/2.0" };

function unauthorized(c: Context<{ Bindings: Env }>, repo: string | undefined, action: RegistryAction, message: string, error?: string): OciError {
  return new OciError("UNAUTHORIZED", message, {
    detail: repo ? [{ Type: "repository", Name: repo, Action: action }] : null,
    headers: { "WWW-Authenticate": registryChallenge(c, repo, action, error), ...API_VERSION },
  });
}

/** Whether an authenticated principal holds `action` on `repo` (public repositories aside). */
export function principalAllows(principal: Principal, repo: string, action: RegistryAction): boolean {
  switch (principal.kind) {
    case "admin":
      return true;
    case "token":
      return grantedActions(principal.scopes, repo).has(action);
    case "registry":
      return principal.access.some(
        (a) =>
          a.type === "repository" &&
          a.name === repo &&
          (a.actions.includes(action) || a.actions.includes("*") || (action === "delete" && a.actions.includes("push"))),
      );
  }
}

/**
 * The one gate for every /v2 call. Throws OciError UNAUTHORIZED (401 with the Bearer challenge in
 * WWW-Authenticate) when there are no valid credentials, DENIED (403) when the credentials lack the
 * action on `repo`. `repo` undefined means the call is not about one repository (/v2/ ping, _catalog):
 * any valid credentials pass. Anonymous callers may pull public repositories.
 * A registry Bearer token lacking the action gets 401 with `error="insufficient_scope"` so that
 * docker fetches a token with the needed scope; Basic and API tokens lacking it get 403.
 */
export async function authorizeRegistry(
  c: Context<{ Bindings: Env }>,
  repo: string | undefined,
  action: RegistryAction,
): Promise<void> {
  const creds = await resolveCredentials(c);
  if (creds.status === "invalid") {
    throw unauthorized(c, repo, action, `authentication failed: ${creds.reason}`, creds.scheme === "bearer" ? "invalid_token" : undefined);
  }
  if (creds.status === "none") {
    if (repo && action === "pull" && (await publicForPull(c.env, repo))) return;
    throw unauthorized(c, repo, action, "authentication required");
  }
  const principal = creds.principal;
  if (principal.kind === "registry" && isJobSubject(principal.subject)) return jobTokenGate(c, principal, repo, action);
  if (!repo) return;
  if (principalAllows(principal, repo, action)) return;
  if (action === "pull" && (await publicForPull(c.env, repo))) return;
  if (principal.kind === "registry" && creds.scheme === "bearer") {
    throw unauthorized(c, repo, action, `token lacks ${action} access to repository ${repo}`, "insufficient_scope");
  }
  throw new OciError("DENIED", `requested access to the resource is denied: ${action} on ${repo}`, {
    detail: [{ Type: "repository", Name: repo, Action: action }],
    headers: API_VERSION,
  });
}

/** Whether `repo` is public, remembered for the cache's TTL once it was found so (auth/cache.ts). */
async function publicForPull(env: Env, repo: string): Promise<boolean> {
  if (publicRepositoryCache.get(repo)) return true;
  if (!(await isRepositoryPublic(env, repo))) return false;
  publicRepositoryCache.set(repo, true);
  return true;
}

/** The kind of /v2 route of a request ("blob", "upload", "manifest", …), set by the /v2 router. */
const routeKinds = new WeakMap<Request, string>();

/** The /v2 router names the route kind of a request before any handler calls authorizeRegistry. */
export function setRegistryRouteKind(c: Context<{ Bindings: Env }>, kind: string): void {
  routeKinds.set(c.req.raw, kind);
}

/**
 * A RUN job's registry token (job-token.ts; its lease was checked when it was resolved): pull and push
 * of blobs on the job's repository only. Manifests, tags, referrers, the catalog, deletes and every
 * other repository are refused with 403, public or not.
 */
function jobTokenGate(c: Context<{ Bindings: Env }>, principal: Extract<Principal, { kind: "registry" }>, repo: string | undefined, action: RegistryAction): void {
  const kind = routeKinds.get(c.req.raw);
  let why = "";
  if (!kind || !JOB_TOKEN_ROUTES.has(kind)) why = "a job token may only read and upload blobs";
  else if (action === "delete") why = "a job token may not delete";
  else if (!repo || !principalAllows(principal, repo, action)) why = "a job token may only use its job's repository";
  if (!why) return;
  throw new OciError("DENIED", `requested access to the resource is denied: ${why}`, {
    detail: repo ? [{ Type: "repository", Name: repo, Action: action }] : null,
    headers: API_VERSION,
  });
}

/** Grants behind a registry token that carries `registry:catalog:*`, looked up once per request. */
const catalogGrants = new WeakMap<Request, Promise<TokenScope[] | null>>();

function subjectGrants(c: Context<{ Bindings: Env }>, subject: string): Promise<TokenScope[] | null> {
  let grants = catalogGrants.get(c.req.raw);
  if (!grants) {
    grants = (async () => {
      if (subject === "admin") return [{ kind: "admin" } as const];
      if (!subject.startsWith("token:")) return null;
      return (await findLiveTokenById(c.env, subject.slice("token:".length)))?.scopes ?? null;
    })();
    catalogGrants.set(c.req.raw, grants);
  }
  return grants;
}

/** Public repository names, loaded once per request (canPull runs once per name in _catalog). */
const publicSets = new WeakMap<Request, Promise<Set<string>>>();

function publicRepositories(c: Context<{ Bindings: Env }>): Promise<Set<string>> {
  let set = publicSets.get(c.req.raw);
  if (!set) {
    set = listPublicRepositories(c.env);
    publicSets.set(c.req.raw, set);
  }
  return set;
}

/**
 * Whether the caller may pull `repo`, without throwing: for _catalog filtering and for the source of
 * a cross-repository mount (mount falls back to 202 when this is false).
 */
export async function canPull(c: Context<{ Bindings: Env }>, repo: string): Promise<boolean> {
  const creds = await resolveCredentials(c);
  if (creds.status === "ok") {
    const principal = creds.principal;
    if (principalAllows(principal, repo, "pull")) return true;
    if (principal.kind === "registry" && principal.access.some((a) => a.type === "registry" && a.name === "catalog")) {
      const grants = await subjectGrants(c, principal.subject);
      if (grants && grantedActions(grants, repo).has("pull")) return true;
    }
  }
  return (await publicRepositories(c)).has(repo);
}
