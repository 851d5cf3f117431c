// Red team (issues 13 and 16): storage lifecycle and write once attacked by a token of another
// namespace and by anonymous callers. Tenant A owns namespace `la…`, tenant B namespace `lb…`;
// every test states the attack, and passes only when the attack fails.
import { createExecutionContext, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, allGone, patch, putManifest, randomBytes, reg, sha256, stagedKeys, startUpload, streamOf, withDigest } from "./registry/helpers";
import { createToken } from "./auth/helpers";
import worker from "../../src/index";
import type { Env } from "../../src/env";
import { appendUpload, createUpload, finishUpload, getUpload, purgeStaleUploads } from "../../src/storage/uploads";
import { getBlob } from "../../src/storage/blobs";

const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };

/**
 * A request straight to the Worker's fetch handler. SELF.fetch runs one request at a time here;
 * production runs requests in many isolates at once, so races are driven through this.
 */
function direct(path: string, init: RequestInit & { auth?: string } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", init.auth ?? `Basic ${btoa("kiln:kiln-test-admin")}`);
  let body = init.body;
  if (body instanceof Uint8Array) {
    // a body of known length, as the runtime hands the Worker a request with Content-Length
    headers.set("content-length", String(body.length));
    body = streamOf(body);
  }
  return Promise.resolve(worker.fetch(new Request(`http://kiln.test${path}`, { ...init, body, headers }), env as unknown as Env, createExecutionContext()));
}

let seq = 0;
/** A fresh namespace name per test (tests share one D1). */
const ns = (p: string) => `${p}${Date.now().toString(36)}${(seq++).toString(36)}`;

/** Registry credentials (Basic) and API credentials (Bearer) of a token with `scopes`. */
async function tenant(scopes: string[]): Promise<{ basic: string; bearer: string }> {
  const { token } = await createToken(scopes, `red-${seq++}`);
  return { basic: `Basic ${btoa(`kiln:${token}`)}`, bearer: `Bearer ${token}` };
}

async function setQuota(namespace: string, bytes: number): Promise<void> {
  const res = await reg(`/v1/quotas/${namespace}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes }) });
  expect(res.status).toBe(200);
}

async function usageBytes(namespace: string): Promise<number> {
  const res = await reg("/v1/usage", { headers: ADMIN });
  const all = ((await res.json()) as { namespaces: { namespace: string; bytes: number }[] }).namespaces;
  return all.find((u) => u.namespace === namespace)?.bytes ?? 0;
}

/** Bytes staged by the namespace's unfinished uploads (GET /v1/usage `stagedBytes`). */
async function stagedBytes(namespace: string): Promise<number> {
  const res = await reg("/v1/usage", { headers: ADMIN });
  const all = ((await res.json()) as { namespaces: { namespace: string; stagedBytes: number }[] }).namespaces;
  return all.find((u) => u.namespace === namespace)?.stagedBytes ?? 0;
}

/** Monolithic push with `auth` (admin by default); returns the response. */
async function push(repo: string, data: Uint8Array, auth?: string): Promise<Response> {
  const digest = await sha256(data);
  return reg(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data, headers: auth ? { authorization: auth } : {} });
}

/** A chunked push: one PATCH per chunk, then a PUT with no body. Returns the digest. */
async function pushChunked(repo: string, chunks: Uint8Array[]): Promise<string> {
  const loc = await startUpload(repo);
  let at = 0;
  for (const c of chunks) {
    const res = await patch(loc, c, at);
    expect(res.status).toBe(202);
    at += c.length;
  }
  const digest = await sha256(concat(chunks));
  const put = await reg(withDigest(loc, digest), { method: "PUT" });
  expect(put.status).toBe(201);
  return digest;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** GETs the blob from `repo` and compares every byte with `expected`. */
async function readsBack(repo: string, digest: string, expected: Uint8Array): Promise<boolean> {
  const res = await reg(`/v2/${repo}/blobs/${digest}`);
  if (res.status !== 200) {
    await res.body?.cancel();
    return false;
  }
  let got: Uint8Array;
  try {
    got = new Uint8Array(await res.arrayBuffer());
  } catch {
    return false; // a segment gone mid-stream
  }
  return got.length === expected.length && got.every((b, i) => b === expected[i]);
}

/** Pushes a config blob and an image manifest (tag v1) in `repo` whose one layer is `layer`. */
async function tagImage(repo: string, layer: { digest: string; size: number }): Promise<void> {
  const config = new TextEncoder().encode(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":${Math.random()}}`);
  const configDigest = (await (await push(repo, config)).headers.get("docker-content-digest"))!;
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layer.digest, size: layer.size }],
  });
  expect((await putManifest(repo, "v1", manifest, OCI_MANIFEST)).status).toBe(201);
}

