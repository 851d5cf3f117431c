import type { Env } from "../env";
import type { UpstreamEndpoint } from "../upstream/client";
import { seal, unseal } from "./sealed";

/** Built-in endpoints; a row in `upstreams` for the same host overrides them. */
export const DEFAULT_UPSTREAMS: Record<string, string> = {
  "docker.io": "https://registry-1.docker.io",
  "ghcr.io": "https://ghcr.io",
  "quay.io": "https://quay.io",
};

export interface UpstreamRecord {
  host: string;
  endpoint: string;
  username?: string;
  hasPassword: boolean;
  mirrors: string[];
  /** Namespaces allowed to use the credentials; absent = every namespace. */
  namespaces?: string[];
  builtin: boolean;
}

/** An upstream entry as a build uses it: the endpoint with credentials, and who may use them. */
export interface UpstreamEntry {
  endpoint: UpstreamEndpoint;
  /** Namespaces allowed to use the credentials; null = every namespace. */
  namespaces: string[] | null;
}

interface Row {
  host: string;
  endpoint: string;
  username: string | null;
  password_sealed: string | null;
  mirrors: string;
  namespaces: string | null;
}

const COLUMNS = "host, endpoint, username, password_sealed, mirrors, namespaces";

export async function listUpstreams(env: Env): Promise<UpstreamRecord[]> {
  const { results } = await env.DB.prepare(`SELECT ${COLUMNS} FROM upstreams ORDER BY host`).all<Row>();
  const out = new Map<string, UpstreamRecord>();
  for (const [host, endpoint] of Object.entries(DEFAULT_UPSTREAMS)) out.set(host, { host, endpoint, hasPassword: false, mirrors: [], builtin: true });
  for (const r of results) {
    out.set(r.host, { host: r.host, endpoint: r.endpoint, username: r.username ?? undefined, hasPassword: !!r.password_sealed, mirrors: JSON.parse(r.mirrors), ...(r.namespaces !== null ? { namespaces: JSON.parse(r.namespaces) as string[] } : {}), builtin: false });
  }
  return [...out.values()].sort((a, b) => a.host.localeCompare(b.host));
}

/** Stores the entry of `host`; `namespaces` absent lets every namespace use the credentials. */
export async function putUpstream(env: Env, host: string, cfg: { endpoint: string; username?: string; password?: string; mirrors?: string[]; namespaces?: string[] }): Promise<void> {
  const sealed = cfg.password !== undefined ? await seal(env, cfg.password) : null;
  await env.DB.prepare(
    `INSERT INTO upstreams (host, endpoint, username, password_sealed, mirrors, namespaces, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT(host) DO UPDATE SET endpoint = ?2, username = ?3, password_sealed = ?4, mirrors = ?5, namespaces = ?6, updated_at = ?7`,
  ).bind(host, cfg.endpoint, cfg.username ?? null, sealed, JSON.stringify(cfg.mirrors ?? []), cfg.namespaces ? JSON.stringify(cfg.namespaces) : null, Date.now()).run();
}

export async function deleteUpstream(env: Env, host: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM upstreams WHERE host = ?1").bind(host).run();
  return (r.meta.changes ?? 0) > 0;
}

/** The endpoint for `host`: its configured entry, a built-in default, or https://<host>. */
export async function upstreamFor(env: Env, host: string): Promise<UpstreamEndpoint> {
  return (await upstreamEntry(env, host)).endpoint;
}

/** The endpoint for `host` with its credentials and the namespaces allowed to use them. */
export async function upstreamEntry(env: Env, host: string): Promise<UpstreamEntry> {
  const r = await env.DB.prepare(`SELECT ${COLUMNS} FROM upstreams WHERE host = ?1`).bind(host).first<Row>();
  if (r) {
    return {
      endpoint: {
        host, endpoint: r.endpoint, mirrors: JSON.parse(r.mirrors),
        username: r.username ?? undefined,
        password: r.password_sealed ? await unseal(env, r.password_sealed) : undefined,
      },
      namespaces: r.namespaces !== null ? (JSON.parse(r.namespaces) as string[]) : null,
    };
  }
  if (DEFAULT_UPSTREAMS[host]) return { endpoint: { host, endpoint: DEFAULT_UPSTREAMS[host] }, namespaces: null };
  // a host only the build names: its requests are checked like any user-chosen URL (src/http/outbound.ts)
  const outbound = { KILN_OUTBOUND_ALLOW: env.KILN_OUTBOUND_ALLOW, KILN_HOSTS: env.KILN_HOSTS };
  return { endpoint: { host, endpoint: `https://${host}`, outbound }, namespaces: null };
}

export async function recordUpstreamManifest(env: Env, digest: string, mediaType: string, size: number): Promise<void> {
  await env.DB.prepare("INSERT OR IGNORE INTO upstream_manifests (digest, media_type, size, fetched_at) VALUES (?1, ?2, ?3, ?4)")
    .bind(digest, mediaType, size, Date.now()).run();
}

