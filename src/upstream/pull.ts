/**
 * Pull-through of base images: resolve a reference on its registry, pick the build's platform,
 * and stream manifest, config and layers into kiln's storage once, digest-verified. A manifest or
 * blob already fetched from the same upstream repository is never fetched again; a tag is
 * re-resolved with a HEAD request so a moved tag is noticed, and the last resolution is used when the
 * upstream is unreachable.
 *
 * Tenancy (DESIGN.md, "Tenancy and trust"): a pull acts for the build's namespace. The upstream
 * entry's credentials are used only when the namespace is allowed to use them; otherwise the pull is
 * anonymous. Every read of an image, by tag or by digest, is authorized by the upstream (a HEAD of
 * the manifest, anonymous first unless the image is known to be private) unless the image was public
 * upstream, in which case a pinned digest is served from the store without asking. While the
 * upstream is unreachable, a cached image is served if it was public, or if the upstream authorized
 * this namespace for it before and the credentials are still available to the namespace.
 * Bytes are stored once by digest, but a reference of (host, repository) is served only what was
 * fetched from that repository (upstream_links): naming a digest on another host proves nothing.
 */
import type { Env } from "../env";
import { getBlobBytes, putBlobVerified, statBlob } from "../storage/blobs";
import {
  isUpstreamLinked, lastResolution, linkUpstream, recordResolution, recordUpstreamImageAccess, recordUpstreamManifest,
  revokeUpstreamImageGrant, upstreamEntry, upstreamImageAccess, upstreamManifest,
} from "../storage/upstreams";
import { RegistryClient, UpstreamError, type FetchLike } from "./client";
import { digestOf } from "../oci/digest";
import { formatPlatform, selectManifest, type IndexEntry, type Platform } from "../oci/platform";
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

function bytesStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({ start(c) { c.enqueue(bytes); c.close(); } });
}

async function readStoredBytes(env: Env, digest: string): Promise<Uint8Array | null> {
  return await getBlobBytes(env, digest);
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
  /** The namespace the pull acts for (the build's cache scope): it picks the credentials. */
  namespace: string;
  fetch?: FetchLike;
  /** Called with progress lines for the build log. */
  log?: (line: string) => void;
  /** Resolve and fetch manifest and config only (e.g. to read ONBUILD triggers when a build starts). */
  skipLayers?: boolean;
}

/** One pull's view of an upstream repository: who asks, and with which clients. */
interface Source {
  host: string;
  repository: string;
  namespace: string;
  anonymous: RegistryClient;
  /** The entry's credentials, when the namespace may use them. */
  credentialed: RegistryClient | null;
  /** The entry has credentials that the namespace may not use. */
  withheld: boolean;
}

/** How an image was authorized: its digest, and whether the upstream served it without credentials. */
interface Authorized {
  digest: string;
  public: boolean;
}

export class Puller {
  fetched = 0;

  constructor(private readonly env: Env, private readonly opts: PullOptions) {}

  /** The client manifests and blobs are fetched with: the namespace's credentials (rate limits) if any. */
  private fetcher(src: Source): RegistryClient {
    return src.credentialed ?? src.anonymous;
  }

  private async source(ref: ImageReference): Promise<Source> {
    const entry = await upstreamEntry(this.env, ref.registry);
    const ns = this.opts.namespace;
    const hasCredentials = entry.endpoint.username !== undefined && entry.endpoint.password !== undefined;
    const allowed = entry.namespaces === null || entry.namespaces.includes(ns);
    return {
      host: ref.registry,
      repository: ref.repository,
      namespace: ns,
      anonymous: new RegistryClient({ ...entry.endpoint, username: undefined, password: undefined }, this.opts.fetch),
      credentialed: hasCredentials && allowed ? new RegistryClient(entry.endpoint, this.opts.fetch) : null,
      withheld: hasCredentials && !allowed,
    };
  }

