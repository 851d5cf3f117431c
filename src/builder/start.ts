/** Starting a build: ingest the context, check the Dockerfile, hand the build to its coordinator. */
import type { Env } from "../env";
import { ApiError } from "../errors";
import { DockerfileError } from "../dockerfile/errors";
import { ingestContext, type ContextEntries } from "../context/ingest";
import { ingestIndex, type ContextIndexUpload } from "../context/contents";
import { isRepositoryName, isTag, splitReference } from "../oci/names";
import { splitPlatform } from "../oci/platform";
import { insertBuild, type BuildTrigger } from "../storage/builds";
import { planDockerfile, platformString, type BuildGraph } from "../plan/graph";
import { loadImage } from "./image";
import { UNTAGGED_SCOPE, type BuildSpec, type BuildStatus } from "./model";
import { namespaceOf, type BuildPrincipal } from "../auth/build-principal";
import { childBuildId, parsePlatformList, platformObject } from "./multiplatform";

export interface StartBuildOptions {
  /** A request body (tar, tar.gz, multipart), entries already read, or a content-addressed index and its scope. */
  context: ReadableStream<Uint8Array> | ContextEntries | { index: ContextIndexUpload; scope: string } | null;
  contentType: string;
  dockerfilePath?: string;
  dockerfileText?: string;
  tags: string[];
  buildArgs: Record<string, string>;
  target?: string;
  noCache?: boolean;
  platform?: string;
  secrets?: Record<string, string>;
  origin: string;
  /** Who the build acts as (the submitting token, or the rights recorded with a webhook). */
  principal: BuildPrincipal;
  /** A preassigned build id (git webhooks answer with it before the source is fetched). */
  id?: string;
  /** What started the build (shown in the dashboard's list), with a webhook's commit. */
  trigger?: { kind: BuildTrigger; commit?: string };
}

export interface StartedBuild {
  id: string;
  status: BuildStatus;
  url: string;
  events: string;
}

/** `repo:tag` (tag defaults to latest; a local registry host prefix is dropped). */
export function parseTag(spec: string, origin: string): { repository: string; tag: string } {
  const { host, repository, tag } = splitReference(spec);
  if (host !== undefined) {
    let originHost = "";
    try {
      originHost = new URL(origin).host;
    } catch {
      /* no origin */
    }
    if (host !== originHost && !/^(localhost|127\.0\.0\.1)(:\d+)?$/.test(host)) {
      throw new ApiError(400, `tag ${spec}: pushing to other registries is not supported`);
    }
  }
  if (!isRepositoryName(repository)) throw new ApiError(400, `invalid repository name in tag ${JSON.stringify(spec)}`);
  if (!isTag(tag)) throw new ApiError(400, `invalid tag in ${JSON.stringify(spec)}`);
  return { repository, tag };
}

export function parsePlatform(p: string | undefined): { os: string; architecture: string; variant?: string } {
  if (!p) return { os: "linux", architecture: "amd64" };
  const platform = splitPlatform(p);
  if (!platform.os || !platform.architecture) throw new ApiError(400, `invalid platform ${JSON.stringify(p)}: expected os/arch[/variant]`);
  return platform;
}

export function newBuildId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  let s = "";
  const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";
  for (const b of bytes) s += alphabet[b % 36];
  return `b${Date.now().toString(36)}${s}`;
}

/**
 * Starts a build. Shared by POST /v1/builds and git webhooks. Throws ApiError 400 (nothing stored)
 * for a bad context, tag or Dockerfile.
 */
export async function startBuild(env: Env, ctx: { waitUntil(p: Promise<unknown>): void } | undefined, opts: StartBuildOptions): Promise<StartedBuild> {
  void ctx;
  const tags = opts.tags.map((t) => parseTag(t, opts.origin));
  buildScope(tags);
  if (opts.platform?.includes(",")) return await startMultiPlatformBuild(env, opts, tags, parsePlatformList(opts.platform));
  const platform = parsePlatform(opts.platform);
  const { context, plans: [plan] } = await ingestAndPlan(env, opts, [platform]);
  const id = opts.id ?? newBuildId();
  const spec: BuildSpec = baseSpec(id, opts, context, tags, platform, plan);
  await insertBuild(env, { id, contextDigest: context.packDigest, repository: tags[0]?.repository ?? null, tags: tags.map((t) => `${t.repository}:${t.tag}`), trigger: opts.trigger?.kind, commit: opts.trigger?.commit });
  const stub = env.BUILD_COORDINATOR.get(env.BUILD_COORDINATOR.idFromName(id));
  await stub.start(spec);
  return { id, status: "queued", url: `${opts.origin}/v1/builds/${id}`, events: `${opts.origin}/v1/builds/${id}/events` };
}

type Platform = { os: string; architecture: string; variant?: string };

type Ingested = Awaited<ReturnType<typeof ingestContext>>;

/**
 * The cache scope of a build: the one namespace its tags push into (a 400 naming them when there are
 * several), UNTAGGED_SCOPE for an untagged build.
 */
