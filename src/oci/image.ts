/**
 * Image config, manifest and index types with pure builders (go-containerregistry style: an image is
 * made by appending to a base, never edited in place; every builder returns a new value).
 */
import { digestOf, isDigest } from "./digest";
import { isImageManifest, isIndex, isManifestType, MediaType } from "./mediatypes";
import type { Platform } from "./platform";

export type { Platform } from "./platform";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  data?: string;
  platform?: Platform;
  artifactType?: string;
}

export interface HealthConfig {
  Test?: string[];
  Interval?: number; // nanoseconds
  Timeout?: number;
  StartPeriod?: number;
  StartInterval?: number;
  Retries?: number;
}

/** The runtime part of the image config (docker spells these in PascalCase). */
export interface ContainerConfig {
  User?: string;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Volumes?: Record<string, Record<string, never>>;
  Labels?: Record<string, string>;
  StopSignal?: string;
  Healthcheck?: HealthConfig;
  Shell?: string[];
  OnBuild?: string[] | null;
  ArgsEscaped?: boolean;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
  config: ContainerConfig;
  rootfs: { type: "layers"; diff_ids: string[] };
  history: HistoryEntry[];
  /** Unknown fields of a parsed config are kept so re-serialising does not lose them. */
  [extra: string]: unknown;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** A config, manifest or index that is not well formed; `detail` says which value (the registry's error detail). */
export class ImageFormatError extends Error {
  readonly detail: unknown;
  constructor(message: string, detail: unknown = null) {
    super(message);
    this.name = "ImageFormatError";
    this.detail = detail;
  }
}

/** RFC 3339 time (UTC, no fractional seconds) of a unix timestamp in seconds, as docker writes it. */
export function rfc3339(epochSeconds: number): string {
  return new Date(Math.floor(epochSeconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** A config with no layers, for `FROM scratch`. */
export function emptyConfig(platform: { os: string; architecture: string; variant?: string }): ImageConfig {
  const c: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    config: {},
    rootfs: { type: "layers", diff_ids: [] },
    history: [],
  };
  if (platform.variant) c.variant = platform.variant;
  return c;
}

/** A new config with one more layer (diffID) and its history entry. */
export function appendLayer(
  config: ImageConfig,
  layer: { diffId: string; history: Omit<HistoryEntry, "empty_layer"> },
): ImageConfig {
  const history = { ...layer.history };
  return {
    ...config,
    rootfs: { type: "layers", diff_ids: [...(config.rootfs?.diff_ids ?? []), layer.diffId] },
    history: [...(config.history ?? []), history],
  };
}

/** A new config with one more history entry; `emptyLayer` for steps that change only metadata. */
export function appendHistory(
  config: ImageConfig,
  entry: { createdBy: string; emptyLayer: boolean; created?: string; comment?: string; author?: string },
): ImageConfig {
  const h: HistoryEntry = {};
  if (entry.created !== undefined) h.created = entry.created;
  if (entry.author !== undefined) h.author = entry.author;
  h.created_by = entry.createdBy;
  if (entry.comment !== undefined) h.comment = entry.comment;
  if (entry.emptyLayer) h.empty_layer = true;
  return { ...config, history: [...(config.history ?? []), h] };
}

/** A new config whose runtime config is changed by `change` (which receives a copy). */
export function withContainerConfig(config: ImageConfig, change: (c: ContainerConfig) => ContainerConfig): ImageConfig {
  return { ...config, config: change(structuredClone(config.config ?? {})) };
}

/** An OCI image manifest for a config and its layers (bottom first). */
export function buildManifest(
  configDesc: Descriptor,
  layerDescs: Descriptor[],
  annotations?: Record<string, string>,
): ImageManifest {
  const m: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: stripDescriptor(configDesc),
    layers: layerDescs.map(stripDescriptor),
  };
  if (annotations && Object.keys(annotations).length > 0) m.annotations = { ...annotations };
  return m;
}

/** An OCI image index over manifests (each descriptor should carry its platform). */
export function buildIndex(manifests: Descriptor[], annotations?: Record<string, string>): ImageIndex {
  const idx: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: manifests.map(stripDescriptor),
  };
  if (annotations && Object.keys(annotations).length > 0) idx.annotations = { ...annotations };
  return idx;
}

function stripDescriptor(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.urls?.length) out.urls = [...d.urls];
  if (d.annotations && Object.keys(d.annotations).length) out.annotations = { ...d.annotations };
  if (d.data !== undefined) out.data = d.data;
  if (d.platform) out.platform = { ...d.platform };
  if (d.artifactType !== undefined) out.artifactType = d.artifactType;
  return out;
}

/**
 * Deterministic JSON: object keys sorted (by UTF-16 code unit), no whitespace, `undefined` members
 * dropped; Maps are written as objects, Sets as arrays, bigints as strings; a non-finite number is
 * refused (JSON cannot say it). Used for configs, manifests and indexes, and for cache keys. docker and BuildKit do not sort keys (Go marshals struct fields in declaration order), so
 * kiln's digests will not equal theirs for the same content; what matters is that the same build
 * always yields the same bytes, hence the same digest.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
  if (typeof v === "number" && !Number.isFinite(v)) throw new Error("canonical JSON: non-finite number");
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Map) return sortKeys(Object.fromEntries(v));
  if (v instanceof Set) return sortKeys([...v]);
  if (Array.isArray(v)) return v.map((x) => (x === undefined ? null : sortKeys(x)));
  if (v !== null && typeof v === "object") {
    if (typeof (v as { toJSON?: unknown }).toJSON === "function") return sortKeys((v as { toJSON(): unknown }).toJSON());
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = (v as Record<string, unknown>)[k];
      if (x !== undefined && typeof x !== "function") out[k] = sortKeys(x);
    }
    return out;
  }
  return v;
}

const encoder = new TextEncoder();

/** Canonical JSON as UTF-8 bytes (what gets hashed and stored). */
export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(canonicalJson(value));
}

