/**
 * The registry token endpoint of the docker token flow (`/v2/token`, the realm of the /v2 challenge).
 *
 * GET  ?service=…&scope=repository:<name>:pull,push&scope=…[&account=…] with `Authorization: Basic`
 *      (any username, an API token or the admin token as password), or none for anonymous access.
 * POST application/x-www-form-urlencoded, oauth2 grant_type=password | refresh_token.
 *
 * The signed token grants the requested actions that the credentials actually hold (requested ∩
 * granted); ungranted scopes are left out rather than refused, as docker clients expect.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { Env } from "../env";
import { type Principal, parseBasic, principalFromSecret } from "./principal";
import { type RegistryAccess, signRegistryToken, verifyRegistryToken } from "./registry-token";
import { type RegistryGrant, grantedActions, isRepositoryName } from "./scopes";
import { findLiveTokenById, isRepositoryPublic } from "../storage/tokens";

export const REGISTRY_TOKEN_TTL = 300;
const REFRESH_TOKEN_TTL = 30 * 24 * 3600;
const ALL_ACTIONS: RegistryGrant[] = ["pull", "push", "delete"];

type Caller = { principal: Principal } | { anonymous: true };
type Ctx = Context<{ Bindings: Env }>;

/** Parses `type:name:actions` scopes (repeated or space-separated); unparseable ones are ignored. */
export function parseRequestedScopes(values: string[]): { type: string; name: string; actions: string[] }[] {
  const out: { type: string; name: string; actions: string[] }[] = [];
  for (const value of values) {
    for (const scope of value.split(" ")) {
      const first = scope.indexOf(":");
      const last = scope.lastIndexOf(":");
      if (first <= 0 || last === first) continue;
      const type = scope.slice(0, first).replace(/\(.*\)$/, "");
      const actions = scope.slice(last + 1).split(",").filter(Boolean);
      out.push({ type, name: scope.slice(first + 1, last), actions });
    }
  }
  return out;
}

async function grantFor(env: Env, caller: Caller, name: string): Promise<Set<RegistryGrant>> {
  const granted = new Set<RegistryGrant>();
  if ("principal" in caller) {
    const p = caller.principal;
    if (p.kind === "admin") return new Set(ALL_ACTIONS);
    if (p.kind === "token") for (const a of grantedActions(p.scopes, name)) granted.add(a);
  }
  if (!granted.has("pull") && (await isRepositoryPublic(env, name))) granted.add("pull");
  return granted;
}

/** The `access` claim: for each requested repository, requested ∩ granted actions. */
export async function resolveAccess(env: Env, caller: Caller, scopes: string[]): Promise<RegistryAccess[]> {
  const byName = new Map<string, Set<string>>();
  const access: RegistryAccess[] = [];
  for (const req of parseRequestedScopes(scopes)) {
    if (req.type === "registry" && req.name === "catalog") {
      if ("principal" in caller && !access.some((a) => a.type === "registry")) {
        access.push({ type: "registry", name: "catalog", actions: ["*"] });
      }
      continue;
    }
    if (req.type !== "repository" || !isRepositoryName(req.name)) continue;
    const granted = await grantFor(env, caller, req.name);
    const wanted = req.actions.includes("*") ? ALL_ACTIONS : req.actions;
    const actions = byName.get(req.name) ?? new Set<string>();
    for (const a of wanted) if (granted.has(a as RegistryGrant)) actions.add(a);
    byName.set(req.name, actions);
  }
  for (const [name, actions] of byName) {
    if (actions.size) access.push({ type: "repository", name, actions: ALL_ACTIONS.filter((a) => actions.has(a)) });
  }
  return access;
}

function subjectOf(caller: Caller): string {
  if (!("principal" in caller)) return "anonymous";
  const p = caller.principal;
  return p.kind === "admin" ? "admin" : p.kind === "token" ? `token:${p.id}` : p.subject;
}

function tokenError(c: Ctx, status: 400 | 401, code: string, message: string): Response {
  return c.json(
    { errors: [{ code: status === 401 ? "UNAUTHORIZED" : "DENIED", message, detail: null }], error: code, error_description: message },
    status,
    status === 401 ? { "WWW-Authenticate": `Basic realm="kiln"` } : {},
  );
}

