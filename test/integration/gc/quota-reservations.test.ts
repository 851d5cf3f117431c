// Quotas that hold under concurrency (issue 13): writers reserve their bytes in D1 before writing and
// release them once written or refused; a reservation of a writer that died expires. The build paths
// that link blobs outside the registry routes (RUN jobs' layers, multi-platform index copies) are held
// to the same quota.
import { createExecutionContext, env, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, imageManifest, patch, putManifest, randomBytes, reg, sha256, startUpload, withDigest } from "../registry/helpers";
import { makeTar, postBuild, waitBuild } from "../builds/helpers";
import type { Env } from "../../../src/env";
import { releaseQuota, reserveQuota } from "../../../src/storage/usage";
import { purgeStaleUploads } from "../../../src/storage/uploads";
import worker from "../../../src/index";

const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };
const kenv = env as unknown as Env;

let seq = 0;
/** A fresh namespace per test (tests share one D1). */
const ns = (p: string) => `${p}${Date.now().toString(36)}${(seq++).toString(36)}`;

async function setQuota(namespace: string, bytes: number): Promise<void> {
  const res = await reg(`/v1/quotas/${namespace}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes }) });
  expect(res.status).toBe(200);
}

async function usageOf(namespace: string): Promise<{ bytes: number; stagedBytes: number; manifests: number; tags: number }> {
  const res = await reg("/v1/usage", { headers: ADMIN });
  const all = ((await res.json()) as { namespaces: { namespace: string; bytes: number; stagedBytes: number; manifests: number; tags: number }[] }).namespaces;
  return all.find((u) => u.namespace === namespace) ?? { bytes: 0, stagedBytes: 0, manifests: 0, tags: 0 };
}

/** Reservations of the namespace still in D1 (live or expired). */
async function reservationRows(namespace: string): Promise<number> {
  const r = await env.DB.prepare("SELECT COUNT(*) AS n FROM quota_reservations WHERE namespace = ?").bind(namespace).first<{ n: number }>();
  return r?.n ?? 0;
}

async function pushMonolithic(repo: string, data: Uint8Array, digest?: string): Promise<Response> {
  return reg(`/v2/${repo}/blobs/uploads/?digest=${digest ?? (await sha256(data))}`, { method: "POST", body: data });
}

describe("quota reservations", () => {
  it("are released after a push succeeds, is refused or fails: usage is back to the true value and a later push that fits goes in", async () => {
    const q = ns("qr");
    await setQuota(q, 1000);
    expect((await pushMonolithic(`${q}/app`, randomBytes(400, 1))).status).toBe(201);
    expect(await reservationRows(q)).toBe(0);
    // refused (past the quota)
    const refused = await pushMonolithic(`${q}/app`, randomBytes(700, 2));
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as any).errors[0].detail).toMatchObject({ namespace: q, usage: 400, quota: 1000, adding: 700 });
    // failed after its reservation was made (the bytes do not match the digest)
    const wrong = await pushMonolithic(`${q}/app`, randomBytes(300, 3), await sha256(randomBytes(300, 4)));
    expect(wrong.status).toBe(400);
    await wrong.body?.cancel();
    // a chunked push refused at completion, and a manifest refused
    const loc = await startUpload(`${q}/app`);
    const first = randomBytes(300, 5);
    expect((await patch(loc, first, 0)).status).toBe(202);
    expect(await usageOf(q)).toMatchObject({ bytes: 400, stagedBytes: 300 });
    expect(await (await reg(`/v1/quotas/${q}`, { headers: ADMIN })).json()).toEqual({ namespace: q, bytes: 1000, usage: 400, stagedBytes: 300 });
    const last = randomBytes(400, 6);
    const put = await reg(withDigest(loc, await sha256(new Uint8Array([...first, ...last]))), { method: "PUT", body: last, headers: { "content-length": "400" } });
    expect(put.status).toBe(403);
    await put.body?.cancel();
    expect((await reg(loc)).status).toBe(404); // the refused session went with its staged bytes
    const manifest = await imageManifest(`${q}/img`);
    await setQuota(q, (await usageOf(q)).bytes + 10);
    const mres = await putManifest(`${q}/img`, "v1", manifest, OCI_MANIFEST);
    expect(mres.status).toBe(403);
    await mres.body?.cancel();
    expect(await reservationRows(q)).toBe(0);
    const used = (await usageOf(q)).bytes;
    expect(await usageOf(q)).toMatchObject({ stagedBytes: 0, manifests: 0, tags: 0 });
    // a later push that fits exactly goes in
    await setQuota(q, used + 600);
    expect((await pushMonolithic(`${q}/app`, randomBytes(600, 7))).status).toBe(201);
    expect(await usageOf(q)).toMatchObject({ bytes: used + 600, stagedBytes: 0 });
    expect(await reservationRows(q)).toBe(0);
  });

  it("a live reservation counts (and says so in the refusal); an expired one stops counting and is purged", async () => {
    const q = ns("qe");
    await setQuota(q, 1000);
    const live = await reserveQuota(kenv, { namespace: q, bytes: 1000 }, 900);
    const res = await pushMonolithic(`${q}/app`, randomBytes(200, 10));
    expect(res.status).toBe(403);
    const err = ((await res.json()) as any).errors[0];
    expect(err.message).toMatch(new RegExp(`namespace ${q} would exceed its quota: it uses 900 of 1000 bytes \\(of them 0 staged by unfinished uploads, 900 reserved by writes in progress\\) and this adds 200`));
    await releaseQuota(kenv, live);
    expect((await pushMonolithic(`${q}/app`, randomBytes(200, 10))).status).toBe(201);

    // a writer that died: its reservation expires, and the room is back
    await reserveQuota(kenv, { namespace: q, bytes: 1000 }, 800, 50);
    expect((await pushMonolithic(`${q}/app`, randomBytes(100, 11))).status).toBe(403);
    await new Promise((r) => setTimeout(r, 80));
    expect((await pushMonolithic(`${q}/app`, randomBytes(800, 12))).status).toBe(201);
    expect(await usageOf(q)).toMatchObject({ bytes: 1000 });
    expect(await reservationRows(q)).toBe(1); // expired, no longer counted, still a row
    await purgeStaleUploads(kenv);
    expect(await reservationRows(q)).toBe(0);
  });
});

/** A lazily made body of `total` bytes that counts what was read of it. */
function countedBody(total: number): { body: ReadableStream<Uint8Array>; pulled: () => number } {
  let pulled = 0;
  const piece = randomBytes(64 * 1024, 31);
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (pulled >= total) return c.close();
      pulled += piece.length;
      c.enqueue(piece.slice());
    },
  });
  return { body, pulled: () => pulled };
}

/** A request straight to the Worker's fetch handler, so the test's stream is the request body as it is read. */
function direct(path: string, init: RequestInit): Promise<Response> {
  return Promise.resolve(worker.fetch(new Request(`http://kiln.test${path}`, {
    ...init, duplex: "half", headers: { authorization: `Basic ${btoa("kiln:kiln-test-admin")}` },
  } as RequestInit), kenv, createExecutionContext()));
}

