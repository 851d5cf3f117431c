import { createExecutionContext, env } from "cloudflare:test";
import worker from "../../../src/index";
import type { Env } from "../../../src/env";
import { reg, sha256 } from "../registry/helpers";

/** POST /v1/gc as admin; returns the report. */
export async function collect(query = "graceSeconds=0"): Promise<any> {
  const res = await reg(`/v1/gc?${query}`, { method: "POST", headers: { authorization: "Bearer kiln-test-admin" } });
  if (res.status !== 200) throw new Error(`POST /v1/gc ${res.status}: ${await res.text()}`);
  return res.json();
}

/**
 * POST /v1/gc straight into the Worker's fetch handler. Requests through SELF do not overlap in this
 * pool (each waits for the one before), so a collection meant to run *while* other requests go on is
 * started here, beside them.
 */
export async function collectBeside(query = "graceSeconds=0"): Promise<{ status: number; body: any }> {
  const req = new Request(`http://kiln.test/v1/gc?${query}`, { method: "POST", headers: { authorization: "Bearer kiln-test-admin" } });
  const res = await worker.fetch(req, env as unknown as Env, createExecutionContext());
  return { status: res.status, body: await res.json() };
}

/** Whether the blob's D1 row exists. */
export async function blobRow(digest: string): Promise<boolean> {
  return (await env.DB.prepare("SELECT 1 AS x FROM blobs WHERE digest = ?").bind(digest).first()) !== null;
}

/** Whether any R2 object holds the blob's bytes (its content address). */
export async function blobObject(digest: string): Promise<boolean> {
  return (await env.BUCKET.head(`blobs/${digest.replace(":", "/")}`)) !== null;
}

/** Makes everything stored so far look `ms` old (rows' times moved back), so a collection with a grace period sees it as old. */
export async function age(ms: number): Promise<void> {
  await env.DB.batch([
    env.DB.prepare("UPDATE blobs SET created_at = created_at - ?").bind(ms),
    env.DB.prepare("UPDATE repo_blobs SET created_at = created_at - ?").bind(ms),
    env.DB.prepare("UPDATE manifests SET created_at = created_at - ?").bind(ms),
    env.DB.prepare("UPDATE tags SET updated_at = updated_at - ?").bind(ms),
    env.DB.prepare("UPDATE cache_entries SET created_at = created_at - ?, last_hit_at = last_hit_at - ?").bind(ms, ms),
  ]);
}

/** GETs a blob from `repo` and checks its bytes hash to its digest. */
export async function blobIntact(repo: string, digest: string): Promise<boolean> {
  const res = await reg(`/v2/${repo}/blobs/${digest}`);
  if (res.status !== 200) {
    await res.body?.cancel();
    return false;
  }
  return (await sha256(new Uint8Array(await res.arrayBuffer()))) === digest;
}
