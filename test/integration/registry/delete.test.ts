import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, randomBytes, reg, sha256 } from "./helpers";

type Errors = { errors: { code: string; detail?: unknown }[] };

describe("manifest and blob DELETE", () => {
  it("deletes a manifest by digest with its tags (202), and a tag alone", async () => {
    const repo = "del/man";
    const body = await imageManifest(repo);
    const digest = await sha256(body);
    await reg(`/v2/${repo}/manifests/${digest}?tag=x&tag=y`, { method: "PUT", body, headers: { "content-type": OCI_MANIFEST } });
    const untag = await reg(`/v2/${repo}/manifests/x`, { method: "DELETE" });
    expect(untag.status).toBe(202);
    expect((await reg(`/v2/${repo}/manifests/x`)).status).toBe(404);
    expect((await reg(`/v2/${repo}/manifests/y`)).status).toBe(200);
    expect((await reg(`/v2/${repo}/manifests/x`, { method: "DELETE" })).status).toBe(404);
    const del = await reg(`/v2/${repo}/manifests/${digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    expect((await reg(`/v2/${repo}/manifests/${digest}`)).status).toBe(404);
    expect((await reg(`/v2/${repo}/manifests/y`)).status).toBe(404);
    expect((await reg(`/v2/${repo}/manifests/${digest}`, { method: "DELETE" })).status).toBe(404);
    expect(await env.BUCKET.head(`blobs/sha256/${digest.slice(7)}`)).toBeNull();
  });

  it("never deletes a blob another manifest still uses", async () => {
    const layer = randomBytes(4096);
    const one = await imageManifest("del/a", { layer: new TextDecoder("latin1").decode(layer) });
    const layerDigest = JSON.parse(one).layers[0].digest as string;
    const two = await imageManifest("del/b", { layer: new TextDecoder("latin1").decode(layer) });
    expect(JSON.parse(two).layers[0].digest).toBe(layerDigest);
    await putManifest("del/a", "t", one, OCI_MANIFEST);
    await putManifest("del/b", "t", two, OCI_MANIFEST);
    // Delete the manifest in a; b's manifest still uses the layer.
    expect((await reg(`/v2/del/a/manifests/${await sha256(one)}`, { method: "DELETE" })).status).toBe(202);
    // Blob DELETE in b while b's manifest uses it: unlinked from b, bytes kept.
    const del = await reg(`/v2/del/b/blobs/${layerDigest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    expect((await reg(`/v2/del/b/blobs/${layerDigest}`, { method: "HEAD" })).status).toBe(404);
    expect(await env.BUCKET.head(`blobs/sha256/${layerDigest.slice(7)}`)).not.toBeNull();
    // Still linked in a, still readable there.
    const get = await reg(`/v2/del/a/blobs/${layerDigest}`);
    expect(get.status).toBe(200);
    expect((await get.arrayBuffer()).byteLength).toBe(bytesOf(new TextDecoder("latin1").decode(layer)).length);
  });

  it("deletes the bytes of a blob nothing links or references any more", async () => {
    const digest = await pushBlob("del/lonely", randomBytes(100));
    await pushBlob("del/lonely2", randomBytes(100, 42));
    expect((await reg(`/v2/del/lonely/blobs/${digest}`, { method: "DELETE" })).status).toBe(202);
    expect(await env.BUCKET.head(`blobs/sha256/${digest.slice(7)}`)).toBeNull();
    const again = await reg(`/v2/del/lonely/blobs/${digest}`, { method: "DELETE" });
    expect(again.status).toBe(404);
    expect(((await again.json()) as Errors).errors[0].code).toBe("BLOB_UNKNOWN");
  });
});
