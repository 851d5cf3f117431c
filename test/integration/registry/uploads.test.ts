import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { purgeStaleUploads } from "../../../src/storage/uploads";
import { allGone, patch, randomBytes, reg, sha256, stagedKeys, startUpload, streamOf, withDigest } from "./helpers";

describe("upload sessions", () => {
  it("POST opens a session with Location, Range and Docker-Upload-UUID", async () => {
    const res = await reg("/v2/up/session/blobs/uploads/", { method: "POST" });
    expect(res.status).toBe(202);
    const location = res.headers.get("location")!;
    const uuid = res.headers.get("docker-upload-uuid")!;
    expect(location).toBe(`/v2/up/session/blobs/uploads/${uuid}`);
    expect(res.headers.get("range")).toBe("0-0");
    const status = await reg(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-0");
    expect(status.headers.get("docker-upload-uuid")).toBe(uuid);
  });

  it("takes chunks of any size (1 byte, uneven) with Content-Range, reports progress, completes with PUT", async () => {
    const data = randomBytes(300_001);
    const digest = await sha256(data);
    const location = await startUpload("up/chunks");
    const sizes = [1, 1, 7, 65_536, 100_000, 12_345];
    let off = 0;
    for (const n of sizes) {
      const res = await patch(location, data.slice(off, off + n), off);
      expect(res.status).toBe(202);
      off += n;
      expect(res.headers.get("range")).toBe(`0-${off - 1}`);
      expect(res.headers.get("location")).toBe(location);
    }
    const status = await reg(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe(`0-${off - 1}`);
    // The rest goes without Content-Range (PATCH appends).
    const rest = await reg(location, { method: "PATCH", body: data.slice(off) });
    expect(rest.status).toBe(202);
    expect(rest.headers.get("range")).toBe(`0-${data.length - 1}`);
    const staged = await stagedKeys(location);
    const put = await reg(withDigest(location, digest), { method: "PUT" });
    expect(put.status).toBe(201);
    expect(put.headers.get("location")).toBe(`/v2/up/chunks/blobs/${digest}`);
    expect(put.headers.get("docker-content-digest")).toBe(digest);
    const get = await reg(`/v2/up/chunks/blobs/${digest}`);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(data);
    // The session is gone; its chunks, written once, are the blob's segments (no copy at the content address).
    expect((await reg(location)).status).toBe(404);
    const row = await env.DB.prepare("SELECT object_key, segments FROM blobs WHERE digest = ?").bind(digest).first<{ object_key: string; segments: number }>();
    expect(row!.segments).toBe(staged.length);
    const { results } = await env.DB.prepare("SELECT key FROM blob_segments WHERE owner = ? ORDER BY n").bind(row!.object_key).all<{ key: string }>();
    expect(results.map((r) => r.key)).toEqual(staged);
    expect(await env.BUCKET.head(`blobs/sha256/${digest.slice(7)}`)).toBeNull();
  });

  it("accepts the final chunk inside the PUT", async () => {
    const data = randomBytes(50_000);
    const digest = await sha256(data);
    const location = await startUpload("up/final");
    expect((await patch(location, data.slice(0, 20_000), 0)).status).toBe(202);
    const put = await reg(withDigest(location, digest), { method: "PUT", body: data.slice(20_000), headers: { "content-range": "20000-49999" } });
    expect(put.status).toBe(201);
    expect(new Uint8Array(await (await reg(`/v2/up/final/blobs/${digest}`)).arrayBuffer())).toEqual(data);
  });

  it("accepts POST then a PUT carrying the whole blob", async () => {
    const data = randomBytes(70_000);
    const digest = await sha256(data);
    const location = await startUpload("up/postput");
    const put = await reg(withDigest(location, digest), { method: "PUT", body: data });
    expect(put.status).toBe(201);
    expect(new Uint8Array(await (await reg(`/v2/up/postput/blobs/${digest}`)).arrayBuffer())).toEqual(data);
  });

  it("takes a PATCH with a streamed body of unknown length, bigger than one R2 part", async () => {
    const data = randomBytes(19 * 1024 * 1024 + 3);
    const digest = await sha256(data);
    const location = await startUpload("up/stream");
    const res = await reg(location, { method: "PATCH", body: streamOf(data, 65_521), duplex: "half" });
    expect(res.status).toBe(202);
    expect(res.headers.get("range")).toBe(`0-${data.length - 1}`);
    const small = randomBytes(10);
    const res2 = await reg(location, { method: "PATCH", body: streamOf(small, 3), duplex: "half" });
    expect(res2.headers.get("range")).toBe(`0-${data.length + 9}`);
    const all = new Uint8Array(data.length + 10);
    all.set(data);
    all.set(small, data.length);
    const allDigest = await sha256(all);
    expect((await reg(withDigest(location, allDigest), { method: "PUT" })).status).toBe(201);
    const get = await reg(`/v2/up/stream/blobs/${allDigest}`);
    expect(get.headers.get("content-length")).toBe(String(all.length));
    const back = new Uint8Array(await get.arrayBuffer());
    expect(back.length).toBe(all.length);
    expect(await sha256(back)).toBe(allDigest);
    expect(digest).not.toBe(allDigest);
  });

  it("takes one large known-length chunk", async () => {
    const data = randomBytes(24 * 1024 * 1024);
    const digest = await sha256(data);
    const location = await startUpload("up/large");
    expect((await patch(location, data, 0)).status).toBe(202);
    expect((await reg(withDigest(location, digest), { method: "PUT" })).status).toBe(201);
    const head = await reg(`/v2/up/large/blobs/${digest}`, { method: "HEAD" });
    expect(head.headers.get("content-length")).toBe(String(data.length));
    expect(await sha256(new Uint8Array(await (await reg(`/v2/up/large/blobs/${digest}`)).arrayBuffer()))).toBe(digest);
  });

  it("refuses an out-of-order chunk with 416 and the current Range", async () => {
    const location = await startUpload("up/order");
    expect((await patch(location, randomBytes(10), 0)).status).toBe(202);
    const gap = await patch(location, randomBytes(10), 20);
    expect(gap.status).toBe(416);
    expect(gap.headers.get("range")).toBe("0-9");
    expect(await gap.json()).toMatchObject({ errors: [{ code: "RANGE_INVALID" }] });
    const overlap = await patch(location, randomBytes(10), 5);
    expect(overlap.status).toBe(416);
    const status = await reg(location);
    expect(status.headers.get("range")).toBe("0-9");
    expect((await patch(location, randomBytes(10), 10)).status).toBe(202);
  });

  it("cancels a session with DELETE", async () => {
    const location = await startUpload("up/cancel");
    await patch(location, randomBytes(100), 0);
    const staged = await stagedKeys(location);
    expect(staged).toHaveLength(1);
    expect(await allGone(staged)).toBe(false);
    const del = await reg(location, { method: "DELETE" });
    expect(del.status).toBe(204);
    const gone = await reg(location);
    expect(gone.status).toBe(404);
    expect(await gone.json()).toMatchObject({ errors: [{ code: "BLOB_UPLOAD_UNKNOWN" }] });
    expect(await allGone(staged)).toBe(true);
    expect((await patch(location, randomBytes(1), 100)).status).toBe(404);
  });

  it("does not know sessions of another repository or made-up ids", async () => {
    const location = await startUpload("up/owner");
    const id = location.split("/").pop()!;
    expect((await reg(`/v2/up/thief/blobs/uploads/${id}`)).status).toBe(404);
    const res = await reg("/v2/up/owner/blobs/uploads/00000000-0000-0000-0000-000000000000");
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ errors: [{ code: "BLOB_UPLOAD_UNKNOWN" }] });
  });

  it("completes a session this Worker never saw: the state is only in D1 and R2", async () => {
    // Written straight to D1 and R2, as an earlier (restarted) Worker would have left it:
    // if any session state lived in module memory, this session could not be continued.
    const data = randomBytes(4000);
    const digest = await sha256(data);
    const id = crypto.randomUUID();
    const now = Date.now();
    await env.BUCKET.put(`uploads/${id}/0-abcdefgh`, data.slice(0, 1500));
    await env.DB.batch([
      env.DB.prepare("INSERT INTO uploads (id, repo, size, chunks, created_at, updated_at) VALUES (?, 'up/restart', 1500, 1, ?, ?)").bind(id, now, now),
      env.DB.prepare("INSERT INTO upload_chunks (upload_id, n, key, size) VALUES (?, 0, ?, 1500)").bind(id, `uploads/${id}/0-abcdefgh`),
    ]);
    const location = `/v2/up/restart/blobs/uploads/${id}`;
    const status = await reg(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("range")).toBe("0-1499");
    expect((await patch(location, data.slice(1500, 3000), 1500)).status).toBe(202);
    // And what this Worker did is visible in D1 for the next one.
    expect(await env.DB.prepare("SELECT size, chunks FROM uploads WHERE id = ?").bind(id).first()).toEqual({ size: 3000, chunks: 2 });
    expect((await reg(withDigest(location, digest), { method: "PUT", body: data.slice(3000) })).status).toBe(201);
    expect(new Uint8Array(await (await reg(`/v2/up/restart/blobs/${digest}`)).arrayBuffer())).toEqual(data);
  });

  it("purges sessions left untouched for a week, with their staged chunks", async () => {
    const stale = await startUpload("up/stale");
    const fresh = await startUpload("up/stale");
    await patch(stale, randomBytes(100), 0);
    await patch(fresh, randomBytes(100), 0);
    const staleId = stale.split("/").pop()!;
    const staged = await stagedKeys(stale);
    await env.DB.prepare("UPDATE uploads SET updated_at = ? WHERE id = ?").bind(Date.now() - 8 * 24 * 3600 * 1000, staleId).run();
    expect(await purgeStaleUploads(env)).toBe(1);
    expect((await reg(stale)).status).toBe(404);
    expect(await allGone(staged)).toBe(true);
    expect((await reg(fresh)).status).toBe(204);
  });
});
