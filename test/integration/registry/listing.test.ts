import { describe, expect, it } from "vitest";
import { OCI_INDEX, OCI_MANIFEST, basicForScopes, bytesOf, imageManifest, pushBlob, putManifest, reg, sha256 } from "./helpers";

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

describe("tags list", () => {
  it("lists tags sorted, paginates with n and last and a Link header", async () => {
    const repo = "tags/many";
    const body = await imageManifest(repo);
    const tags = ["v10", "v2", "latest", "A", "v1", "_x", "b.c-d"];
    await reg(`/v2/${repo}/manifests/${await sha256(body)}?${tags.map((t) => `tag=${t}`).join("&")}`, { method: "PUT", body, headers: { "content-type": OCI_MANIFEST } });
    const sorted = [...tags].sort();
    const all = await reg(`/v2/${repo}/tags/list`);
    expect(all.status).toBe(200);
    expect(all.headers.get("link")).toBeNull();
    expect(await all.json()).toEqual({ name: repo, tags: sorted });

    const seen: string[] = [];
    let url = `/v2/${repo}/tags/list?n=3`;
    for (let page = 0; page < 10 && url; page++) {
      const res = await reg(url);
      const { tags: got } = await res.json() as { tags: string[] };
      expect(got.length).toBeLessThanOrEqual(3);
      seen.push(...got);
      const link = res.headers.get("link");
      if (!link) break;
      const m = link.match(/^<([^>]+)>; rel="next"$/);
      expect(m, link).not.toBeNull();
      url = m![1];
      expect(url).toBe(`/v2/${repo}/tags/list?n=3&last=${encodeURIComponent(got[got.length - 1])}`);
    }
    expect(seen).toEqual(sorted);
    const after = await reg(`/v2/${repo}/tags/list?last=latest`);
    expect((await after.json() as { tags: string[] }).tags).toEqual(sorted.filter((t) => t > "latest"));
    expect((await (await reg(`/v2/${repo}/tags/list?n=0`)).json() as { tags: string[] }).tags).toEqual([]);
  });

  it("answers NAME_UNKNOWN for a repository that does not exist", async () => {
    const res = await reg("/v2/tags/never/tags/list");
    expect(res.status).toBe(404);
    expect(((await res.json()) as Errors).errors[0].code).toBe("NAME_UNKNOWN");
  });
});

describe("catalog", () => {
  it("lists repositories sorted with n, last and Link", async () => {
    for (const r of ["cat/b", "cat/a", "cat/c/nested"]) await pushBlob(r, `blob of ${r}`);
    const all = await reg("/v2/_catalog");
    expect(all.status).toBe(200);
    const { repositories } = await all.json() as { repositories: string[] };
    expect(repositories).toEqual([...repositories].sort());
    expect(repositories).toEqual(expect.arrayContaining(["cat/a", "cat/b", "cat/c/nested"]));
    const page = await reg("/v2/_catalog?n=2&last=cat/");
    expect(await page.json()).toEqual({ repositories: ["cat/a", "cat/b"] });
    expect(page.headers.get("link")).toBe(`</v2/_catalog?n=2&last=${encodeURIComponent("cat/b")}>; rel="next"`);
    const next = await reg("/v2/_catalog?n=2&last=cat/b");
    expect((await next.json() as { repositories: string[] }).repositories[0]).toBe("cat/c/nested");
  });
});

describe("catalog visibility", () => {
  it("lists only repositories the caller may pull", async () => {
    for (const r of ["vis/open", "vis/closed"]) await pushBlob(r, `blob of ${r}`);
    const auth = await basicForScopes("catalog-test", ["repository:vis/open:pull"]);
    const res = await reg("/v2/_catalog", { headers: { authorization: auth } });
    expect(res.status).toBe(200);
    const { repositories } = await res.json() as { repositories: string[] };
    expect(repositories).toContain("vis/open");
    expect(repositories).not.toContain("vis/closed");
  });
});

describe("repository names", () => {
  it("accepts nested names and names containing route words", async () => {
    for (const repo of ["a/b/c/d", "x.y/z__w/q-r--s", "blobs/manifests/tags", "org/blobs/uploads"]) {
      const body = await imageManifest(repo);
      expect((await putManifest(repo, "t", body, OCI_MANIFEST)).status, repo).toBe(201);
      expect(await (await reg(`/v2/${repo}/manifests/t`)).text()).toBe(body);
      expect((await (await reg(`/v2/${repo}/tags/list`)).json() as { name: string }).name).toBe(repo);
    }
  });

  it("refuses names outside the grammar with NAME_INVALID", async () => {
    // (A whole `..` segment never reaches the Worker: URL parsing resolves it; names with `..` inside do.)
    for (const repo of ["Upper/case", "a/..b", "a/b..", "a..b", "-a", "a-", "a//b", "a/b/", "a___b", "a.-b"]) {
      const res = await reg(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
      expect(res.status, repo).toBe(400);
      expect(((await res.json()) as Errors).errors[0].code, repo).toBe("NAME_INVALID");
    }
    const long = "a".repeat(256);
    expect((await reg(`/v2/${long}/tags/list`)).status).toBe(400);
  });

  it("answers unknown /v2 paths and methods with OCI errors", async () => {
    const res = await reg("/v2/foo/bar");
    expect(res.status).toBe(404);
    expect(((await res.json()) as Errors).errors[0].code).toBe("NAME_UNKNOWN");
    const m = await reg("/v2/foo/tags/list", { method: "POST" });
    expect(m.status).toBe(405);
    expect(((await m.json()) as Errors).errors[0].code).toBe("UNSUPPORTED");
  });
});
