// The storage API other modules (builds, runner uploads) use directly, without HTTP.
import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { StorageError } from "../../../src/storage/errors";
import { getBlob, getBlobBytes, linkBlob, putBlobComputed, putBlobVerified, repoHasBlob, statBlob } from "../../../src/storage/blobs";
import { MAX_MANIFEST_SIZE, ensureRepository, getManifest, putManifest } from "../../../src/storage/manifests";
import { OCI_MANIFEST, bytesOf, randomBytes, reg, sha256, streamOf } from "./helpers";

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(StorageError);
  expect((err as StorageError).code).toBe(code);
}

describe("storage: blobs", () => {
  it("putBlobComputed stores streams of unknown length and digest, small and multi-part", async () => {
    for (const size of [0, 1000, 17 * 1024 * 1024 + 5]) {
      const data = randomBytes(size);
      const stored = await putBlobComputed(env, streamOf(data, 100_003));
      expect(stored).toEqual({ digest: await sha256(data), size });
      const loc = (await statBlob(env, stored.digest))!;
      expect(loc.size).toBe(size);
      // Small: hashed in memory, put at the content address. Large: left where it was first written.
      if (size > 8 * 1024 * 1024) {
        expect(loc.objectKey).toMatch(/^blobs\/objects\//);
        expect(await env.BUCKET.head(`blobs/sha256/${stored.digest.slice(7)}`)).toBeNull();
      } else {
        expect(loc.objectKey).toBeNull();
      }
      const obj = await getBlob(env, stored.digest);
      expect(obj!.size).toBe(size);
      expect(await sha256(new Uint8Array(await new Response(obj!.body).arrayBuffer()))).toBe(stored.digest);
      expect(await sha256((await getBlobBytes(env, stored.digest))!)).toBe(stored.digest);
    }
    // No temporary objects are left behind.
    expect((await env.BUCKET.list({ prefix: "tmp/" })).objects).toEqual([]);
  });

  it("putBlobVerified stores matching content and refuses mismatches without storing anything", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const digest = await sha256(data);
    expect(await putBlobVerified(env, streamOf(data), digest, data.length)).toEqual({ digest, size: data.length });
    expect(await putBlobVerified(env, streamOf(data), digest)).toEqual({ digest, size: data.length });
    const other = randomBytes(1000);
    const wrong = await sha256("not this");
    await rejectsWith(putBlobVerified(env, streamOf(other), wrong, other.length), "DIGEST_INVALID");
    await rejectsWith(putBlobVerified(env, streamOf(other), wrong), "DIGEST_INVALID");
    expect(await statBlob(env, wrong)).toBeNull();
    expect(await env.BUCKET.head(`blobs/sha256/${wrong.slice(7)}`)).toBeNull();
    await rejectsWith(putBlobVerified(env, streamOf(other), await sha256(other), other.length + 1), "SIZE_INVALID");
    expect(await statBlob(env, await sha256(other))).toBeNull();
    await rejectsWith(putBlobVerified(env, streamOf(other), "sha256:nope"), "DIGEST_INVALID");
    // Claiming a stored digest with content of another length.
    await rejectsWith(putBlobVerified(env, streamOf(other), digest, other.length), "DIGEST_INVALID");
  });

  it("getBlob reads ranges; linkBlob makes a blob visible in a repository", async () => {
    const data = randomBytes(5000);
    const { digest } = await putBlobComputed(env, streamOf(data));
    const part = await getBlob(env, digest, { offset: 100, length: 50 });
    expect(new Uint8Array(await new Response(part!.body).arrayBuffer())).toEqual(data.slice(100, 150));
    const tail = await getBlob(env, digest, { offset: 4990 });
    expect(new Uint8Array(await new Response(tail!.body).arrayBuffer())).toEqual(data.slice(4990));
    expect(await repoHasBlob(env, "st/repo", digest)).toBe(false);
    expect((await reg(`/v2/st/repo/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    await linkBlob(env, "st/repo", digest);
    expect(await repoHasBlob(env, "st/repo", digest)).toBe(true);
    expect((await reg(`/v2/st/repo/blobs/${digest}`, { method: "HEAD" })).status).toBe(200);
    await rejectsWith(linkBlob(env, "st/repo", await sha256("never stored")), "BLOB_UNKNOWN");
    expect(await getBlob(env, await sha256("never stored"))).toBeNull();
    expect(await getBlobBytes(env, await sha256("never stored"))).toBeNull();
  });
});

describe("storage: manifests", () => {
  it("putManifest validates like the HTTP PUT and getManifest returns the exact bytes", async () => {
    const repo = "st/img";
    await ensureRepository(env, repo);
    const config = bytesOf('{"os":"linux"}');
    const cfg = await putBlobComputed(env, streamOf(config));
    const manifest = bytesOf(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg.digest, size: cfg.size }, layers: [],
    }, null, 1));
    await rejectsWith(putManifest(env, repo, "v1", manifest, OCI_MANIFEST), "MANIFEST_BLOB_UNKNOWN");
    await linkBlob(env, repo, cfg.digest);
    await rejectsWith(putManifest(env, repo, "v1", bytesOf("{"), OCI_MANIFEST), "MANIFEST_INVALID");
    await rejectsWith(putManifest(env, repo, "v1", new Uint8Array(MAX_MANIFEST_SIZE + 1), OCI_MANIFEST), "MANIFEST_TOO_LARGE");
    await rejectsWith(putManifest(env, repo, await sha256("x"), manifest, OCI_MANIFEST), "DIGEST_INVALID");
    const { digest } = await putManifest(env, repo, "v1", manifest, OCI_MANIFEST, ["v1.0", "latest"]);
    expect(digest).toBe(await sha256(manifest));
    for (const ref of ["v1", "v1.0", "latest", digest]) {
      const got = await getManifest(env, repo, ref);
      expect(got).toEqual({ bytes: manifest, mediaType: OCI_MANIFEST, digest });
    }
    expect(await getManifest(env, repo, "nope")).toBeNull();
    expect(await (await reg(`/v2/${repo}/tags/list`)).json()).toEqual({ name: repo, tags: ["latest", "v1", "v1.0"] });
  });
});
