/** Starts the build of a push: archive of the exact commit → stripped tar → the ordinary build path. */
import { startBuild } from "../builder/start";
import { webhookPrincipal } from "../auth/build-principal";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { OutboundError, outboundPolicy, safeFetch } from "../http/outbound";
import { insertBuild, updateBuildStatus } from "../storage/builds";
import type { WebhookConfig, WebhookSecrets } from "../storage/webhooks";
import type { PushEvent } from "./event";
import { giteaArchive } from "./gitea";
import { githubArchive } from "./github";
import { gitlabArchive } from "./gitlab";
import { postStatus, reportBuildFinished } from "./status";
import { stripArchive } from "./source";

export interface WebhookBuildInput {
  hook: WebhookConfig & WebhookSecrets;
  event: PushEvent;
  buildId: string;
  tags: string[];
  origin: string;
}

/** Records the build before the receiver answers, so its id resolves at once. */
export async function recordWebhookBuild(env: Env, input: WebhookBuildInput): Promise<void> {
  await insertBuild(env, { id: input.buildId, contextDigest: null, repository: input.hook.image, tags: input.tags.map((t) => `${input.hook.image}:${t}`), trigger: "webhook", commit: input.event.sha });
}

async function fail(env: Env, input: WebhookBuildInput, message: string): Promise<void> {
  await updateBuildStatus(env, input.buildId, "failed", { error: message });
  await reportBuildFinished(env, input.buildId, "failed", input.origin, message);
}

export async function startWebhookBuild(env: Env, input: WebhookBuildInput): Promise<void> {
  const { hook, event, buildId, origin } = input;
  await postStatus(hook, event.sha, { state: "pending", targetUrl: `${origin}/v1/builds/${buildId}`, description: "kiln is building the image" }, event.projectId, { env, origin });
  const req =
    hook.provider === "github" ? githubArchive(hook.baseUrl, hook.repository, event.sha, hook.token)
    : hook.provider === "gitlab" ? gitlabArchive(hook.baseUrl, hook.repository, event.sha, hook.token, event.projectId)
    : giteaArchive(hook.baseUrl, hook.repository, event.sha, hook.token);
  let res: Response;
  try {
    // the URL carries payload fields and the git host picks the redirects: every hop is checked
    res = await safeFetch(req.url, { headers: req.headers }, { policy: outboundPolicy(env, origin), label: `fetching the source archive ${req.url}` });
  } catch (err) {
    if (err instanceof OutboundError) return fail(env, input, err.message);
    return fail(env, input, `fetching the source archive failed: ${(err as Error).message}`);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    return fail(env, input, `fetching the source archive ${req.url} failed: ${res.status}`);
  }
  try {
    await startBuild(env, undefined, {
      id: buildId,
      context: stripArchive(res.body, hook.context),
      contentType: "application/x-tar",
      dockerfilePath: hook.dockerfile,
      tags: input.tags.map((t) => `${hook.image}:${t}`),
      buildArgs: hook.buildArgs,
      origin,
      principal: webhookPrincipal(hook.id, hook.image),
      trigger: { kind: "webhook", commit: event.sha },
    });
  } catch (err) {
    const message = err instanceof ApiError || err instanceof Error ? err.message : String(err);
    if (!(err instanceof ApiError)) console.error("webhook build failed to start", err);
    return fail(env, input, message);
  }
}
