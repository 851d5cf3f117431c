// Garbage collection in bounded memory and time slices (issue 13): stores with more rows than a page,
// every D1 answer at most a page, a collection split over many slices, pull-through records that
// expire, and a build layer (putBlobComputed) that a collection running meanwhile cannot take.
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import type { Env } from "../../../src/env";
import { GC_PAGE, collectGarbage, putRetention, type GcOptions } from "../../../src/storage/gc";
import { linkBlob, putBlobBytes, putBlobComputed } from "../../../src/storage/blobs";
import { putManifest } from "../../../src/storage/manifests";
import { isUpstreamLinked } from "../../../src/storage/upstreams";
import { garbageCollector } from "../../../src/gc/collector";
import { OCI_MANIFEST, reg, sha256 } from "../registry/helpers";
import { age, blobObject, blobRow, collect } from "./helpers";

const testEnv = env as unknown as Env;
const DAY = 24 * 3600 * 1000;
const opts = (o: Partial<GcOptions> = {}): GcOptions => ({
  dryRun: false, graceMs: 0, trigger: "test", cacheMaxAgeMs: 30 * DAY, cacheBudgetBytes: null, pullThroughMaxAgeMs: 30 * DAY, ...o,
});

/** Runs `fn` over 0..n-1, `width` at a time. */
async function parallel(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++);
  }));
}

/** Stores `text` as a blob (D1 row and R2 object, through the storage functions); returns its digest. */
async function blob(text: string): Promise<string> {
  const bytes = new TextEncoder().encode(text);
  const digest = await sha256(bytes);
  await putBlobBytes(testEnv, bytes, digest);
  return digest;
}

interface Store { kept: string[]; dead: string[] }

/**
 * A store of `images` images (at least 63, so that the tagged ones use every shared layer) over 10 repositories (own config, own layer, one of 50 layers shared
 * across repositories), 80% tagged, the rest untagged; `linked` blobs linked in a repository no
 * manifest uses; `loose` blobs linked nowhere; and the layers of `other` (300) images linked, unused, in one more
 * repository. Everything is then made two hours old. Kept: the tagged images' blobs (manifest, config,
 * layers) and every shared layer; dead: the rest.
 */
async function seedStore(p: string, n: { images: number; linked: number; loose: number; other?: number }): Promise<Store> {
  const kept: string[] = [];
  const dead: string[] = [];
  const shared = await Promise.all(Array.from({ length: 50 }, (_, k) => blob(`${p} shared layer ${k}`)));
  kept.push(...shared);
  await parallel(n.images, 8, async (i) => {
    const repo = `${p}/r${i % 10}`;
    const config = await blob(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, p, i }));
    const layer = await blob(`${p} layer ${i}`);
    const sharedLayer = shared[i % 50];
    for (const d of [config, layer, sharedLayer]) await linkBlob(testEnv, repo, d);
    const desc = (d: string, text: number) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: d, size: text });
    const sizeOf = async (d: string) => (await testEnv.DB.prepare("SELECT size FROM blobs WHERE digest = ?").bind(d).first<{ size: number }>())!.size;
    const body = JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: await sizeOf(config) },
      layers: [desc(layer, await sizeOf(layer)), desc(sharedLayer, await sizeOf(sharedLayer))],
    });
    const tagged = i < n.images * 0.8;
    const { digest } = await putManifest(testEnv, repo, tagged ? `t${i}` : await sha256(body), new TextEncoder().encode(body), OCI_MANIFEST);
    (tagged ? kept : dead).push(digest, config, layer);
    if (i < (n.other ?? 300)) await linkBlob(testEnv, `${p}/other`, layer); // an unused link: the link goes, the blob stays if kept
  });
  await parallel(n.linked, 8, async (j) => {
    const d = await blob(`${p} linked ${j}`);
    await linkBlob(testEnv, `${p}/r${j % 10}`, d);
    dead.push(d);
  });
  await parallel(n.loose, 8, async (j) => {
    dead.push(await blob(`${p} loose ${j}`));
  });
  await age(2 * 3600_000);
  return { kept, dead };
}

/** Those of `digests` whose D1 row exists. */
async function present(digests: string[]): Promise<Set<string>> {
  const found = new Set<string>();
  for (let i = 0; i < digests.length; i += 90) {
    const part = digests.slice(i, i + 90);
    const { results } = await testEnv.DB.prepare(`SELECT digest FROM blobs WHERE digest IN (${part.map(() => "?").join(",")})`).bind(...part).all<{ digest: string }>();
    for (const r of results) found.add(r.digest);
  }
  return found;
}

