import type { Env } from "../env";

/** Content-addressed blob store: R2 `blobs/<alg>/<hex>` + D1 `blobs` and `repo_blobs` rows. */

export async function statBlob(env: Env, digest: string): Promise<{ size: number } | null> {
  void env; void digest;
  throw new Error("not implemented");
}

export async function getBlob(env: Env, digest: string, range?: { offset: number; length?: number }): Promise<R2ObjectBody | null> {
  void env; void digest; void range;
  throw new Error("not implemented");
}

/** Stores `body` as blob `digest` only if its bytes hash to `digest`; throws OciError DIGEST_INVALID (nothing kept) otherwise. */
export async function putBlobVerified(env: Env, body: ReadableStream<Uint8Array>, digest: string, size?: number): Promise<{ digest: string; size: number }> {
  void env; void body; void digest; void size;
  throw new Error("not implemented");
}

/** Stores `body` (length and digest unknown up front) at blobs/sha256/<hex>. */
export async function putBlobComputed(env: Env, body: ReadableStream<Uint8Array>): Promise<{ digest: string; size: number }> {
  void env; void body;
  throw new Error("not implemented");
}

/** Makes a stored blob visible in `repo` (creates the repository row if needed). */
export async function linkBlob(env: Env, repo: string, digest: string): Promise<void> {
  void env; void repo; void digest;
  throw new Error("not implemented");
}

export async function repoHasBlob(env: Env, repo: string, digest: string): Promise<boolean> {
  void env; void repo; void digest;
  throw new Error("not implemented");
}
