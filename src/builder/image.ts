/** Images in kiln's registry as build inputs (FROM, COPY --from) and outputs (the pushed result). */
import type { Env } from "../env";
import { buildManifest, emptyConfig, encodeJson, isIndexDocument, parseImageConfig, parseManifest, rfc3339, type ImageConfig } from "../oci/image";
import { MediaType } from "../oci/mediatypes";
import { digestOf } from "../oci/digest";
import { getBlobBytes, linkBlob, linkedBlobSizes, putBlobBytes } from "../storage/blobs";
import { storedSizes, withQuota, type QuotaWrite } from "../storage/usage";
import { getManifest, putManifest } from "../storage/manifests";
import { StepError, type ImageState, type LayerRef } from "./model";
import { pullImage, type PulledImage } from "../upstream/pull";
import { UpstreamError } from "../upstream/client";
import { ReferenceError, parseReference, type ImageReference } from "../upstream/reference";
import { buildMayPull, describePrincipal, type BuildPrincipal } from "../auth/build-principal";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The image BuildKit starts a `FROM scratch` stage with. */
export function scratchConfig(platform: { os: string; architecture: string; variant?: string }): ImageConfig {
  const c = emptyConfig(platform);
  c.config = { Env: [`PATH=${DEFAULT_PATH}`], WorkingDir: "/" };
  return c;
}

/**
 * Who reads an image and from where: the build's principal (its pulls are authorized as /v2 would
 * authorize them), its cache scope and the origin it was started on (kiln's own host). A BuildSpec
 * is one.
 */
export interface ImageReader {
  origin: string;
  principal: BuildPrincipal;
  scope: string;
}

/**
 * Whether `host` (`host[:port]` of a reference) names kiln itself: the origin the build was started
 * on, a host listed in KILN_HOSTS, or, for a loopback origin, the other loopback spelling of it.
 */
export function isKilnHost(env: Env, host: string, origin: string): boolean {
  const h = host.toLowerCase();
  const listed = (env.KILN_HOSTS ?? "").split(",").map((x) => x.trim().toLowerCase()).filter(Boolean);
  if (listed.includes(h)) return true;
  let o: URL;
  try {
    o = new URL(origin);
  } catch {
    return false;
  }
  if (h === o.host.toLowerCase()) return true;
  const loopback = ["localhost", "127.0.0.1", "[::1]"];
  if (!loopback.includes(o.hostname)) return false;
  const m = /^(localhost|127\.0\.0\.1|\[::1\])(?::(\d+))?$/.exec(h);
  return !!m && (m[2] ?? "") === o.port;
}

/**
 * A base reference resolved as docker resolves it: `alpine` is docker.io/library/alpine, always;
 * an image of kiln itself is named by one of kiln's hosts (`127.0.0.1:8787/team/base:1`).
 */
export type ResolvedRef =
  | { local: true; repository: string; reference: string }
  | { local: false; reference: ImageReference };

export function resolveImageRef(env: Env, ref: string, origin: string): ResolvedRef {
  let parsed: ImageReference;
  try {
    parsed = parseReference(ref);
  } catch (e) {
    if (e instanceof ReferenceError) throw new StepError(e.message);
    throw e;
  }
  if (!isKilnHost(env, parsed.registry, origin)) return { local: false, reference: parsed };
  return { local: true, repository: parsed.repository, reference: parsed.digest ?? parsed.tag ?? "latest" };
}

export interface LoadedImage {
  manifestDigest: string;
  /** What the reference resolved to (an index for multi-platform images); set for pulled images. */
  resolvedDigest?: string;
  config: ImageConfig;
  layers: LayerRef[];
  repository: string;
  /** `kiln` for an image of this registry, else the upstream registry host (`docker.io`). */
  source: string;
}

/**
 * Loads a base image (picking the platform from an index): from kiln's registry when the reference
 * names one of kiln's hosts, authorized as a pull by the build's principal; else from its registry
 * through the pull-through store.
 */
