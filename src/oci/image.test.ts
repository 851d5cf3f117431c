import { describe, expect, it } from "vitest";
import { digestOf } from "./digest";
import {
  appendHistory, appendLayer, buildIndex, buildManifest, canonicalJson, describeJson, emptyConfig, encodeJson, ImageFormatError,
  isIndexDocument, manifestReferences, parseImageConfig, parseManifest, rfc3339, withContainerConfig, type ImageConfig,
} from "./image";
import { EMPTY_JSON, MediaType } from "./mediatypes";

const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;

describe("canonicalJson", () => {
  it("writes Maps as objects, Sets as arrays and bigints as strings, and refuses non-finite numbers", () => {
    expect(canonicalJson({ m: new Map<string, unknown>([["b", 1], ["a", new Set([2, 1])]]), n: 10n })).toBe('{"m":{"a":[2,1],"b":1},"n":"10"}');
    expect(() => canonicalJson({ x: NaN })).toThrow(/non-finite/);
    expect(() => canonicalJson([Infinity])).toThrow(/non-finite/);
  });
  it("sorts keys at every depth, drops undefined, keeps array order, has no whitespace", () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { z: 1, y: undefined, x: 2 }], c: "é" }, u: undefined })).toBe('{"a":{"c":"é","d":[3,{"x":2,"z":1}]},"b":1}');
  });
  it("gives the same bytes and digest whatever the key insertion order", async () => {
    const a = encodeJson({ os: "linux", architecture: "amd64", config: { Env: ["A=1"], Cmd: ["sh"] } });
    const b = encodeJson({ config: { Cmd: ["sh"], Env: ["A=1"] }, architecture: "amd64", os: "linux" });
    expect(await digestOf(a)).toBe(await digestOf(b));
  });
  it("encodes the OCI empty descriptor content as {}", async () => {
    expect(await digestOf(encodeJson({}))).toBe(EMPTY_JSON.digest);
  });
});

describe("image builders", () => {
  const base = emptyConfig({ os: "linux", architecture: "arm64", variant: "v8" });

  it("append layers and history without touching the base", () => {
    const withLayer = appendLayer(base, { diffId: D1, history: { created: rfc3339(0), created_by: "COPY . /app # buildkit" } });
    const withEnv = appendHistory(
      withContainerConfig(withLayer, (c) => ({ ...c, Env: ["PATH=/usr/bin"] })),
      { createdBy: "ENV PATH=/usr/bin", emptyLayer: true, created: rfc3339(0) },
    );
    expect(base.rootfs.diff_ids).toEqual([]);
    expect(base.history).toEqual([]);
    expect(base.config).toEqual({});
    expect(withLayer.config).toEqual({});
    expect(withEnv).toMatchObject({
      architecture: "arm64", os: "linux", variant: "v8",
      config: { Env: ["PATH=/usr/bin"] },
      rootfs: { type: "layers", diff_ids: [D1] },
      history: [
        { created: "1970-01-01T00:00:00Z", created_by: "COPY . /app # buildkit" },
        { created: "1970-01-01T00:00:00Z", created_by: "ENV PATH=/usr/bin", empty_layer: true },
      ],
    });
    expect(withEnv.history[0]).not.toHaveProperty("empty_layer");
  });

  it("builds an OCI manifest and index", async () => {
    const cfg = encodeJson(base);
    const m = buildManifest(
      { mediaType: MediaType.OciConfig, digest: await digestOf(cfg), size: cfg.length },
      [{ mediaType: MediaType.OciLayerGzip, digest: D1, size: 10 }, { mediaType: MediaType.OciLayerGzip, digest: D2, size: 20 }],
      { "org.opencontainers.image.created": "1970-01-01T00:00:00Z" },
    );
    expect(m).toEqual({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: await digestOf(cfg), size: cfg.length },
      layers: [{ mediaType: MediaType.OciLayerGzip, digest: D1, size: 10 }, { mediaType: MediaType.OciLayerGzip, digest: D2, size: 20 }],
      annotations: { "org.opencontainers.image.created": "1970-01-01T00:00:00Z" },
    });
    expect(parseManifest(encodeJson(m))).toEqual(m);
    const idx = buildIndex([{ mediaType: MediaType.OciManifest, digest: D1, size: 5, platform: { os: "linux", architecture: "amd64" } }]);
    expect(idx.manifests[0].platform).toEqual({ os: "linux", architecture: "amd64" });
    const parsed = parseManifest(encodeJson(idx));
    expect(isIndexDocument(parsed)).toBe(true);
  });

  it("rfc3339 prints whole seconds in UTC", () => {
    expect(rfc3339(1700000000)).toBe("2023-11-14T22:13:20Z");
  });
});

