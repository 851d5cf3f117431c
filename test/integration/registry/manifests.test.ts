import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, randomBytes, reg, sha256,
} from "./helpers";

type Errors = { errors: { code: string; detail?: unknown }[] };

async function expectRoundTrip(repo: string, ref: string, body: string, mediaType: string, digest: string): Promise<void> {
  const get = await reg(`/v2/${repo}/manifests/${ref}`);
  expect(get.status).toBe(200);
  expect(get.headers.get("content-type")).toBe(mediaType);
  expect(get.headers.get("docker-content-digest")).toBe(digest);
  expect(get.headers.get("content-length")).toBe(String(bytesOf(body).length));
  expect(await get.text()).toBe(body);
  const head = await reg(`/v2/${repo}/manifests/${ref}`, { method: "HEAD" });
  expect(head.status).toBe(200);
  expect(head.headers.get("content-type")).toBe(mediaType);
  expect(head.headers.get("docker-content-digest")).toBe(digest);
  expect(head.headers.get("content-length")).toBe(String(bytesOf(body).length));
}

describe("manifest PUT/GET/HEAD", () => {
  for (const mediaType of [OCI_MANIFEST, DOCKER_MANIFEST]) {
    it(`round-trips ${mediaType} byte for byte by tag and by digest`, async () => {
      const repo = "man/image";
      const body = await imageManifest(repo, { mediaType });
      const digest = await sha256(body);
      const res = await putManifest(repo, "v1", body, mediaType);
      expect(res.status).toBe(201);
      expect(res.headers.get("docker-content-digest")).toBe(digest);
      expect(res.headers.get("location")).toBe(`/v2/${repo}/manifests/${digest}`);
      await expectRoundTrip(repo, "v1", body, mediaType, digest);
      await expectRoundTrip(repo, digest, body, mediaType, digest);
    });
  }

  for (const [indexType, childType] of [[OCI_INDEX, OCI_MANIFEST], [DOCKER_LIST, DOCKER_MANIFEST]]) {
    it(`round-trips ${indexType} whose children are in the repository`, async () => {
      const repo = "man/multi";
      const children = [];
      for (const arch of ["amd64", "arm64"]) {
        const body = await imageManifest(repo, { mediaType: childType });
        const put = await putManifest(repo, (await sha256(body)), body, childType);
        expect(put.status).toBe(201);
        children.push({ mediaType: childType, digest: await sha256(body), size: bytesOf(body).length, platform: { architecture: arch, os: "linux" } });
      }
      const index = JSON.stringify({ schemaVersion: 2, mediaType: indexType, manifests: children });
      const res = await putManifest(repo, "multi", index, indexType);
      expect(res.status).toBe(201);
      await expectRoundTrip(repo, "multi", index, indexType, await sha256(index));
    });
  }

  it("round-trips artifacts (artifactType, custom config media type) without a mediaType in the body", async () => {
    const repo = "man/artifact";
    const cfg = await pushBlob(repo, "{}");
    const blob = await pushBlob(repo, "signature bytes");
    const artifact = JSON.stringify({
      schemaVersion: 2,
      artifactType: "application/vnd.example.sig",
      config: { mediaType: "application/vnd.oci.empty.v1+json", digest: cfg, size: 2 },
      layers: [{ mediaType: "application/vnd.example.sig.v1", digest: blob, size: 15 }],
    });
    expect((await putManifest(repo, "sig", artifact, OCI_MANIFEST)).status).toBe(201);
    await expectRoundTrip(repo, "sig", artifact, OCI_MANIFEST, await sha256(artifact));
    const helm = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.cncf.helm.config.v1+json", digest: cfg, size: 2 },
      layers: [],
    });
    expect((await putManifest(repo, "chart", helm, OCI_MANIFEST)).status).toBe(201);
    await expectRoundTrip(repo, "chart", helm, OCI_MANIFEST, await sha256(helm));
  });

  it("accepts a manifest of more than 4 MiB and stores its bytes in R2", async () => {
    const repo = "man/huge";
    const big = await imageManifest(repo, { extra: { annotations: { "x.pad": "p".repeat(4 * 1024 * 1024 + 100) } } });
    expect(bytesOf(big).length).toBeGreaterThan(4 * 1024 * 1024);
    const res = await putManifest(repo, "big", big, OCI_MANIFEST);
    expect(res.status).toBe(201);
    const digest = await sha256(big);
    expect((await env.BUCKET.head(`blobs/sha256/${digest.slice(7)}`))?.size).toBe(bytesOf(big).length);
    await expectRoundTrip(repo, "big", big, OCI_MANIFEST, digest);
  });

  it("verifies the digest of a PUT by digest", async () => {
    const repo = "man/bydigest";
    const body = await imageManifest(repo);
    const wrong = await sha256("something else");
    const res = await putManifest(repo, wrong, body, OCI_MANIFEST);
    expect(res.status).toBe(400);
    expect(((await res.json()) as Errors).errors[0].code).toBe("DIGEST_INVALID");
    expect((await reg(`/v2/${repo}/manifests/${wrong}`)).status).toBe(404);
    const right = await sha256(body);
    expect((await putManifest(repo, right, body, OCI_MANIFEST)).status).toBe(201);
    await expectRoundTrip(repo, right, body, OCI_MANIFEST, right);
  });

  it("tags with ?tag= (several) on PUT", async () => {
    const repo = "man/qtags";
    const body = await imageManifest(repo);
    const digest = await sha256(body);
    const res = await reg(`/v2/${repo}/manifests/${digest}?tag=a&tag=b&tag=c`, { method: "PUT", body, headers: { "content-type": OCI_MANIFEST } });
    expect(res.status).toBe(201);
    for (const t of ["a", "b", "c"]) expect((await reg(`/v2/${repo}/manifests/${t}`)).headers.get("docker-content-digest")).toBe(digest);
    expect(await (await reg(`/v2/${repo}/tags/list`)).json()).toEqual({ name: repo, tags: ["a", "b", "c"] });
  });

  it("moves a tag to a newer manifest", async () => {
    const repo = "man/retag";
    const one = await imageManifest(repo);
    const two = await imageManifest(repo);
    await putManifest(repo, "latest", one, OCI_MANIFEST);
    await putManifest(repo, "latest", two, OCI_MANIFEST);
    expect(await (await reg(`/v2/${repo}/manifests/latest`)).text()).toBe(two);
    expect(await (await reg(`/v2/${repo}/manifests/${await sha256(one)}`)).text()).toBe(one);
  });
});

