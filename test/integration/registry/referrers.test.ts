import { describe, expect, it } from "vitest";
import { OCI_INDEX, OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, reg, sha256 } from "./helpers";

type Index = { schemaVersion: number; mediaType: string; manifests: { digest: string; artifactType?: string; annotations?: Record<string, string>; size: number; mediaType: string }[] };
type Errors = { errors: { code: string }[] };

describe("referrers", () => {
  it("lists manifests whose subject is a digest, filters by artifactType, sets OCI-Subject", async () => {
    const repo = "ref/app";
    const image = await imageManifest(repo);
    const imageDigest = await sha256(image);
    expect((await putManifest(repo, "v1", image, OCI_MANIFEST)).status).toBe(201);
    const subject = { mediaType: OCI_MANIFEST, digest: imageDigest, size: bytesOf(image).length };
    const empty = await pushBlob(repo, "{}");
    const emptyDesc = { mediaType: "application/vnd.oci.empty.v1+json", digest: empty, size: 2 };
    const sig = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: "application/vnd.example.sig", config: emptyDesc, layers: [], subject, annotations: { "org.example.kind": "sig" } });
    const sbom = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...emptyDesc, mediaType: "application/vnd.example.sbom" }, layers: [], subject });
    const res = await putManifest(repo, await sha256(sig), sig, OCI_MANIFEST);
    expect(res.status).toBe(201);
    expect(res.headers.get("oci-subject")).toBe(imageDigest);
    expect((await putManifest(repo, await sha256(sbom), sbom, OCI_MANIFEST)).headers.get("oci-subject")).toBe(imageDigest);

    const all = await reg(`/v2/${repo}/referrers/${imageDigest}`);
    expect(all.status).toBe(200);
    expect(all.headers.get("content-type")).toBe(OCI_INDEX);
    expect(all.headers.get("oci-filters-applied")).toBeNull();
    const index = await all.json() as Index;
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(OCI_INDEX);
    const byDigest = Object.fromEntries(index.manifests.map((m) => [m.digest, m]));
    expect(Object.keys(byDigest).sort()).toEqual([await sha256(sig), await sha256(sbom)].sort());
    expect(byDigest[await sha256(sig)]).toEqual({
      mediaType: OCI_MANIFEST, digest: await sha256(sig), size: bytesOf(sig).length,
      artifactType: "application/vnd.example.sig", annotations: { "org.example.kind": "sig" },
    });
    // Without artifactType, an image manifest's config media type is its artifactType.
    expect(byDigest[await sha256(sbom)].artifactType).toBe("application/vnd.example.sbom");

    const filtered = await reg(`/v2/${repo}/referrers/${imageDigest}?artifactType=application/vnd.example.sbom`);
    expect(filtered.headers.get("oci-filters-applied")).toBe("artifactType");
    expect((await filtered.json() as Index).manifests.map((m) => m.digest)).toEqual([await sha256(sbom)]);
  });

  it("answers an empty index for a digest without referrers and refuses bad digests", async () => {
    const res = await reg(`/v2/ref/none/referrers/${await sha256("x")}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
    const bad = await reg("/v2/ref/none/referrers/sha256:nothex");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as Errors).errors[0].code).toBe("DIGEST_INVALID");
  });

  it("accepts a manifest whose subject does not exist yet", async () => {
    const repo = "ref/dangling";
    const empty = await pushBlob(repo, "{}");
    const subject = { mediaType: OCI_MANIFEST, digest: await sha256("not pushed"), size: 10 };
    const art = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: "a/b", config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty, size: 2 }, layers: [], subject });
    const res = await putManifest(repo, "art", art, OCI_MANIFEST);
    expect(res.status).toBe(201);
    expect(res.headers.get("oci-subject")).toBe(subject.digest);
    expect((await (await reg(`/v2/${repo}/referrers/${subject.digest}`)).json() as Index).manifests).toHaveLength(1);
  });
});