describe("parsing what other tools push", () => {
  // A docker schema2 manifest and config as `docker push` sends them (abridged).
  const dockerManifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, size: 1470, digest: D1 },
    layers: [{ mediaType: MediaType.DockerLayerGzip, size: 3623807, digest: D2 }],
  }, null, 3);
  const dockerConfig = JSON.stringify({
    architecture: "amd64",
    config: { Hostname: "", Env: ["PATH=/usr/local/sbin:/usr/local/bin"], Cmd: ["/bin/sh"], Image: "sha256:abc", Volumes: null, OnBuild: null },
    container: "b8ef",
    container_config: { Cmd: ["/bin/sh", "-c", "#(nop) CMD [\"/bin/sh\"]"] },
    created: "2024-01-27T00:30:48.743965523Z",
    docker_version: "20.10.23",
    history: [{ created: "2024-01-27T00:30:48.624602109Z", created_by: "/bin/sh -c #(nop) ADD file:1 in / " }],
    os: "linux",
    rootfs: { type: "layers", diff_ids: [D2] },
  });

  it("reads Docker schema2 manifests and configs, keeping unknown fields", () => {
    const m = parseManifest(dockerManifest);
    expect(isIndexDocument(m)).toBe(false);
    expect(m.mediaType).toBe(MediaType.DockerManifest);
    const c = parseImageConfig(dockerConfig);
    expect(c.config.Cmd).toEqual(["/bin/sh"]);
    expect(c.rootfs.diff_ids).toEqual([D2]);
    expect(c.docker_version).toBe("20.10.23");
    const next: ImageConfig = appendLayer(c, { diffId: D1, history: { created_by: "RUN x" } });
    expect(next.rootfs.diff_ids).toEqual([D2, D1]);
    expect(next.container).toBe("b8ef");
  });

  it("takes the media type from the upload when the document has none", () => {
    const noMt = JSON.stringify({ schemaVersion: 2, config: { mediaType: MediaType.OciConfig, size: 2, digest: D1 }, layers: [] });
    expect(parseManifest(noMt, MediaType.OciManifest).mediaType).toBe(MediaType.OciManifest);
    const idx = JSON.stringify({ schemaVersion: 2, manifests: [] });
    expect(isIndexDocument(parseManifest(idx))).toBe(true);
  });

  it("refuses broken documents with ImageFormatError", () => {
    const bad = [
      "not json",
      "[]",
      JSON.stringify({ schemaVersion: 1, name: "x", fsLayers: [] }),
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: "x", size: -1, digest: D1 }, layers: [] }),
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: "x", size: 1, digest: "nope" }, layers: [] }),
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: "x", size: 1, digest: D1 } }),
      JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.example+json", config: { mediaType: "x", size: 1, digest: D1 }, layers: [] }),
    ];
    for (const b of bad) expect(() => parseManifest(b), b).toThrow(ImageFormatError);
    expect(() => parseManifest(dockerManifest, MediaType.OciManifest)).toThrow(/does not match/);
    expect(() => parseImageConfig('{"os":"linux"}')).toThrow(/architecture/);
    expect(() => parseImageConfig(new Uint8Array([0xff, 0xfe]))).toThrow(ImageFormatError);
  });
});

it("describeJson gives the stored bytes and a matching descriptor", async () => {
  const { bytes, descriptor } = await describeJson({ b: 1, a: 2 }, MediaType.OciConfig);
  expect(new TextDecoder().decode(bytes)).toBe('{"a":2,"b":1}');
  expect(descriptor).toEqual({ mediaType: MediaType.OciConfig, digest: await digestOf(bytes), size: 13 });
});

describe("manifestReferences (what the registry checks before storing a push)", () => {
  const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
  const cfg = { mediaType: MediaType.OciConfig, digest: D1, size: 10 };
  it("lists config and layers once, their declared sizes, subject and artifactType", () => {
    const foreign = { mediaType: MediaType.DockerLayerForeignGzip, digest: `sha256:${"3".repeat(64)}`, size: 5, urls: ["https://x"] };
    const r = manifestReferences(enc({
      schemaVersion: 2, mediaType: MediaType.OciManifest, config: cfg,
      layers: [{ mediaType: MediaType.OciLayerGzip, digest: D2, size: 7 }, { mediaType: MediaType.OciLayerGzip, digest: D2, size: 7 }, foreign],
      subject: { mediaType: MediaType.OciManifest, digest: D2, size: 7 },
    }), `${MediaType.OciManifest}; charset=utf-8`);
    expect(r.blobs).toEqual([D1, D2]);
    expect([...r.sizes]).toEqual([[D1, 10], [D2, 7]]);
    expect(r.subject).toBe(D2);
    expect(r.artifactType).toBe(MediaType.OciConfig);
    const idx = manifestReferences(enc({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: D1, size: 3 }] }), MediaType.OciIndex);
    expect(idx.children).toEqual([D1]);
    expect(idx.blobs).toEqual([]);
  });
  it("refuses what a registry must refuse, with the offending value as detail", () => {
    const image = { schemaVersion: 2, config: cfg, layers: [] };
    const refused = (v: unknown, ct: string | null, message: RegExp) => expect(() => manifestReferences(enc(v), ct)).toThrow(message);
    refused(image, "application/json", /not a manifest media type/);
    refused(image, null, /needs a Content-Type/);
    refused({ ...image, mediaType: MediaType.DockerManifest }, MediaType.OciManifest, /does not match Content-Type/);
    refused({ ...image, schemaVersion: 1 }, MediaType.OciManifest, /schemaVersion must be 2/);
    refused(image, MediaType.DockerManifestV1Signed, /schema 1/);
    refused({ ...image, layers: [{ mediaType: MediaType.OciLayer, digest: D1, size: 11 }] }, MediaType.OciManifest, /declared with sizes 10 and 11/);
    try {
      manifestReferences(enc({ ...image, config: { ...cfg, digest: "sha256:AB" } }), MediaType.OciManifest);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(ImageFormatError);
      expect((e as ImageFormatError).detail).toEqual({ digest: "sha256:AB" });
    }
  });
});