/** The caller of GET /v2/token: Basic (password = token) or Bearer API/admin token; none = anonymous. */
async function callerFromHeader(env: Env, header: string | undefined): Promise<Caller | { error: string }> {
  if (!header?.trim()) return { anonymous: true };
  const m = /^(\w+)\s+(.*)$/.exec(header.trim());
  let secret: string | undefined;
  if (m && m[1].toLowerCase() === "basic") secret = parseBasic(m[2])?.password;
  else if (m && m[1].toLowerCase() === "bearer") secret = m[2].trim();
  if (!secret) return { error: "malformed Authorization header" };
  const r = await principalFromSecret(env, secret, false);
  return "principal" in r ? { principal: r.principal } : { error: r.reason };
}

async function issue(c: Ctx, caller: Caller, service: string | undefined, scopes: string[]) {
  const access = await resolveAccess(c.env, caller, scopes);
  const { token, issuedAt, expiresIn } = await signRegistryToken(c.env, {
    sub: subjectOf(caller),
    aud: service || new URL(c.req.url).host,
    access,
    ttlSeconds: REGISTRY_TOKEN_TTL,
  });
  return { token, access_token: token, expires_in: expiresIn, issued_at: new Date(issuedAt * 1000).toISOString(), access };
}

export const tokenServiceRoutes = new Hono<{ Bindings: Env }>();

tokenServiceRoutes.get("/", async (c) => {
  const caller = await callerFromHeader(c.env, c.req.header("authorization"));
  if ("error" in caller) return tokenError(c, 401, "invalid_client", `authentication failed: ${caller.error}`);
  const { access: _access, ...body } = await issue(c, caller, c.req.query("service"), c.req.queries("scope") ?? []);
  void _access;
  return c.json(body, 200, { "Cache-Control": "no-store" });
});

tokenServiceRoutes.post("/", async (c) => {
  let form: URLSearchParams;
  try {
    form = new URLSearchParams(new TextDecoder().decode(await c.req.arrayBuffer()));
  } catch {
    return tokenError(c, 400, "invalid_request", "expected an application/x-www-form-urlencoded body");
  }
  const grantType = form.get("grant_type");
  let caller: Caller;
  let refreshToken: string | undefined;
  if (grantType === "password") {
    const r = await principalFromSecret(c.env, form.get("password") ?? "", false);
    if (!("principal" in r)) return tokenError(c, 401, "invalid_grant", `authentication failed: ${r.reason}`);
    caller = { principal: r.principal };
  } else if (grantType === "refresh_token") {
    refreshToken = form.get("refresh_token") ?? "";
    const verified = await verifyRegistryToken(c.env, refreshToken, "refresh");
    if (!verified.ok) return tokenError(c, 401, "invalid_grant", "invalid refresh token");
    const sub = verified.claims.sub;
    if (sub === "admin" && c.env.KILN_ADMIN_TOKEN) caller = { principal: { kind: "admin" } };
    else if (sub.startsWith("token:")) {
      const t = await findLiveTokenById(c.env, sub.slice("token:".length));
      if (!t) return tokenError(c, 401, "invalid_grant", "token revoked");
      caller = { principal: { kind: "token", id: t.id, name: t.name, scopes: t.scopes } };
    } else return tokenError(c, 401, "invalid_grant", "invalid refresh token");
  } else {
    return tokenError(c, 400, "unsupported_grant_type", `unsupported grant_type ${JSON.stringify(grantType)}`);
  }
  const service = form.get("service") ?? undefined;
  const issued = await issue(c, caller, service, form.getAll("scope"));
  if (!refreshToken && form.get("access_type") === "offline") {
    refreshToken = (
      await signRegistryToken(c.env, {
        sub: subjectOf(caller),
        aud: service || new URL(c.req.url).host,
        access: [],
        ttlSeconds: REFRESH_TOKEN_TTL,
        use: "refresh",
      })
    ).token;
  }
  return c.json(
    {
      access_token: issued.access_token,
      token: issued.token,
      expires_in: issued.expires_in,
      issued_at: issued.issued_at,
      scope: issued.access.map((a) => `${a.type}:${a.name}:${a.actions.join(",")}`).join(" "),
      ...(refreshToken ? { refresh_token: refreshToken } : {}),
    },
    200,
    { "Cache-Control": "no-store" },
  );
});
