import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, imageManifest, putManifest, reg } from "./helpers";

type Errors = { errors: { code: string }[] };

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
