/** What a git host's push webhook means for kiln, independent of the provider. */
export interface PushEvent {
  kind: "push";
  deliveryId: string;
  repository: string; // owner/name (GitLab: path_with_namespace)
  /**
   * GitLab: the project id as the payload states it (`project_id`, else `project.id`), unvalidated;
   * the receiver checks it (see validate.ts) and replaces it with the registered one before any URL.
   */
  projectId?: string;
  refType: "branch" | "tag";
  name: string; // branch or tag name
  sha: string;
  deleted: boolean;
  defaultBranch?: string;
}

export type HookEvent = PushEvent | { kind: "ping"; deliveryId: string; repository?: string } | { kind: "ignored"; deliveryId: string; repository?: string; reason: string };

export interface ProviderRequest {
  url: string;
  headers: Record<string, string>;
}

export interface StatusUpdate {
  state: "pending" | "success" | "failure" | "error";
  targetUrl: string;
  description: string;
}

export const ZERO_SHA = /^0+$/;

/** `owner/name` (or `group/sub/name`) as URL path segments, each encoded. */
export function repoPath(repository: string): string {
  return repository.split("/").map(encodeURIComponent).join("/");
}

export function splitRef(ref: string): { refType: "branch" | "tag"; name: string } | null {
  if (ref.startsWith("refs/heads/")) return { refType: "branch", name: ref.slice("refs/heads/".length) };
  if (ref.startsWith("refs/tags/")) return { refType: "tag", name: ref.slice("refs/tags/".length) };
  return null;
}

/** HMAC-SHA256 of `body` checked with crypto.subtle.verify, which compares in constant time. */
export async function verifyHmacHex(secret: string, body: Uint8Array, signatureHex: string): Promise<boolean> {
  if (!/^[0-9a-fA-F]{64}$/.test(signatureHex)) return false;
  const sig = new Uint8Array(32);
  for (let i = 0; i < 32; i++) sig[i] = parseInt(signatureHex.slice(i * 2, i * 2 + 2), 16);
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return crypto.subtle.verify("HMAC", key, sig, body);
}

/** Compares a shared token (GitLab's X-Gitlab-Token) in constant time by comparing HMACs of both. */
export async function tokensEqual(a: string, b: string): Promise<boolean> {
  const key = await crypto.subtle.importKey("raw", crypto.getRandomValues(new Uint8Array(32)), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(a)));
  return crypto.subtle.verify("HMAC", key, mac, new TextEncoder().encode(b));
}

export function parseJsonBody(raw: Uint8Array, contentType: string): any {
  const text = new TextDecoder().decode(raw);
  if (contentType.includes("application/x-www-form-urlencoded")) {
    const payload = new URLSearchParams(text).get("payload");
    if (!payload) throw new Error("form body without payload");
    return JSON.parse(payload);
  }
  return JSON.parse(text);
}
