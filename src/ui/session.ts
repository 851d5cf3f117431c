/**
 * The dashboard's session: the API token itself, sealed (AES-GCM, src/storage/sealed.ts) in an
 * HttpOnly, SameSite=Strict cookie scoped to /ui (Secure on https), with a random CSRF token bound to
 * it. Nothing about the token is stored server-side; every request resolves it again exactly as /v1
 * does (principalFromSecret), so a revoked token signs the session out at once.
 *
 * CSRF: every form carries the session's CSRF token (compared in constant time), and a POST whose
 * Origin (or Sec-Fetch-Site) names another site is refused before that. The sign-in form, before any
 * session exists, uses a double-submit token in a short-lived cookie of its own.
 */
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Env } from "../env";
import { base64url, randomBytes, timingSafeEqual } from "../auth/crypto";
import { principalFromSecret, type Principal } from "../auth/principal";
import { seal, unseal } from "../storage/sealed";
import type { UploadForm } from "./upload";

export const SESSION_COOKIE = "kiln_session";
export const SIGNIN_CSRF_COOKIE = "kiln_signin_csrf";
/** A session lasts this long, whatever the token's own life. */
export const SESSION_SECONDS = 12 * 60 * 60;
const COOKIE_PATH = "/ui";

export interface Session {
  token: string;
  csrf: string;
  /** Seconds since the epoch after which the cookie is refused. */
  exp: number;
}

export type UiEnv = { Bindings: Env; Variables: { session: Session; principal: Principal; nonce: string; form: FormData; upload: UploadForm } };
export type UiContext = Context<UiEnv>;

const isHttps = (c: UiContext) => new URL(c.req.url).protocol === "https:";

function cookieOptions(c: UiContext, maxAge: number) {
  return { path: COOKIE_PATH, httpOnly: true, sameSite: "Strict" as const, secure: isHttps(c), maxAge };
}

export const newCsrfToken = () => base64url(randomBytes(32));

/** Signs in: seals the token with a fresh CSRF token into the session cookie. */
export async function startSession(c: UiContext, token: string): Promise<Session> {
  const session: Session = { token, csrf: newCsrfToken(), exp: Math.floor(Date.now() / 1000) + SESSION_SECONDS };
  setCookie(c, SESSION_COOKIE, await seal(c.env, JSON.stringify(session), "ui-session"), cookieOptions(c, SESSION_SECONDS));
  deleteCookie(c, SIGNIN_CSRF_COOKIE, { path: COOKIE_PATH, secure: isHttps(c) });
  return session;
}

export function endSession(c: UiContext): void {
  deleteCookie(c, SESSION_COOKIE, { path: COOKIE_PATH, secure: isHttps(c), httpOnly: true, sameSite: "Strict" });
}

/** The session of the request's cookie; null when there is none, it does not open, or it expired. */
export async function readSession(c: UiContext): Promise<Session | null> {
  const sealed = getCookie(c, SESSION_COOKIE);
  if (!sealed) return null;
  try {
    const s = JSON.parse(await unseal(c.env, sealed, "ui-session")) as Partial<Session>;
    if (typeof s.token !== "string" || typeof s.csrf !== "string" || typeof s.exp !== "number") return null;
    if (s.exp * 1000 <= Date.now()) return null;
    return { token: s.token, csrf: s.csrf, exp: s.exp };
  } catch {
    return null;
  }
}

/**
 * The caller behind a session's token, resolved as /v1 resolves a Bearer token (admin token or API
 * token; registry JWTs are refused as on /v1). A reason when it no longer resolves (revoked).
 */
export async function sessionPrincipal(env: Env, session: Session): Promise<{ principal: Principal } | { reason: string }> {
  const r = await principalFromSecret(env, session.token, false);
  if ("principal" in r && r.principal.kind === "registry") return { reason: "registry tokens are valid only on /v2" };
  return r;
}

/** The sign-in form's double-submit token: reused while its cookie lives, else a new one. */
export function signInCsrf(c: UiContext): string {
  const existing = getCookie(c, SIGNIN_CSRF_COOKIE);
  if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const token = newCsrfToken();
  setCookie(c, SIGNIN_CSRF_COOKIE, token, cookieOptions(c, 60 * 60));
  return token;
}

export function signInCsrfCookie(c: UiContext): string | undefined {
  return getCookie(c, SIGNIN_CSRF_COOKIE);
}

export function sameToken(a: string | undefined | null, b: string | undefined | null): boolean {
  if (!a || !b) return false;
  const enc = new TextEncoder();
  return timingSafeEqual(enc.encode(a), enc.encode(b));
}

/**
 * Why a state-changing request must be refused as cross-site, or null: its Origin is another origin
 * (or `null`), or the browser says Sec-Fetch-Site is cross-site or same-site (another subdomain).
 */
export function crossSiteReason(c: UiContext): string | null {
  const origin = c.req.header("origin");
  const self = new URL(c.req.url).origin;
  if (origin !== undefined && origin !== self) return `a form from ${origin} may not act on ${self}`;
  const site = c.req.header("sec-fetch-site");
  if (site !== undefined && site !== "same-origin" && site !== "none") return `a ${site} request may not act on ${self}`;
  return null;
}
