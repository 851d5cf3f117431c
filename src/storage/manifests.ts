import type { Env } from "../env";

/**
 * Stores a manifest in `repo` under `reference` (a tag, or a digest that must match the bytes) with
 * the same validation as `PUT /v2/<repo>/manifests/<reference>`; `extraTags` are tagged too.
 */
export async function putManifest(env: Env, repo: string, reference: string, bytes: Uint8Array, mediaType: string, extraTags?: string[]): Promise<{ digest: string }> {
  void env; void repo; void reference; void bytes; void mediaType; void extraTags;
  throw new Error("not implemented");
}

export async function getManifest(env: Env, repo: string, reference: string): Promise<{ bytes: Uint8Array; mediaType: string; digest: string } | null> {
  void env; void repo; void reference;
  throw new Error("not implemented");
}

export async function ensureRepository(env: Env, repo: string): Promise<void> {
  void env; void repo;
  throw new Error("not implemented");
}