export function buildScope(tags: { repository: string }[]): string {
  const namespaces = [...new Set(tags.map((t) => namespaceOf(t.repository)))];
  if (namespaces.length > 1) {
    throw new ApiError(400, `a build pushes into one namespace, but its tags name ${namespaces.join(", ")}: build once per namespace (its cache scope)`);
  }
  return namespaces[0] ?? UNTAGGED_SCOPE;
}

/**
 * Ingests the context once and plans the Dockerfile once per platform (the plan is persisted with the
 * build); a bad Dockerfile is a 400 and discards the context.
 */
async function ingestAndPlan(env: Env, opts: StartBuildOptions, platforms: Platform[]): Promise<{ context: Ingested; plans: BuildGraph[] }> {
  const given = opts.context;
  const context = given && "index" in given
    ? await ingestIndex(env, given.scope, given.index, opts.dockerfilePath)
    : await ingestContext(env, given, {
      contentType: opts.contentType,
      dockerfilePath: opts.dockerfilePath,
      dockerfileText: opts.dockerfileText,
    });
  const plans: BuildGraph[] = [];
  try {
    for (const p of platforms) plans.push(await planBuildGraph(env, context.dockerfile, opts, p));
  } catch (e) {
    await context.discard();
    if (e instanceof DockerfileError) {
      throw new ApiError(400, `Dockerfile:${e.line}: ${e.message}`, { line: e.line });
    }
    throw e;
  }
  return { context, plans };
}

/** The spec every build of this submission shares. */
function baseSpec(id: string, opts: StartBuildOptions, context: Ingested, tags: { repository: string; tag: string }[], platform: Platform, plan: BuildGraph): BuildSpec {
  const epochArg = opts.buildArgs.SOURCE_DATE_EPOCH;
  return {
    id,
    origin: opts.origin,
    dockerfile: context.dockerfile,
    dockerfilePath: context.dockerfilePath,
    context: { pack: context.packDigest, index: context.indexDigest },
    tags,
    buildArgs: opts.buildArgs,
    target: opts.target,
    noCache: !!opts.noCache,
    platform,
    sourceDateEpoch: epochArg !== undefined && /^\d+$/.test(epochArg) ? Number(epochArg) : 0,
    secrets: { ...(opts.secrets ?? {}), ...context.secrets },
    principal: opts.principal,
    scope: buildScope(tags),
    plan,
    createdAt: Date.now(),
  };
}

/**
 * Plans the Dockerfile for `platform` with the one planner (throws DockerfileError). The ONBUILD
 * triggers of image bases are read as the build's principal and planned as steps after their FROM.
 */
async function planBuildGraph(env: Env, dockerfile: string, opts: StartBuildOptions, platform: Platform): Promise<BuildGraph> {
  const reader = { origin: opts.origin, principal: opts.principal, scope: buildScope(opts.tags.map((t) => parseTag(t, opts.origin))) };
  const { graph } = await planDockerfile(dockerfile, {
    buildArgs: opts.buildArgs,
    target: opts.target,
    platform: platformString(platform),
    // a base that cannot be read fails at its FROM step, with the registry's reason
    triggersOf: async (_stage, ref) => (await loadImage(env, ref, reader, platform, undefined, { metadataOnly: true }).catch(() => null))?.config.config?.OnBuild ?? [],
  });
  return graph;
}

/**
 * `platform=a,b`: the context is ingested once; one child build per platform (no tags: each stores
 * its manifest by digest in the first tag's repository) and a parent that pushes the index.
 */
async function startMultiPlatformBuild(env: Env, opts: StartBuildOptions, tags: { repository: string; tag: string }[], platforms: string[]): Promise<StartedBuild> {
  const { context, plans } = await ingestAndPlan(env, opts, platforms.map(platformObject));
  const id = opts.id ?? newBuildId();
  // the parent runs no steps: it keeps the first platform's plan
  const base: BuildSpec = baseSpec(id, opts, context, tags, platformObject(platforms[0]), plans[0]);
  const children = platforms.map((platform) => ({ platform, id: childBuildId(id, platform) }));
  const repository = tags[0]?.repository ?? null;
  await insertBuild(env, { id, contextDigest: context.packDigest, repository, tags: tags.map((t) => `${t.repository}:${t.tag}`), trigger: opts.trigger?.kind, commit: opts.trigger?.commit });
  for (const c of children) await insertBuild(env, { id: c.id, contextDigest: context.packDigest, repository, tags: [] });
  const coordinator = (bid: string) => env.BUILD_COORDINATOR.get(env.BUILD_COORDINATOR.idFromName(bid));
  await coordinator(id).start({ ...base, children });
  for (const [i, c] of children.entries()) {
    const spec: BuildSpec = {
      ...base,
      id: c.id,
      tags: [],
      platform: platformObject(c.platform),
      plan: plans[i],
      parent: id,
      manifestRepository: repository ?? undefined,
    };
    try {
      await coordinator(c.id).start(spec);
    } catch (e) {
      // the parent must not wait for a child that never started
      await coordinator(id).cancel().catch(() => {});
      throw e;
    }
  }
  return { id, status: "queued", url: `${opts.origin}/v1/builds/${id}`, events: `${opts.origin}/v1/builds/${id}/events` };
}