async function collect(): Promise<any> {
  const res = await reg("/v1/gc?graceSeconds=0", { method: "POST", headers: ADMIN });
  expect(res.status).toBe(200);
  return res.json();
}

async function objectsUnder(prefix: string): Promise<Set<string>> {
  const out = new Set<string>();
  let cursor: string | undefined;
  do {
    const page = await env.BUCKET.list({ prefix, cursor });
    for (const o of page.objects) out.add(o.key);
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return out;
}

describe("lifecycle API: B and anonymous against A", () => {
  it("B's token cannot read A's usage or quota, set or delete A's quota, run or list collections, or set retention over A (any pattern)", async () => {
    const a = ns("la");
    const b = ns("lb");
    const aData = randomBytes(777, 11);
    expect((await push(`${a}/secret-app`, aData)).status).toBe(201);
    expect((await push(`${b}/app`, randomBytes(300, 12))).status).toBe(201);
    await setQuota(a, 50_000);
    const B = await tenant([`repository:${b}/**:pull,push`]);

    // usage: only B's own namespace, nothing that names A
    const usage = await reg("/v1/usage", { headers: { authorization: B.bearer } });
    expect(usage.status).toBe(200);
    const text = await usage.text();
    expect(JSON.parse(text).namespaces.map((u: any) => u.namespace)).toEqual([b]);
    expect(text).not.toContain(a);

    const aDigest = await sha256(aData);
    const refused: [string, RequestInit][] = [
      [`/v1/quotas/${a}`, { method: "GET" }],
      ["/v1/quotas", { method: "GET" }],
      [`/v1/quotas/${a}`, { method: "PUT", body: JSON.stringify({ bytes: 0 }) }],
      [`/v1/quotas/${a}`, { method: "DELETE" }],
      [`/v1/quotas/${b}`, { method: "PUT", body: JSON.stringify({ bytes: 1e15 }) }],
      ["/v1/gc", { method: "POST" }],
      ["/v1/gc?dryRun=1", { method: "POST" }],
      ["/v1/gc?graceSeconds=0", { method: "POST" }],
      ["/v1/gc", { method: "GET" }],
      ["/v1/retention", { method: "GET" }],
    ];
    // retention patterns that would reach A's repositories
    for (const p of ["*", "**", `${a.slice(0, 2)}*`, `${a.slice(0, 2)}*/**`, `${a}/**`, `${b}/../${a}/**`, `${b}/**/../../${a}/*`, `${b}%2F..%2F${a}%2F**`]) {
      refused.push([`/v1/retention/${p}`, { method: "PUT", body: JSON.stringify({ keepLast: 0 }) }]);
      refused.push([`/v1/retention/${p}`, { method: "DELETE" }]);
    }
    for (const [path, init] of refused) {
      const asB = await reg(path, { ...init, headers: { authorization: B.bearer, "content-type": "application/json" } });
      const body = await asB.text();
      expect(asB.status, `B: ${init.method} ${path}`).toBe(403);
      expect(body, `B: ${init.method} ${path}`).not.toContain(aDigest);
      expect(body).not.toContain("secret-app");
      const anon = await reg(path, { ...init, headers: { authorization: "", "content-type": "application/json" } });
      expect(anon.status, `anonymous: ${init.method} ${path}`).toBe(401);
      expect(await anon.text()).not.toContain(aDigest);
    }
    // an anonymous caller learns no usage either; a registry (Basic) token is no API credential
    expect((await reg("/v1/usage", { headers: { authorization: "" } })).status).toBe(401);
    // nothing changed: A's quota stands, no policy was written, A's blob is there
    expect(await (await reg(`/v1/quotas/${a}`, { headers: ADMIN })).json()).toMatchObject({ bytes: 50_000 });
    const policies = ((await (await reg("/v1/retention", { headers: ADMIN })).json()) as { policies: { pattern: string }[] }).policies;
    expect(policies.filter((p) => p.pattern.includes(b))).toEqual([]);
    expect(await readsBack(`${a}/secret-app`, aDigest, aData)).toBe(true);
  });

  it("B's token with pull on one repository of A learns nothing of A's totals", async () => {
    const a = ns("la");
    expect((await push(`${a}/pub`, randomBytes(100, 13))).status).toBe(201);
    expect((await push(`${a}/private`, randomBytes(100, 14))).status).toBe(201);
    for (const scopes of [[`repository:${a}/pub:pull`], [`repository:${a}/p*:pull`], [`repository:${a}:pull`]]) {
      const B = await tenant(scopes);
      const res = await reg("/v1/usage", { headers: { authorization: B.bearer } });
      expect(res.status).toBe(200);
      expect(((await res.json()) as any).namespaces, scopes[0]).toEqual([]);
    }
  });
});

describe("shared digests: B cannot make A lose bytes", () => {
  it("B pushes the bytes of A's segmented layer, deletes its link and runs out its grace: A's image still pulls", async () => {
    const a = ns("la");
    const b = ns("lb");
    const parts = [randomBytes(4000, 21), randomBytes(3000, 22), randomBytes(5, 23)];
    const data = concat(parts);
    const digest = await pushChunked(`${a}/app`, parts);
    await tagImage(`${a}/app`, { digest, size: data.length });
    const B = await tenant([`repository:${b}/**:pull,push`]);
    // B links the same bytes (a second push only verifies), then deletes its link
    expect((await push(`${b}/copy`, data, B.basic)).status).toBe(201);
    const del = await reg(`/v2/${b}/copy/blobs/${digest}`, { method: "DELETE", headers: { authorization: B.basic } });
    expect(del.status).toBe(202);
    // B cannot delete A's link
    expect((await reg(`/v2/${a}/app/blobs/${digest}`, { method: "DELETE", headers: { authorization: B.basic } })).status).toBe(403);
    await collect();
    expect(await readsBack(`${a}/app`, digest, data)).toBe(true);
    expect((await reg(`/v2/${a}/app/manifests/v1`)).status).toBe(200);
  });
});

describe("quotas: B cannot spend A's, nor evade its own", () => {
  it("B cannot push or mount into A (A's usage unchanged); B's mount of A's public blob counts for B", async () => {
    const a = ns("la");
    const b = ns("lb");
    const aData = randomBytes(2000, 31);
    const aDigest = await sha256(aData);
    expect((await push(`${a}/pub`, aData)).status).toBe(201);
    await setQuota(a, 2500);
    await setQuota(b, 1000);
    const before = await usageBytes(a);
    const B = await tenant([`repository:${b}/**:pull,push`, `repository:${a}/pub:pull`]);
    // pushes and mounts into A are refused before any quota is looked at
    expect((await push(`${a}/pub`, randomBytes(400, 32), B.basic)).status).toBe(403);
    expect((await push(`${a}/other`, randomBytes(400, 33), B.basic)).status).toBe(403);
    const intoA = await reg(`/v2/${a}/other/blobs/uploads/?mount=${aDigest}&from=${a}/pub`, { method: "POST", headers: { authorization: B.basic } });
    expect([401, 403]).toContain(intoA.status);
    expect(await usageBytes(a)).toBe(before);
    // mounting A's 2000 bytes into B (quota 1000) is refused: the mount is no way around B's quota
    const intoB = await reg(`/v2/${b}/app/blobs/uploads/?mount=${aDigest}&from=${a}/pub`, { method: "POST", headers: { authorization: B.basic } });
    expect(intoB.status).toBe(403);
    expect(((await intoB.json()) as any).errors[0].code).toBe("DENIED");
    expect(await usageBytes(b)).toBe(0);
    expect(await usageBytes(a)).toBe(before);
  });

  it("a chunked upload whose final PUT carries the bytes past the quota is refused (declared and streamed length), and keeps nothing", async () => {
    const b = ns("lb");
    await setQuota(b, 1000);
    for (const declared of [true, false]) {
      const loc = await startUpload(`${b}/app`);
      const first = randomBytes(600, declared ? 41 : 42);
      expect((await patch(loc, first, 0)).status).toBe(202);
      const last = randomBytes(900, declared ? 43 : 44);
      const digest = await sha256(concat([first, last]));
      const res = await reg(withDigest(loc, digest), {
        method: "PUT",
        body: declared ? last : streamOf(last, 100),
        headers: declared ? { "content-length": String(last.length) } : {},
        duplex: "half",
      } as RequestInit);
      expect(res.status, declared ? "declared" : "streamed").toBe(403);
      expect(((await res.json()) as any).errors[0].code).toBe("DENIED");
      expect((await reg(`/v2/${b}/app/blobs/${digest}`, { method: "HEAD" })).status).toBe(404);
    }
    expect(await usageBytes(b)).toBe(0);
  });

  it("racing concurrent pushes cannot take a namespace past its quota", async () => {
    const b = ns("lb");
    await setQuota(b, 1000);
    const blobs = Array.from({ length: 6 }, (_, i) => randomBytes(600, 50 + i));
    const results = await Promise.all(blobs.map(async (d, i) => direct(`/v2/${b}/r${i % 3}/blobs/uploads/?digest=${await sha256(d)}`, { method: "POST", body: d })));
    const statuses = results.map((r) => r.status);
    for (const r of results) await r.body?.cancel();
    expect(statuses.every((s) => s === 201 || s === 403)).toBe(true);
    expect(statuses.filter((s) => s === 201).length).toBeLessThanOrEqual(1);
    expect(await usageBytes(b)).toBeLessThanOrEqual(1000);
  });

  it("racing chunked completions and mounts cannot take a namespace past its quota either", async () => {
    const b = ns("lb");
    const src = ns("ls");
    await setQuota(b, 1000);
    // completions whose final bodies (500 bytes, declared or streamed) fit alone beside the 400 bytes
    // all sessions staged, all completed at once: one at most goes in, the others' sessions go
    for (const declared of [true, false]) {
      const b = ns("lb");
      await setQuota(b, 1000);
      const firsts = Array.from({ length: 4 }, (_, i) => randomBytes(100, (declared ? 150 : 170) + i));
      const lasts = Array.from({ length: 4 }, (_, i) => randomBytes(500, (declared ? 160 : 180) + i));
      const locs: string[] = [];
      for (const d of firsts) {
        const loc = await startUpload(`${b}/c`);
        expect((await patch(loc, d, 0)).status).toBe(202);
        locs.push(loc);
      }
      const puts = await Promise.all(locs.map(async (loc, i) => direct(withDigest(loc, await sha256(concat([firsts[i], lasts[i]]))), {
        method: "PUT", body: declared ? lasts[i] : streamOf(lasts[i], 100), duplex: "half",
      } as RequestInit)));
      const statuses = puts.map((r) => r.status);
      for (const r of puts) await r.body?.cancel();
      expect(statuses.every((s) => s === 201 || s === 403), String(statuses)).toBe(true);
      // exactly one fits: 400 staged + its 500
      expect(statuses.filter((s) => s === 201).length, String(statuses)).toBe(1);
      expect(await usageBytes(b)).toBe(600);
      // the refused sessions went with their staged bytes
      expect(await stagedBytes(b)).toBe(0);
    }
    // sessions whose staged bytes fit together, completed at once: all go in (a completion moves its
    // staged bytes to the stored ones, never counts them twice)
    const blobs = Array.from({ length: 4 }, (_, i) => randomBytes(200, 190 + i));
    const locs: string[] = [];
    for (const d of blobs) {
      const loc = await startUpload(`${b}/c`);
      expect((await patch(loc, d, 0)).status).toBe(202);
      locs.push(loc);
    }
    expect(await stagedBytes(b)).toBe(800);
    const puts = await Promise.all(locs.map(async (loc, i) => direct(withDigest(loc, await sha256(blobs[i])), { method: "PUT" })));
    for (const r of puts) await r.body?.cancel();
    expect(puts.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    expect(await usageBytes(b)).toBe(800);
    expect(await stagedBytes(b)).toBe(0);
    // mounts from a namespace without a quota, all at once
    const b2 = ns("lb");
    await setQuota(b2, 1000);
    const digests: string[] = [];
    for (let i = 0; i < 4; i++) {
      const d = randomBytes(600, 160 + i);
      expect((await push(`${src}/app`, d)).status).toBe(201);
      digests.push(await sha256(d));
    }
    const mounts = await Promise.all(digests.map((d) => direct(`/v2/${b2}/m/blobs/uploads/?mount=${d}&from=${src}/app`, { method: "POST" })));
    for (const r of mounts) await r.body?.cancel();
    expect(mounts.filter((r) => r.status === 201).length).toBeLessThanOrEqual(1);
    expect(await usageBytes(b2)).toBeLessThanOrEqual(1000);
    // the source keeps every blob
    for (let i = 0; i < 4; i++) expect(await readsBack(`${src}/app`, digests[i], randomBytes(600, 160 + i))).toBe(true);
  });

  // Finding (not fixed: taking back a manifest means restoring the tags it moved, a larger change in
  // src/storage/manifests.ts): manifest pushes check the quota before storing, so concurrent pushes
  // of distinct manifests (each up to the manifest size limit) all pass the same check.
  it("racing manifest pushes cannot take a namespace past its quota", async () => {
    const b = ns("lb");
    const layer = randomBytes(100, 170);
    const layerDigest = await sha256(layer);
    expect((await push(`${b}/app`, layer)).status).toBe(201);
    const config = new TextEncoder().encode('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const configDigest = await sha256(config);
    expect((await push(`${b}/app`, config)).status).toBe(201);
    const manifests = Array.from({ length: 5 }, (_, i) => JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: layer.length }],
      annotations: { n: String(i), pad: "x".repeat(400) },
    }));
    const used = await usageBytes(b);
    const size = new TextEncoder().encode(manifests[0]).length;
    await setQuota(b, used + size + 100); // room for one manifest
    const res = await Promise.all(manifests.map((m, i) => direct(`/v2/${b}/app/manifests/t${i}`, { method: "PUT", body: new TextEncoder().encode(m), headers: { "content-type": OCI_MANIFEST } })));
    const statuses = res.map((r) => r.status);
    for (const r of res) await r.body?.cancel();
    expect(statuses.every((s) => s === 201 || s === 403), String(statuses)).toBe(true);
    expect(statuses.filter((s) => s === 201).length).toBeLessThanOrEqual(1);
    expect(await usageBytes(b)).toBeLessThanOrEqual(used + size + 100);
    // exactly one went in (there was room for it); the refused ones moved no tag
    expect(statuses.filter((s) => s === 201).length, String(statuses)).toBe(1);
    for (const [i, s] of statuses.entries()) {
      const tag = await reg(`/v2/${b}/app/manifests/t${i}`, { method: "HEAD" });
      expect(tag.status).toBe(s === 201 ? 200 : 404);
    }
    expect(await usageBytes(b)).toBe(used + size);
  });

  it("the same bytes under many repositories count once; other bytes count in full", async () => {
    const b = ns("lb");
    await setQuota(b, 1000);
    const data = randomBytes(700, 60);
    for (let i = 0; i < 5; i++) expect((await push(`${b}/r${i}`, data)).status).toBe(201);
    expect(await usageBytes(b)).toBe(700);
    expect((await push(`${b}/r9`, randomBytes(301, 61))).status).toBe(403);
  });

  // Finding (not fixed, needs staged bytes counted in usage): a session's staged chunks are checked
  // against the quota one session at a time, and never count in usage, so parallel sessions that
  // are never completed hold quota × sessions bytes in R2 until purgeStaleUploads (7 days).
  // Was a finding (fixed in the PATCH route): a PATCH of unknown length (chunked transfer, as docker
  // and podman send) was checked with the bytes staged before it only, so one streamed PATCH staged
  // any amount, kept in R2 until the session was cancelled or purged.
  it("one streamed PATCH cannot stage more than the quota: refused, its session and bytes gone", async () => {
    const b = ns("lb");
    await setQuota(b, 1000);
    const loc = await startUpload(`${b}/app`);
    expect((await patch(loc, randomBytes(600, 74), 0)).status).toBe(202);
    const before = await stagedKeys(loc);
    const res = await reg(loc, { method: "PATCH", body: streamOf(randomBytes(10_000, 75), 1000), duplex: "half" } as RequestInit);
    expect(res.status).toBe(403);
    expect(((await res.json()) as any).errors[0].code).toBe("DENIED");
    expect(await stagedKeys(loc)).toEqual([]);
    expect(await allGone(before)).toBe(true);
    expect((await reg(loc)).status).toBe(404);
    // a streamed PATCH within the quota still goes in
    const ok = await startUpload(`${b}/app`);
    const fits = await reg(ok, { method: "PATCH", body: streamOf(randomBytes(900, 76), 100), duplex: "half" } as RequestInit);
    expect(fits.status).toBe(202);
    expect(fits.headers.get("range")).toBe("0-899");
  });

  it("staged chunks of parallel sessions cannot hold more than the quota", async () => {
    const b = ns("lb");
    await setQuota(b, 1000);
    const statuses: number[] = [];
    const locs: string[] = [];
    for (let i = 0; i < 4; i++) {
      const loc = await startUpload(`${b}/app`);
      locs.push(loc);
      statuses.push((await patch(loc, randomBytes(900, 70 + i), 0)).status);
    }
    expect(statuses.filter((s) => s === 202).length).toBeLessThanOrEqual(1);
    // the first holds the room; the others were refused and their sessions ended
    expect(statuses).toEqual([202, 403, 403, 403]);
    for (const loc of locs.slice(1)) expect((await reg(loc)).status).toBe(404);
    expect(await stagedBytes(b)).toBe(900);
    // the same at once, in sessions of another namespace: one at most stages its chunk
    const c = ns("lb");
    await setQuota(c, 1000);
    const racing = await Promise.all(Array.from({ length: 4 }, () => startUpload(`${c}/app`)));
    const res = await Promise.all(racing.map((loc, i) => direct(`${loc}`, { method: "PATCH", body: randomBytes(900, 80 + i) })));
    for (const r of res) await r.body?.cancel();
    expect(res.filter((r) => r.status === 202).length, String(res.map((r) => r.status))).toBe(1);
    expect(await stagedBytes(c)).toBe(900);
    // the staged bytes are given back when the session is cancelled
    expect((await reg(locs[0], { method: "DELETE" })).status).toBe(204);
    expect(await stagedBytes(b)).toBe(0);
    const again = await startUpload(`${b}/app`);
    expect((await patch(again, randomBytes(900, 79), 0)).status).toBe(202);
  });

  it("A's reservations and racing pushes never refuse B's pushes, even when B's namespace name starts with A's", async () => {
    const a = ns("la");
    const b = `${a}x`; // a name sharing A's prefix
    await setQuota(a, 1000);
    await setQuota(b, 6000);
    // A: a session holding most of its room, then many racing pushes, all at once with B's
    const held = await startUpload(`${a}/app`);
    expect((await patch(held, randomBytes(900, 90), 0)).status).toBe(202);
    const aBlobs = Array.from({ length: 6 }, (_, i) => randomBytes(600, 91 + i));
    const bBlobs = Array.from({ length: 6 }, (_, i) => randomBytes(900, 101 + i));
    const all = await Promise.all([
      ...aBlobs.map(async (d) => direct(`/v2/${a}/app/blobs/uploads/?digest=${await sha256(d)}`, { method: "POST", body: d })),
      ...bBlobs.map(async (d, i) => direct(`/v2/${b}/r${i % 2}/blobs/uploads/?digest=${await sha256(d)}`, { method: "POST", body: d })),
    ]);
    const statuses = all.map((r) => r.status);
    for (const r of all) await r.body?.cancel();
    expect(statuses.slice(0, 6)).toEqual([403, 403, 403, 403, 403, 403]);
    expect(statuses.slice(6)).toEqual([201, 201, 201, 201, 201, 201]);
    expect(await usageBytes(b)).toBe(5400);
    expect(await stagedBytes(b)).toBe(0);
    expect(await usageBytes(a)).toBe(0);
    expect(await stagedBytes(a)).toBe(900);
    // and B's uploads stage beside A's session as if it were not there
    const bs = await startUpload(`${b}/app`);
    expect((await patch(bs, randomBytes(600, 110), 0)).status).toBe(202);
  });
});