describe("a streamed body (unknown length)", () => {
  it("of a monolithic push or a completing PUT is cut off once it passes the namespace's room: DENIED, most of it never read, nothing kept", async () => {
    const q = ns("qm");
    await setQuota(q, 1000);
    const digest = await sha256(randomBytes(10, 32));
    const post = countedBody(32 * 1024 * 1024);
    const res = await direct(`/v2/${q}/app/blobs/uploads/?digest=${digest}`, { method: "POST", body: post.body });
    expect(res.status).toBe(403);
    expect(((await res.json()) as any).errors[0].message).toMatch(new RegExp(`namespace ${q} would exceed its quota: it uses 0 of 1000 bytes and this adds at least \\d+`));
    expect(post.pulled()).toBeLessThan(1024 * 1024);
    const loc = await startUpload(`${q}/app`);
    const put = countedBody(32 * 1024 * 1024);
    const done = await direct(withDigest(loc, digest), { method: "PUT", body: put.body });
    expect(done.status).toBe(403);
    await done.body?.cancel();
    expect(put.pulled()).toBeLessThan(1024 * 1024);
    expect((await reg(loc)).status).toBe(404);
    expect(await usageOf(q)).toMatchObject({ bytes: 0, stagedBytes: 0 });
    expect(await reservationRows(q)).toBe(0);
  });

  it("of a chunk is cut off once it passes the namespace's room: refused with DENIED, most of its body never read", async () => {
    const q = ns("qs");
    await setQuota(q, 1000);
    const loc = await startUpload(`${q}/app`);
    expect((await patch(loc, randomBytes(600, 30), 0)).status).toBe(202);
    const { body, pulled } = countedBody(32 * 1024 * 1024);
    const res = await direct(loc, { method: "PATCH", body });
    expect(res.status).toBe(403);
    const err = ((await res.json()) as any).errors[0];
    expect(err.code).toBe("DENIED");
    expect(err.message).toMatch(new RegExp(`namespace ${q} would exceed its quota: it uses 600 of 1000 bytes \\(of them 600 staged by unfinished uploads, 0 reserved by writes in progress\\)`));
    expect(pulled()).toBeLessThan(1024 * 1024);
    // the refused session went with its bytes
    expect(await usageOf(q)).toMatchObject({ bytes: 0, stagedBytes: 0 });
    expect((await reg(loc)).status).toBe(404);
  });
});

