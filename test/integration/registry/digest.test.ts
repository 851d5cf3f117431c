import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { allGone, patch, pushBlob, randomBytes, reg, sha256, stagedKeys, startUpload, streamOf, withDigest } from "./helpers";

type Errors = { errors: { code: string }[] };

describe("digest verification", () => {
  it("keeps nothing when the uploaded bytes do not match the digest", async () => {
    const data = randomBytes(5000);
    const wrong = await sha256(randomBytes(5000));
    const location = await startUpload("dv/session");
    await patch(location, data, 0);
    const staged = await stagedKeys(location);
    expect(staged).toHaveLength(1);
    const put = await reg(withDigest(location, wrong), { method: "PUT" });
    expect(put.status).toBe(400);
    expect(await put.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
    expect((await reg(`/v2/dv/session/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
    expect(await env.BUCKET.head(`blobs/sha256/${wrong.slice(7)}`)).toBeNull();
    expect(await env.DB.prepare("SELECT 1 FROM blobs WHERE digest = ?").bind(wrong).first()).toBeNull();
    expect(await allGone(staged)).toBe(true);
  });

  it("refuses a monolithic POST whose body does not match, small or large", async () => {
    for (const size of [100, 9 * 1024 * 1024]) {
      const wrong = await sha256(randomBytes(10));
      const res = await reg(`/v2/dv/mono/blobs/uploads/?digest=${wrong}`, { method: "POST", body: randomBytes(size) });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
      expect((await reg(`/v2/dv/mono/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
      expect(await env.BUCKET.head(`blobs/sha256/${wrong.slice(7)}`)).toBeNull();
      // Streamed (unknown length) too.
      const res2 = await reg(`/v2/dv/mono/blobs/uploads/?digest=${wrong}`, { method: "POST", body: streamOf(randomBytes(size)), duplex: "half" });
      expect(res2.status).toBe(400);
      expect(await env.BUCKET.head(`blobs/sha256/${wrong.slice(7)}`)).toBeNull();
    }
  });

  it("never overwrites a stored blob with bad bytes claiming its digest", async () => {
    const good = randomBytes(3000);
    const digest = await pushBlob("dv/good", good);
    const bad = randomBytes(3000);
    const mono = await reg(`/v2/dv/evil/blobs/uploads/?digest=${digest}`, { method: "POST", body: bad });
    expect(mono.status).toBe(400);
    const longer = await reg(`/v2/dv/evil/blobs/uploads/?digest=${digest}`, { method: "POST", body: randomBytes(3001) });
    expect(longer.status).toBe(400);
    expect(await longer.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
    const location = await startUpload("dv/evil");
    await patch(location, bad, 0);
    const put = await reg(withDigest(location, digest), { method: "PUT" });
    expect(put.status).toBe(400);
    expect(await put.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
    expect((await reg(`/v2/dv/evil/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    const get = await reg(`/v2/dv/good/blobs/${digest}`);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(good);
  });

  it("links an already stored blob after verifying the upload, and accepts the empty blob", async () => {
    const data = randomBytes(2000);
    const digest = await pushBlob("dv/first", data);
    await pushBlob("dv/second", data);
    expect(new Uint8Array(await (await reg(`/v2/dv/second/blobs/${digest}`)).arrayBuffer())).toEqual(data);
    const empty = await sha256(new Uint8Array(0));
    const location = await startUpload("dv/empty");
    expect((await reg(withDigest(location, empty), { method: "PUT" })).status).toBe(201);
    const head = await reg(`/v2/dv/empty/blobs/${empty}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("0");
  });

  it("answers DIGEST_INVALID for a malformed or missing digest on completion", async () => {
    const location = await startUpload("dv/malformed");
    const res = await reg(withDigest(location, "sha256:xyz"), { method: "PUT" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as Errors).errors[0].code).toBe("DIGEST_INVALID");
    const res2 = await reg(location, { method: "PUT" });
    expect(res2.status).toBe(400);
  });
});

