import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, basicForScopes, imageManifest, pushBlob, reg, sha256 } from "./helpers";

type Errors = { errors: { code: string }[] };

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