/** env with a DB that records the most rows any one query (or batch member) answered. */
function countingEnv(page?: number): { env: Env; most: () => number; queries: () => number } {
  let most = 0;
  let queries = 0;
  const note = (rows: number) => {
    queries++;
    most = Math.max(most, rows);
  };
  const inner = new WeakMap<object, D1PreparedStatement>();
  const wrap = (s: D1PreparedStatement): D1PreparedStatement => {
    const proxy = new Proxy(s, {
      get(t, k) {
        if (k === "bind") return (...a: unknown[]) => wrap(t.bind(...a));
        if (k === "all") return async () => { const r = await t.all(); note(r.results.length); return r; };
        if (k === "run") return async () => { const r = await t.run(); note(r.results?.length ?? 0); return r; };
        if (k === "raw") return async (o?: { columnNames?: false }) => { const r = await t.raw(o); note(r.length); return r; };
        if (k === "first") return async (c?: string) => { note(1); return c === undefined ? t.first() : t.first(c); };
        const v = Reflect.get(t, k, t);
        return typeof v === "function" ? v.bind(t) : v;
      },
    });
    inner.set(proxy, s);
    return proxy;
  };
  const db = testEnv.DB;
  const DB = new Proxy(db, {
    get(t, k) {
      if (k === "prepare") return (sql: string) => wrap(t.prepare(sql));
      if (k === "batch") {
        return async (stmts: D1PreparedStatement[]) => {
          const rs = await t.batch(stmts.map((s) => inner.get(s) ?? s));
          for (const r of rs) note(r.results?.length ?? 0);
          return rs;
        };
      }
      const v = Reflect.get(t, k, t);
      return typeof v === "function" ? v.bind(t) : v;
    },
  });
  return { env: { ...testEnv, DB, ...(page ? { KILN_GC_PAGE_ROWS: String(page) } : {}) } as Env, most: () => most, queries: () => queries };
}

/** The run's gc_runs row. */
async function runRow(id: string): Promise<{ status: string; report: string | null }> {
  return (await testEnv.DB.prepare("SELECT status, report FROM gc_runs WHERE id = ?").bind(id).first<{ status: string; report: string | null }>())!;
}

