import type { Env } from "../env";
import { seal, unseal } from "./sealed";

export type GitProvider = "github" | "gitlab" | "gitea" | "forgejo";

export interface WebhookConfig {
  id: string;
  provider: GitProvider;
  repository: string;
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
  created_at: number;
}

function fromRow(r: Row): WebhookConfig {
  return {
    id: r.id, provider: r.provider, repository: r.repository, baseUrl: r.base_url, image: r.image,
    dockerfile: r.dockerfile, context: r.context, branches: JSON.parse(r.branches), tags: JSON.parse(r.tags),
    buildArgs: JSON.parse(r.build_args), hasToken: !!r.token_sealed, createdAt: r.created_at,
  };
}

export async function createWebhook(env: Env, cfg: Omit<WebhookConfig, "id" | "hasToken" | "createdAt">, secrets: WebhookSecrets): Promise<WebhookConfig> {
  const id = crypto.randomUUID();
  const now = Date.now();
  await env.DB.prepare(
    `INSERT INTO webhooks (id, provider, repository, secret_sealed, base_url, image, dockerfile, context, branches, tags, build_args, token_sealed, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)`,
  ).bind(
    id, cfg.provider, cfg.repository, await seal(env, secrets.secret), cfg.baseUrl, cfg.image, cfg.dockerfile, cfg.context,
    JSON.stringify(cfg.branches), JSON.stringify(cfg.tags), JSON.stringify(cfg.buildArgs),
    secrets.token ? await seal(env, secrets.token) : null, now,
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
  return (r.meta.changes ?? 0) > 0;
}

/**
 * Claims a delivery: returns the build id already recorded for it (a redelivery), or records
 * `buildId` and returns null. The primary key makes two racing deliveries agree on one build.
 */
export async function claimDelivery(env: Env, webhookId: string, deliveryId: string, buildId: string, sha: string): Promise<string | null> {
  const r = await env.DB.prepare(
    "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, delivery_id, build_id, sha, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
  ).bind(webhookId, deliveryId, buildId, sha, Date.now()).run();
  if ((r.meta.changes ?? 0) > 0) return null;
  const existing = await env.DB.prepare("SELECT build_id FROM webhook_deliveries WHERE webhook_id = ?1 AND delivery_id = ?2")
    .bind(webhookId, deliveryId).first<{ build_id: string }>();
  return existing?.build_id ?? null;
}

export async function deliveryForBuild(env: Env, buildId: string): Promise<{ webhookId: string; sha: string } | null> {
  const r = await env.DB.prepare("SELECT webhook_id, sha FROM webhook_deliveries WHERE build_id = ?1").bind(buildId).first<{ webhook_id: string; sha: string }>();
  return r ? { webhookId: r.webhook_id, sha: r.sha } : null;
}
