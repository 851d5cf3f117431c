/**
 * Registry Bearer tokens (the docker token flow): short-lived HS256 JWTs whose `access` claim lists
 * the actions granted per repository, as in distribution's token spec.
 */
import type { Env } from "../env";
import { hkdfHmacKey, hmacKey, signJwt, verifyJwt } from "./crypto";
import { generatedSecret } from "../storage/tokens";

export interface RegistryAccess {
  type: "repository" | "registry";
  name: string;
  actions: string[];
}

export interface RegistryTokenClaims {
  iss: string;
  /**
   * "admin", "token:<id>" (an API token), "anonymous", "kiln:<purpose>" for internal tokens, or
   * "job:<jobId>:<leaseId>:<runnerTokenId>" for a RUN job lease's credential (job-token.ts: blob routes
   * of its repository only, valid only while the lease lives and the runner token is not revoked).
   */
  sub: string;
  aud: string;
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  access: RegistryAccess[];
  /** "refresh" for oauth2 refresh tokens (never valid on /v2). */
  use?: "access" | "refresh";
}

export const ISSUER = "kiln";
const keys = new Map<string, Promise<CryptoKey>>();

function cachedKey(id: string, make: () => Promise<CryptoKey>): Promise<CryptoKey> {
  let key = keys.get(id);
  if (!key) {
    key = make();
    keys.set(id, key);
    key.catch(() => keys.delete(id));
  }
  return key;
}

/**
 * Which signing key `signingKey(env)` uses, without deriving it (no D1 read): a token verified under
 * one key says nothing about another (auth/cache.ts keys its entries with this).
 */
export function signingKeySource(env: Env): string {
  if (env.KILN_TOKEN_SECRET) return `secret:${env.KILN_TOKEN_SECRET}`;
  if (env.KILN_ADMIN_TOKEN) return `admin:${env.KILN_ADMIN_TOKEN}`;
  return "generated";
}

/** KILN_TOKEN_SECRET, else HKDF of the admin token, else a random key generated once and kept in D1. */
export async function signingKey(env: Env): Promise<CryptoKey> {
  if (env.KILN_TOKEN_SECRET) {
    const secret = env.KILN_TOKEN_SECRET;
    return cachedKey(`secret:${secret}`, () => hmacKey(new TextEncoder().encode(secret)));
  }
  if (env.KILN_ADMIN_TOKEN) {
    const admin = env.KILN_ADMIN_TOKEN;
    return cachedKey(`admin:${admin}`, () => hkdfHmacKey(admin, "kiln", "kiln registry token signing key v1"));
  }
  const generated = await generatedSecret(env, "registry-token-key");
  return cachedKey(`generated:${generated}`, () => hmacKey(new TextEncoder().encode(generated)));
}

export async function signRegistryToken(
  env: Env,
  claims: { sub: string; aud: string; access: RegistryAccess[]; ttlSeconds: number; use?: "access" | "refresh" },
): Promise<{ token: string; issuedAt: number; expiresIn: number }> {
  const now = Math.floor(Date.now() / 1000);
  const body: RegistryTokenClaims = {
    iss: ISSUER,
    sub: claims.sub,
    aud: claims.aud,
    iat: now,
    nbf: now - 5,
    exp: now + claims.ttlSeconds,
    jti: crypto.randomUUID(),
    access: claims.access,
    ...(claims.use === "refresh" ? { use: "refresh" as const } : {}),
  };
  return { token: await signJwt(await signingKey(env), body), issuedAt: now, expiresIn: claims.ttlSeconds };
}

function isAccessList(value: unknown): value is RegistryAccess[] {
  return (
    Array.isArray(value) &&
    value.every(
      (a) =>
        a &&
        typeof a === "object" &&
        (a.type === "repository" || a.type === "registry") &&
        typeof a.name === "string" &&
        Array.isArray(a.actions) &&
        a.actions.every((x: unknown) => typeof x === "string"),
    )
  );
}

export type VerifyResult =
  | { ok: true; claims: RegistryTokenClaims }
  | { ok: false; reason: "malformed" | "signature" | "expired" | "not-yet-valid" };

/** Checks signature, issuer, time window and claim shape. Liveness of the subject is the caller's job. */
export async function verifyRegistryToken(env: Env, jwt: string, use: "access" | "refresh" = "access"): Promise<VerifyResult> {
  const claims = await verifyJwt(await signingKey(env), jwt);
  if (!claims) return { ok: false, reason: "signature" };
  const { iss, sub, exp, nbf, access } = claims;
  if (iss !== ISSUER || typeof sub !== "string" || typeof exp !== "number" || !isAccessList(access)) {
    return { ok: false, reason: "malformed" };
  }
  if ((claims.use ?? "access") !== use) return { ok: false, reason: "malformed" };
  const now = Date.now() / 1000;
  if (exp <= now) return { ok: false, reason: "expired" };
  if (typeof nbf === "number" && nbf > now + 30) return { ok: false, reason: "not-yet-valid" };
  return { ok: true, claims: claims as unknown as RegistryTokenClaims };
}

/**
 * A short-lived registry token for internal use, valid until it expires. Accepted by authorizeRegistry
 * as `Authorization: Bearer <token>` (or as Basic password). Runner jobs do not use it: their
 * credential is bound to the lease (mintJobToken in job-token.ts).
 */
export async function mintRegistryToken(
  env: Env,
  origin: string,
  access: { repository: string; actions: string[] }[],
  ttlSeconds: number,
): Promise<string> {
  const { token } = await signRegistryToken(env, {
    sub: "kiln:internal",
    aud: new URL(origin).host,
    access: access.map((a) => ({ type: "repository", name: a.repository, actions: [...a.actions] })),
    ttlSeconds,
  });
  return token;
}