/** Encodes a config, manifest or index and describes it: the bytes to store and their descriptor. */
export async function describeJson(value: unknown, mediaType: string): Promise<{ bytes: Uint8Array; descriptor: Descriptor }> {
  const bytes = encodeJson(value);
  return { bytes, descriptor: { mediaType, digest: await digestOf(bytes), size: bytes.length } };
}

function decodeJson(bytes: Uint8Array | string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(typeof bytes === "string" ? bytes : new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch (e) {
    throw new ImageFormatError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new ImageFormatError(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

/** Parses an OCI or Docker image config, filling absent optional parts with empty values. */
export function parseImageConfig(bytes: Uint8Array | string): ImageConfig {
  const v = decodeJson(bytes, "image config");
  if (typeof v.architecture !== "string" || typeof v.os !== "string") {
    throw new ImageFormatError("image config lacks architecture or os");
  }
  const rootfs = (v.rootfs ?? {}) as { type?: unknown; diff_ids?: unknown };
  const diffIds = rootfs.diff_ids ?? [];
  if (!Array.isArray(diffIds) || diffIds.some((d) => typeof d !== "string")) {
    throw new ImageFormatError("image config rootfs.diff_ids must be an array of digests");
  }
  const history = v.history ?? [];
  if (!Array.isArray(history)) throw new ImageFormatError("image config history must be an array");
  const config = v.config ?? {};
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new ImageFormatError("image config 'config' must be an object");
  }
  return {
    ...v,
    architecture: v.architecture,
    os: v.os,
    config: config as ContainerConfig,
    rootfs: { type: "layers", diff_ids: diffIds as string[] },
    history: history as HistoryEntry[],
  };
}

function checkDescriptor(d: unknown, where: string): Descriptor {
  if (d === null || typeof d !== "object") throw new ImageFormatError(`${where} must be a descriptor object`);
  const x = d as Record<string, unknown>;
  if (typeof x.mediaType !== "string") throw new ImageFormatError(`${where}.mediaType missing`);
  if (typeof x.digest !== "string" || !/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(x.digest)) {
    throw new ImageFormatError(`${where}.digest invalid`);
  }
  if (typeof x.size !== "number" || !Number.isSafeInteger(x.size) || x.size < 0) {
    throw new ImageFormatError(`${where}.size invalid`);
  }
  return x as unknown as Descriptor;
}

/**
 * Parses an image manifest or index (OCI or Docker schema 2). `mediaType` (e.g. the Content-Type it
 * was pushed with) is used when the document has no mediaType field. Schema 1 is refused.
 */
export function parseManifest(bytes: Uint8Array | string, mediaType?: string): ImageManifest | ImageIndex {
  const v = decodeJson(bytes, "manifest");
  if (v.schemaVersion !== 2) throw new ImageFormatError(`unsupported manifest schemaVersion ${JSON.stringify(v.schemaVersion)}`);
  const mt = typeof v.mediaType === "string" ? v.mediaType : mediaType;
  if (typeof v.mediaType === "string" && mediaType && mediaType !== v.mediaType && !mediaType.startsWith("application/json")) {
    throw new ImageFormatError(`manifest mediaType ${v.mediaType} does not match ${mediaType}`);
  }
  const isIdx = mt === MediaType.OciIndex || mt === MediaType.DockerManifestList || (mt === undefined && Array.isArray(v.manifests));
  if (isIdx) {
    if (!Array.isArray(v.manifests)) throw new ImageFormatError("index lacks manifests");
    v.manifests.forEach((d, i) => checkDescriptor(d, `manifests[${i}]`));
    if (v.subject !== undefined) checkDescriptor(v.subject, "subject");
    return { ...v, mediaType: mt ?? MediaType.OciIndex } as unknown as ImageIndex;
  }
  if (mt !== undefined && mt !== MediaType.OciManifest && mt !== MediaType.DockerManifest) {
    throw new ImageFormatError(`unsupported manifest media type ${mt}`);
  }
  checkDescriptor(v.config, "config");
  if (!Array.isArray(v.layers)) throw new ImageFormatError("manifest lacks layers");
  v.layers.forEach((d, i) => checkDescriptor(d, `layers[${i}]`));
  if (v.subject !== undefined) checkDescriptor(v.subject, "subject");
  return { ...v, mediaType: mt ?? MediaType.OciManifest } as unknown as ImageManifest;
}

export function isIndexDocument(m: ImageManifest | ImageIndex): m is ImageIndex {
  return Array.isArray((m as ImageIndex).manifests);
}

/** What a registry must check before storing a pushed manifest: the blobs and manifests it references. */
export interface ManifestReferences {
  mediaType: string;
  /** Blobs (config, layers) that must be in the repository. */
  blobs: string[];
  /** Manifests (index entries) that must be in the repository. */
  children: string[];
  /** The size every referenced blob and child manifest is declared with (the stored one must agree). */
  sizes: Map<string, number>;
  subject?: string;
  /** The artifactType a referrers list reports: `artifactType`, else (image manifest) config.mediaType. */
  artifactType?: string;
  annotations?: Record<string, string>;
}

const SCHEMA1: string[] = [MediaType.DockerManifestV1, MediaType.DockerManifestV1Signed];
const MANIFEST_TYPES = [MediaType.OciManifest, MediaType.DockerManifest, MediaType.OciIndex, MediaType.DockerManifestList].join(", ");

/** A descriptor as a registry accepts it: a sha256/sha512 digest, optional string urls. */
function pushedDescriptor(v: unknown, where: string): Descriptor {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new ImageFormatError(`${where}: not a descriptor`);
  const o = v as Record<string, unknown>;
  if (typeof o.mediaType !== "string" || o.mediaType === "") throw new ImageFormatError(`${where}: mediaType missing`);
  if (!isDigest(o.digest)) throw new ImageFormatError(`${where}: invalid digest`, { digest: o.digest });
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) throw new ImageFormatError(`${where}: invalid size`);
  if (o.urls !== undefined && (!Array.isArray(o.urls) || o.urls.some((u) => typeof u !== "string"))) throw new ImageFormatError(`${where}: invalid urls`);
  return o as unknown as Descriptor;
}

function pushedAnnotations(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!v || typeof v !== "object" || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string")) {
    throw new ImageFormatError(`${where}: annotations must map strings to strings`);
  }
  return v as Record<string, string>;
}

/** The media type without parameters, lower case; "" when absent. */
function bareType(ct: string | null | undefined): string {
  return (ct ?? "").split(";")[0].trim().toLowerCase();
}

/**
 * Validates a pushed manifest or index, `bytes` sent with Content-Type `contentType`, and lists what
 * it references; throws ImageFormatError (the registry's MANIFEST_INVALID). As in distribution, the
 * Content-Type names the manifest's media type: it must be a manifest type kiln stores (anything
 * else, `text/plain` or `application/json` included, is refused) and the body's `mediaType`, when
 * present, must be the same.
 */
export function manifestReferences(bytes: Uint8Array, contentType: string | null | undefined): ManifestReferences {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    throw new ImageFormatError("manifest is not valid JSON");
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new ImageFormatError("manifest is not a JSON object");
  const m = doc as Record<string, unknown>;
  const header = bareType(contentType);
  if (m.mediaType !== undefined && typeof m.mediaType !== "string") throw new ImageFormatError("mediaType must be a string");
  const bodyType = m.mediaType as string | undefined;
  if (SCHEMA1.includes(header) || (bodyType !== undefined && SCHEMA1.includes(bodyType))) {
    throw new ImageFormatError("Docker schema 1 manifests are not supported; push schema 2 or OCI");
  }
  if (!isManifestType(header)) {
    throw new ImageFormatError(header
      ? `Content-Type ${header} is not a manifest media type (want one of ${MANIFEST_TYPES})`
      : `a manifest needs a Content-Type (one of ${MANIFEST_TYPES})`, { contentType: header });
  }
  const mediaType = header;
  if (bodyType !== undefined && bodyType !== header) {
    throw new ImageFormatError(`mediaType ${bodyType} does not match Content-Type ${header}`);
  }
  if (m.schemaVersion !== 2) throw new ImageFormatError("schemaVersion must be 2");
  if (m.artifactType !== undefined && (typeof m.artifactType !== "string" || m.artifactType === "")) {
    throw new ImageFormatError("artifactType must be a non-empty string");
  }
  const parsed: ManifestReferences = {
    mediaType,
    blobs: [],
    children: [],
    sizes: new Map(),
    annotations: pushedAnnotations(m.annotations, "manifest"),
    artifactType: m.artifactType as string | undefined,
  };
  if (m.subject !== undefined) parsed.subject = pushedDescriptor(m.subject, "subject").digest;

  const sized = (d: Descriptor, where: string) => {
    const seen = parsed.sizes.get(d.digest);
    if (seen !== undefined && seen !== d.size) throw new ImageFormatError(`${where}: ${d.digest} is declared with sizes ${seen} and ${d.size}`, { digest: d.digest });
    parsed.sizes.set(d.digest, d.size);
  };
  if (isImageManifest(mediaType)) {
    const config = pushedDescriptor(m.config, "config");
    parsed.blobs.push(config.digest);
    sized(config, "config");
    if (!Array.isArray(m.layers)) throw new ImageFormatError("layers must be an array");
    m.layers.forEach((l, i) => {
      const layer = pushedDescriptor(l, `layers[${i}]`);
      pushedAnnotations(layer.annotations, `layers[${i}]`);
      // Foreign / non-distributable layers with URLs live elsewhere by design.
      const external = layer.urls && layer.urls.length > 0 && /foreign|nondistributable/.test(layer.mediaType);
      if (!external) {
        parsed.blobs.push(layer.digest);
        sized(layer, `layers[${i}]`);
      }
    });
    parsed.artifactType ??= config.mediaType;
  } else if (isIndex(mediaType)) {
    if (!Array.isArray(m.manifests)) throw new ImageFormatError("manifests must be an array");
    m.manifests.forEach((c, i) => {
      const child = pushedDescriptor(c, `manifests[${i}]`);
      pushedAnnotations(child.annotations, `manifests[${i}]`);
      parsed.children.push(child.digest);
      sized(child, `manifests[${i}]`);
    });
  }
  parsed.blobs = [...new Set(parsed.blobs)];
  parsed.children = [...new Set(parsed.children)];
  return parsed;
}
