/**
 * Pull-through of base images: resolve a reference on its registry, pick the build's platform,
 * and stream manifest, config and layers into kiln's storage once, digest-verified. A manifest or
 * blob already stored is never fetched again; a tag is re-resolved with a HEAD request so a moved tag
 * is noticed, and the last resolution is used when the upstream is unreachable.
 */
import type { Env } from "../env";
import { getBlob, putBlobVerified, statBlob } from "../storage/blobs";
import { lastResolution, recordResolution, recordUpstreamManifest, upstreamFor, upstreamManifest } from "../storage/upstreams";
import { RegistryClient, UpstreamError, type FetchLike } from "./client";
import { formatPlatform, selectManifest, type IndexEntry, type Platform } from "./platform";
import { formatReference, parseReference, referenceTarget, type ImageReference } from "./reference";

const INDEX_TYPES = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface PulledImage {
  reference: ImageReference;
  /** What the reference resolved to upstream (an index or a manifest). */
  resolvedDigest: string;
  /** The platform-specific image manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Uint8Array;
  configDigest: string;
  config: Record<string, unknown>;
  layers: Descriptor[];
  /** Number of manifests and blobs downloaded from the upstream by this call. */
  fetched: number;
}

async function sha256Digest(bytes: Uint8Array): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `sha256:${[...h].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function bytesStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({ start(c) { c.enqueue(bytes); c.close(); } });
}

async function readStoredBytes(env: Env, digest: string): Promise<Uint8Array | null> {
  const obj = await getBlob(env, digest);
  if (!obj) return null;
  return new Uint8Array(await obj.arrayBuffer());
}

function detectMediaType(bytes: Uint8Array, header: string): string {
  try {
    const doc = JSON.parse(new TextDecoder().decode(bytes)) as { mediaType?: string; manifests?: unknown; layers?: unknown };
    if (doc.mediaType) return doc.mediaType;
    if (doc.manifests) return "application/vnd.oci.image.index.v1+json";
    if (doc.layers) return "application/vnd.oci.image.manifest.v1+json";
  } catch {}
  return header;
}

export interface PullOptions {
  fetch?: FetchLike;
  /** Called with progress lines for the build log. */
  log?: (line: string) => void;
  /** Resolve and fetch manifest and config only (e.g. to read ONBUILD triggers when a build starts). */
  skipLayers?: boolean;
}

export class Puller {
  fetched = 0;

  constructor(private readonly env: Env, private readonly opts: PullOptions = {}) {}

  private async manifest(client: RegistryClient, repository: string, digest: string): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const known = await upstreamManifest(this.env, digest);
    if (known) {
      const bytes = await readStoredBytes(this.env, digest);
      if (bytes) return { bytes, mediaType: known.mediaType };
    }
    const got = await client.getManifest(repository, digest);
    this.fetched++;
    const actual = await sha256Digest(got.bytes);
    if (actual !== digest) throw new UpstreamError("bad-response", `${client.upstream.host}/${repository}@${digest}: manifest content hashes to ${actual}`);
    const mediaType = detectMediaType(got.bytes, got.mediaType);
    await putBlobVerified(this.env, bytesStream(got.bytes), digest, got.bytes.byteLength);
    await recordUpstreamManifest(this.env, digest, mediaType, got.bytes.byteLength);
    return { bytes: got.bytes, mediaType };
  }

  private async blob(client: RegistryClient, repository: string, desc: Descriptor): Promise<void> {
    if (await statBlob(this.env, desc.digest)) return;
    this.opts.log?.(`pulling ${desc.digest.slice(0, 19)} (${desc.size} bytes) from ${client.upstream.host}/${repository}`);
    const { body } = await client.getBlob(repository, desc.digest);
    this.fetched++;
    await putBlobVerified(this.env, body, desc.digest, desc.size);
  }

  /** Resolves `ref` to a digest: pinned digests as they are; tags with HEAD (GET when HEAD gives no digest). */
  private async resolve(client: RegistryClient, ref: ImageReference): Promise<string> {
    if (ref.digest) return ref.digest;
    const tag = referenceTarget(ref);
    try {
      const head = await client.headManifest(ref.repository, tag);
      if (!head) throw new UpstreamError("not-found", `${formatReference(ref)}: not found on ${client.upstream.host}`, 404);
      let digest = head.digest;
      if (!digest || !/^sha256:[a-f0-9]{64}$/.test(digest)) {
        const got = await client.getManifest(ref.repository, tag);
        this.fetched++;
        digest = await sha256Digest(got.bytes);
        if (!(await upstreamManifest(this.env, digest))) {
          const mediaType = detectMediaType(got.bytes, got.mediaType);
          await putBlobVerified(this.env, bytesStream(got.bytes), digest, got.bytes.byteLength);
          await recordUpstreamManifest(this.env, digest, mediaType, got.bytes.byteLength);
        }
      }
      await recordResolution(this.env, ref.registry, ref.repository, tag, digest);
      return digest;
    } catch (err) {
      if (err instanceof UpstreamError && err.kind === "unreachable") {
        const last = await lastResolution(this.env, ref.registry, ref.repository, tag);
        if (last) {
          this.opts.log?.(`${client.upstream.host} unreachable; using the last resolution of ${formatReference(ref)}: ${last}`);
          return last;
        }
      }
      throw err;
    }
  }

  async pull(reference: string, platform: Platform): Promise<PulledImage> {
    const ref = parseReference(reference);
    const client = new RegistryClient(await upstreamFor(this.env, ref.registry), this.opts.fetch);
    const resolvedDigest = await this.resolve(client, ref);
    let digest = resolvedDigest;
    let { bytes, mediaType } = await this.manifest(client, ref.repository, digest);
    if (INDEX_TYPES.has(mediaType)) {
      const index = JSON.parse(new TextDecoder().decode(bytes)) as { manifests?: IndexEntry[] };
      const entry = selectManifest(index.manifests ?? [], platform);
      if (!entry) {
        const have = (index.manifests ?? []).filter((m) => m.platform && m.platform.os !== "unknown").map((m) => formatPlatform(m.platform!)).join(", ");
        throw new UpstreamError("not-found", `${formatReference(ref)}: no image for platform ${formatPlatform(platform)} (available: ${have || "none"})`);
      }
      digest = entry.digest;
      ({ bytes, mediaType } = await this.manifest(client, ref.repository, digest));
      if (INDEX_TYPES.has(mediaType)) throw new UpstreamError("bad-response", `${formatReference(ref)}: nested index is not supported`);
    }
    const manifest = JSON.parse(new TextDecoder().decode(bytes)) as { config?: Descriptor; layers?: Descriptor[]; schemaVersion?: number };
    if (!manifest.config || !Array.isArray(manifest.layers)) {
      throw new UpstreamError("bad-response", `${formatReference(ref)}: unsupported manifest ${mediaType || "(no media type)"}${manifest.schemaVersion === 1 ? " (Docker schema 1 is not supported)" : ""}`);
    }
    await this.blob(client, ref.repository, manifest.config);
    const configBytes = await readStoredBytes(this.env, manifest.config.digest);
    if (!configBytes) throw new Error(`config ${manifest.config.digest} vanished from storage`);
    if (!this.opts.skipLayers) for (const layer of manifest.layers) await this.blob(client, ref.repository, layer);
    return {
      reference: ref,
      resolvedDigest,
      manifestDigest: digest,
      manifestMediaType: mediaType,
      manifestBytes: bytes,
      configDigest: manifest.config.digest,
      config: JSON.parse(new TextDecoder().decode(configBytes)) as Record<string, unknown>,
      layers: manifest.layers,
      fetched: this.fetched,
    };
  }
}

/** Pulls `reference` for `platform` into kiln's storage (once per digest) and describes the image. */
export async function pullImage(env: Env, reference: string, platform: Platform, opts: PullOptions = {}): Promise<PulledImage> {
  return new Puller(env, opts).pull(reference, platform);
}
