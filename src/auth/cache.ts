/**
 * Decisions about credentials, cached per isolate (issue 16: fast small requests).
 *
 * A resolved API token or registry JWT is kept, keyed by the SHA-256 of the secret, until the JWT
 * expires or `AUTH_CACHE_TTL_MS` has passed, whichever comes first; the least recently used entry
 * goes when `AUTH_CACHE_MAX` are held. Revoking a token (storage/tokens.ts revokeToken) drops its
 * entries and those of the JWTs minted from it in the isolate that revokes; other isolates keep
 * accepting it for at most `AUTH_CACHE_TTL_MS`. Refusals are never cached, and neither are job
 * credentials (their lease is checked on every call, auth/job-token.ts).
 *
 * Likewise the /v2 gate remembers that a repository is public (never that it is not) for anonymous
 * pulls: making it private (storage/tokens.ts setRepositoryPublic) takes effect at once in the
 * isolate that does it and within `AUTH_CACHE_TTL_MS` in the others.
 */
import type { Principal } from "./principal";

/** How long an isolate trusts a credential it resolved: the revocation bound across isolates. */
export const AUTH_CACHE_TTL_MS = 30_000;
/** Credentials an isolate remembers at most. */
export const AUTH_CACHE_MAX = 1_000;

interface Entry<V> {
  value: V;
  expiresAt: number;
  /** The API token behind the credential (itself, or the token a JWT was minted from). */
  tokenId?: string;
}

export class CredentialCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  /** The time in ms; tests replace it to step past the TTL without waiting. */
  clock: () => number = () => Date.now();

  constructor(readonly ttlMs: number, readonly max: number) {}

  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    if (e.expiresAt <= this.clock()) return undefined;
    this.entries.set(key, e); // most recently used last
    return e.value;
  }

  /** Remembers `value` until `notAfter` (ms; a JWT's expiry) or the TTL, whichever is first. */
  set(key: string, value: V, opts: { notAfter?: number; tokenId?: string } = {}): void {
    const now = this.clock();
    const expiresAt = Math.min(now + this.ttlMs, opts.notAfter ?? Infinity);
    if (expiresAt <= now) return;
    this.entries.delete(key);
    this.entries.set(key, { value, expiresAt, tokenId: opts.tokenId });
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value as string);
  }

  forget(key: string): void {
    this.entries.delete(key);
  }

  /** Drops every entry resolved through the API token `tokenId`. */
  forgetToken(tokenId: string): void {
    for (const [key, e] of this.entries) if (e.tokenId === tokenId) this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The isolate's cache of resolved credentials (auth/principal.ts). */
export const credentialCache = new CredentialCache<Principal>(AUTH_CACHE_TTL_MS, AUTH_CACHE_MAX);

/** Repositories the /v2 gate found public (auth/registry.ts), by name. */
export const publicRepositoryCache = new CredentialCache<true>(AUTH_CACHE_TTL_MS, AUTH_CACHE_MAX);
