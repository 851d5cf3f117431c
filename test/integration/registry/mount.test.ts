import { describe, expect, it } from "vitest";
import { basicForScopes, pushBlob, randomBytes, reg } from "./helpers";

describe("cross-repository mount", () => {
  it("mounts a blob from a readable repository with 201", async () => {
    const data = randomBytes(1234);
    const digest = await pushBlob("mnt/source", data);
    const res = await reg(`/v2/mnt/target/blobs/uploads/?mount=${digest}&from=mnt/source`, { method: "POST" });
    expect(res.status).toBe(201);
    expect(res.headers.get("location")).toBe(`/v2/mnt/target/blobs/${digest}`);
    expect(res.headers.get("docker-content-digest")).toBe(digest);
    expect(new Uint8Array(await (await reg(`/v2/mnt/target/blobs/${digest}`)).arrayBuffer())).toEqual(data);
  });

  it("falls back to an upload session (202) when the source lacks the blob", async () => {
    const digest = await pushBlob("mnt/elsewhere", randomBytes(100));
    for (const from of ["mnt/empty", "Bad..Name"]) {
      const res = await reg(`/v2/mnt/target2/blobs/uploads/?mount=${digest}&from=${from}`, { method: "POST" });
      expect(res.status).toBe(202);
      expect(res.headers.get("location")).toMatch(/^\/v2\/mnt\/target2\/blobs\/uploads\/[0-9a-f-]{36}$/);
      expect((await reg(res.headers.get("location")!)).status).toBe(204);
    }
    expect((await reg(`/v2/mnt/target2/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
  });

  it("falls back to 202 when the caller may not pull the source, and never links its blob", async () => {
    const digest = await pushBlob("mnt/secret", randomBytes(300));
    const auth = await basicForScopes("mount-test", ["repository:mnt/mine:pull,push"]);
    const res = await reg(`/v2/mnt/mine/blobs/uploads/?mount=${digest}&from=mnt/secret`, { method: "POST", headers: { authorization: auth } });
    expect(res.status).toBe(202);
    expect(res.headers.get("location")).toMatch(/^\/v2\/mnt\/mine\/blobs\/uploads\//);
    expect((await reg(`/v2/mnt/mine/blobs/${digest}`, { method: "HEAD", headers: { authorization: auth } })).status).toBe(404);
    // With pull on the source the same mount works.
    const both = await basicForScopes("mount-test-2", ["repository:mnt/mine:pull,push", "repository:mnt/secret:pull"]);
    const ok = await reg(`/v2/mnt/mine/blobs/uploads/?mount=${digest}&from=mnt/secret`, { method: "POST", headers: { authorization: both } });
    expect(ok.status).toBe(201);
  });
});
