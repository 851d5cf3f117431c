import { describe, expect, it } from "vitest";
import { pushBlob, randomBytes, reg, sha256 } from "./helpers";

describe("ping", () => {
  it("answers /v2/ with 200 and the API version header", async () => {
    for (const path of ["/v2/", "/v2"]) {
      const res = await reg(path);
      expect(res.status).toBe(200);
      expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
      await res.arrayBuffer();
    }
  });
});

describe("blob GET/HEAD", () => {
  it("serves a pushed blob with length, digest and type", async () => {
    const data = randomBytes(100_000);
    const digest = await pushBlob("blobs/get", data);
    const head = await reg(`/v2/blobs/get/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe("100000");
    expect(head.headers.get("docker-content-digest")).toBe(digest);
    expect(head.headers.get("content-type")).toBe("application/octet-stream");
    expect(head.headers.get("accept-ranges")).toBe("bytes");
    const get = await reg(`/v2/blobs/get/blobs/${digest}`);
    expect(get.status).toBe(200);
    expect(get.headers.get("content-length")).toBe("100000");
    expect(get.headers.get("docker-content-digest")).toBe(digest);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(data);
  });

  it("serves byte ranges with 206 and refuses unsatisfiable ones with 416", async () => {
    const data = randomBytes(1000);
    const digest = await pushBlob("blobs/range", data);
    const r = await reg(`/v2/blobs/range/blobs/${digest}`, { headers: { range: "bytes=10-19" } });
    expect(r.status).toBe(206);
    expect(r.headers.get("content-range")).toBe("bytes 10-19/1000");
    expect(r.headers.get("content-length")).toBe("10");
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(data.slice(10, 20));
    const open = await reg(`/v2/blobs/range/blobs/${digest}`, { headers: { range: "bytes=990-" } });
    expect(open.status).toBe(206);
    expect(open.headers.get("content-range")).toBe("bytes 990-999/1000");
    expect(new Uint8Array(await open.arrayBuffer())).toEqual(data.slice(990));
    const suffix = await reg(`/v2/blobs/range/blobs/${digest}`, { headers: { range: "bytes=-5" } });
    expect(suffix.status).toBe(206);
    expect(new Uint8Array(await suffix.arrayBuffer())).toEqual(data.slice(995));
    for (const bad of ["bytes=1000-1005", "bytes=20-10", "items=1-2"]) {
      const res = await reg(`/v2/blobs/range/blobs/${digest}`, { headers: { range: bad } });
      expect(res.status, bad).toBe(416);
      expect(res.headers.get("content-range")).toBe("bytes */1000");
      expect((await res.json() as { errors: { code: string }[] }).errors[0].code).toBe("RANGE_INVALID");
    }
  });

  it("answers BLOB_UNKNOWN for blobs not in the repository and DIGEST_INVALID for bad digests", async () => {
    const digest = await pushBlob("blobs/other", "only in other");
    const res = await reg(`/v2/blobs/mine/blobs/${digest}`);
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ errors: [{ code: "BLOB_UNKNOWN" }] });
    const head = await reg(`/v2/blobs/mine/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(404);
    for (const bad of ["sha256:abc", `sha256:${"A".repeat(64)}`, `md5:${"0".repeat(32)}`]) {
      const r = await reg(`/v2/blobs/mine/blobs/${bad}`);
      expect(r.status, bad).toBe(400);
      expect(await r.json()).toMatchObject({ errors: [{ code: "DIGEST_INVALID" }] });
    }
  });

  it("accepts sha512 digests", async () => {
    const data = randomBytes(5000);
    const h = new Uint8Array(await crypto.subtle.digest("SHA-512", data));
    const digest = `sha512:${[...h].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
    const res = await reg(`/v2/blobs/sha512/blobs/uploads/?digest=${digest}`, { method: "POST", body: data });
    expect(res.status).toBe(201);
    const get = await reg(`/v2/blobs/sha512/blobs/${digest}`);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(data);
    expect(await sha256(data)).not.toBe(digest);
  });
});
