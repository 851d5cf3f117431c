// Builds through the public API: a context directory as a tar stream, polling until the build ends.
import { mkdtempSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";

export interface BuildResult {
  id: string;
  status: string;
  steps: Array<{ index: number; stage?: unknown; instruction: string; status: string; cacheKey?: string; layer?: unknown; durationMs?: number }>;
  image?: { repository: string; tags: string[]; digest: string };
  error?: { message: string; step?: number; line?: number };
  [k: string]: unknown;
}

/** Writes `files` (path → content) into a fresh temp dir and returns it. */
export function contextDir(files: Record<string, string | Uint8Array>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-ctx-"));
  for (const [rel, content] of Object.entries(files)) {
    const file = path.join(dir, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  }
  return dir;
}

export async function tarOf(dir: string): Promise<Buffer> {
  return execFileSync("tar", ["-C", dir, "--sort=name", "-cf", "-", "."], { maxBuffer: 1 << 30 });
}

export async function submitBuild(baseUrl: string, token: string, dir: string, query: Record<string, string | string[]> = {}): Promise<Response> {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) for (const x of Array.isArray(v) ? v : [v]) q.append(k, x);
  const body = await tarOf(dir);
  return fetch(`${baseUrl}/v1/builds?${q}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/x-tar" },
    body: new Uint8Array(body),
  });
}

export async function waitForBuild(baseUrl: string, token: string, id: string, timeoutMs = 240_000): Promise<BuildResult> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await fetch(`${baseUrl}/v1/builds/${id}`, { headers: { authorization: `Bearer ${token}` } });
    if (res.ok) {
      const b = (await res.json()) as BuildResult;
      if (["succeeded", "failed", "cancelled"].includes(b.status)) return b;
    }
    if (Date.now() > deadline) throw new Error(`build ${id} did not finish in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** Submits and waits; throws with the server's answer unless the submission is accepted. */
export async function build(baseUrl: string, token: string, dir: string, query: Record<string, string | string[]> = {}): Promise<BuildResult> {
  const res = await submitBuild(baseUrl, token, dir, query);
  const body = (await res.json()) as { id?: string; error?: { message: string } };
  if (res.status !== 202 || !body.id) throw new Error(`POST /v1/builds: ${res.status} ${JSON.stringify(body)}`);
  return waitForBuild(baseUrl, token, body.id);
}