export async function upstreamManifest(env: Env, digest: string): Promise<{ mediaType: string; size: number } | null> {
  const r = await env.DB.prepare("SELECT media_type, size FROM upstream_manifests WHERE digest = ?1").bind(digest).first<{ media_type: string; size: number }>();
  return r ? { mediaType: r.media_type, size: r.size } : null;
}

export async function recordResolution(env: Env, host: string, repository: string, reference: string, digest: string): Promise<void> {
  await env.DB.prepare(
    `INSERT INTO upstream_refs (host, repository, reference, digest, resolved_at) VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT(host, repository, reference) DO UPDATE SET digest = ?4, resolved_at = ?5`,
  ).bind(host, repository, reference, digest, Date.now()).run();
}

export async function lastResolution(env: Env, host: string, repository: string, reference: string): Promise<string | null> {
  const r = await env.DB.prepare("SELECT digest FROM upstream_refs WHERE host = ?1 AND repository = ?2 AND reference = ?3")
    .bind(host, repository, reference).first<{ digest: string }>();
  return r?.digest ?? null;
}

/** Records that `digest` (manifest or blob) was fetched, digest-verified, from (host, repository). */
export async function linkUpstream(env: Env, host: string, repository: string, digest: string): Promise<void> {
  await env.DB.prepare(
    `INSERT INTO upstream_links (host, repository, digest, linked_at, used_at) VALUES (?1, ?2, ?3, ?4, ?4)
     ON CONFLICT(host, repository, digest) DO UPDATE SET used_at = ?4`,
  ).bind(host, repository, digest, Date.now()).run();
}

/** A use refreshes a record's `used_at` at most this often (the collector expires records unused for days). */
const USE_REFRESH_MS = 3600 * 1000;

/**
 * Whether `digest` was fetched from (host, repository) before; a yes counts as a use (the record,
 * and so the blob, stays KILN_PULL_THROUGH_MAX_AGE_DAYS longer).
 */
export async function isUpstreamLinked(env: Env, host: string, repository: string, digest: string): Promise<boolean> {
  const now = Date.now();
  const [, found] = await env.DB.batch([
    env.DB.prepare("UPDATE upstream_links SET used_at = ?4 WHERE host = ?1 AND repository = ?2 AND digest = ?3 AND used_at < ?4 - ?5")
      .bind(host, repository, digest, now, USE_REFRESH_MS),
    env.DB.prepare("SELECT 1 AS x FROM upstream_links WHERE host = ?1 AND repository = ?2 AND digest = ?3").bind(host, repository, digest),
  ]);
  return found.results.length > 0;
}

/** What kiln knows of an upstream image: whether it was public when last asked, and who was let in. */
export interface UpstreamImageAccess {
  /** null: never asked. */
  public: boolean | null;
  /** Namespaces the upstream authorized for the (private) image. */
  namespaces: string[];
}

export async function upstreamImageAccess(env: Env, host: string, repository: string, digest: string): Promise<UpstreamImageAccess> {
  const [img, grants] = await env.DB.batch([
    env.DB.prepare("SELECT public FROM upstream_images WHERE host = ?1 AND repository = ?2 AND digest = ?3").bind(host, repository, digest),
    env.DB.prepare("SELECT namespace FROM upstream_image_grants WHERE host = ?1 AND repository = ?2 AND digest = ?3 ORDER BY namespace").bind(host, repository, digest),
  ]);
  const row = (img.results as { public: number }[])[0];
  return { public: row ? row.public === 1 : null, namespaces: (grants.results as { namespace: string }[]).map((g) => g.namespace) };
}

/**
 * Records what the upstream answered for an image: public (readable without credentials), or private
 * and readable by `namespace` with the credentials it may use.
 */
export async function recordUpstreamImageAccess(env: Env, host: string, repository: string, digest: string, access: { public: boolean; namespace?: string }): Promise<void> {
  const now = Date.now();
  const stmts = [
    env.DB.prepare(
      `INSERT INTO upstream_images (host, repository, digest, public, checked_at) VALUES (?1, ?2, ?3, ?4, ?5)
       ON CONFLICT(host, repository, digest) DO UPDATE SET public = ?4, checked_at = ?5`,
    ).bind(host, repository, digest, access.public ? 1 : 0, now),
  ];
  if (!access.public && access.namespace !== undefined) {
    stmts.push(env.DB.prepare(
      `INSERT INTO upstream_image_grants (host, repository, digest, namespace, granted_at) VALUES (?1, ?2, ?3, ?4, ?5)
       ON CONFLICT(host, repository, digest, namespace) DO UPDATE SET granted_at = ?5`,
    ).bind(host, repository, digest, access.namespace, now));
  }
  await env.DB.batch(stmts);
}

/** Forgets that the upstream let `namespace` read an image (it refused the namespace's credentials since). */
export async function revokeUpstreamImageGrant(env: Env, host: string, repository: string, digest: string, namespace: string): Promise<void> {
  await env.DB.prepare("DELETE FROM upstream_image_grants WHERE host = ?1 AND repository = ?2 AND digest = ?3 AND namespace = ?4")
    .bind(host, repository, digest, namespace).run();
}
