/**
 * D1 access for auth: API tokens (migrations/0003_auth.sql), the `public` flag of repositories
 * (migrations/0001_registry.sql) and generated secrets.
 */
import type { Env } from "../env";
import { base64url, randomBytes, sha256Hex } from "../auth/crypto";
import { type TokenScope, formatScope, parseScope } from "../auth/scopes";
import { credentialCache, publicRepositoryCache } from "../auth/cache";

export interface StoredToken {
  id: string;
  name: string;
  scopes: TokenScope[];
  createdAt: number;
  revokedAt: number | null;
}

interface TokenRow {
  id: string;
  name: string;
  hash: string;
  scopes: string;
  created_at: number;
  revoked_at: number | null;
}

const TOKEN_PREFIX = "kiln_";
/** `kiln_` + base64url of 32 random bytes. */
const TOKEN_SHAPE = /^kiln_[A-Za-z0-9_-]{43}$/;

export function looksLikeApiToken(token: string): boolean {
  return TOKEN_SHAPE.test(token);
}

function fromRow(row: TokenRow): StoredToken {
  const scopes: TokenScope[] = [];
  for (const s of JSON.parse(row.scopes) as string[]) {
    try {
      scopes.push(parseScope(s));
    } catch {
      // A scope stored by an older version that no longer parses grants nothing.
    }
  }
  return { id: row.id, name: row.name, scopes, createdAt: row.created_at, revokedAt: row.revoked_at };
}

export async function createToken(env: Env, name: string, scopes: TokenScope[]): Promise<{ id: string; token: string }> {
  const token = TOKEN_PREFIX + base64url(randomBytes(32));
  const id = `tok_${crypto.randomUUID().replace(/-/g, "")}`;
  await env.DB
    .prepare("INSERT INTO tokens (id, name, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)")
    .bind(id, name, await sha256Hex(token), JSON.stringify(scopes.map(formatScope)), Date.now())
    .run();
  return { id, token };
}

export async function listTokens(env: Env): Promise<StoredToken[]> {
  const { results } = await env.DB.prepare("SELECT * FROM tokens ORDER BY created_at, id").all<TokenRow>();
  return results.map(fromRow);
}

/**
 * Marks a token revoked; false when there is no such token. This isolate forgets it (and the JWTs
 * minted from it) at once; other isolates within the auth cache's TTL (auth/cache.ts).
 */
export async function revokeToken(env: Env, id: string): Promise<boolean> {
  const existing = await env.DB.prepare("SELECT id FROM tokens WHERE id = ?").bind(id).first();
  if (!existing) return false;
  await env.DB.prepare("UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?").bind(Date.now(), id).run();
  credentialCache.forgetToken(id);
  return true;
}

/** The live (not revoked) token whose SHA-256 is `hash`. */
export async function findTokenByHash(env: Env, hash: string): Promise<(StoredToken & { hash: string }) | null> {
  const row = await env.DB.prepare("SELECT * FROM tokens WHERE hash = ? AND revoked_at IS NULL").bind(hash).first<TokenRow>();
  return row ? { ...fromRow(row), hash: row.hash } : null;
}

export async function findLiveTokenById(env: Env, id: string): Promise<StoredToken | null> {
  const row = await env.DB.prepare("SELECT * FROM tokens WHERE id = ? AND revoked_at IS NULL").bind(id).first<TokenRow>();
  return row ? fromRow(row) : null;
}

export async function isRepositoryPublic(env: Env, name: string): Promise<boolean> {
  const row = await env.DB.prepare("SELECT public FROM repositories WHERE name = ?").bind(name).first<{ public: number }>();
  return row?.public === 1;
}

export async function listPublicRepositories(env: Env): Promise<Set<string>> {
  const { results } = await env.DB.prepare("SELECT name FROM repositories WHERE public = 1").all<{ name: string }>();
  return new Set(results.map((r) => r.name));
}

export async function getRepositoryVisibility(env: Env, name: string): Promise<{ name: string; public: boolean } | null> {
  const row = await env.DB.prepare("SELECT name, public FROM repositories WHERE name = ?").bind(name).first<{ name: string; public: number }>();
  return row ? { name: row.name, public: row.public === 1 } : null;
}

/** Sets a repository's `public` flag; this isolate's /v2 gate forgets it was public at once (auth/cache.ts). */
export async function setRepositoryPublic(env: Env, name: string, isPublic: boolean): Promise<void> {
  await env.DB
    .prepare(
      "INSERT INTO repositories (name, public, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET public = excluded.public",
    )
    .bind(name, isPublic ? 1 : 0, Date.now())
    .run();
  if (!isPublic) publicRepositoryCache.forget(name);
}

/** A named random secret, generated on first use and kept in D1. */
export async function generatedSecret(env: Env, name: string): Promise<string> {
  await env.DB
    .prepare("INSERT OR IGNORE INTO auth_secrets (name, value, created_at) VALUES (?, ?, ?)")
    .bind(name, base64url(randomBytes(32)), Date.now())
    .run();
  const row = await env.DB.prepare("SELECT value FROM auth_secrets WHERE name = ?").bind(name).first<{ value: string }>();
  if (!row) throw new Error(`auth secret ${name} missing`);
  return row.value;
}
