/** Starts the build of a push: archive of the exact commit → stripped tar → the ordinary build path. */
import type { Env } from "../../env";
import type { WebhookConfig, WebhookSecrets } from "../../storage/webhooks";
import type { PushEvent } from "./event";
import { giteaArchive } from "./gitea";
import { githubArchive } from "./github";
import { gitlabArchive } from "./gitlab";
import { postStatus } from "./status";
import { stripArchive } from "./source";

export interface WebhookBuildInput {
  hook: WebhookConfig & WebhookSecrets;
  event: PushEvent;
  buildId: string;
  tags: string[];
  origin: string;
}

/** Set by the builds module: starts a build with a preassigned id from a tar stream. */
export type BuildStarter = (env: Env, input: {
  id: string;
  context: ReadableStream<Uint8Array> | null;
  contentType: string;
  dockerfilePath: string;
  tags: string[];
  buildArgs: Record<string, string>;
  origin: string;
  /** When the source could not be fetched: record the build as failed with this message. */
  failure?: string;
}) => Promise<void>;

let starter: BuildStarter | null = null;
export function setBuildStarter(fn: BuildStarter): void {
  starter = fn;
}

export async function startWebhookBuild(env: Env, input: WebhookBuildInput): Promise<void> {
  const { hook, event, buildId, origin } = input;
  if (!starter) throw new Error("builds are not wired");
  const tags = input.tags.map((t) => `${hook.image}:${t}`);
  const base = { id: buildId, contentType: "application/x-tar", dockerfilePath: hook.dockerfile, tags, buildArgs: hook.buildArgs, origin };
  await postStatus(hook, event.sha, { state: "pending", targetUrl: `${origin}/v1/builds/${buildId}`, description: "kiln is building the image" }, event.projectId);
  const req =
    hook.provider === "github" ? githubArchive(hook.baseUrl, hook.repository, event.sha, hook.token)
    : hook.provider === "gitlab" ? gitlabArchive(hook.baseUrl, hook.repository, event.sha, hook.token, event.projectId)
    : giteaArchive(hook.baseUrl, hook.repository, event.sha, hook.token);
  let res: Response;
  try {
    res = await fetch(req.url, { headers: req.headers, redirect: "follow" });
  } catch (err) {
    await starter(env, { ...base, context: null, failure: `fetching the source archive failed: ${(err as Error).message}` });
    return;
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    await starter(env, { ...base, context: null, failure: `fetching the source archive ${req.url} failed: ${res.status}` });
    return;
  }
  await starter(env, { ...base, context: stripArchive(res.body, hook.context) });
}
