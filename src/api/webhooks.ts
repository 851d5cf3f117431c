/**
 * Git webhooks: configuration (/v1/webhooks, admin) and receivers (/v1/hooks/{github,gitlab,gitea,forgejo}
 * [/:id]). A receiver verifies the signature over the raw body, answers 202 with the build id at once,
 * and fetches the commit's archive and starts the build in the background. Deliveries are idempotent.
 */
import { Hono, type Context } from "hono";
import { requireApiScope } from "../auth/api";
import type { Env } from "../env";
import { ApiError } from "../errors";
import { readLimited } from "../http/body";
import { REPOSITORY_NAME_RE } from "../oci/names";
import { claimPush, createWebhook, deleteWebhook, getWebhook, listWebhooks, webhooksFor, type GitProvider, type WebhookConfig, type WebhookSecrets } from "../storage/webhooks";
import { recordWebhookBuild, startWebhookBuild } from "../git/build";
import type { HookEvent } from "../git/event";
import { parseGitea, verifyGitea } from "../git/gitea";
import { parseGithub, verifyGithub } from "../git/github";
import { parseGitlab, verifyGitlab } from "../git/gitlab";
import { shouldBuild, tagsFor } from "../git/rules";
import { GITLAB_PROJECT_ID, refusePush } from "../git/validate";

type C = Context<{ Bindings: Env }>;

/** Settings read here (wrangler.toml [vars]). */
type HookEnv = Env & {
  /** Largest webhook body accepted, in bytes (default 25 MiB: GitHub caps payloads at 25 MB). */
  KILN_WEBHOOK_MAX_BODY_BYTES?: string;
};

const PROVIDERS: GitProvider[] = ["github", "gitlab", "gitea", "forgejo"];
const DEFAULT_BASE: Partial<Record<GitProvider, string>> = { github: "https://api.github.com", gitlab: "https://gitlab.com/api/v4" };
export const DEFAULT_MAX_HOOK_BODY = 25 * 1024 * 1024; // GitHub caps payloads at 25 MB

export function maxHookBody(env: HookEnv): number {
  const n = Number(env.KILN_WEBHOOK_MAX_BODY_BYTES);
  return Number.isSafeInteger(n) && n > 0 ? n : DEFAULT_MAX_HOOK_BODY;
}

function str(v: unknown, what: string, required = true): string | undefined {
  if (v === undefined || v === null || v === "") {
    if (required) throw new ApiError(400, `${what} is required`);
    return undefined;
  }
  if (typeof v !== "string") throw new ApiError(400, `${what} must be a string`);
  return v;
}

function strList(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string" || !x)) throw new ApiError(400, `${what} must be an array of non-empty strings`);
  return v as string[];
}

function publicView(w: WebhookConfig, origin: string) {
  return { ...w, url: `${origin}/v1/hooks/${w.provider}/${w.id}` };
}

export const webhooksRoutes = new Hono<{ Bindings: Env }>();

webhooksRoutes.post("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  let body: Record<string, unknown>;
  try {
    body = await c.req.json();
  } catch {
    throw new ApiError(400, "body must be JSON");
  }
  const provider = str(body.provider, "provider") as GitProvider;
  if (!PROVIDERS.includes(provider)) throw new ApiError(400, `provider must be one of ${PROVIDERS.join(", ")}`);
  const repository = str(body.repository, "repository")!;
  if (!/^[\w.-]+(?:\/[\w.-]+)+$/.test(repository) || repository.split("/").some((seg) => seg === "." || seg === "..")) {
    throw new ApiError(400, `repository must look like owner/name: ${repository}`);
  }
  let projectId: string | undefined;
  if (body.projectId !== undefined && body.projectId !== null && body.projectId !== "") {
    if (provider !== "gitlab") throw new ApiError(400, "projectId is only for GitLab webhooks");
    projectId = String(body.projectId);
    if ((typeof body.projectId !== "number" && typeof body.projectId !== "string") || !GITLAB_PROJECT_ID.test(projectId)) {
      throw new ApiError(400, `projectId must be GitLab's numeric project id: ${projectId}`);
    }
  }
  const secret = str(body.secret, "secret")!;
  if (secret.length < 8) throw new ApiError(400, "secret must be at least 8 characters");
  let baseUrl = str(body.baseUrl, "baseUrl", false) ?? DEFAULT_BASE[provider];
  if (!baseUrl) throw new ApiError(400, `baseUrl is required for ${provider} (the API base, e.g. https://gitea.example.com/api/v1)`);
  try {
    const u = new URL(baseUrl);
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new Error();
  } catch {
    throw new ApiError(400, `baseUrl is not an http(s) URL: ${baseUrl}`);
  }
  baseUrl = baseUrl.replace(/\/+$/, "");
  const image = str(body.image, "image")!;
  if (!REPOSITORY_NAME_RE.test(image)) throw new ApiError(400, `image must be a registry repository name (lowercase, e.g. kiln/app): ${image}`);
  const dockerfile = str(body.dockerfile, "dockerfile", false) ?? "Dockerfile";
  const context = str(body.context, "context", false) ?? ".";
  if (context.split("/").includes("..") || context.startsWith("/")) throw new ApiError(400, "context must be a relative subdirectory without ..");
  const buildArgs = (body.buildArgs ?? {}) as Record<string, unknown>;
  if (typeof buildArgs !== "object" || Array.isArray(buildArgs) || Object.values(buildArgs).some((v) => typeof v !== "string")) {
    throw new ApiError(400, "buildArgs must be an object of strings");
  }
  const token = str(body.token, "token", false);
  const created = await createWebhook(c.env, {
    provider, repository, ...(projectId ? { projectId } : {}), baseUrl, image, dockerfile, context,
    branches: strList(body.branches, "branches"), tags: strList(body.tags, "tags"), buildArgs: buildArgs as Record<string, string>,
  }, { secret, token });
  const view = publicView(created, new URL(c.req.url).origin);
  return c.json({ id: view.id, url: view.url, webhook: view }, 201);
});