describe("manifest validation", () => {
  it("refuses manifests whose config or layers are not in the repository (MANIFEST_BLOB_UNKNOWN)", async () => {
    const repo = "val/blobs";
    const elsewhere = await pushBlob("val/elsewhere", "layer only elsewhere");
    const cfg = await pushBlob(repo, "{}");
    const missingLayer = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg, size: 2 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: elsewhere, size: 20 }],
    });
    const res = await putManifest(repo, "t", missingLayer, OCI_MANIFEST);
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ errors: [{ code: "MANIFEST_BLOB_UNKNOWN", detail: { digest: elsewhere } }] });
    const missingConfig = JSON.stringify({
      schemaVersion: 2, mediaType: DOCKER_MANIFEST,
      config: { mediaType: "application/vnd.docker.container.image.v1+json", digest: await sha256("nope"), size: 4 },
      layers: [],
    });
    const res2 = await putManifest(repo, "t", missingConfig, DOCKER_MANIFEST);
    expect(res2.status).toBe(400);
    expect(((await res2.json()) as Errors).errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
    expect((await reg(`/v2/${repo}/manifests/t`)).status).toBe(404);
  });

  it("refuses an index whose child manifests are not in the repository", async () => {
    const repo = "val/index";
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: await sha256("x"), size: 1 }] });
    const res = await putManifest(repo, "t", index, OCI_INDEX);
    expect(res.status).toBe(400);
    expect(((await res.json()) as Errors).errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
  });

  it("refuses invalid manifests with MANIFEST_INVALID", async () => {
    const repo = "val/invalid";
    const good = await imageManifest(repo);
    const cases: [string, string][] = [
      ["{not json", OCI_MANIFEST],
      ["[]", OCI_MANIFEST],
      [JSON.stringify({ ...JSON.parse(good), schemaVersion: 1 }), OCI_MANIFEST],
      [good, OCI_INDEX], // body says image manifest, header says index
      [JSON.stringify({ ...JSON.parse(good), config: { digest: "sha256:1234" } }), OCI_MANIFEST],
      [JSON.stringify({ ...JSON.parse(good), layers: "nope" }), OCI_MANIFEST],
      [JSON.stringify({ schemaVersion: 1, name: "x", fsLayers: [] }), "application/vnd.docker.distribution.manifest.v1+prettyjws"],
    ];
    for (const [body, ct] of cases) {
      const res = await putManifest(repo, "t", body, ct);
      expect(res.status, body.slice(0, 60)).toBe(400);
      expect(((await res.json()) as Errors).errors[0].code, body.slice(0, 60)).toBe("MANIFEST_INVALID");
    }
  });

  it("refuses invalid tags and digests in the reference", async () => {
    const repo = "val/ref";
    const body = await imageManifest(repo);
    for (const tag of ["-dash", ".dot", "a".repeat(129), "has+plus"]) {
      const res = await putManifest(repo, tag, body, OCI_MANIFEST);
      expect(res.status, tag).toBe(400);
    }
    const bad = await reg(`/v2/${repo}/manifests/sha256:zz`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as Errors).errors[0].code).toBe("DIGEST_INVALID");
    const unknown = await reg(`/v2/${repo}/manifests/nope`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as Errors).errors[0].code).toBe("MANIFEST_UNKNOWN");
    expect((await reg(`/v2/${repo}/manifests/nope`, { method: "HEAD" })).status).toBe(404);
    expect((await putManifest(repo, "a".repeat(128), body, OCI_MANIFEST)).status).toBe(201);
  });
});

