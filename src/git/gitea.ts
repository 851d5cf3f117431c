import { parseJsonBody, repoPath, splitRef, verifyHmacHex, ZERO_SHA, type HookEvent, type ProviderRequest, type StatusUpdate } from "./event";

/** Gitea and Forgejo: X-Gitea-Signature / X-Forgejo-Signature = hex HMAC-SHA256(secret, raw body). */
export async function verifyGitea(headers: Headers, raw: Uint8Array, secret: string): Promise<boolean> {
  const sig = headers.get("x-forgejo-signature") ?? headers.get("x-gitea-signature") ?? "";
  return verifyHmacHex(secret, raw, sig);
}

export function parseGitea(headers: Headers, raw: Uint8Array): HookEvent {
  const deliveryId = headers.get("x-forgejo-delivery") ?? headers.get("x-gitea-delivery") ?? "";
  const event = headers.get("x-forgejo-event") ?? headers.get("x-gitea-event") ?? "";
  const body = parseJsonBody(raw, headers.get("content-type") ?? "");
  const repository: string | undefined = body?.repository?.full_name;
  if (event !== "push") return { kind: "ignored", deliveryId, repository, reason: `event ${event || "(none)"} is not handled` };
  const ref = splitRef(String(body.ref ?? ""));
  if (!ref) return { kind: "ignored", deliveryId, repository, reason: `ref ${body.ref} is neither a branch nor a tag` };
  const sha = String(body.after ?? "");
  return { kind: "push", deliveryId, repository: repository ?? "", ...ref, sha, deleted: ZERO_SHA.test(sha), defaultBranch: body.repository?.default_branch };
}

export function giteaArchive(baseUrl: string, repository: string, sha: string, token?: string): ProviderRequest {
  return {
    url: `${baseUrl}/repos/${repoPath(repository)}/archive/${encodeURIComponent(sha)}.tar.gz`,
    headers: { "user-agent": "kiln", ...(token ? { authorization: `token ${token}` } : {}) },
  };
}

export function giteaStatus(baseUrl: string, repository: string, sha: string, token: string, s: StatusUpdate): ProviderRequest & { body: string } {
  return {
    url: `${baseUrl}/repos/${repoPath(repository)}/statuses/${encodeURIComponent(sha)}`,
    headers: { "user-agent": "kiln", authorization: `token ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ state: s.state, target_url: s.targetUrl, description: s.description, context: "kiln" }),
  };
}
