/** Images in kiln's registry as build inputs (FROM, COPY --from) and outputs (the pushed result). */
import type { Env } from "../env";
import { buildManifest, emptyConfig, encodeJson, isIndexDocument, parseImageConfig, parseManifest, rfc3339, type ImageConfig } from "../oci/image";
import { MediaType } from "../oci/mediatypes";
import { digestOf } from "../oci/digest";
import { getBlob, linkBlob, putBlobBytes } from "../storage/blobs";
import { getManifest, putManifest } from "../storage/manifests";
import { StepError, type ImageState, type LayerRef } from "./model";
import { pullImage, type PulledImage } from "../upstream/pull";
import { UpstreamError } from "../upstream/client";
import { ReferenceError } from "../upstream/reference";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The image BuildKit starts a `FROM scratch` stage with. */
export function scratchConfig(platform: { os: string; architecture: string; variant?: string }): ImageConfig {
  const c = emptyConfig(platform);
  c.config = { Env: [`PATH=${DEFAULT_PATH}`], WorkingDir: "/" };
  return c;
}

/** `repo:tag`, `repo@sha256:…`, with an optional local host prefix; null host = kiln itself. */
export function parseImageRef(ref: string, origin: string): { repository: string; reference: string } {
  let rest = ref;
  const first = rest.split("/")[0];
  if (rest.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) {
    const originHost = (() => {
      try {
        return new URL(origin).host;
      } catch {
        return "";
      }
    })();
    const local = first === originHost || /^localhost(:\d+)?$/.test(first);
    if (!local) throw new RemoteImage(ref);
    rest = rest.slice(first.length + 1);
  }
  let reference = "latest";
  const at = rest.indexOf("@");
  if (at >= 0) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon > rest.lastIndexOf("/")) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  return { repository: rest, reference };
}

/** Thrown by parseImageRef for a reference that names another registry. */
export class RemoteImage extends Error {
  constructor(readonly ref: string) {
    super(`${ref} is in another registry`);
  }
}

export interface LoadedImage {
  manifestDigest: string;
  /** What the reference resolved to (an index for multi-platform images); set for pulled images. */
  resolvedDigest?: string;
  config: ImageConfig;
  layers: LayerRef[];
  repository: string;
}

