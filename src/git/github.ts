import { parseJsonBody, repoPath, splitRef, verifyHmacHex, ZERO_SHA, type HookEvent, type ProviderRequest, type StatusUpdate } from "./event";

/** GitHub: X-Hub-Signature-256 = "sha256=" + HMAC-SHA256(secret, raw body). */
export async function verifyGithub(headers: Headers, raw: Uint8Array, secret: string): Promise<boolean> {
  const sig = headers.get("x-hub-signature-256") ?? "";
  if (!sig.startsWith("sha256=")) return false;
  return verifyHmacHex(secret, raw, sig.slice(7));
}

export function parseGithub(headers: Headers, raw: Uint8Array): HookEvent {
  const deliveryId = headers.get("x-github-delivery") ?? "";
  const event = headers.get("x-github-event") ?? "";
  const body = parseJsonBody(raw, headers.get("content-type") ?? "");
  const repository: string | undefined = body?.repository?.full_name;
  if (event === "ping") return { kind: "ping", deliveryId, repository };
  if (event !== "push") return { kind: "ignored", deliveryId, repository, reason: `event ${event || "(none)"} is not handled` };
  const ref = splitRef(String(body.ref ?? ""));
  if (!ref) return { kind: "ignored", deliveryId, repository, reason: `ref ${body.ref} is neither a branch nor a tag` };
  const sha = String(body.after ?? "");
  return {
    kind: "push", deliveryId, repository: repository ?? "", ...ref, sha,
    deleted: body.deleted === true || ZERO_SHA.test(sha), defaultBranch: body.repository?.default_branch ?? body.repository?.master_branch,
  };
}

export function githubArchive(baseUrl: string, repository: string, sha: string, token?: string): ProviderRequest {
  return {
    url: `${baseUrl}/repos/${repoPath(repository)}/tarball/${encodeURIComponent(sha)}`,
    headers: { accept: "application/vnd.github+json", "user-agent": "kiln", ...(token ? { authorization: `Bearer ${token}` } : {}) },
  };
}

export function githubStatus(baseUrl: string, repository: string, sha: string, token: string, s: StatusUpdate): ProviderRequest & { body: string } {
  return {
    url: `${baseUrl}/repos/${repoPath(repository)}/statuses/${encodeURIComponent(sha)}`,
    headers: { accept: "application/vnd.github+json", "user-agent": "kiln", authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ state: s.state, target_url: s.targetUrl, description: s.description, context: "kiln" }),
  };
}