webhooksRoutes.get("/", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const origin = new URL(c.req.url).origin;
  return c.json({ webhooks: (await listWebhooks(c.env)).map((w) => publicView(w, origin)) });
});

webhooksRoutes.get("/:id", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  const w = await getWebhook(c.env, c.req.param("id"));
  if (!w) throw new ApiError(404, "no such webhook");
  const { secret: _s, token: _t, ...rest } = w;
  return c.json(publicView(rest, new URL(c.req.url).origin));
});

webhooksRoutes.delete("/:id", async (c) => {
  await requireApiScope(c, { kind: "admin" });
  if (!(await deleteWebhook(c.env, c.req.param("id")))) throw new ApiError(404, "no such webhook");
  return c.body(null, 204);
});

// ------------------------------------------------------------------ receivers

export const hooksRoutes = new Hono<{ Bindings: Env }>();

const handlers: Record<GitProvider, { verify: (h: Headers, raw: Uint8Array, secret: string) => Promise<boolean>; parse: (h: Headers, raw: Uint8Array) => HookEvent; family: GitProvider[] }> = {
  github: { verify: verifyGithub, parse: parseGithub, family: ["github"] },
  gitlab: { verify: verifyGitlab, parse: parseGitlab, family: ["gitlab"] },
  gitea: { verify: verifyGitea, parse: parseGitea, family: ["gitea", "forgejo"] },
  forgejo: { verify: verifyGitea, parse: parseGitea, family: ["gitea", "forgejo"] },
};

/**
 * The raw body, at most `max` bytes: a larger Content-Length is refused before reading, and a body
 * without one (chunked) is counted as it streams and cancelled at the limit, so an oversized body is
 * never read to its end.
 */
async function readRaw(c: C): Promise<Uint8Array> {
  const max = maxHookBody(c.env);
  const tooLarge = () => new ApiError(413, `webhook payload larger than ${max} bytes (KILN_WEBHOOK_MAX_BODY_BYTES)`, {}, { connection: "close" });
  const declared = c.req.header("content-length");
  if (declared !== undefined && Number(declared) > max) {
    c.req.raw.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  return readLimited(c.req.raw.body, max, tooLarge);
}

async function receive(c: C, provider: GitProvider, id?: string) {
  const h = handlers[provider];
  const raw = await readRaw(c);
  const headers = c.req.raw.headers;
  // Find the webhook whose secret verifies this payload. With the webhook's id in the URL (the `url`
  // POST /v1/webhooks answers with), the signature is checked before a byte is parsed; the bare
  // provider URL must parse the JSON to learn the repository, and acts on nothing before a secret
  // verifies the payload.
  let candidates: (WebhookConfig & WebhookSecrets)[];
  let ev: HookEvent | undefined;
  const parse = () => {
    try {
      return h.parse(headers, raw);
    } catch {
      return undefined;
    }
  };
  if (id) {
    const w = await getWebhook(c.env, id);
    candidates = w && h.family.includes(w.provider) ? [w] : [];
  } else {
    ev = parse();
    candidates = ev?.repository ? await webhooksFor(c.env, h.family, ev.repository) : [];
  }
  let hook: (WebhookConfig & WebhookSecrets) | undefined;
  for (const w of candidates) if (await h.verify(headers, raw, w.secret)) { hook = w; break; }
  if (!hook) throw new ApiError(401, "signature verification failed");
  ev ??= parse();
  if (!ev) throw new ApiError(400, "payload is not valid JSON");
  if (ev.kind === "ping") return c.json({ ok: true, event: "ping", webhook: hook.id }, 200);
  if (ev.kind === "ignored") return c.json({ ok: true, ignored: ev.reason }, 202);
  // Nothing the payload names reaches a URL unchecked: repository (and GitLab project) must be the
  // registered one, the commit a full sha, the ref a git ref name. URLs are built from the registration.
  const refused = refusePush(ev, hook);
  if (refused) throw new ApiError(400, `push refused: ${refused}`);
  if (ev.deleted) return c.json({ ok: true, ignored: `${ev.refType} ${ev.name} was deleted` }, 202);
  if (!shouldBuild(ev, hook.branches)) return c.json({ ok: true, ignored: `branch ${ev.name} does not match ${hook.branches.join(", ")}` }, 202);
  const buildId = crypto.randomUUID();
  // One build per (webhook, ref, commit): a redelivery, or the signed body replayed under a new
  // delivery id, answers with the build already recorded.
  const existing = await claimPush(c.env, hook.id, ev, buildId);
  const origin = new URL(c.req.url).origin;
  if (existing) {
    return c.json({ id: existing, url: `${origin}/v1/builds/${existing}`, redelivery: true }, 202);
  }
  const tags = tagsFor(ev, hook.tags);
  const input = { hook, event: ev, buildId, tags, origin };
  await recordWebhookBuild(c.env, input);
  c.executionCtx.waitUntil(startWebhookBuild(c.env, input).catch((e) => console.error("webhook build", e)));
  return c.json({ id: buildId, url: `${origin}/v1/builds/${buildId}`, tags: tags.map((t) => `${hook!.image}:${t}`) }, 202);
}

for (const provider of PROVIDERS) {
  hooksRoutes.post(`/${provider}`, (c) => receive(c, provider));
  hooksRoutes.post(`/${provider}/:id`, (c) => receive(c, provider, c.req.param("id")));
}