/** Loads an image from kiln's registry (picking the platform from an index). */
export async function loadImage(env: Env, ref: string, origin: string, platform: { os: string; architecture: string; variant?: string }, log?: (line: string) => void, opts: { metadataOnly?: boolean } = {}): Promise<LoadedImage> {
  let parsed: { repository: string; reference: string };
  try {
    parsed = parseImageRef(ref, origin);
  } catch (e) {
    if (e instanceof RemoteImage) return await loadRemoteImage(env, ref, platform, log, opts.metadataOnly);
    throw e;
  }
  const { repository, reference } = parsed;
  let m = await getManifest(env, repository, reference).catch(() => null);
  if (!m) {
    // docker.io/library/<name> style names are looked up under their short name too
    const short = repository.replace(/^library\//, "");
    if (short !== repository) m = await getManifest(env, short, reference).catch(() => null);
  }
  if (!m) {
    // Not in kiln: docker's normalization sends `alpine` and `org/app` to Docker Hub.
    if (!ref.includes("/") || !ref.split("/")[0].match(/[.:]|^localhost$/)) return await loadRemoteImage(env, ref, platform, log, opts.metadataOnly);
    throw new StepError(`${ref}: not found in kiln's registry`);
  }
  let doc = parseManifest(m.bytes, m.mediaType);
  let manifestDigest = m.digest;
  if (isIndexDocument(doc)) {
    const pick = doc.manifests.find((d) => d.platform?.os === platform.os && d.platform?.architecture === platform.architecture && (!platform.variant || d.platform?.variant === platform.variant));
    if (!pick) throw new StepError(`${ref}: no image for platform ${platform.os}/${platform.architecture}`);
    const child = await getManifest(env, repository, pick.digest);
    if (!child) throw new StepError(`${ref}: manifest ${pick.digest} is missing`);
    doc = parseManifest(child.bytes, child.mediaType);
    manifestDigest = child.digest;
    if (isIndexDocument(doc)) throw new StepError(`${ref}: nested index`);
  }
  const cfgBlob = await getBlob(env, doc.config.digest);
  if (!cfgBlob) throw new StepError(`${ref}: config ${doc.config.digest} is missing`);
  const config = parseImageConfig(new Uint8Array(await cfgBlob.arrayBuffer()));
  const c = (config.config ??= {});
  if (!(c.Env ?? []).some((e) => e.startsWith("PATH="))) c.Env = [`PATH=${DEFAULT_PATH}`, ...(c.Env ?? [])];
  return {
    manifestDigest,
    config,
    repository,
    layers: doc.layers.map((l) => ({ digest: l.digest, diffId: "", size: l.size, mediaType: l.mediaType })).map((l, i) => ({ ...l, diffId: config.rootfs?.diff_ids?.[i] ?? "" })),
  };
}

/** Pulls `ref` from its registry into kiln's storage (once per digest) and describes it as a base. */
async function loadRemoteImage(env: Env, ref: string, platform: { os: string; architecture: string; variant?: string }, log?: (line: string) => void, metadataOnly = false): Promise<LoadedImage> {
  let pulled: PulledImage;
  try {
    pulled = await pullImage(env, ref, platform, { log, skipLayers: metadataOnly });
  } catch (e) {
    if (e instanceof UpstreamError || e instanceof ReferenceError) throw new StepError(e.message);
    throw e;
  }
  const config = parseImageConfig(new TextEncoder().encode(JSON.stringify(pulled.config)));
  const c = (config.config ??= {});
  if (!(c.Env ?? []).some((e) => e.startsWith("PATH="))) c.Env = [`PATH=${DEFAULT_PATH}`, ...(c.Env ?? [])];
  return {
    manifestDigest: pulled.manifestDigest,
    resolvedDigest: pulled.resolvedDigest,
    config,
    repository: `${pulled.reference.registry}/${pulled.reference.repository}`,
    layers: pulled.layers.map((l, i) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, diffId: config.rootfs?.diff_ids?.[i] ?? "" })),
  };
}

/** A built image's config stored as a blob, and its manifest bytes (not yet in any repository). */
export interface PreparedImage {
  bytes: Uint8Array;
  digest: string;
  config: string;
  layers: string[];
}

/** Stores the config of `state` and encodes its manifest (`created` from SOURCE_DATE_EPOCH). */
export async function prepareImage(env: Env, state: ImageState, sourceDateEpoch: number): Promise<PreparedImage> {
  const config: ImageConfig = { ...state.config, created: rfc3339(sourceDateEpoch) };
  const cfgBytes = encodeJson(config);
  const cfgDigest = await digestOf(cfgBytes);
  await putBlobBytes(env, cfgBytes, cfgDigest);
  const manifest = buildManifest(
    { mediaType: MediaType.OciConfig, digest: cfgDigest, size: cfgBytes.byteLength },
    state.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  );
  const bytes = encodeJson(manifest);
  return { bytes, digest: await digestOf(bytes), config: cfgDigest, layers: state.layers.map((l) => l.digest) };
}

/** Links the image's blobs into `repo` and puts its manifest under `reference` (tag or digest). */
export async function storeImage(env: Env, repo: string, image: PreparedImage, reference: string, extraTags: string[] = []): Promise<void> {
  for (const l of image.layers) await linkBlob(env, repo, l);
  await linkBlob(env, repo, image.config);
  await putManifest(env, repo, reference, image.bytes, MediaType.OciManifest, extraTags);
}

/** Pushes a built image under every tag; returns the manifest digest. */
export async function pushImage(
  env: Env,
  state: ImageState,
  tags: { repository: string; tag: string }[],
  sourceDateEpoch: number,
): Promise<{ digest: string; config: string }> {
  const image = await prepareImage(env, state, sourceDateEpoch);
  const byRepo = new Map<string, string[]>();
  for (const t of tags) byRepo.set(t.repository, [...(byRepo.get(t.repository) ?? []), t.tag]);
  for (const [repo, [first, ...rest]] of byRepo) await storeImage(env, repo, image, first, rest);
  return { digest: image.digest, config: image.config };
}