export async function loadImage(env: Env, ref: string, reader: ImageReader, platform: { os: string; architecture: string; variant?: string }, log?: (line: string) => void, opts: { metadataOnly?: boolean } = {}): Promise<LoadedImage> {
  const resolved = resolveImageRef(env, ref, reader.origin);
  if (!resolved.local) return await loadRemoteImage(env, ref, reader, platform, log, opts.metadataOnly);
  const { repository, reference } = resolved;
  // The same answer whether the repository is missing or hidden: nothing leaks about other tenants.
  if (!(await buildMayPull(env, reader.principal, repository))) {
    throw new StepError(`pull access denied for ${ref}: the repository does not exist or ${describePrincipal(reader.principal)} may not pull it`);
  }
  const m = await getManifest(env, repository, reference).catch(() => null);
  if (!m) throw new StepError(`${ref}: not found in kiln's registry`);
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
  // A manifest only names blobs; the build may read only those its repository links, with the sizes
  // it declares. A foreign layer (or a digest of another tenant's blob) is refused here, before any
  // byte of it is read, linked into the output or handed to a runner.
  const wanted = [doc.config, ...doc.layers];
  const linked = await linkedBlobSizes(env, repository, wanted.map((d) => d.digest));
  for (const d of wanted) {
    if (linked.get(d.digest) !== d.size) {
      const what = d === doc.config ? "config" : "layer";
      throw new StepError(`${ref}: ${what} ${d.digest} (${d.size} bytes) is not stored in repository ${repository}; an image whose blobs live elsewhere (foreign layers) cannot be a base`);
    }
  }
  const cfgBytes = await getBlobBytes(env, doc.config.digest);
  if (!cfgBytes) throw new StepError(`${ref}: config ${doc.config.digest} is missing`);
  const config = parseImageConfig(cfgBytes);
  const c = (config.config ??= {});
  if (!(c.Env ?? []).some((e) => e.startsWith("PATH="))) c.Env = [`PATH=${DEFAULT_PATH}`, ...(c.Env ?? [])];
  return {
    manifestDigest,
    config,
    repository,
    source: "kiln",
    layers: doc.layers.map((l) => ({ digest: l.digest, diffId: "", size: l.size, mediaType: l.mediaType })).map((l, i) => ({ ...l, diffId: config.rootfs?.diff_ids?.[i] ?? "" })),
  };
}

/** Pulls `ref` from its registry into kiln's storage (once per digest) and describes it as a base. */
async function loadRemoteImage(env: Env, ref: string, reader: ImageReader, platform: { os: string; architecture: string; variant?: string }, log?: (line: string) => void, metadataOnly = false): Promise<LoadedImage> {
  let pulled: PulledImage;
  try {
    // acts for the build's namespace: it picks the upstream credentials and is what the upstream authorizes
    pulled = await pullImage(env, ref, platform, { namespace: reader.scope, log, skipLayers: metadataOnly });
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
    source: pulled.reference.registry,
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

/** What storing `image` in each of `repos` adds, for withQuota: its layers, config and manifest. */
async function imageWrites(env: Env, repos: string[], image: PreparedImage): Promise<QuotaWrite[]> {
  const content = [...(await storedSizes(env, [...image.layers, image.config])), { digest: image.digest, size: image.bytes.byteLength }];
  return repos.map((repo) => ({ repo, content }));
}

/**
 * Links the image's blobs into `repo` and puts its manifest under `reference` (tag or digest). The
 * whole image is reserved in the namespace's quota first (DENIED: nothing of it linked), unless
 * `quotaHeld`: the caller holds that reservation.
 */
export async function storeImage(env: Env, repo: string, image: PreparedImage, reference: string, extraTags: string[] = [], quotaHeld = false): Promise<void> {
  if (!quotaHeld) return withQuota(env, await imageWrites(env, [repo], image), () => storeImage(env, repo, image, reference, extraTags, true));
  for (const l of image.layers) await linkBlob(env, repo, l);
  await linkBlob(env, repo, image.config);
  await putManifest(env, repo, reference, image.bytes, MediaType.OciManifest, extraTags, { quotaHeld: true });
}

/**
 * Pushes a built image under every tag; returns the manifest digest. Every namespace it tags must
 * have room for it, or it is linked nowhere (DENIED naming usage and quota).
 */
export async function pushImage(
  env: Env,
  state: ImageState,
  tags: { repository: string; tag: string }[],
  sourceDateEpoch: number,
): Promise<{ digest: string; config: string }> {
  const image = await prepareImage(env, state, sourceDateEpoch);
  const byRepo = new Map<string, string[]>();
  for (const t of tags) byRepo.set(t.repository, [...(byRepo.get(t.repository) ?? []), t.tag]);
  await withQuota(env, await imageWrites(env, [...byRepo.keys()], image), async () => {
    for (const [repo, [first, ...rest]] of byRepo) await storeImage(env, repo, image, first, rest, true);
  });
  return { digest: image.digest, config: image.config };
}
