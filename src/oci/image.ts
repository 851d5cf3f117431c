/**
 * Image config, manifest and index types with pure builders (go-containerregistry style: an image is
 * made by appending to a base, never edited in place; every builder returns a new value).
 */
import { digestOf } from "./digest";
import { MediaType } from "./mediatypes";

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
  features?: string[];
}

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

export class ImageFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageFormatError";
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
 * dropped. docker and BuildKit do not sort keys (Go marshals struct fields in declaration order), so
 * kiln's digests will not equal theirs for the same content; what matters is that the same build
 * always yields the same bytes, hence the same digest.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(v: unknown): unknown {
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
