// Red team (issue 13): quota reservations and the paged, time-sliced collector attacked by a tenant of
// another namespace, and by the namespace's own writes landing between a collection's slices. Every
// test states the attack and passes only when it fails, except those marked it.fails: findings not
// fixed yet, each with a comment saying why. A collection is driven a step at a time here
// (collectFor with no budget runs one step), so a push can land exactly between two slices.
import { createExecutionContext, env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import type { Env } from "../../src/env";
import { GC_PAGE, collectFor, newCollection, type GcOptions, type GcProgress } from "../../src/storage/gc";
import { releaseQuota, reserveQuota } from "../../src/storage/usage";
import { OCI_INDEX, OCI_MANIFEST, bytesOf, imageManifest, patch, pushBlob, putManifest, randomBytes, reg, sha256, startUpload, streamOf, withDigest } from "./registry/helpers";
import { age, blobIntact, blobRow } from "./gc/helpers";
import { createToken } from "./auth/helpers";

const testEnv = env as unknown as Env;
const ADMIN = { authorization: "Bearer kiln-test-admin", "content-type": "application/json" };
const DAY = 24 * 3600 * 1000;

let seq = 0;
/** A fresh namespace name per test (tests share one D1). */
const ns = (p: string) => `${p}${Date.now().toString(36)}${(seq++).toString(36)}`;

/** A request straight to the Worker's fetch handler (a streamed body has no Content-Length). */
function direct(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("authorization", `Basic ${btoa("kiln:kiln-test-admin")}`);
  return Promise.resolve(worker.fetch(new Request(`http://kiln.test${path}`, { ...init, headers, duplex: "half" } as RequestInit), testEnv, createExecutionContext()));
}

async function setQuota(namespace: string, bytes: number): Promise<void> {
  const res = await reg(`/v1/quotas/${namespace}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ bytes }) });
  expect(res.status).toBe(200);
}

/** GET /v1/usage of one namespace. */
async function usage(namespace: string): Promise<{ bytes: number; stagedBytes: number } | undefined> {
  const res = await reg("/v1/usage", { headers: ADMIN });
  return ((await res.json()) as { namespaces: { namespace: string; bytes: number; stagedBytes: number }[] }).namespaces.find((u) => u.namespace === namespace);
}

/** Live reservations held in `namespace`. */
async function reservedIn(namespace: string): Promise<number> {
  const r = await testEnv.DB.prepare("SELECT COALESCE(SUM(bytes), 0) AS n FROM quota_reservations WHERE namespace = ? AND expires_at > ?").bind(namespace, Date.now()).first<{ n: number }>();
  return r?.n ?? 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const gcOpts = (o: Partial<GcOptions> = {}): GcOptions => ({
  dryRun: false, graceMs: 0, trigger: "test", cacheMaxAgeMs: 30 * DAY, cacheBudgetBytes: null, pullThroughMaxAgeMs: 30 * DAY, ...o,
});

/** Runs a collection's steps (one per slice) until it reaches `phase` (nothing of `phase` done yet). */
async function runUntil(p: GcProgress, phase: GcProgress["phase"]): Promise<void> {
  for (let i = 0; p.phase !== phase; i++) {
    if (p.phase === "done" || i > 10_000) throw new Error(`collection never reached ${phase}`);
    await collectFor(testEnv, p, 0);
  }
}

/** Runs the collection to its end (slice after slice). */
async function finish(p: GcProgress): Promise<void> {
  while (!(await collectFor(testEnv, p, 0)));
}

async function status(res: Response): Promise<number> {
  await res.arrayBuffer();
  return res.status;
}

describe("quota reservations attacked across namespaces", () => {
  it("staged sessions and live reservations of namespaces sharing a's name as a prefix (a-b, a.b, a0, a_b) never refuse a's push", async () => {
    const a = ns("qa");
    await setQuota(a, 1000);
    // B parks 500 staged bytes in every namespace whose name begins with a's, and reserves 900 more in each
    const held = [];
    for (const b of [`${a}-b`, `${a}.b`, `${a}0`, `${a}_b`, `${a}b`]) {
      const loc = await startUpload(`${b}/x`);
      expect(await status(await patch(loc, randomBytes(500), 0))).toBe(202);
      held.push(await reserveQuota(testEnv, { namespace: b, bytes: 10 ** 9 }, 900));
      expect((await usage(b))?.stagedBytes).toBe(500);
    }
    try {
      expect((await usage(a))?.stagedBytes ?? 0).toBe(0);
      // a's chunked push of exactly its quota (a PATCH, then the PUT with the rest) goes in
      const data = randomBytes(1000);
      const loc = await startUpload(`${a}/app`);
      expect(await status(await patch(loc, data.slice(0, 600), 0))).toBe(202);
      const put = await reg(withDigest(loc, await sha256(data)), { method: "PUT", body: data.slice(600), headers: { "content-range": "600-999" } });
      expect(await status(put)).toBe(201);
      expect((await usage(a))?.bytes).toBe(1000);
    } finally {
      await releaseQuota(testEnv, ...held);
    }
  });

  it("a chunk of unknown length cut off past the room leaves no staged bytes and no reservation behind: the namespace's next push fits", async () => {
    const a = ns("qc");
    await setQuota(a, 1000);
    const loc = await startUpload(`${a}/app`);
    expect(await status(await patch(loc, randomBytes(400), 0))).toBe(202);
    expect((await usage(a))?.stagedBytes).toBe(400);
    // a streamed PATCH (no Content-Length) of 800 more bytes: cut off, refused naming the quota
    const path = new URL(loc, "http://kiln.test").pathname + new URL(loc, "http://kiln.test").search;
    const cut = await direct(path, { method: "PATCH", body: streamOf(randomBytes(800), 100), headers: { "content-type": "application/octet-stream" } });
    expect(cut.status).toBe(403);
    expect(((await cut.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DENIED");
    expect((await usage(a))?.stagedBytes ?? 0).toBe(0);
    expect(await reservedIn(a)).toBe(0);
    // a streamed monolithic push past the room: the same
    const big = randomBytes(1200);
    const mono = await direct(`/v2/${a}/app/blobs/uploads/?digest=${await sha256(big)}`, { method: "POST", body: streamOf(big, 100) });
    expect(await status(mono)).toBe(403);
    expect((await usage(a))?.stagedBytes ?? 0).toBe(0);
    expect(await reservedIn(a)).toBe(0);
    expect((await usage(a))?.bytes ?? 0).toBe(0);
    // the namespace has all its room again
    const fits = randomBytes(1000);
    expect(await status(await reg(`/v2/${a}/app/blobs/uploads/?digest=${await sha256(fits)}`, { method: "POST", body: fits }))).toBe(201);
  });
  it("b's token cannot park staged bytes in a's namespace through encoded or dotted names (a's room stays whole)", async () => {
    const a = ns("qe");
    const b = `${a}-b`;
    await setQuota(a, 1000);
    const { token } = await createToken([`repository:${b}/**:pull,push`], `red-${seq++}`);
    const auth = `Basic ${btoa(`kiln:${token}`)}`;
    for (const name of [`${b}/../${a}/app`, `${b}/%2e%2e/${a}/app`, `${a}%2Fapp`, `${b}%2F..%2F${a}/app`, `${a.toUpperCase()}/app`, `${b}/app/../../${a}/app`]) {
      const res = await reg(`/v2/${name}/blobs/uploads/`, { method: "POST", headers: { authorization: auth } });
      await res.arrayBuffer();
      expect(res.status, name).toBeGreaterThanOrEqual(400);
      expect(res.status, name).toBeLessThan(500);
    }
    expect((await usage(a))?.stagedBytes ?? 0).toBe(0);
    expect(await testEnv.DB.prepare("SELECT COUNT(*) AS n FROM uploads WHERE repo >= ? AND repo < ?").bind(`${a}/`, `${a}0`).first<{ n: number }>()).toEqual({ n: 0 });
    const data = randomBytes(1000);
    expect(await status(await reg(`/v2/${a}/app/blobs/uploads/?digest=${await sha256(data)}`, { method: "POST", body: data }))).toBe(201);
  });

  it("a completing PUT of unknown length cut off past the room ends the session: no staged bytes, and the next push fits", async () => {
    const a = ns("qp");
    await setQuota(a, 1000);
    const loc = await startUpload(`${a}/app`);
    expect(await status(await patch(loc, randomBytes(300), 0))).toBe(202);
    const url = new URL(loc, "http://kiln.test");
    const put = await direct(`${url.pathname}?digest=${await sha256(randomBytes(8))}${url.search ? `&${url.search.slice(1)}` : ""}`, { method: "PUT", body: streamOf(randomBytes(900), 100) });
    expect(await status(put)).toBe(403);
    expect((await usage(a))?.stagedBytes ?? 0).toBe(0);
    expect(await reservedIn(a)).toBe(0);
    const fits = randomBytes(1000);
    expect(await status(await reg(`/v2/${a}/app/blobs/uploads/?digest=${await sha256(fits)}`, { method: "POST", body: fits }))).toBe(201);
  });
});

describe("the sliced collector attacked between its slices", () => {
  it("pull-through records of a digest that a also links expire without taking a's blob", async () => {
    const a = ns("gp");
    const body = await imageManifest(`${a}/app`);
    expect(await status(await putManifest(`${a}/app`, "v1", body, OCI_MANIFEST))).toBe(201);
    const layer = (JSON.parse(body) as { layers: { digest: string }[] }).layers[0].digest;
    // another namespace's build fetched the same digest from an upstream, a year ago
    await testEnv.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at, used_at) VALUES ('docker.io', 'library/x', ?, 1, 1)").bind(layer).run();
    await age(2 * 3600_000);
    const p = newCollection(crypto.randomUUID(), gcOpts());
    await finish(p);
    expect(p.report.deleted.pullThrough).toBeGreaterThanOrEqual(1);
    expect(await testEnv.DB.prepare("SELECT 1 AS x FROM upstream_links WHERE digest = ?").bind(layer).first()).toBeNull();
    expect(await blobIntact(`${a}/app`, layer)).toBe(true);
  });

  // graceSeconds = 0: only the collection's re-checks can save what a push makes referenced meanwhile.
  for (const phase of ["retention", "judge-manifests", "delete-manifests", "links", "cache", "blobs", "objects"] as const) {
    it(`a manifest pushed before the ${phase} step, naming a blob linked long ago and unreferenced until then, keeps it (grace 0)`, async () => {
      const repo = `${ns("gm")}/app`;
      const config = bytesOf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":${Math.random()}}`);
      const layer = randomBytes(300);
      const digests = [await pushBlob(repo, config), await pushBlob(repo, layer)];
      const body = JSON.stringify({
        schemaVersion: 2, mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digests[0], size: config.length },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digests[1], size: layer.length }],
      });
      await sleep(5);
      const p = newCollection(crypto.randomUUID(), gcOpts());
      await runUntil(p, phase);
      let res = await putManifest(repo, "v1", body, OCI_MANIFEST);
      if (res.status !== 201) {
        // the links went before the push: refused cleanly, and the client uploads again
        const err = (await res.json()) as { errors: { code: string }[] };
        expect(err.errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
        await pushBlob(repo, config);
        await pushBlob(repo, layer);
        res = await putManifest(repo, "v1", body, OCI_MANIFEST);
      }
      expect(await status(res)).toBe(201);
      await finish(p);
      expect(await status(await reg(`/v2/${repo}/manifests/v1`))).toBe(200);
      for (const d of digests) {
        expect(await blobRow(d)).toBe(true);
        expect(await blobIntact(repo, d)).toBe(true);
      }
    });
  }

  it("blobs pushed again while a collection runs are not unlinked before the manifest naming them arrives", async () => {
    const repo = `${ns("gl")}/app`;
    // pushed long ago, the image naming them since deleted: the links are unreferenced
    const config = bytesOf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":${Math.random()}}`);
    const layer = randomBytes(300);
    const digests = [await pushBlob(repo, config), await pushBlob(repo, layer)];
    await age(2 * 3600_000);
    const p = newCollection(crypto.randomUUID(), gcOpts({ graceMs: 3600_000 }));
    await runUntil(p, "links");
    // the owner pushes the image again (a build storing its image links its layers the same way)
    expect(await pushBlob(repo, config)).toBe(digests[0]);
    expect(await pushBlob(repo, layer)).toBe(digests[1]);
    await runUntil(p, "cache"); // the links step is over
    const body = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digests[0], size: config.length },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digests[1], size: layer.length }],
    });
    expect(await status(await putManifest(repo, "v1", body, OCI_MANIFEST))).toBe(201);
    await finish(p);
    for (const d of digests) expect(await blobIntact(repo, d)).toBe(true);
  });

  it("b deleting its own image never takes a blob a also uses, nor a's cache entries however many b writes past the budget", async () => {
    const a = ns("gs");
    const b = `${a}-b`;
    const shared = randomBytes(500);
    // both push an image with the same layer; b also fills its cache scope far past the budget
    const bodies: Record<string, string> = {};
    for (const n of [a, b]) {
      const config = bytesOf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"ns":"${n}"}`);
      const digests = [await pushBlob(`${n}/app`, config), await pushBlob(`${n}/app`, shared)];
      bodies[n] = JSON.stringify({
        schemaVersion: 2, mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digests[0], size: config.length },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digests[1], size: shared.length }],
      });
      expect(await status(await putManifest(`${n}/app`, "v1", bodies[n], OCI_MANIFEST))).toBe(201);
    }
    const layer = await sha256(shared);
    const now = Date.now();
    const key = async (s: string) => sha256(bytesOf(s));
    const aKey = await key(`${a} entry`);
    const stmts = [testEnv.DB.prepare("INSERT INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?, ?, ?, 500, ?, ?)").bind(aKey, a, layer, now - 3 * 3600_000, now - 3 * 3600_000)];
    for (let i = 0; i < 20; i++) {
      const blob = await pushBlob(`${b}/cache`, randomBytes(400));
      stmts.push(testEnv.DB.prepare("INSERT INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?, ?, ?, 400, ?, ?)").bind(await key(`${b} entry ${i}`), b, blob, now - i, now - i));
    }
    await testEnv.DB.batch(stmts);
    // b deletes its image (tag and manifest)
    const digest = await sha256(bodies[b]);
    expect(await status(await reg(`/v2/${b}/app/manifests/${digest}`, { method: "DELETE" }))).toBe(202);
    await age(2 * 3600_000);
    const p = newCollection(crypto.randomUUID(), gcOpts({ graceMs: 3600_000, cacheBudgetBytes: 1000 }));
    await finish(p);
    expect(await blobIntact(`${a}/app`, layer)).toBe(true);
    expect(await status(await reg(`/v2/${a}/app/manifests/v1`))).toBe(200);
    expect(await testEnv.DB.prepare("SELECT 1 AS x FROM cache_entries WHERE key = ?").bind(aKey).first()).not.toBeNull();
    const bLeft = await testEnv.DB.prepare("SELECT COUNT(*) AS n FROM cache_entries WHERE scope = ?").bind(b).first<{ n: number }>();
    expect(bLeft?.n).toBeLessThanOrEqual(2); // b's own budget (1,000 bytes of 400-byte layers)
  });

  it("a tag moved to another image between the retention mark and the tag's delete stays, on the image it now names", async () => {
    const repo = `${ns("gt")}/app`;
    const oldBody = await imageManifest(repo);
    expect(await status(await putManifest(repo, "rc", oldBody, OCI_MANIFEST))).toBe(201);
    expect(await status(await reg(`/v1/retention/${repo}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ keepLast: 0, olderThanDays: 1 }) }))).toBe(200);
    try {
      await age(3 * DAY);
      const p = newCollection(crypto.randomUUID(), gcOpts({ graceMs: 3600_000 }));
      await runUntil(p, "delete-tags"); // rc judged dead (older than a day)
      expect(p.report.deleted.tags).toContain(`${repo}:rc`);
      const newBody = await imageManifest(repo);
      expect(await status(await putManifest(repo, "rc", newBody, OCI_MANIFEST))).toBe(201);
      await finish(p);
      const res = await reg(`/v2/${repo}/manifests/rc`);
      expect(res.headers.get("docker-content-digest")).toBe(await sha256(newBody));
      await res.arrayBuffer();
      const layer = (JSON.parse(newBody) as { layers: { digest: string }[] }).layers[0].digest;
      expect(await blobIntact(repo, layer)).toBe(true);
    } finally {
      await reg(`/v1/retention/${repo}`, { method: "DELETE", headers: ADMIN });
    }
  });

  it("a referrer stays when its subject is tagged between the mark and the sweep", async () => {
    const repo = `${ns("gr")}/app`;
    const subjectBody = await imageManifest(repo);
    const subject = await sha256(subjectBody);
    expect(await status(await putManifest(repo, subject, subjectBody, OCI_MANIFEST))).toBe(201);
    const sigBody = await imageManifest(repo, {
      extra: { artifactType: "application/vnd.example.signature", subject: { mediaType: OCI_MANIFEST, digest: subject, size: bytesOf(subjectBody).length } },
    });
    const sig = await sha256(sigBody);
    expect(await status(await putManifest(repo, sig, sigBody, OCI_MANIFEST))).toBe(201);
    await age(2 * 3600_000);
    const p = newCollection(crypto.randomUUID(), gcOpts({ graceMs: 3600_000 }));
    await runUntil(p, "delete-tags"); // both judged dead: untagged, older than the grace period
    // the owner rolls `stable` back to the old image, signature and all
    expect(await status(await putManifest(repo, "stable", subjectBody, OCI_MANIFEST))).toBe(201);
    await finish(p);
    expect(await status(await reg(`/v2/${repo}/manifests/stable`))).toBe(200);
    expect(await status(await reg(`/v2/${repo}/manifests/${sig}`))).toBe(200);
    const referrers = (await (await reg(`/v2/${repo}/referrers/${subject}`)).json()) as { manifests: { digest: string }[] };
    expect(referrers.manifests.map((m) => m.digest)).toEqual([sig]);
  });

  it("an index pushed between the judgement and the delete keeps the old untagged child it names (grace 0)", async () => {
    const repo = `${ns("gj")}/app`;
    const childBody = await imageManifest(repo);
    const child = await sha256(childBody);
    expect(await status(await putManifest(repo, child, childBody, OCI_MANIFEST))).toBe(201);
    const layer = (JSON.parse(childBody) as { layers: { digest: string }[] }).layers[0].digest;
    await sleep(5);
    const p = newCollection(crypto.randomUUID(), gcOpts());
    await runUntil(p, "delete-tags");
    expect(p.report.deleted.manifests).toContain(`${repo}@${child}`); // judged dead
    const index = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: child, size: bytesOf(childBody).length, platform: { architecture: "arm64", os: "linux" } }],
    });
    expect(await status(await putManifest(repo, "multi", index, OCI_INDEX))).toBe(201);
    await finish(p);
    expect(await status(await reg(`/v2/${repo}/manifests/${child}`))).toBe(200);
    expect(await blobIntact(repo, layer)).toBe(true);
  });

  it("an image manifest pushed again by digest while a collection runs is not collected before its index is pushed", async () => {
    const repo = `${ns("gi")}/app`;
    const childBody = await imageManifest(repo);
    const child = await sha256(childBody);
    // pushed long ago by digest (its index since deleted)
    expect(await status(await putManifest(repo, child, childBody, OCI_MANIFEST))).toBe(201);
    await age(2 * 3600_000);
    const p = newCollection(crypto.randomUUID(), gcOpts({ graceMs: 3600_000 }));
    await runUntil(p, "delete-tags"); // judged dead: untagged, older than the grace period
    // the owner pushes the same multi-platform image again: the child by digest, then the index
    expect(await status(await putManifest(repo, child, childBody, OCI_MANIFEST))).toBe(201);
    await runUntil(p, "links");
    const index = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: child, size: bytesOf(childBody).length, platform: { architecture: "amd64", os: "linux" } }],
    });
    expect(await status(await putManifest(repo, "v2", index, OCI_INDEX))).toBe(201);
    await finish(p);
    expect(await status(await reg(`/v2/${repo}/manifests/${child}`))).toBe(200);
  });
});

describe("builds and dry runs across a collection's slices", () => {
  it("a build started after the collection read the running builds keeps its context, though the pack was uploaded long before (grace 0)", async () => {
    // a context pack stored long ago (by this namespace's earlier build, or by anyone with the same bytes:
    // packs are content-addressed and an upload of existing bytes writes nothing)
    const pack = randomBytes(2000);
    const digest = await sha256(pack);
    await testEnv.BUCKET.put(`contexts/sha256/${digest.slice(7)}`, pack);
    await sleep(5);
    const p = newCollection(crypto.randomUUID(), gcOpts());
    await runUntil(p, "links"); // both reads of the running builds are done
    // a build of that context is submitted now, and runs while the collection goes on
    const id = crypto.randomUUID();
    const now = Date.now();
    await testEnv.DB.prepare("INSERT INTO builds (id, status, context_digest, repository, tags, created_at, updated_at) VALUES (?, 'running', ?, ?, ?, ?, ?)")
      .bind(id, digest, `${ns("gb")}/app`, "[]", now, now).run();
    try {
      await finish(p);
      expect(await testEnv.BUCKET.head(`contexts/sha256/${digest.slice(7)}`)).not.toBeNull();
    } finally {
      await testEnv.DB.prepare("DELETE FROM builds WHERE id = ?").bind(id).run();
    }
  });

  /** Rows and R2 objects a dry run must leave as they are (counts and a digest of their keys). */
  async function snapshot(): Promise<string> {
    const tables = ["tags", "manifests", "manifest_refs", "repo_blobs", "blobs", "upstream_links", "upstream_manifests", "context_contents", "context_pieces", "uploads", "upload_chunks", "quota_reservations", "blob_pins"];
    const counts = await testEnv.DB.batch(tables.map((t) => testEnv.DB.prepare(`SELECT '${t}' AS t, COUNT(*) AS n FROM ${t}`)));
    const keys: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await testEnv.BUCKET.list({ cursor, limit: 1000 });
      keys.push(...page.objects.map((o) => o.key));
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
    return JSON.stringify({ counts: counts.map((r) => r.results[0]), keys: await sha256(keys.sort().join("\n")) });
  }

  it("a dry run split over slices deletes nothing, between any two slices", async () => {
    const repo = `${ns("gd")}/app`;
    // garbage of every kind: an untagged manifest, an unreferenced link, a loose blob, an expired pull-through record, an old tag under a policy
    const body = await imageManifest(repo);
    expect(await status(await putManifest(repo, await sha256(body), body, OCI_MANIFEST))).toBe(201);
    await pushBlob(repo, randomBytes(100));
    const tagged = await imageManifest(repo);
    expect(await status(await putManifest(repo, "old", tagged, OCI_MANIFEST))).toBe(201);
    expect(await status(await reg(`/v1/retention/${repo}`, { method: "PUT", headers: ADMIN, body: JSON.stringify({ keepLast: 0, olderThanDays: 1 }) }))).toBe(200);
    await testEnv.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at, used_at) VALUES ('docker.io', 'library/dry', ?, 1, 1)")
      .bind(await sha256(randomBytes(10))).run();
    await age(3 * DAY);
    const before = await snapshot();
    const p = newCollection(crypto.randomUUID(), gcOpts({ dryRun: true }));
    let slices = 0;
    while (!(await collectFor(testEnv, p, 0))) {
      slices++;
      if (p.phase !== "cleanup") expect(await snapshot(), `after slice ${slices} (${p.phase})`).toBe(before);
    }
    expect(p.report.deleted.manifests.length).toBeGreaterThan(0);
    expect(p.report.deleted.tags).toContain(`${repo}:old`);
    expect(p.report.deleted.pullThrough).toBeGreaterThan(0);
    expect(await snapshot()).toBe(before);
    expect(await status(await reg(`/v1/retention/${repo}`, { method: "DELETE", headers: ADMIN }))).toBe(204);
  });

  // Found, not fixed: a dry run indexes cache entries written before the D1 index existed (R2 objects
  // under cache/ with no cache_entries row), as a real run does first. It deletes nothing and the
  // next real run writes the same rows, but GET /v1/usage then lists their layers under a namespace
  // "" (scope unknown). Not indexing them in a dry run would make its report count their layers as
  // garbage (the blobs step asks D1 only), so the fix is a mark-only adoption; left for later.
  it.fails("a dry run writes no cache_entries row for a legacy cache entry", async () => {
    const key = (await sha256(randomBytes(32))).slice(7);
    await testEnv.BUCKET.put(`cache/sha256/${key}`, JSON.stringify({ layer: null }));
    const p = newCollection(crypto.randomUUID(), gcOpts({ dryRun: true }));
    await finish(p);
    expect(await testEnv.DB.prepare("SELECT 1 AS x FROM cache_entries WHERE key = ?").bind(`sha256:${key}`).first()).toBeNull();
  });
});