  private async manifest(src: Source, digest: string): Promise<{ bytes: Uint8Array; mediaType: string }> {
    const known = await upstreamManifest(this.env, digest);
    if (known && (await isUpstreamLinked(this.env, src.host, src.repository, digest))) {
      const bytes = await readStoredBytes(this.env, digest);
      if (bytes) return { bytes, mediaType: known.mediaType };
    }
    const client = this.fetcher(src);
    const got = await client.getManifest(src.repository, digest);
    this.fetched++;
    const actual = await digestOf(got.bytes);
    if (actual !== digest) throw new UpstreamError("bad-response", `${client.upstream.host}/${src.repository}@${digest}: manifest content hashes to ${actual}`);
    const mediaType = detectMediaType(got.bytes, got.mediaType);
    await this.storeManifest(src, digest, got.bytes, mediaType);
    return { bytes: got.bytes, mediaType };
  }

  private async storeManifest(src: Source, digest: string, bytes: Uint8Array, mediaType: string): Promise<void> {
    await putBlobVerified(this.env, bytesStream(bytes), digest, bytes.byteLength);
    await recordUpstreamManifest(this.env, digest, mediaType, bytes.byteLength);
    await linkUpstream(this.env, src.host, src.repository, digest);
  }

  private async blob(src: Source, desc: Descriptor): Promise<void> {
    if ((await statBlob(this.env, desc.digest)) && (await isUpstreamLinked(this.env, src.host, src.repository, desc.digest))) return;
    this.opts.log?.(`pulling ${desc.digest.slice(0, 19)} (${desc.size} bytes) from ${src.host}/${src.repository}`);
    const { body } = await this.fetcher(src).getBlob(src.repository, desc.digest);
    this.fetched++;
    await putBlobVerified(this.env, body, desc.digest, desc.size);
    await linkUpstream(this.env, src.host, src.repository, desc.digest);
  }

  /**
   * HEAD of the manifest `target` (tag or digest): anonymously first (which tells a public image),
   * then with the namespace's credentials; only with them when the image is known to be private.
   */
  private async head(src: Source, ref: ImageReference, target: string, knownPrivate: boolean): Promise<{ head: NonNullable<Awaited<ReturnType<RegistryClient["headManifest"]>>>; client: RegistryClient }> {
    const attempts = src.credentialed ? (knownPrivate ? [src.credentialed] : [src.anonymous, src.credentialed]) : [src.anonymous];
    for (const [i, client] of attempts.entries()) {
      const last = i === attempts.length - 1;
      let head: Awaited<ReturnType<RegistryClient["headManifest"]>>;
      try {
        head = await client.headManifest(src.repository, target);
      } catch (err) {
        // anonymous refusals (401, 403, rate limits) go on to the credentials; unreachable is final
        if (err instanceof UpstreamError && err.kind !== "unreachable" && !last) continue;
        if (err instanceof UpstreamError && src.withheld && (err.kind === "unauthorized" || err.status === 403)) throw this.withheldError(src, ref, err.status);
        throw err;
      }
      if (head) return { head, client };
      if (last) {
        if (src.withheld) throw this.withheldError(src, ref, 404);
        throw new UpstreamError("not-found", `${formatReference(ref)}: not found on ${src.host}`, 404);
      }
    }
    throw new Error("unreachable: no client to ask");
  }

  private withheldError(src: Source, ref: ImageReference, status?: number): UpstreamError {
    const anonymously = status === 404 ? `not found on ${src.host} without credentials` : `${src.host} refuses anonymous pulls of it`;
    return new UpstreamError(
      "unauthorized",
      `unauthorized: ${formatReference(ref)}: ${anonymously}, and the credentials for ${src.host} are not available to namespace ${src.namespace}`,
      status,
    );
  }

