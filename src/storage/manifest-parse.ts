/** Validation of pushed manifests: what a registry must check before storing one. */
import { OciError } from "../errors";
import { isDigest } from "../oci/digest";

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const SCHEMA1 = ["application/vnd.docker.distribution.manifest.v1+json", "application/vnd.docker.distribution.manifest.v1+prettyjws"];
const IMAGE_TYPES = [OCI_MANIFEST, DOCKER_MANIFEST];
const INDEX_TYPES = [OCI_INDEX, DOCKER_MANIFEST_LIST];

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface ParsedManifest {
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

function invalid(message: string, detail: unknown = null): OciError {
  return new OciError("MANIFEST_INVALID", message, { detail });
}

function descriptor(v: unknown, where: string): Descriptor {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw invalid(`${where}: not a descriptor`);
  const o = v as Record<string, unknown>;
  if (typeof o.mediaType !== "string" || o.mediaType === "") throw invalid(`${where}: mediaType missing`);
  if (typeof o.digest !== "string" || !isDigest(o.digest)) throw invalid(`${where}: invalid digest`, { digest: o.digest });
  if (typeof o.size !== "number" || !Number.isSafeInteger(o.size) || o.size < 0) throw invalid(`${where}: invalid size`);
  if (o.urls !== undefined && (!Array.isArray(o.urls) || o.urls.some((u) => typeof u !== "string"))) throw invalid(`${where}: invalid urls`);
  return o as unknown as Descriptor;
}

function annotations(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!v || typeof v !== "object" || Array.isArray(v) || Object.values(v).some((x) => typeof x !== "string")) {
    throw invalid(`${where}: annotations must map strings to strings`);
  }
  return v as Record<string, string>;
}

/** The media type without parameters, lower case; "" when absent. */
function bareType(ct: string | null | undefined): string {
  return (ct ?? "").split(";")[0].trim().toLowerCase();
}

/**
 * Parses and validates `bytes` pushed with Content-Type `contentType`. As in distribution, the
 * Content-Type names the manifest's media type: it must be a manifest type kiln stores (anything
 * else, `text/plain` or `application/json` included, is MANIFEST_INVALID) and the body's
 * `mediaType`, when present, must be the same.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | null | undefined): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    throw invalid("manifest is not valid JSON");
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw invalid("manifest is not a JSON object");
  const m = doc as Record<string, unknown>;
  const header = bareType(contentType);
  if (m.mediaType !== undefined && typeof m.mediaType !== "string") throw invalid("mediaType must be a string");
  const bodyType = m.mediaType as string | undefined;
  if (SCHEMA1.includes(header) || (bodyType !== undefined && SCHEMA1.includes(bodyType))) {
    throw invalid("Docker schema 1 manifests are not supported; push schema 2 or OCI");
  }
  if (![...IMAGE_TYPES, ...INDEX_TYPES].includes(header)) {
    throw invalid(header
      ? `Content-Type ${header} is not a manifest media type (want one of ${[...IMAGE_TYPES, ...INDEX_TYPES].join(", ")})`
      : `a manifest needs a Content-Type (one of ${[...IMAGE_TYPES, ...INDEX_TYPES].join(", ")})`, { contentType: header });
  }
  const mediaType = header;
  if (bodyType !== undefined && bodyType !== header) {
    throw invalid(`mediaType ${bodyType} does not match Content-Type ${header}`);
  }
  if (m.schemaVersion !== 2) throw invalid("schemaVersion must be 2");
  if (m.artifactType !== undefined && (typeof m.artifactType !== "string" || m.artifactType === "")) {
    throw invalid("artifactType must be a non-empty string");
  }
  const parsed: ParsedManifest = {
    mediaType,
    blobs: [],
    children: [],
    sizes: new Map(),
    annotations: annotations(m.annotations, "manifest"),
    artifactType: m.artifactType as string | undefined,
  };
  if (m.subject !== undefined) parsed.subject = descriptor(m.subject, "subject").digest;

  const sized = (d: Descriptor, where: string) => {
    const seen = parsed.sizes.get(d.digest);
    if (seen !== undefined && seen !== d.size) throw invalid(`${where}: ${d.digest} is declared with sizes ${seen} and ${d.size}`, { digest: d.digest });
    parsed.sizes.set(d.digest, d.size);
  };
  if (IMAGE_TYPES.includes(mediaType)) {
    const config = descriptor(m.config, "config");
    parsed.blobs.push(config.digest);
    sized(config, "config");
    if (!Array.isArray(m.layers)) throw invalid("layers must be an array");
    m.layers.forEach((l, i) => {
      const layer = descriptor(l, `layers[${i}]`);
      annotations(layer.annotations, `layers[${i}]`);
      // Foreign / non-distributable layers with URLs live elsewhere by design.
      const external = layer.urls && layer.urls.length > 0 && /foreign|nondistributable/.test(layer.mediaType);
      if (!external) {
        parsed.blobs.push(layer.digest);
        sized(layer, `layers[${i}]`);
      }
    });
    parsed.artifactType ??= config.mediaType;
  } else {
    if (!Array.isArray(m.manifests)) throw invalid("manifests must be an array");
    m.manifests.forEach((c, i) => {
      const child = descriptor(c, `manifests[${i}]`);
      annotations(child.annotations, `manifests[${i}]`);
      parsed.children.push(child.digest);
      sized(child, `manifests[${i}]`);
    });
  }
  parsed.blobs = [...new Set(parsed.blobs)];
  parsed.children = [...new Set(parsed.children)];
  return parsed;
}