describe("build paths that link blobs are held to the quota", () => {
  it("a RUN step whose layers would pass the quota fails, naming usage and quota, with nothing linked, no job queued and no tag", async () => {
    const q = ns("qrun");
    await setQuota(q, 500);
    const big = randomBytes(2000, 20);
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nCOPY big.bin /big.bin\nRUN true\n", "big.bin": big }), `?tag=${q}/app:1`);
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const b = await waitBuild(id);
    expect(b.status).toBe("failed");
    expect(b.error!.message).toMatch(new RegExp(`namespace ${q} would exceed its quota: it uses 0 of 500 bytes and this adds \\d+`));
    expect(b.steps.find((s) => s.instruction.startsWith("RUN"))?.status).toBe("failed");
    expect(await usageOf(q)).toMatchObject({ bytes: 0, manifests: 0, tags: 0 });
    expect((await reg(`/v2/${q}/app/manifests/1`)).status).toBe(404);
    expect(await reservationRows(q)).toBe(0);
    const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
    const jobs = await runInDurableObject(dispatcher, (_o, state) => state.storage.sql.exec("SELECT job_id FROM jobs WHERE build_id = ?", id).toArray());
    expect(jobs).toEqual([]);
  });

  it("a multi-platform index that would pass the quota fails the build with its tag not moved and nothing half-written", async () => {
    const files = { Dockerfile: "FROM scratch\nCOPY hello.txt /hello.txt\n", "hello.txt": `hello ${ns("x")}\n` };
    const query = (n: string) => `?tag=${n}/app:1&tag=${n}/other:1&platform=linux/amd64,linux/arm64`;
    // the same build where no quota applies: what it stores (the same bytes in any namespace)
    const free = ns("qmpf");
    const first = await waitBuild(((await (await postBuild(await makeTar(files), query(free))).json()) as { id: string }).id, 60_000);
    expect(first.status, JSON.stringify(first.error)).toBe("succeeded");
    const whole = (await usageOf(free)).bytes;

    // room for the platforms' images but not for the index: the tag keeps pointing at the old image
    const q = ns("qmpq");
    const old = await imageManifest(`${q}/app`);
    expect((await putManifest(`${q}/app`, "1", old, OCI_MANIFEST)).status).toBe(201);
    const before = (await usageOf(q)).bytes;
    await setQuota(q, before + whole - 1);
    const res = await postBuild(await makeTar(files), query(q));
    expect(res.status).toBe(202);
    const b = await waitBuild(((await res.json()) as { id: string }).id, 60_000);
    expect(b.status).toBe("failed");
    expect(b.error!.message).toMatch(new RegExp(`pushing the image index failed: namespace ${q} would exceed its quota: it uses \\d+ of ${before + whole - 1} bytes and this adds \\d+`));
    const tag = await reg(`/v2/${q}/app/manifests/1`, { headers: { accept: `${OCI_MANIFEST}, application/vnd.oci.image.index.v1+json` } });
    expect(tag.headers.get("docker-content-digest")).toBe(await sha256(old));
    await tag.body?.cancel();
    expect((await reg(`/v2/${q}/other/manifests/1`)).status).toBe(404);
    const after = await usageOf(q);
    expect(after.bytes).toBeLessThanOrEqual(before + whole - 1);
    expect(after).toMatchObject({ manifests: 3, tags: 1, stagedBytes: 0 }); // the old image and the two platforms' (by digest)
    expect(await reservationRows(q)).toBe(0);

    // with one more byte of room, the same build pushes the index under both tags
    await setQuota(q, before + whole);
    const ok = await postBuild(await makeTar(files), query(q));
    const done = await waitBuild(((await ok.json()) as { id: string }).id, 60_000);
    expect(done.status, JSON.stringify(done.error)).toBe("succeeded");
    for (const repo of [`${q}/app`, `${q}/other`]) {
      const got = await reg(`/v2/${repo}/manifests/1`, { headers: { accept: "application/vnd.oci.image.index.v1+json" } });
      expect(got.status).toBe(200);
      expect(got.headers.get("docker-content-digest")).toBe(done.image!.digest);
      await got.body?.cancel();
    }
    expect((await usageOf(q)).bytes).toBe(before + whole);
  });
});