describe("garbage collection in pages", () => {
  // KILN_GC_PAGE_ROWS=100: the same paging as 1,000 rows a page over a store ten times the size.
  it("a store of 450 blobs over 12 repositories in pages of 100 rows: exactly the unreferenced go, shared ones stay, and no D1 answer is longer than a page", { timeout: 300_000 }, async () => {
    const PAGE = 100;
    const store = await seedStore("pg", { images: 105, linked: 40, loose: 40, other: 30 });
    const all = [...store.kept, ...store.dead];
    expect(all.length).toBeGreaterThan(4 * PAGE);
    expect(store.dead.length).toBeGreaterThan(PAGE);
    expect(new Set(all).size).toBe(all.length);

    const dryDb = countingEnv(PAGE);
    const dry = await collectGarbage(dryDb.env, crypto.randomUUID(), opts({ dryRun: true, listLimit: 50 }));
    expect((await present(all)).size).toBe(all.length); // a dry run deletes nothing
    expect(dry.counts.blobs).toBe(store.dead.length);
    expect(dry.deleted.blobs.length).toBe(50); // the list is cut, the count is not
    expect(dry.counts.manifests).toBe(21); // the untagged images
    expect(dry.deleted.links).toBe(21 * 2 + 40 + 30); // untagged images' own links, the unused ones, all of pg/other
    expect(dryDb.most()).toBeLessThanOrEqual(PAGE);

    const realDb = countingEnv(PAGE);
    const real = await collectGarbage(realDb.env, crypto.randomUUID(), opts());
    expect(realDb.most()).toBeLessThanOrEqual(PAGE);
    expect(realDb.queries()).toBeGreaterThan(10);
    expect(real.counts.blobs).toBe(dry.counts.blobs);
    expect(real.counts.manifests).toBe(dry.counts.manifests);
    expect(real.deleted.links).toBe(dry.deleted.links);
    for (const d of dry.deleted.blobs) expect(store.dead).toContain(d);
    const left = await present(all);
    expect([...left].sort()).toEqual([...store.kept].sort());
    expect(await blobObject(store.dead[store.dead.length - 1])).toBe(false);
    expect(await blobObject(store.kept[0])).toBe(true);
    // the shared layers are still readable from every repository that uses them
    const r = await reg(`/v2/pg/r3/blobs/${store.kept[3]}`);
    expect(r.status).toBe(200);
    await r.body?.cancel();
    // no marks are left behind
    expect((await testEnv.DB.prepare("SELECT COUNT(*) AS n FROM gc_marks").first<{ n: number }>())!.n).toBe(0);
  });

  it("a collection split over many slices (alarms) deletes what one slice would and ends with one report", { timeout: 200_000 }, async () => {
    const store = await seedStore("sl", { images: 70, linked: 300, loose: 50 }) // 56 tagged images use all 50 shared layers;
    const dry = await collectGarbage(testEnv, crypto.randomUUID(), opts({ dryRun: true }));
    expect(dry.counts.blobs).toBe(store.dead.length);

    const stub = garbageCollector(testEnv);
    const first = await runInDurableObject(stub, (gc) => gc.collect({ dryRun: false, graceMs: 0, trigger: "test", waitMs: 0, sliceMs: 5 }));
    expect(first.status).toBe("running");
    const id = (first as { id: string }).id;
    expect((await runRow(id)).status).toBe("running");
    // GET /v1/gc shows it running, with its step and slices so far
    const during = await reg("/v1/gc", { headers: { authorization: "Bearer kiln-test-admin" } });
    const shown = ((await during.json()) as { runs: { id: string; status: string; progress?: { phase: string; slices: number } }[] }).runs.find((r) => r.id === id);
    expect(shown).toMatchObject({ status: "running", progress: { phase: expect.any(String), slices: expect.any(Number) } });
    // another collection is refused while this one goes on in slices
    expect((await runInDurableObject(stub, (gc) => gc.collect({ dryRun: true, trigger: "test" }))).status).toBe("busy");
    const deadline = Date.now() + 120_000;
    while ((await runRow(id)).status === "running") {
      if (Date.now() > deadline) throw new Error("the collection did not end within 120 s");
      await runDurableObjectAlarm(stub);
      await new Promise((r) => setTimeout(r, 10));
    }
    const row = await runRow(id);
    expect(row.status).toBe("done");
    const report = JSON.parse(row.report!);
    expect(report.slices).toBeGreaterThan(3);
    expect(report.counts.blobs).toBe(dry.counts.blobs);
    expect(report.deleted.links).toBe(dry.deleted.links);
    expect([...(await present([...store.kept, ...store.dead]))].sort()).toEqual([...store.kept].sort());
    const runs = await reg("/v1/gc", { headers: { authorization: "Bearer kiln-test-admin" } });
    const listed = ((await runs.json()) as { runs: { id: string; status: string; report: { slices: number } }[] }).runs.filter((r) => r.id === id);
    expect(listed).toHaveLength(1);
    expect(listed[0].status).toBe("done");
    expect(listed[0].report.slices).toBe(report.slices);
    // the collector is free again; a small store is still answered in one POST
    const again = await collect("graceSeconds=0");
    expect(again.slices).toBe(1);
  });

  it("cache eviction past a scope's budget reads a page at a time and drops exactly what one pass over every entry would", { timeout: 120_000 }, async () => {
    const now = Date.now();
    type Entry = { key: string; scope: string; layer: string | null; size: number; last_hit_at: number };
    const entries: Entry[] = [];
    for (let i = 0; i < 2600; i++) {
      const scope = i < 2500 ? "big" : "small";
      const l = (i * 7) % 300; // layers repeat across pages
      entries.push({
        key: `sha256:${(0xe0000 + i).toString(16).padStart(64, "0")}`, scope,
        layer: i % 13 === 0 ? null : `sha256:${(0xf000 + l).toString(16).padStart(64, "0")}`, size: 100 + l,
        // ties on purpose (every 3 entries share a time); some older than the cache's age
        last_hit_at: now - 3600_000 - Math.floor(i / 3) * 3 * 3600_000,
      });
    }
    const stmts = entries.map((e) => testEnv.DB.prepare("INSERT INTO cache_entries (key, scope, layer, size, created_at, last_hit_at) VALUES (?, ?, ?, ?, ?, ?)")
      .bind(e.key, e.scope, e.layer, e.size, e.last_hit_at, e.last_hit_at));
    for (let i = 0; i < stmts.length; i += 100) await testEnv.DB.batch(stmts.slice(i, i + 100));
    const budget = 12_000;
    const o = opts({ graceMs: 2 * 3600_000, cacheBudgetBytes: budget, cacheMaxAgeMs: 90 * DAY });

    // the rule, in one pass over every entry (what the collector did before it worked in pages)
    const cutoff = now - o.graceMs;
    const staleBefore = Math.min(cutoff, now - o.cacheMaxAgeMs);
    const expected = new Set<string>();
    const sorted = [...entries].sort((a, b) => (a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : b.last_hit_at - a.last_hit_at || (a.key < b.key ? -1 : 1)));
    const spent = new Map<string, Map<string, number>>();
    for (const r of sorted) {
      const layers = spent.get(r.scope) ?? new Map<string, number>();
      spent.set(r.scope, layers);
      if (r.last_hit_at >= cutoff) {
        if (r.layer) layers.set(r.layer, r.size);
        continue;
      }
      if (r.last_hit_at < staleBefore) {
        expected.add(r.key);
        continue;
      }
      const total = [...layers.values()].reduce((a, b) => a + b, 0);
      if (r.layer && !layers.has(r.layer) && total + r.size > budget) {
        expected.add(r.key);
        continue;
      }
      if (r.layer) layers.set(r.layer, r.size);
    }
    expect(expected.size).toBeGreaterThan(GC_PAGE);
    expect(expected.size).toBeLessThan(entries.length - 100);

    const counted = countingEnv();
    const dry = await collectGarbage(counted.env, crypto.randomUUID(), { ...o, dryRun: true });
    expect(counted.most()).toBeLessThanOrEqual(GC_PAGE);
    expect(dry.deleted.cacheEntries).toBe(expected.size);
    const real = await collectGarbage(testEnv, crypto.randomUUID(), o);
    expect(real.deleted.cacheEntries).toBe(expected.size);
    const { results } = await testEnv.DB.prepare("SELECT key FROM cache_entries").all<{ key: string }>();
    const left = new Set(results.map((r) => r.key));
    for (const e of entries) expect(left.has(e.key), e.key).toBe(!expected.has(e.key));
  });

  it("retention's keepLast counts across pages of a repository's tags; keepTags still wins", { timeout: 120_000 }, async () => {
    const cfg = await blob(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, ret: 1 }));
    await linkBlob(testEnv, "ret/big", cfg);
    const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg, size: (await testEnv.DB.prepare("SELECT size FROM blobs WHERE digest = ?").bind(cfg).first<{ size: number }>())!.size }, layers: [] });
    const { digest } = await putManifest(testEnv, "ret/big", "t0000", new TextEncoder().encode(body), OCI_MANIFEST);
    const now = Date.now();
    const tags: { tag: string; updated_at: number }[] = [];
    for (let i = 0; i < 2300; i++) tags.push({ tag: i % 500 === 7 ? `keep-${i}` : `t${String(i).padStart(4, "0")}`, updated_at: now - 3600_000 - Math.floor(i / 4) * 60_000 });
    const stmts = tags.map((t) => testEnv.DB.prepare("INSERT OR REPLACE INTO tags (repo, tag, digest, updated_at) VALUES ('ret/big', ?, ?, ?)").bind(t.tag, digest, t.updated_at));
    for (let i = 0; i < stmts.length; i += 100) await testEnv.DB.batch(stmts.slice(i, i + 100));
    await putRetention(testEnv, "ret/*", { keepLast: 2000, keepTags: ["keep-*"] });
    const byAge = [...tags].sort((a, b) => b.updated_at - a.updated_at || (a.tag < b.tag ? -1 : 1));
    const expected = byAge.slice(2000).filter((t) => !t.tag.startsWith("keep-")).map((t) => `ret/big:${t.tag}`).sort();
    expect(expected.length).toBe(299); // 300 beyond the last 2000, one of them kept by keepTags

    const counted = countingEnv();
    const dry = await collectGarbage(counted.env, crypto.randomUUID(), opts({ dryRun: true }));
    expect(counted.most()).toBeLessThanOrEqual(GC_PAGE);
    expect(dry.counts.tags).toBe(expected.length);
    expect([...dry.deleted.tags].sort()).toEqual(expected);
    await collectGarbage(testEnv, crypto.randomUUID(), opts());
    const { results } = await testEnv.DB.prepare("SELECT tag FROM tags WHERE repo = 'ret/big'").all<{ tag: string }>();
    expect(results.length).toBe(tags.length - expected.length);
    expect(results.map((r) => `ret/big:${r.tag}`)).not.toContain(expected[0]);
    expect(await blobRow(digest)).toBe(true); // still tagged
  });

  it("POST /v1/gc?wait=0 answers 202 with the run's id at once; the collection goes on in the alarm and its report appears in GET /v1/gc", async () => {
    const orphan = await blob(`wait0 ${Math.random()}`);
    await age(2 * 3600_000);
    const res = await reg("/v1/gc?graceSeconds=0&wait=0", { method: "POST", headers: { authorization: "Bearer kiln-test-admin" } });
    expect(res.status).toBe(202);
    const { id, status } = (await res.json()) as { id: string; status: string };
    expect(status).toBe("running");
    const busy = await reg("/v1/gc?graceSeconds=0", { method: "POST", headers: { authorization: "Bearer kiln-test-admin" } });
    expect(busy.status).toBe(409);
    expect(await busy.text()).toContain(id);
    const deadline = Date.now() + 30_000;
    let run: { id: string; status: string; report: { deleted: { blobs: string[] } } } | undefined;
    for (;;) {
      const { runs } = (await (await reg("/v1/gc", { headers: { authorization: "Bearer kiln-test-admin" } })).json()) as { runs: NonNullable<typeof run>[] };
      run = runs.find((r) => r.id === id);
      if (run?.status !== "running") break;
      if (Date.now() > deadline) throw new Error("the collection did not end within 30 s");
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(run?.status).toBe("done");
    expect(run!.report.deleted.blobs).toContain(orphan);
    expect(await blobRow(orphan)).toBe(false);
  });

  it("POST /v1/gc refuses a bad wait", async () => {
    const res = await reg("/v1/gc?wait=soon", { method: "POST", headers: { authorization: "Bearer kiln-test-admin" } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/wait must be a whole number of seconds/);
  });

  it("pull-through records unused for KILN_PULL_THROUGH_MAX_AGE_DAYS expire and their blobs go; a use keeps them", async () => {
    const stale = await blob(`pull stale ${Math.random()}`);
    const used = await blob(`pull used ${Math.random()}`);
    const fresh = await blob(`pull fresh ${Math.random()}`);
    const manifest = await blob(`pull manifest ${Math.random()}`);
    const old = Date.now() - 40 * DAY;
    await testEnv.DB.batch([
      testEnv.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at) VALUES ('docker.io', 'library/old', ?, ?)").bind(stale, old),
      testEnv.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at) VALUES ('docker.io', 'library/old', ?, ?)").bind(used, old),
      testEnv.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at) VALUES ('docker.io', 'library/new', ?, ?)").bind(fresh, Date.now()),
      testEnv.DB.prepare("INSERT INTO upstream_manifests (digest, media_type, size, fetched_at) VALUES (?, ?, 10, ?)").bind(manifest, OCI_MANIFEST, old),
    ]);
    await age(2 * 3600_000);
    // a build pulling library/old finds `used` in the store: that is a use
    expect(await isUpstreamLinked(testEnv, "docker.io", "library/old", used)).toBe(true);

    // 0 days: records never expire
    const never = await collectGarbage(testEnv, crypto.randomUUID(), opts({ dryRun: true, pullThroughMaxAgeMs: null }));
    expect(never.deleted.pullThrough).toBe(0);
    expect(never.deleted.blobs).not.toContain(stale);

    const dry = await collectGarbage(testEnv, crypto.randomUUID(), opts({ dryRun: true }));
    expect(dry.deleted.blobs).toContain(stale);
    expect(dry.deleted.blobs).toContain(manifest);
    expect(dry.deleted.pullThrough).toBe(2);
    const report = await collect("graceSeconds=0"); // the default: 30 days
    expect(report.deleted.pullThrough).toBe(2);
    expect(report.deleted.blobs).toEqual(expect.arrayContaining([stale, manifest]));
    expect(await blobRow(stale)).toBe(false);
    expect(await blobRow(manifest)).toBe(false);
    expect(await blobRow(used)).toBe(true);
    expect(await blobRow(fresh)).toBe(true);
    expect(await isUpstreamLinked(testEnv, "docker.io", "library/old", stale)).toBe(false);
    expect(await isUpstreamLinked(testEnv, "docker.io", "library/old", used)).toBe(true);
  });

  it("a build layer stored while identical old bytes are unreferenced is not collected before the build links it", async () => {
    const text = `build layer ${Math.random()}`;
    const layer = await blob(text);
    const control = await blob(`unreferenced ${Math.random()}`);
    await age(2 * 3600_000);
    // the build writes the same bytes: the store already has them (old and unreferenced)
    const bytes = new TextEncoder().encode(text);
    const stored = await putBlobComputed(testEnv, new Blob([bytes]).stream());
    expect(stored.digest).toBe(layer);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.blobs).toContain(control); // such a blob is collected…
    expect(report.deleted.blobs).not.toContain(layer); // …but not the one the build holds
    await linkBlob(testEnv, "gcbuild/app", layer); // BLOB_UNKNOWN had the collection taken it
    expect(await blobRow(layer)).toBe(true);
    expect(await blobObject(layer)).toBe(true);
  });
});