describe("write once: B's sessions against A's bytes", () => {
  it("B's upload of A's digest neither adopts nor overwrites A's objects; a false claim of A's digest keeps nothing", async () => {
    const a = ns("la");
    const b = ns("lb");
    const parts = [randomBytes(3000, 81), randomBytes(2000, 82)];
    const data = concat(parts);
    const digest = await pushChunked(`${a}/app`, parts);
    const row = await env.DB.prepare("SELECT object_key, segments FROM blobs WHERE digest = ?").bind(digest).first<{ object_key: string; segments: number }>();
    expect(row?.segments).toBe(2);
    const segs = (await env.DB.prepare("SELECT key FROM blob_segments WHERE owner = ? ORDER BY n").bind(row!.object_key).all<{ key: string }>()).results.map((r) => r.key);

    // the same bytes from B in other chunks: B's chunks go, A's segments stay
    const same = await startUpload(`${b}/app`);
    expect((await patch(same, data.slice(0, 10), 0)).status).toBe(202);
    expect((await patch(same, data.slice(10), 10)).status).toBe(202);
    const sameKeys = await stagedKeys(same);
    expect((await reg(withDigest(same, digest), { method: "PUT" })).status).toBe(201);
    expect(await allGone(sameKeys)).toBe(true);
    // other bytes under A's digest: refused, B's chunks gone
    const fake = await startUpload(`${b}/app`);
    expect((await patch(fake, randomBytes(5000, 83), 0)).status).toBe(202);
    const fakeKeys = await stagedKeys(fake);
    const res = await reg(withDigest(fake, digest), { method: "PUT" });
    expect(res.status).toBe(400);
    expect(((await res.json()) as any).errors[0].code).toBe("DIGEST_INVALID");
    expect(await allGone(fakeKeys)).toBe(true);

    const after = await env.DB.prepare("SELECT object_key, segments FROM blobs WHERE digest = ?").bind(digest).first();
    expect(after).toEqual(row);
    for (const k of segs) expect(await env.BUCKET.head(k)).not.toBeNull();
    expect(await readsBack(`${a}/app`, digest, data)).toBe(true);
  });

  it("a digest mismatch leaves no object behind (one chunk, several chunks, a final PUT body)", async () => {
    const b = ns("lb");
    const before = await objectsUnder("blobs/objects/");
    for (const chunks of [[randomBytes(1000, 91)], [randomBytes(1000, 92), randomBytes(7, 93)]]) {
      const loc = await startUpload(`${b}/app`);
      let at = 0;
      for (const c of chunks) {
        expect((await patch(loc, c, at)).status).toBe(202);
        at += c.length;
      }
      const wrong = await sha256(randomBytes(10, 94));
      const res = await reg(withDigest(loc, wrong), { method: "PUT", body: randomBytes(33, 95) });
      expect(res.status).toBe(400);
      await res.body?.cancel();
      expect((await reg(`/v2/${b}/app/blobs/${wrong}`, { method: "HEAD" })).status).toBe(404);
    }
    const wrong = await sha256("nope");
    const only = await startUpload(`${b}/app`);
    expect((await reg(withDigest(only, wrong), { method: "PUT", body: randomBytes(100, 96) })).status).toBe(400);
    const after = await objectsUnder("blobs/objects/");
    expect([...after].filter((k) => !before.has(k))).toEqual([]);
    expect(await env.BUCKET.head(`blobs/${wrong.replace(":", "/")}`)).toBeNull();
  });

  it("a range GET across segments returns exactly the right bytes at every boundary", async () => {
    const a = ns("la");
    const parts = [randomBytes(5, 101), randomBytes(1, 102), randomBytes(7, 103), randomBytes(3, 104)];
    const data = concat(parts);
    const digest = await pushChunked(`${a}/app`, parts);
    expect((await env.DB.prepare("SELECT segments FROM blobs WHERE digest = ?").bind(digest).first<{ segments: number }>())?.segments).toBe(4);
    const n = data.length;
    const ranges: [string, number, number][] = [];
    // every start and end at, just before and just after each segment boundary (0, 5, 6, 13, 16)
    const near = [...new Set([0, 5, 6, 13, n].flatMap((x) => [x - 1, x, x + 1]).filter((x) => x >= 0 && x < n))];
    for (const s of near) for (const e of near) if (e >= s) ranges.push([`bytes=${s}-${e}`, s, e]);
    for (let s = 0; s < n; s++) ranges.push([`bytes=${s}-`, s, n - 1]);
    for (let k = 1; k <= n + 2; k++) ranges.push([`bytes=-${k}`, Math.max(0, n - k), n - 1]);
    ranges.push([`bytes=3-${n + 50}`, 3, n - 1]);
    for (const [header, s, e] of ranges) {
      const res = await reg(`/v2/${a}/app/blobs/${digest}`, { headers: { range: header } });
      expect(res.status, header).toBe(206);
      expect(res.headers.get("content-range"), header).toBe(`bytes ${s}-${e}/${n}`);
      expect([...new Uint8Array(await res.arrayBuffer())], header).toEqual([...data.slice(s, e + 1)]);
    }
    const bad = await reg(`/v2/${a}/app/blobs/${digest}`, { headers: { range: `bytes=${n}-` } });
    expect(bad.status).toBe(416);
    await bad.body?.cancel();
  });

  it("after a chunked push, purgeStaleUploads and a collection with graceSeconds=0 leave the blob readable", async () => {
    const a = ns("la");
    const one = randomBytes(2048, 111);
    const parts = [randomBytes(1500, 112), randomBytes(1, 113), randomBytes(900, 114)];
    const d1 = await pushChunked(`${a}/one`, [one]);
    const d3 = await pushChunked(`${a}/three`, parts);
    await tagImage(`${a}/one`, { digest: d1, size: one.length });
    await tagImage(`${a}/three`, { digest: d3, size: 2401 });
    await purgeStaleUploads(env, 0);
    expect(await readsBack(`${a}/one`, d1, one)).toBe(true);
    expect(await readsBack(`${a}/three`, d3, concat(parts))).toBe(true);
    await collect();
    expect(await readsBack(`${a}/one`, d1, one)).toBe(true);
    expect(await readsBack(`${a}/three`, d3, concat(parts))).toBe(true);
  });

  it("two sessions completing the same digest at once leave one intact blob and none of the loser's objects", async () => {
    const b = ns("lb");
    const data = randomBytes(6000, 121);
    const digest = await sha256(data);
    for (const split of [[6000], [2500, 3500]]) {
      const locs = [await startUpload(`${b}/x`), await startUpload(`${b}/y`)];
      for (const loc of locs) {
        let at = 0;
        for (const n of split) {
          expect((await patch(loc, data.slice(at, at + n), at)).status).toBe(202);
          at += n;
        }
      }
      const staged = [await stagedKeys(locs[0]), await stagedKeys(locs[1])];
      const res = await Promise.all(locs.map((l) => direct(withDigest(l, digest), { method: "PUT" })));
      expect(res.map((r) => r.status)).toEqual([201, 201]);
      expect(await readsBack(`${b}/x`, digest, data)).toBe(true);
      expect(await readsBack(`${b}/y`, digest, data)).toBe(true);
      // exactly one session's objects are the blob's; the other's are gone
      const gone = [await allGone(staged[0]), await allGone(staged[1])];
      expect(gone.filter(Boolean).length).toBe(1);
      // next round starts from nothing
      for (const r of ["x", "y"]) expect((await reg(`/v2/${b}/${r}/blobs/${digest}`, { method: "DELETE" })).status).toBe(202);
    }
  });

  // The attack: B completes ONE session twice at once (or cancels it while completing it). Both
  // requests passed the session check; the loser's cleanup deleted the very chunks the winner had
  // just adopted, leaving a blob row (global, content addressed) whose bytes are gone. A pushing
  // the same digest later only verifies and links it: A's image is then unreadable.
  it("B completing (or cancelling) one session twice at once cannot leave A a blob row without bytes", async () => {
    const a = ns("la");
    const b = ns("lb");
    const B = await tenant([`repository:${b}/**:pull,push`]);
    for (const [i, mode] of ["put", "put-chunks", "cancel", "cancel-chunks"].entries()) {
      const data = randomBytes(5000, 130 + i);
      const digest = await sha256(data);
      const start = await direct(`/v2/${b}/app/blobs/uploads/`, { method: "POST", auth: B.basic });
      expect(start.status).toBe(202);
      const loc = start.headers.get("location")!;
      const split = mode.endsWith("chunks") ? [2000, 3000] : [5000];
      let at = 0;
      for (const n of split) {
        const r = await direct(loc, { method: "PATCH", body: data.slice(at, at + n), auth: B.basic, headers: { "content-range": `${at}-${at + n - 1}` } });
        expect(r.status, await r.text()).toBe(202);
        at += n;
      }
      const res = await Promise.all([
        direct(withDigest(loc, digest), { method: "PUT", auth: B.basic }),
        mode.startsWith("put") ? direct(withDigest(loc, digest), { method: "PUT", auth: B.basic }) : direct(loc, { method: "DELETE", auth: B.basic }),
      ]);
      const statuses = res.map((r) => r.status);
      for (const r of res) await r.body?.cancel();
      // A pushes the same bytes afterwards and reads them back
      expect((await push(`${a}/app`, data)).status).toBe(201);
      expect(await readsBack(`${a}/app`, digest, data), `${mode}: A's blob is unreadable (${statuses})`).toBe(true);
      // exactly one of the two acted on the session; the other was told it is gone
      expect(statuses.filter((s) => s === 404).length, `${mode}: ${statuses}`).toBe(1);
      if (statuses[0] === 201) expect(await readsBack(`${b}/app`, digest, data), mode).toBe(true);
    }
  });

  it("the daily purge racing a completion cannot delete the chunks it adopts", async () => {
    const e = env as unknown as Env;
    for (const split of [[4000], [1000, 3000]]) {
      const data = randomBytes(4000, 140 + split.length);
      const digest = await sha256(data);
      let s = await createUpload(e, `${ns("lb")}/app`);
      let at = 0;
      for (const n of split) {
        s = await appendUpload(e, s, streamOf(data.slice(at, at + n)), { start: at, length: n });
        at += n;
      }
      // the session looks a week old to the purge, and is being completed right now
      await e.DB.prepare("UPDATE uploads SET updated_at = 0 WHERE id = ?").bind(s.id).run();
      const session = (await getUpload(e, s.repo, s.id))!;
      const [done] = await Promise.allSettled([finishUpload(e, session, digest, null), purgeStaleUploads(e, 0, 1000)]);
      const blob = await getBlob(e, digest);
      if (done.status === "fulfilled") {
        expect(blob).not.toBeNull();
        expect(await sha256(new Uint8Array(await new Response(blob!.body).arrayBuffer()))).toBe(digest);
      } else {
        expect(blob, String(done.reason)).toBeNull();
      }
      // either way no chunk row is left without its session
      expect((await e.DB.prepare("SELECT COUNT(*) AS n FROM upload_chunks WHERE upload_id = ?").bind(s.id).first<{ n: number }>())!.n).toBe(0);
    }
  });

  // Finding (fixed: too many or too small chunks are copied into one object at completion,
  // needsCompaction in src/storage/uploads.ts): a session may have any number of chunks, and each
  // would become a segment of the (global) blob. B pushes a popular digest first as thousands of
  // 1-byte PATCHes; A's later push of the same bytes only verifies and links, and every pull of it by
  // anyone would read one R2 object per byte. Here 120 chunks; a pull takes a handful of reads.
  it("B's many tiny chunks cannot make every later pull of that digest read one object per chunk", async () => {
    const e = env as unknown as Env;
    const data = randomBytes(120, 180);
    const digest = await sha256(data);
    let s = await createUpload(e, `${ns("lb")}/app`);
    for (let i = 0; i < data.length; i++) s = await appendUpload(e, s, streamOf(data.slice(i, i + 1)), { start: i, length: 1 });
    await finishUpload(e, s, digest, null);
    let reads = 0;
    const bucket = new Proxy(e.BUCKET, {
      get(target, prop) {
        if (prop === "get") return (...args: Parameters<R2Bucket["get"]>) => {
          reads++;
          return target.get(...args);
        };
        const v = Reflect.get(target, prop);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const blob = await getBlob({ ...e, BUCKET: bucket } as Env, digest);
    expect(await sha256(new Uint8Array(await new Response(blob!.body).arrayBuffer()))).toBe(digest);
    expect(reads).toBeLessThanOrEqual(16);
  });
});
