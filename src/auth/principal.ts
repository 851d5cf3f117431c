/**
 * Who is calling: the admin token, an API token, or a registry Bearer token (JWT), sent as
 * `Authorization: Bearer <secret>` or as the password of `Authorization: Basic`.
 */
import type { Context } from "hono";
import type { Env } from "../env";
import { secretsEqual, sha256Hex, timingSafeEqual } from "./crypto";
import { type RegistryAccess, signingKeySource, verifyRegistryToken } from "./registry-token";
import { checkJobToken, isJobSubject, parseJobSubject } from "./job-token";
import { credentialCache } from "./cache";
import type { TokenScope } from "./scopes";
import { findLiveTokenById, findTokenByHash, looksLikeApiToken } from "../storage/tokens";

export type Principal =
  | { kind: "admin" }
  | { kind: "token"; id: string; name: string; scopes: TokenScope[] }
  /** A registry Bearer token (JWT) issued by /v2/token or mintRegistryToken. */
  | { kind: "registry"; subject: string; access: RegistryAccess[]; expiresAt: number };

export type Credentials =
  | { status: "none" }
  | { status: "invalid"; scheme: "bearer" | "basic" | "other"; reason: string }
  | { status: "ok"; scheme: "bearer" | "basic"; principal: Principal };

/** Why a secret was refused (for the `error_description` of a challenge). */
type SecretResult = { principal: Principal } | { reason: string };

/** Resolves an admin token, API token or registry JWT. `allowJwt` false for the token endpoint and /v1. */
export async function principalFromSecret(env: Env, secret: string, allowJwt = true): Promise<SecretResult> {
  if (!secret) return { reason: "empty credentials" };
  // Always compare against the admin token first, in constant time, whatever the secret looks like.
  const admin = env.KILN_ADMIN_TOKEN;
  if (admin && (await secretsEqual(secret, admin))) return { principal: { kind: "admin" } };
  if (looksLikeApiToken(secret)) {
    const hash = await sha256Hex(secret);
    const cached = credentialCache.get(hash);
    if (cached) return { principal: cached };
    const token = await findTokenByHash(env, hash);
    if (!token || !timingSafeEqual(new TextEncoder().encode(token.hash), new TextEncoder().encode(hash))) {
      return { reason: "unknown or revoked token" };
    }
    const principal: Principal = { kind: "token", id: token.id, name: token.name, scopes: token.scopes };
    credentialCache.set(hash, principal, { tokenId: token.id });
    return { principal };
  }
  if (allowJwt && secret.split(".").length === 3) {
    // Keyed by the hash of the whole signed token and the key that verifies it: a hit is the very
    // token verified before, under the same signing key.
    const key = `jwt:${await sha256Hex(`${signingKeySource(env)}\n${secret}`)}`;
    const cached = credentialCache.get(key);
    if (cached) return { principal: cached };
    const verified = await verifyRegistryToken(env, secret);
    if (!verified.ok) return { reason: verified.reason === "expired" ? "token expired" : "invalid token" };
    const { sub, access, exp } = verified.claims;
    const tokenId = sub.startsWith("token:") ? sub.slice("token:".length) : undefined;
    if (tokenId && !(await findLiveTokenById(env, tokenId))) {
      return { reason: "token revoked" };
    }
    const principal: Principal = { kind: "registry", subject: sub, access, expiresAt: exp };
    if (isJobSubject(sub)) {
      // A RUN job's credential lives only as long as its lease and its runner token (job-token.ts):
      // checked on every call, never cached.
      const job = parseJobSubject(sub);
      const dead = job ? await checkJobToken(env, job) : "invalid token";
      if (dead) return { reason: dead };
      return { principal };
    }
    credentialCache.set(key, principal, { notAfter: exp * 1000, tokenId });
    return { principal };
  }
  return { reason: "invalid token" };
}

/** `user:password` of a Basic header, or null when it does not decode. */
export function parseBasic(value: string): { username: string; password: string } | null {
  try {
    const decoded = new TextDecoder().decode(Uint8Array.from(atob(value.trim()), (ch) => ch.charCodeAt(0)));
    const colon = decoded.indexOf(":");
    if (colon < 0) return null;
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  } catch {
    return null;
  }
}

const memo = new WeakMap<Request, Promise<Credentials>>();

/** The caller's credentials, resolved once per request. */
export function resolveCredentials(c: Context<{ Bindings: Env }>): Promise<Credentials> {
  let result = memo.get(c.req.raw);
  if (!result) {
    result = resolve(c.env, c.req.header("authorization"));
    memo.set(c.req.raw, result);
  }
  return result;
}

async function resolve(env: Env, header: string | undefined): Promise<Credentials> {
  if (!header || !header.trim()) return { status: "none" };
  const m = /^(\w+)\s+(.*)$/.exec(header.trim());
  if (!m) return { status: "invalid", scheme: "other", reason: "malformed Authorization header" };
  const scheme = m[1].toLowerCase();
  if (scheme === "bearer") {
    const r = await principalFromSecret(env, m[2].trim());
    return "principal" in r ? { status: "ok", scheme: "bearer", principal: r.principal } : { status: "invalid", scheme: "bearer", reason: r.reason };
  }
  if (scheme === "basic") {
    const basic = parseBasic(m[2]);
    if (!basic) return { status: "invalid", scheme: "basic", reason: "malformed Basic credentials" };
    const r = await principalFromSecret(env, basic.password);
    return "principal" in r ? { status: "ok", scheme: "basic", principal: r.principal } : { status: "invalid", scheme: "basic", reason: r.reason };
  }
  return { status: "invalid", scheme: "other", reason: `unsupported authorization scheme ${m[1]}` };
}

/** The authenticated caller, or null when there are no (or no valid) credentials. */
export async function authenticate(c: Context<{ Bindings: Env }>): Promise<Principal | null> {
  const creds = await resolveCredentials(c);
  return creds.status === "ok" ? creds.principal : null;
}
