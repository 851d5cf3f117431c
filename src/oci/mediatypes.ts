/** OCI image-spec and Docker distribution media types. */

export const MediaType = {
  // OCI image spec v1.1
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayerNondistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  OciLayerNondistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  OciLayerNondistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  OciEmpty: "application/vnd.oci.empty.v1+json",
  // Docker image manifest v2 schema 2
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  DockerLayerZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  DockerPluginConfig: "application/vnd.docker.plugin.v1+json",
  // Docker schema 1 (recognised only to refuse it clearly)
  DockerManifestV1: "application/vnd.docker.distribution.manifest.v1+json",
  DockerManifestV1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

export type MediaTypeValue = (typeof MediaType)[keyof typeof MediaType];

/** The OCI empty descriptor's content (`{}`), its digest and size. */
export const EMPTY_JSON = {
  mediaType: MediaType.OciEmpty,
  digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
  size: 2,
  data: "e30=",
} as const;

/** Media types accepted as single-image manifests. */
export function isImageManifest(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

/** Media types accepted as multi-platform indexes. */
export function isIndex(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

export function isManifestType(mt: string | undefined): boolean {
  return isImageManifest(mt) || isIndex(mt);
}

export function isConfigType(mt: string | undefined): boolean {
  return mt === MediaType.OciConfig || mt === MediaType.DockerConfig;
}

export type LayerCompression = "none" | "gzip" | "zstd";

/** The compression of a layer media type, or undefined when `mt` is not a layer type. */
export function layerCompression(mt: string): LayerCompression | undefined {
  switch (mt) {
    case MediaType.OciLayer:
    case MediaType.OciLayerNondistributable:
      return "none";
    case MediaType.OciLayerGzip:
    case MediaType.OciLayerNondistributableGzip:
    case MediaType.DockerLayerGzip:
    case MediaType.DockerLayerForeignGzip:
      return "gzip";
    case MediaType.OciLayerZstd:
    case MediaType.OciLayerNondistributableZstd:
    case MediaType.DockerLayerZstd:
      return "zstd";
  }
  return undefined;
}

export function isLayerType(mt: string): boolean {
  return layerCompression(mt) !== undefined;
}

/** Nondistributable ("foreign") layers are not pushed; clients fetch them from their `urls`. */
export function isNondistributable(mt: string): boolean {
  return mt.startsWith("application/vnd.oci.image.layer.nondistributable.") || mt === MediaType.DockerLayerForeignGzip;
}
