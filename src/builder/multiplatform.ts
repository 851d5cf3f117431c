/**
 * Multi-platform builds (`platform=linux/amd64,linux/arm64`): one child build per platform, each a
 * normal BuildCoordinator that stores its image manifest by digest (no tags) in the repository of
 * the first tag; the parent (a BuildCoordinator whose spec has `children`) waits for them and pushes
 * an OCI image index over their manifests under every requested tag.
 */
import type { Env } from "../env";
import { ApiError } from "../errors";
import { buildIndex, encodeJson, parseManifest, type Descriptor, type Platform } from "../oci/image";
import { MediaType } from "../oci/mediatypes";
import { digestOf } from "../oci/digest";
import { linkBlob } from "../storage/blobs";
import { getManifest, putManifest, statManifest } from "../storage/manifests";
import type { BuildStatus, ImageState, StepStatus } from "./model";
import { prepareImage, storeImage } from "./image";

const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/;
const MAX_PLATFORMS = 16;

/**
 * `linux/amd64,linux/arm64` → the platforms in the given order (duplicates dropped). Throws
 * ApiError 400 for an empty item or one that is not `os/arch[/variant]`.
 */
export function parsePlatformList(p: string): string[] {
  const out: string[] = [];
  for (const raw of p.split(",")) {
    const item = raw.trim().toLowerCase();
    if (!item) throw new ApiError(400, `invalid platform list ${JSON.stringify(p)}: empty item`);
    if (!PLATFORM_RE.test(item)) throw new ApiError(400, `invalid platform ${JSON.stringify(raw.trim())}: expected os/arch[/variant]`);
    if (!out.includes(item)) out.push(item);
  }
  if (out.length > MAX_PLATFORMS) throw new ApiError(400, `too many platforms (at most ${MAX_PLATFORMS})`);
  return out;
}

export function platformObject(p: string): Platform {
  const [os, architecture, variant] = p.split("/");
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** The id of the child of `parentId` for `platform`: `<parent>-linux-arm64-v8`. */
export function childBuildId(parentId: string, platform: string): string {
  return `${parentId}-${platform.replace(/\//g, "-")}`;
}

/** A child's final status as the status of the parent's step for its platform. */
export function childStepStatus(status: BuildStatus, allCached: boolean): StepStatus {
  switch (status) {
    case "succeeded":
      return allCached ? "cached" : "done";
    case "failed":
      return "failed";
    case "cancelled":
      return "skipped";
    default:
      return "running";
  }
}

/**
 * Stores a child's image (same bytes as pushImage would make) in `repository` by digest only.
 * Returns the manifest digest and size.
 */
export async function pushChildImage(env: Env, state: ImageState, repository: string, sourceDateEpoch: number): Promise<{ digest: string; size: number }> {
  const image = await prepareImage(env, state, sourceDateEpoch);
  await storeImage(env, repository, image, image.digest);
  return { digest: image.digest, size: image.bytes.byteLength };
}

/** Makes the manifest `digest` of `from` (and the blobs it uses) part of `to` as well. */
async function copyManifest(env: Env, from: string, to: string, digest: string): Promise<void> {
  if (await statManifest(env, to, digest)) return;
  const m = await getManifest(env, from, digest);
  if (!m) throw new Error(`manifest ${digest} is missing from ${from}`);
  const doc = parseManifest(m.bytes, m.mediaType);
  if ("config" in doc) {
    await linkBlob(env, to, doc.config.digest);
    for (const l of doc.layers) await linkBlob(env, to, l.digest);
  }
  await putManifest(env, to, digest, m.bytes, m.mediaType);
}

/**
 * Pushes an OCI image index over the children's manifests (stored in `tags[0].repository`) under
 * every tag; returns the index digest.
 */
export async function pushIndex(env: Env, tags: { repository: string; tag: string }[], children: { platform: string; digest: string }[]): Promise<string> {
  const home = tags[0].repository;
  const descriptors: Descriptor[] = [];
  for (const c of children) {
    const info = await statManifest(env, home, c.digest);
    if (!info) throw new Error(`the ${c.platform} image ${c.digest} is missing from ${home}`);
    descriptors.push({ mediaType: info.mediaType, digest: info.digest, size: info.size, platform: platformObject(c.platform) });
  }
  const bytes = encodeJson(buildIndex(descriptors));
  const digest = await digestOf(bytes);
  const byRepo = new Map<string, string[]>();
  for (const t of tags) byRepo.set(t.repository, [...(byRepo.get(t.repository) ?? []), t.tag]);
  for (const [repo, repoTags] of byRepo) {
    if (repo !== home) for (const c of children) await copyManifest(env, home, repo, c.digest);
    const [first, ...rest] = repoTags;
    await putManifest(env, repo, first, bytes, MediaType.OciIndex, rest);
  }
  return digest;
}
