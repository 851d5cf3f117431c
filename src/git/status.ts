/** Commit statuses on the git host: pending when a push build starts, success/failure when it ends. */
import type { Env } from "../env";
import { outboundPolicy, safeFetch, type OutboundEnv } from "../http/outbound";
import { deliveryForBuild, getWebhook, type WebhookConfig } from "../storage/webhooks";
import type { StatusUpdate } from "./event";
import { giteaStatus } from "./gitea";
import { githubStatus } from "./github";
import { gitlabStatus } from "./gitlab";

/** `outbound`: the settings and kiln's origin the status URL is checked against (src/http/outbound.ts). */
export async function postStatus(hook: WebhookConfig & { token?: string }, sha: string, update: StatusUpdate, projectId: string | undefined, outbound: { env: OutboundEnv; origin: string }): Promise<void> {
  if (!hook.token) return;
  const req =
    hook.provider === "github" ? githubStatus(hook.baseUrl, hook.repository, sha, hook.token, update)
    : hook.provider === "gitlab" ? gitlabStatus(hook.baseUrl, hook.repository, sha, hook.token, update, projectId)
    : giteaStatus(hook.baseUrl, hook.repository, sha, hook.token, update);
  try {
    const policy = outboundPolicy(outbound.env, outbound.origin);
    const res = await safeFetch(req.url, { method: "POST", headers: req.headers, body: req.body }, { policy, label: `status report ${req.url}`, timeoutMs: 60_000 });
    await res.body?.cancel();
    if (!res.ok) console.warn(`status report to ${hook.provider} answered ${res.status}`);
  } catch (err) {
    console.warn(`status report to ${hook.provider} failed: ${(err as Error).message}`);
  }
}

/**
 * Called when any build ends; reports the result on the commit when the build came from a webhook
 * with a token. Builds not started by a webhook are ignored.
 */
export async function reportBuildFinished(env: Env, buildId: string, status: string, origin: string, message?: string): Promise<void> {
  const delivery = await deliveryForBuild(env, buildId);
  if (!delivery) return;
  const hook = await getWebhook(env, delivery.webhookId);
  if (!hook?.token) return;
  const ok = status === "succeeded";
  await postStatus(hook, delivery.sha, {
    state: ok ? "success" : status === "cancelled" ? "error" : "failure",
    targetUrl: `${origin}/v1/builds/${buildId}`,
    description: (ok ? "image built and pushed" : status === "cancelled" ? "build cancelled" : `build failed${message ? `: ${message}` : ""}`).slice(0, 140),
  }, hook.projectId, { env, origin });
}