describe("a collection's cost per statement, whatever a tenant stores", () => {
  /** env whose D1 records the most rows any one statement (alone or in a batch) changed. */
  function changesEnv(): { env: Env; most: () => number; mostRead: () => number } {
    let most = 0;
    let mostRead = 0;
    const note = (r: D1Result) => {
      most = Math.max(most, r.meta?.changes ?? 0);
      mostRead = Math.max(mostRead, r.meta?.rows_read ?? 0);
      return r;
    };
    const db = testEnv.DB;
    const wrap = (s: D1PreparedStatement): D1PreparedStatement => new Proxy(s, {
      get(t, k) {
        if (k === "bind") return (...a: unknown[]) => wrap(t.bind(...a));
        if (k === "run" || k === "all") return async () => note(await (t[k] as () => Promise<D1Result>).call(t));
        const v = Reflect.get(t, k, t);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    const DB = new Proxy(db, {
      get(t, k) {
        if (k === "prepare") return (sql: string) => wrap(t.prepare(sql));
        if (k === "batch") return async (stmts: D1PreparedStatement[]) => (await t.batch(stmts)).map(note);
        const v = Reflect.get(t, k, t);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    return { env: { ...testEnv, DB } as Env, most: () => most, mostRead: () => mostRead };
  }

  it("three tagged indexes of 4,000 child manifests each (one index pushed into three repositories: the same bytes, counted once by the quota) are marked a page at a time", async () => {
    const namespace = ns("gf");
    const repos = [0, 1, 2].map((i) => `${namespace}/r${i}`);
    const index = `sha256:${"f".repeat(64)}`;
    const now = Date.now();
    for (const repo of repos) {
      // rows as 4,000 pushes of child manifests and one push of their index would leave them
      await testEnv.DB.batch([
        testEnv.DB.prepare(
          `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 3999)
           INSERT INTO manifests (repo, digest, media_type, size, created_at) SELECT ?1, printf('sha256:%064x', i), ?2, 300, ?3 FROM n`,
        ).bind(repo, OCI_MANIFEST, now),
        testEnv.DB.prepare(
          `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 3999)
           INSERT INTO manifest_refs (repo, manifest, ref) SELECT ?1, ?2, printf('sha256:%064x', i) FROM n`,
        ).bind(repo, index),
        testEnv.DB.prepare("INSERT INTO manifests (repo, digest, media_type, size, created_at) VALUES (?, ?, ?, 500000, ?)").bind(repo, index, OCI_INDEX, now),
        testEnv.DB.prepare("INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, 'v1', ?, ?)").bind(repo, index, now),
      ]);
    }
    try {
      const counting = changesEnv();
      const p = newCollection(crypto.randomUUID(), gcOpts({ dryRun: true }));
      while (!(await collectFor(counting.env, p, 0)));
      expect(p.report.deleted.manifests.filter((m) => m.startsWith(namespace))).toEqual([]);
      // the most any statement of the collection writes (its own cleanup deletes 5,000 marks at a time)
      expect(counting.most()).toBeLessThanOrEqual(5000);
    } finally {
      await testEnv.DB.batch(["tags", "manifest_refs", "manifests"].map((t) => testEnv.DB.prepare(`DELETE FROM ${t} WHERE repo >= ? AND repo < ?`).bind(`${namespace}/`, `${namespace}0`)));
    }
  });

  // Found, not fixed: a write into a namespace with a quota sums the namespace's stored bytes in the
  // statement that reserves (stored + staged + reserved + adding <= quota), reading every link and
  // manifest row of the namespace. Quotas bound bytes, not rows: one small blob linked into 20,000
  // repositories costs its size once, and then every push of that namespace reads 20,000+ rows, in a
  // D1 database that runs one statement at a time for every tenant. Bounding it needs a usage
  // counter kept by every writer (and the collector), a change larger than this issue.
  it.fails("a reservation reads a bounded number of rows, however many repositories link the namespace's blobs", async () => {
    const namespace = ns("qr");
    const digest = await pushBlob(`${namespace}/r0`, randomBytes(64));
    await testEnv.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
       INSERT INTO repo_blobs (repo, digest, created_at) SELECT ?1 || '/r' || i, ?2, ?3 FROM n`,
    ).bind(namespace, digest, Date.now()).run();
    await setQuota(namespace, 10 ** 9);
    const counting = changesEnv();
    try {
      const held = await reserveQuota(counting.env, { namespace, bytes: 10 ** 9 }, 1);
      await releaseQuota(testEnv, held);
      expect(counting.mostRead()).toBeLessThanOrEqual(GC_PAGE);
    } finally {
      await testEnv.DB.prepare("DELETE FROM repo_blobs WHERE repo >= ? AND repo < ?").bind(`${namespace}/`, `${namespace}0`).run();
    }
  });

  it("b's GET /v1/usage reads b's rows, not the whole store (a's 20,000 links stay unread)", async () => {
    const a = ns("ua");
    const b = `${a}-b`;
    const digest = await pushBlob(`${a}/r0`, randomBytes(64));
    await testEnv.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
       INSERT INTO repo_blobs (repo, digest, created_at) SELECT ?1 || '/r' || i, ?2, ?3 FROM n`,
    ).bind(a, digest, Date.now()).run();
    try {
      const mine = randomBytes(300);
      await pushBlob(`${b}/app`, mine);
      const { token } = await createToken([`repository:${b}/**:pull,push`], `red-${seq++}`);
      let read = 0;
      const db = testEnv.DB;
      const counted = (r: D1Result) => {
        read += r.meta?.rows_read ?? 0;
        return r;
      };
      const DB = new Proxy(db, {
        get(t, k) {
          if (k === "batch") return async (stmts: D1PreparedStatement[]) => (await t.batch(stmts)).map(counted);
          const v = Reflect.get(t, k, t);
          return typeof v === "function" ? v.bind(t) : v;
        },
      });
      const req = new Request("http://kiln.test/v1/usage", { headers: { authorization: `Bearer ${token}` } });
      const res = await worker.fetch(req, { ...testEnv, DB } as Env, createExecutionContext());
      expect(res.status).toBe(200);
      const body = (await res.json()) as { namespaces: { namespace: string; bytes: number }[] };
      expect(body.namespaces).toEqual([expect.objectContaining({ namespace: b, bytes: 300 })]);
      expect(read).toBeLessThan(20_000);
    } finally {
      await testEnv.DB.prepare("DELETE FROM repo_blobs WHERE repo >= ? AND repo < ?").bind(`${a}/`, `${a}0`).run();
    }
  });
});
