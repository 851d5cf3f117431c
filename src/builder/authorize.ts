/**
 * Who may start a build with these tags, as one decision shared by POST /v1/builds, /v1/contexts and
 * the dashboard's "New build" form: push on every repository the build tags (an untagged build: admin),
 * and a namespace at its quota gets no build.
 */
import type { Env } from "../env";
import { ApiError } from "../errors";
import { assertPrincipalScope } from "../auth/api";
import type { Principal } from "../auth/principal";
import { buildPrincipalOf, type BuildPrincipal } from "../auth/build-principal";
import { StorageError } from "../storage/errors";
import { assertWithinQuota } from "../storage/usage";
import { buildScope, parseTag } from "./start";

export interface BuildCaller {
  /** Who the build acts as. */
  principal: BuildPrincipal;
  tags: string[];
  /** The cache scope: the tags' one namespace. */
  scope: string;
}

/**
 * The build caller for `tags` (`repo:tag`, as given): 400 for a bad tag or tags of several namespaces,
 * 403 (`token lacks scope …`) without push on each tagged repository, or without admin for no tag.
 */
export function authorizeBuild(principal: Principal, tags: string[], origin: string): BuildCaller {
  const parsed = tags.map((t) => parseTag(t, origin));
  const repos = new Set(parsed.map((t) => t.repository));
  if (repos.size === 0) assertPrincipalScope(principal, { kind: "admin" });
  for (const repository of repos) assertPrincipalScope(principal, { kind: "repository", repository, action: "push" });
  return { principal: buildPrincipalOf(principal), tags, scope: buildScope(parsed) };
}

/** 403 naming usage and quota when a namespace the build tags has no byte left (DESIGN: quotas, issue 13). */
export async function refuseAtQuota(env: Env, tags: string[], origin: string): Promise<void> {
  for (const repository of new Set(tags.map((t) => parseTag(t, origin).repository))) {
    await assertWithinQuota(env, repository, true).catch((e) => {
      throw e instanceof StorageError && e.code === "DENIED" ? new ApiError(403, e.message, { detail: e.detail }) : e;
    });
  }
}

/** `K=V` build arguments (the API's repeated `build-arg=`, the form's lines) → a map; 400 for one without `=`. */
export function parseBuildArgs(pairs: string[]): Record<string, string> {
  const buildArgs: Record<string, string> = {};
  for (const kv of pairs) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw new ApiError(400, `invalid build-arg ${JSON.stringify(kv)}: expected K=V`);
    buildArgs[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return buildArgs;
}
