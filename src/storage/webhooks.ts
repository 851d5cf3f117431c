import type { Env } from "../env";
import { seal, unseal } from "./sealed";

export type GitProvider = "github" | "gitlab" | "gitea" | "forgejo";

export interface WebhookConfig {
  id: string;
  provider: GitProvider;
  repository: string;
  /** GitLab: the numeric project id registered by the admin; API paths use it (else the encoded `repository`). */
  projectId?: string;
  baseUrl: string;
  image: string;
  dockerfile: string;
  context: string;
  branches: string[];
  tags: string[];
  buildArgs: Record<string, string>;
  hasToken: boolean;
  createdAt: number;
}

export interface WebhookSecrets {
  secret: string;
  token?: string;
}

interface Row {
  id: string;
  provider: GitProvider;
  repository: string;
  secret_sealed: string;
  base_url: string;
  image: string;
  dockerfile: string;
  context: string;
  branches: string;
  tags: string;
  build_args: string;
  token_sealed: string | null;
  project_id: string | null;
  created_at: number;
}

function fromRow(r: Row): WebhookConfig {
  return {
    id: r.id, provider: r.provider, repository: r.repository, ...(r.project_id ? { projectId: r.project_id } : {}), baseUrl: r.base_url, image: r.image,
    dockerfile: r.dockerfile, context: r.context, branches: JSON.parse(r.branches), tags: JSON.parse(r.tags),
    buildArgs: JSON.parse(r.build_args), hasToken: !!r.token_sealed, createdAt: r.created_at,
  };
}

export async function createWebhook(env: Env, cfg: Omit<WebhookConfig, "id" | "hasToken" | "createdAt">, secrets: WebhookSecrets): Promise<WebhookConfig> {
  const id = crypto.randomUUID();
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO webhooks (id, provider, repository, secret_sealed, base_url, image, dockerfile, context, branches, tags, build_args, token_sealed, created_at, project_id)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)`,
  ).bind(
    id, cfg.provider, cfg.repository, await seal(env, secrets.secret), cfg.baseUrl, cfg.image, cfg.dockerfile, cfg.context,
    JSON.stringify(cfg.branches), JSON.stringify(cfg.tags), JSON.stringify(cfg.buildArgs),
    secrets.token ? await seal(env, secrets.token) : null, now, cfg.projectId ?? null,
  ).run();
  return { ...cfg, id, hasToken: !!secrets.token, createdAt: now };
}

export async function listWebhooks(env: Env): Promise<WebhookConfig[]> {
  const { results } = await env.DB.prepare("SELECT * FROM webhooks ORDER BY created_at").all<Row>();
  return results.map(fromRow);
}

export async function getWebhook(env: Env, id: string): Promise<(WebhookConfig & WebhookSecrets) | null> {
  const r = await env.DB.prepare("SELECT * FROM webhooks WHERE id = ?1").bind(id).first<Row>();
  if (!r) return null;
  return { ...fromRow(r), secret: await unseal(env, r.secret_sealed), token: r.token_sealed ? await unseal(env, r.token_sealed) : undefined };
}

/** Webhooks of a provider for a source repository (receivers without an id in the URL). */
export async function webhooksFor(env: Env, providers: GitProvider[], repository: string): Promise<(WebhookConfig & WebhookSecrets)[]> {
  const { results } = await env.DB.prepare(
    `SELECT * FROM webhooks WHERE provider IN (${providers.map((_, i) => `?${i + 2}`).join(",")}) AND lower(repository) = lower(?1)`,
  ).bind(repository, ...providers).all<Row>();
  return Promise.all(results.map(async (r) => ({ ...fromRow(r), secret: await unseal(env, r.secret_sealed), token: r.token_sealed ? await unseal(env, r.token_sealed) : undefined })));
}

export async function deleteWebhook(env: Env, id: string): Promise<boolean> {
  const r = await env.DB.prepare("DELETE FROM webhooks WHERE id = ?1").bind(id).run();
  await env.DB.prepare("DELETE FROM webhook_deliveries WHERE webhook_id = ?1").bind(id).run();
  await env.DB.prepare("DELETE FROM webhook_pushes WHERE webhook_id = ?1").bind(id).run();
  return (r.meta.changes ?? 0) > 0;
}

/**
 * Claims the build of a push: one build per (webhook, ref, commit), whatever the delivery id, so a
 * redelivery or a signed body replayed under a new delivery id answers with the build already
 * recorded (returned) and starts nothing. Otherwise records `buildId` (and the delivery, which
 * commit statuses use) and returns null. The primary keys make racing deliveries agree on one build.
 */
export async function claimPush(
  env: Env, webhookId: string, push: { deliveryId: string; refType: string; name: string; sha: string }, buildId: string,
): Promise<string | null> {
  const now = Date.now();
  const r = await env.DB.prepare(
    "INSERT OR IGNORE INTO webhook_pushes (webhook_id, ref_type, ref_name, sha, build_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  ).bind(webhookId, push.refType, push.name, push.sha, buildId, now).run();
  if ((r.meta.changes ?? 0) === 0) {
    const existing = await env.DB.prepare("SELECT build_id FROM webhook_pushes WHERE webhook_id = ?1 AND ref_type = ?2 AND ref_name = ?3 AND sha = ?4")
      .bind(webhookId, push.refType, push.name, push.sha).first<{ build_id: string }>();
    if (existing) return existing.build_id;
  }
  const deliveryId = push.deliveryId || `${push.refType}:${push.name}:${push.sha}`;
  await env.DB.prepare(
    "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, delivery_id, build_id, sha, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
  ).bind(webhookId, deliveryId, buildId, push.sha, now).run();
  return null;
}

export async function deliveryForBuild(env: Env, buildId: string): Promise<{ webhookId: string; sha: string } | null> {
  const r = await env.DB.prepare("SELECT webhook_id, sha FROM webhook_deliveries WHERE build_id = ?1").bind(buildId).first<{ webhook_id: string; sha: string }>();
  return r ? { webhookId: r.webhook_id, sha: r.sha } : null;
}
