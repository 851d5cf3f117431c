/**
 * What a verified push payload may name. A signed payload is still not trusted to choose where kiln
 * sends its git host token: the repository (and GitLab project) must be the registered one, the
 * commit a full hex sha, the ref a sane git ref name. API paths are then built from the registration,
 * never from the payload.
 */
import type { PushEvent } from "./event";

/** A full commit id: SHA-1 (40) or SHA-256 (64) hex, lower case as every git host sends it. */
export const COMMIT_SHA = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** A GitLab project id: a positive integer. */
export const GITLAB_PROJECT_ID = /^[1-9][0-9]{0,18}$/;

/** Why `name` is not a branch or tag name git would accept (`git check-ref-format`), or null. */
export function badRefName(name: string): string | null {
  if (!name) return "is empty";
  if (name.length > 255) return "is longer than 255 characters";
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f~^:?*[\\]/.test(name)) return "contains a space, a control character or one of ~^:?*[\\";
  if (name.includes("..") || name.includes("@{") || name.includes("//")) return "contains .., @{ or //";
  if (name === "@" || name.startsWith("/") || name.endsWith("/") || name.endsWith(".")) return "starts or ends with / or ends with .";
  if (name.split("/").some((seg) => seg.startsWith(".") || seg.endsWith(".lock"))) return "has a component starting with . or ending with .lock";
  return null;
}

export interface RegisteredHook {
  provider: string;
  repository: string;
  projectId?: string;
}

/**
 * Checks a verified push against its webhook. Returns the refusal message, or null when the push may
 * build; then `ev.projectId` has been replaced by the registered project id (or removed), so that
 * nothing the payload chose reaches a URL.
 */
export function refusePush(ev: PushEvent, hook: RegisteredHook): string | null {
  if (!ev.repository) return `the payload names no repository; this webhook is for ${hook.repository}`;
  if (ev.repository.toLowerCase() !== hook.repository.toLowerCase()) {
    return `push to ${ev.repository}, but this webhook is for ${hook.repository}`;
  }
  if (hook.provider === "gitlab") {
    const id = ev.projectId;
    if (id !== undefined && !GITLAB_PROJECT_ID.test(id)) return `GitLab project_id must be a positive integer, got ${JSON.stringify(id).slice(0, 80)}`;
    if (hook.projectId !== undefined) {
      if (id === undefined) return `the payload has no project_id; this webhook is for GitLab project ${hook.projectId}`;
      if (id !== hook.projectId) return `push to GitLab project ${id}, but this webhook is for project ${hook.projectId}`;
    }
  }
  ev.projectId = hook.projectId;
  if (!COMMIT_SHA.test(ev.sha)) return `the commit sha must be 40 or 64 lower-case hex digits, got ${JSON.stringify(ev.sha).slice(0, 80)}`;
  const bad = badRefName(ev.name);
  if (bad) return `${ev.refType} name ${JSON.stringify(ev.name).slice(0, 80)} ${bad}`;
  if (ev.defaultBranch !== undefined && (typeof ev.defaultBranch !== "string" || badRefName(ev.defaultBranch))) ev.defaultBranch = undefined;
  return null;
}
