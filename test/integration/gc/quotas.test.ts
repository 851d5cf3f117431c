import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, randomBytes, reg, sha256 } from "../registry/helpers";
import { createToken } from "../auth/helpers";
import { makeTar } from "../builds/helpers";

const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };

async function setQuota(ns: string, bytes: number): Promise<void> {
  const res = await reg(`/v1/quotas/${ns}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes }) });
  expect(res.status).toBe(200);
}

async function usageOf(ns: string, token = "kiln-test-admin"): Promise<any> {
  const res = await reg("/v1/usage", { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return ((await res.json()) as { namespaces: any[] }).namespaces.find((u) => u.namespace === ns);
}

describe("usage", () => {
  it("counts bytes, blobs, manifests and tags per namespace; a blob linked by two namespaces counts for each, once per namespace", async () => {
    const shared = randomBytes(1000, 7);
    const d = await pushBlob("usea/one", shared);
    await pushBlob("usea/two", shared);
    await pushBlob("useb/one", shared);
    const body = await imageManifest("usea/one");
    expect((await putManifest("usea/one", "v1", body, OCI_MANIFEST)).status).toBe(201);
    const a = await usageOf("usea");
    const m = JSON.parse(body);
    const expected = 1000 + m.config.size + m.layers[0].size + bytesOf(body).length;
    expect(a).toMatchObject({ namespace: "usea", bytes: expected, blobs: 3, manifests: 1, tags: 1, cacheBytes: 0 });
    expect(await usageOf("useb")).toMatchObject({ bytes: 1000, blobs: 1, manifests: 0, tags: 0 });
    expect(d).toBe(await sha256(shared));
  });
});

describe("quotas", () => {
  it("PUT, GET and DELETE /v1/quotas/<namespace>", async () => {
    await setQuota("qcrud", 12345);
    const got = await reg("/v1/quotas/qcrud", { headers: ADMIN });
    expect(await got.json()).toMatchObject({ namespace: "qcrud", bytes: 12345, usage: 0 });
    expect((await reg("/v1/quotas/qcrud", { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes: -1 }) })).status).toBe(400);
    expect((await reg("/v1/quotas/Not_A_NS!", { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes: 1 }) })).status).toBe(400);
    expect((await reg("/v1/quotas/qcrud", { method: "DELETE", headers: ADMIN })).status).toBe(204);
    expect((await reg("/v1/quotas/qcrud", { headers: ADMIN })).status).toBe(404);
  });

  it("refuses a blob push past the quota with DENIED stating usage and quota, and keeps nothing of it", async () => {
    await setQuota("qpush", 3000);
    await pushBlob("qpush/app", randomBytes(2000, 1));
    const big = randomBytes(1500, 2);
    const digest = await sha256(big);
    const res = await reg(`/v2/qpush/app/blobs/uploads/?digest=${digest}`, { method: "POST", body: big });
    expect(res.status).toBe(403);
    const err = ((await res.json()) as any).errors[0];
    expect(err.code).toBe("DENIED");
    expect(err.message).toMatch(/uses 2000 of 3000 bytes/);
    expect(err.detail).toMatchObject({ namespace: "qpush", usage: 2000, quota: 3000, adding: 1500 });
    expect((await reg(`/v2/qpush/app/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    // chunked upload: refused at the chunk that passes it, and at completion
    const start = await reg("/v2/qpush/app/blobs/uploads/", { method: "POST" });
    const loc = start.headers.get("location")!;
    const patch = await reg(loc, { method: "PATCH", body: big, headers: { "content-length": String(big.length) } });
    expect(patch.status).toBe(403);
    // what fits still goes in, and the same blob again in another repository of the namespace costs nothing
    const small = randomBytes(900, 3);
    const smallDigest = await pushBlob("qpush/app", small);
    await pushBlob("qpush/other", small);
    expect(await usageOf("qpush")).toMatchObject({ bytes: 2900, quota: 3000 });
    expect(smallDigest).toBe(await sha256(small));
    // a mount that would pass it is refused too
    const elsewhere = await pushBlob("qelse/app", randomBytes(500, 4));
    const mount = await reg(`/v2/qpush/app/blobs/uploads/?mount=${elsewhere}&from=qelse/app`, { method: "POST" });
    expect(mount.status).toBe(403);
    expect((await reg(`/v2/qpush/app/blobs/${elsewhere}`, { method: "HEAD" })).status).toBe(404);
  });

  it("refuses a manifest push past the quota, leaving no manifest, tag or link", async () => {
    const body = await imageManifest("qman/app");
    const used = (await usageOf("qman")).bytes;
    await setQuota("qman", used + 10);
    const res = await putManifest("qman/app", "v1", body, OCI_MANIFEST);
    expect(res.status).toBe(403);
    expect(((await res.json()) as any).errors[0].message).toMatch(new RegExp(`uses ${used} of ${used + 10} bytes`));
    expect((await reg("/v2/qman/app/manifests/v1")).status).toBe(404);
    expect((await reg(`/v2/qman/app/manifests/${await sha256(body)}`)).status).toBe(404);
    await setQuota("qman", used + 100_000);
    expect((await putManifest("qman/app", "v1", body, OCI_MANIFEST)).status).toBe(201);
  });

  it("refuses a build of a namespace at its quota (JSON error on /v1), and fails a build whose image would pass it without linking anything", async () => {
    await pushBlob("qbuild/base", randomBytes(100, 5));
    await setQuota("qbuild", 100);
    const tar = await makeTar({ Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": "hello" });
    const res = await reg("/v1/builds?tag=qbuild/app:1", { method: "POST", headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/x-tar" }, body: tar });
    expect(res.status).toBe(403);
    expect(((await res.json()) as any).error.message).toMatch(/namespace qbuild has reached its quota: it uses 100 of 100 bytes/);

    await setQuota("qbuild", 150);
    const ok = await reg("/v1/builds?tag=qbuild/app:1", { method: "POST", headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/x-tar" }, body: tar });
    expect(ok.status).toBe(202);
    const { id } = (await ok.json()) as { id: string };
    let build: any;
    for (let i = 0; i < 100; i++) {
      build = await (await reg(`/v1/builds/${id}`, { headers: { authorization: "Bearer kiln-test-admin" } })).json();
      if (["succeeded", "failed", "cancelled"].includes(build.status)) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(build.status).toBe("failed");
    expect(build.error.message).toMatch(/quota/);
    expect(await usageOf("qbuild")).toMatchObject({ bytes: 100, manifests: 0, tags: 0 });
  });

  it("refuses content-addressed context uploads and index builds of a namespace at its quota", async () => {
    await pushBlob("qctx/base", randomBytes(100, 6));
    await setQuota("qctx", 100);
    const body = bytesOf("some file\n");
    const tar = await makeTar({ [(await sha256(body)).slice(7)]: body });
    const up = await reg("/v1/contexts/contents?tag=qctx/app:1", { method: "POST", headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/x-tar" }, body: tar });
    expect(up.status).toBe(403);
    expect(((await up.json()) as any).error.message).toMatch(/namespace qctx has reached its quota/);
    const index = await reg("/v1/builds?tag=qctx/app:1", {
      method: "POST",
      headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/vnd.kiln.context-index+json" },
      body: JSON.stringify({ files: [], dockerfile: "FROM scratch\n" }),
    });
    expect(index.status).toBe(403);
    await setQuota("qctx", 1_000_000);
    const again = await reg("/v1/contexts/contents?tag=qctx/app:1", { method: "POST", headers: { authorization: "Bearer kiln-test-admin", "content-type": "application/x-tar" }, body: tar });
    expect(again.status).toBe(201);
  });
});

describe("tenancy", () => {
  it("a namespace's token sees only its own usage, and cannot set quotas, trigger or list collections, or set retention", async () => {
    await pushBlob("tena/app", randomBytes(300, 8));
    await pushBlob("tenb/app", randomBytes(400, 9));
    const { token } = await createToken(["repository:tena/**:pull,push"], "tenant-a");
    const bearer = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const res = await reg("/v1/usage", { headers: bearer });
    expect(res.status).toBe(200);
    const names = ((await res.json()) as { namespaces: any[] }).namespaces.map((u) => u.namespace);
    expect(names).toEqual(["tena"]);
    // a token for one repository of a namespace does not learn the namespace's totals
    const narrow = await createToken(["repository:tena/app:pull"], "narrow");
    const seen = ((await (await reg("/v1/usage", { headers: { authorization: `Bearer ${narrow.token}` } })).json()) as { namespaces: any[] }).namespaces;
    expect(seen).toEqual([]);
    expect((await reg("/v1/usage", { headers: { authorization: "" } })).status).toBe(401);
    for (const [path, init] of [
      ["/v1/quotas/tena", { method: "PUT", body: JSON.stringify({ bytes: 1e12 }) }],
      ["/v1/quotas/tenb", { method: "PUT", body: JSON.stringify({ bytes: 1 }) }],
      ["/v1/quotas/tenb", { method: "GET" }],
      ["/v1/quotas/tenb", { method: "DELETE" }],
      ["/v1/gc", { method: "POST" }],
      ["/v1/gc?graceSeconds=0", { method: "POST" }],
      ["/v1/gc", { method: "GET" }],
      ["/v1/retention/tenb/**", { method: "PUT", body: JSON.stringify({ keepLast: 0 }) }],
      ["/v1/retention", { method: "GET" }],
    ] as const) {
      const r = await reg(path, { ...init, headers: bearer });
      expect(r.status, `${init.method} ${path}`).toBe(403);
    }
  });

  it("A's deletes and retention never remove B's blobs that share bytes with A's", async () => {
    const layer = `shared-tenancy-${Math.random()}`;
    const bBody = JSON.parse(await imageManifest("tenshb/app", { layer }));
    const bText = JSON.stringify(bBody);
    expect((await putManifest("tenshb/app", "v1", bText, OCI_MANIFEST)).status).toBe(201);
    const aText = await imageManifest("tensha/app", { layer });
    expect((await putManifest("tensha/app", "v1", aText, OCI_MANIFEST)).status).toBe(201);
    const { token } = await createToken(["repository:tensha/**:pull,push"], "tenant-sha");
    const bearer = { authorization: `Bearer ${token}` };
    // A deletes its image and its link to the shared layer; an admin policy clears A's namespace
    expect((await reg(`/v2/tensha/app/manifests/${await sha256(aText)}`, { method: "DELETE", headers: bearer })).status).toBe(202);
    expect((await reg(`/v2/tensha/app/blobs/${bBody.layers[0].digest}`, { method: "DELETE", headers: bearer })).status).toBe(202);
    expect((await reg("/v1/retention/tensha/**", { method: "PUT", headers: ADMIN, body: JSON.stringify({ keepLast: 0 }) })).status).toBe(200);
    await (await reg("/v1/gc?graceSeconds=0", { method: "POST", headers: ADMIN })).json();
    const get = await reg(`/v2/tenshb/app/blobs/${bBody.layers[0].digest}`);
    expect(get.status).toBe(200);
    expect(await sha256(new Uint8Array(await get.arrayBuffer()))).toBe(bBody.layers[0].digest);
    expect((await reg("/v2/tenshb/app/manifests/v1")).status).toBe(200);
  });
});
