import { parseJsonBody, splitRef, tokensEqual, ZERO_SHA, type HookEvent, type ProviderRequest, type StatusUpdate } from "./event";

/** GitLab sends the configured secret token verbatim in X-Gitlab-Token. */
export async function verifyGitlab(headers: Headers, _raw: Uint8Array, secret: string): Promise<boolean> {
  const token = headers.get("x-gitlab-token");
  if (token === null) return false;
  return tokensEqual(token, secret);
}

export function parseGitlab(headers: Headers, raw: Uint8Array): HookEvent {
  const deliveryId = headers.get("x-gitlab-event-uuid") ?? headers.get("idempotency-key") ?? headers.get("x-gitlab-webhook-uuid") ?? "";
  const event = headers.get("x-gitlab-event") ?? "";
  const body = parseJsonBody(raw, headers.get("content-type") ?? "");
  const repository: string | undefined = body?.project?.path_with_namespace;
  if (event !== "Push Hook" && event !== "Tag Push Hook") return { kind: "ignored", deliveryId, repository, reason: `event ${event || "(none)"} is not handled` };
  const ref = splitRef(String(body.ref ?? ""));
  if (!ref) return { kind: "ignored", deliveryId, repository, reason: `ref ${body.ref} is neither a branch nor a tag` };
  const sha = String(body.checkout_sha ?? body.after ?? "");
  return {
    kind: "push", deliveryId, repository: repository ?? "", projectId: payloadProjectId(body),
    ...ref, sha: ZERO_SHA.test(String(body.after ?? "")) ? String(body.after) : sha,
    deleted: ZERO_SHA.test(String(body.after ?? "")), defaultBranch: body.project?.default_branch,
  };
}

/**
 * The payload's project id (`project_id`, else `project.id`) as a string, "" when the two disagree,
 * undefined when there is none. Never used in a URL: the receiver only compares it (validate.ts).
 */
function payloadProjectId(body: any): string | undefined {
  const ids = [body?.project_id, body?.project?.id].filter((v) => v !== undefined && v !== null).map((v) => typeof v === "number" || typeof v === "string" ? String(v) : "");
  if (ids.length === 0) return undefined;
  return ids.every((v) => v === ids[0]) ? ids[0] : "";
}

/**
 * The project in API paths: the numeric id the admin registered, else the registered
 * `group/name` URL-encoded as one segment (`group%2Fname`, which GitLab's API accepts). The
 * `projectId` passed here must never come from a payload unchecked: anything but digits is refused.
 */
function project(repository: string, projectId?: string): string {
  if (projectId !== undefined) {
    if (!/^[1-9][0-9]{0,18}$/.test(projectId)) throw new Error(`GitLab project id must be numeric: ${JSON.stringify(projectId)}`);
    return projectId;
  }
  return encodeURIComponent(repository);
}

export function gitlabArchive(baseUrl: string, repository: string, sha: string, token?: string, projectId?: string): ProviderRequest {
  return {
    url: `${baseUrl}/projects/${project(repository, projectId)}/repository/archive.tar.gz?sha=${encodeURIComponent(sha)}`,
    headers: { "user-agent": "kiln", ...(token ? { "private-token": token } : {}) },
  };
}

export function gitlabStatus(baseUrl: string, repository: string, sha: string, token: string, s: StatusUpdate, projectId?: string): ProviderRequest & { body: string } {
  const state = s.state === "failure" || s.state === "error" ? "failed" : s.state === "pending" ? "running" : "success";
  return {
    url: `${baseUrl}/projects/${project(repository, projectId)}/statuses/${encodeURIComponent(sha)}`,
    headers: { "user-agent": "kiln", "private-token": token, "content-type": "application/json" },
    body: JSON.stringify({ state, target_url: s.targetUrl, description: s.description, name: "kiln" }),
  };
}
