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
  builtin: boolean;
}

interface Row {
  host: string;
  endpoint: string;
  username: string | null;
  password_sealed: string | null;
  mirrors: string;
}

export async function listUpstreams(env: Env): Promise<UpstreamRecord[]> {
  const { results } = await env.DB.prepare("SELECT host, endpoint, username, password_sealed, mirrors FROM upstreams ORDER BY host").all<Row>();
  const out = new Map<string, UpstreamRecord>();
  for (const [host, endpoint] of Object.entries(DEFAULT_UPSTREAMS)) out.set(host, { host, endpoint, hasPassword: false, mirrors: [], builtin: true });
  for (const r of results) {
    out.set(r.host, { host: r.host, endpoint: r.endpoint, username: r.username ?? undefined, hasPassword: !!r.password_sealed, mirrors: JSON.parse(r.mirrors), builtin: false });
  }
  return [...out.values()].sort((a, b) => a.host.localeCompare(b.host));
}

export async function putUpstream(env: Env, host: string, cfg: { endpoint: string; username?: string; password?: string; mirrors?: string[] }): Promise<void> {
  const sealed = cfg.password !== undefined ? await seal(env, cfg.password) : null;
  await env.DB.prepare(
    `INSERT INTO upstreams (host, endpoint, username, password_sealed, mirrors, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT(host) DO UPDATE SET endpoint = ?2, username = ?3, password_sealed = ?4, mirrors = ?5, updated_at = ?6`,
  ).bind(host, cfg.endpoint, cfg.username ?? null, sealed, JSON.stringify(cfg.mirrors ?? []), Date.now()).run();
}

export async function deleteUpstream(env: Env, host: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM upstreams WHERE host = ?1").bind(host).run();
  return (r.meta.changes ?? 0) > 0;
}

/** The endpoint for `host`: its configured entry, a built-in default, or https://<host>. */
export async function upstreamFor(env: Env, host: string): Promise<UpstreamEndpoint> {
  const r = await env.DB.prepare("SELECT host, endpoint, username, password_sealed, mirrors FROM upstreams WHERE host = ?1").bind(host).first<Row>();
  if (r) {
    return {
      host, endpoint: r.endpoint, mirrors: JSON.parse(r.mirrors),
      username: r.username ?? undefined,
      password: r.password_sealed ? await unseal(env, r.password_sealed) : undefined,
    };
  }
  return { host, endpoint: DEFAULT_UPSTREAMS[host] ?? `https://${host}` };
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