  /**
   * Resolves `ref` to a digest and authorizes this namespace to read it. A pinned digest of an image
   * that was public upstream needs no request; anything else asks the upstream with a HEAD (GET when
   * a tag's HEAD gives no digest).
   */
  private async authorize(src: Source, ref: ImageReference): Promise<Authorized> {
    const target = ref.digest ?? referenceTarget(ref);
    const known = ref.digest ?? (await lastResolution(this.env, src.host, src.repository, target));
    const access = known ? await upstreamImageAccess(this.env, src.host, src.repository, known) : null;
    if (ref.digest && access?.public === true) return { digest: ref.digest, public: true };
    let asked: Awaited<ReturnType<Puller["head"]>>;
    try {
      asked = await this.head(src, ref, target, access?.public === false);
    } catch (err) {
      if (err instanceof UpstreamError && err.kind === "unreachable" && known && access) return this.offline(src, ref, known, access, err);
      if (err instanceof UpstreamError && err.kind === "unauthorized" && known && src.credentialed) {
        await revokeUpstreamImageGrant(this.env, src.host, src.repository, known, src.namespace);
      }
      throw err;
    }
    const isPublic = asked.client === src.anonymous;
    let digest = ref.digest ?? asked.head.digest;
    if (!digest || !/^sha256:[a-f0-9]{64}$/.test(digest)) {
      const got = await asked.client.getManifest(src.repository, target);
      this.fetched++;
      digest = await digestOf(got.bytes);
      await this.storeManifest(src, digest, got.bytes, detectMediaType(got.bytes, got.mediaType));
    }
    if (!ref.digest) await recordResolution(this.env, src.host, src.repository, target, digest);
    await recordUpstreamImageAccess(this.env, src.host, src.repository, digest, { public: isPublic, namespace: src.namespace });
    return { digest, public: isPublic };
  }

  /** The upstream is unreachable: a cached image that was public, or that this namespace was let in to. */
  private offline(src: Source, ref: ImageReference, digest: string, access: { public: boolean | null; namespaces: string[] }, cause: UpstreamError): Authorized {
    if (access.public === true) {
      this.opts.log?.(`${src.host} unreachable; using ${ref.digest ? "the stored image" : "the last resolution"} of ${formatReference(ref)}: ${digest} (public upstream)`);
      return { digest, public: true };
    }
    if (access.namespaces.includes(src.namespace) && src.credentialed) {
      this.opts.log?.(`${src.host} unreachable; using ${ref.digest ? "the stored image" : "the last resolution"} of ${formatReference(ref)}: ${digest} (authorized for namespace ${src.namespace} before)`);
      return { digest, public: false };
    }
    throw new UpstreamError(
      "unauthorized",
      `unauthorized: ${cause.message}; ${formatReference(ref)} is not public there and namespace ${src.namespace} was never authorized for it, so kiln's copy cannot be used`,
    );
  }

  async pull(reference: string, platform: Platform): Promise<PulledImage> {
    const ref = parseReference(reference);
    const src = await this.source(ref);
    const { digest: resolvedDigest } = await this.authorize(src, ref);
    let digest = resolvedDigest;
    let { bytes, mediaType } = await this.manifest(src, digest);
    if (INDEX_TYPES.has(mediaType)) {
      const index = JSON.parse(new TextDecoder().decode(bytes)) as { manifests?: IndexEntry[] };
      const entry = selectManifest(index.manifests ?? [], platform);
      if (!entry) {
        const have = (index.manifests ?? []).filter((m) => m.platform && m.platform.os !== "unknown").map((m) => formatPlatform(m.platform!)).join(", ");
        throw new UpstreamError("not-found", `${formatReference(ref)}: no image for platform ${formatPlatform(platform)} (available: ${have || "none"})`);
      }
      digest = entry.digest;
      ({ bytes, mediaType } = await this.manifest(src, digest));
      if (INDEX_TYPES.has(mediaType)) throw new UpstreamError("bad-response", `${formatReference(ref)}: nested index is not supported`);
    }
    const manifest = JSON.parse(new TextDecoder().decode(bytes)) as { config?: Descriptor; layers?: Descriptor[]; schemaVersion?: number };
    if (!manifest.config || !Array.isArray(manifest.layers)) {
      throw new UpstreamError("bad-response", `${formatReference(ref)}: unsupported manifest ${mediaType || "(no media type)"}${manifest.schemaVersion === 1 ? " (Docker schema 1 is not supported)" : ""}`);
    }
    await this.blob(src, manifest.config);
    const configBytes = await readStoredBytes(this.env, manifest.config.digest);
    if (!configBytes) throw new Error(`config ${manifest.config.digest} vanished from storage`);
    if (!this.opts.skipLayers) for (const layer of manifest.layers) await this.blob(src, layer);
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

/**
 * Pulls `reference` for `platform` into kiln's storage (once per digest and upstream repository) and
 * describes the image, acting for `opts.namespace`.
 */
export async function pullImage(env: Env, reference: string, platform: Platform, opts: PullOptions): Promise<PulledImage> {
  return new Puller(env, opts).pull(reference, platform);
}
