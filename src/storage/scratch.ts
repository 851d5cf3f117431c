import type { Env } from "../env";

/**
 * Scratch objects: a build step's staged files (ADD downloads, extracted archives, bodies copied out
 * of other layers) written once, read back while the layer is written, and deleted when the step ends.
 * They all live under `tmp/`, which the daily purge (purgeStaleUploads) sweeps for what a crashed step
 * left behind; a key outside it is refused, so this is no back door to the rest of the bucket.
 */
const SCRATCH_PREFIX = "tmp/";

function scratchKey(key: string): string {
  if (!key.startsWith(SCRATCH_PREFIX) || key.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw new Error(`not a scratch key: ${key}`);
  }
  return key;
}

/** Stores `body` at `key`; a stream must have a known length (a FixedLengthStream's readable side). */
export async function putScratch(env: Env, key: string, body: ReadableStream<Uint8Array> | Uint8Array): Promise<void> {
  await env.BUCKET.put(scratchKey(key), body);
}

/** The bytes staged at `key`; a missing object is an error (scratch is only read by the step that wrote it). */
export async function readScratch(env: Env, key: string): Promise<ReadableStream<Uint8Array>> {
  const obj = await env.BUCKET.get(scratchKey(key));
  if (!obj) throw new Error(`staged file ${key} vanished`);
  return obj.body;
}

export async function deleteScratch(env: Env, keys: string[]): Promise<void> {
  if (keys.length) await env.BUCKET.delete(keys.map(scratchKey));
}
