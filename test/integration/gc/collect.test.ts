import { createExecutionContext, createScheduledController, env, waitOnExecutionContext } from "cloudflare:test";
import worker from "../../../src/index";
import { describe, expect, it } from "vitest";
import { OCI_INDEX, OCI_MANIFEST, bytesOf, imageManifest, pushBlob, putManifest, reg, sha256 } from "../registry/helpers";
import { age, blobIntact, blobObject, blobRow, collect } from "./helpers";
import { build, r2Keys } from "../builds/helpers";

const ADMIN = { authorization: "Bearer kiln-test-admin" };

/** Pushes an image (own config, one own layer, plus `shared` when given) tagged `tag`; returns its digests. */
async function pushImage(repo: string, tag: string, shared?: string): Promise<{ manifest: string; config: string; layers: string[] }> {
  const text = JSON.parse(await imageManifest(repo));
  if (shared) {
    const digest = await pushBlob(repo, shared);
    text.layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest, size: bytesOf(shared).length });
  }
  const body = JSON.stringify(text);
  const res = await putManifest(repo, tag, body, OCI_MANIFEST);
  expect(res.status).toBe(201);
  return { manifest: await sha256(body), config: text.config.digest, layers: text.layers.map((l: { digest: string }) => l.digest) };
}

describe("garbage collection", () => {
  it("after a tag is deleted, its unshared layers and config are gone from R2 and D1; shared ones and other tags stay", async () => {
    const shared = `shared-layer-${Math.random()}`;
    const a = await pushImage("gca/app", "v1", shared);
    const kept = await pushImage("gca/app", "v2");
    const b = await pushImage("gcb/other", "v1", shared);
    const del = await reg("/v2/gca/app/manifests/v1", { method: "DELETE" });
    expect(del.status).toBe(202);

    const report = await collect("graceSeconds=0");
    expect(report.dryRun).toBe(false);
    expect(report.deleted.manifests).toEqual([`gca/app@${a.manifest}`]);
    const own = [a.config, a.layers[0], a.manifest];
    expect([...report.deleted.blobs].sort()).toEqual([...own].sort());
    expect(report.bytesFreed).toBeGreaterThan(0);
    for (const d of own) {
      expect(await blobRow(d)).toBe(false);
      expect(await blobObject(d)).toBe(false);
    }
    // the shared layer is still used by gcb/other (and its link in gca/app is gone)
    expect(await blobIntact("gcb/other", a.layers[1])).toBe(true);
    expect((await reg(`/v2/gca/app/blobs/${a.layers[1]}`, { method: "HEAD" })).status).toBe(404);
    for (const d of [kept.config, ...kept.layers]) expect(await blobIntact("gca/app", d)).toBe(true);
    for (const d of [b.config, ...b.layers]) expect(await blobIntact("gcb/other", d)).toBe(true);
    expect((await reg("/v2/gca/app/manifests/v2")).status).toBe(200);
  });

  it("a dry run reports what a collection would delete and deletes nothing", async () => {
    const a = await pushImage("gcdry/app", "v1");
    expect((await reg("/v2/gcdry/app/manifests/v1", { method: "DELETE" })).status).toBe(202);
    const dry = await collect("graceSeconds=0&dryRun=1");
    expect(dry.dryRun).toBe(true);
    expect(dry.deleted.manifests).toContain(`gcdry/app@${a.manifest}`);
    expect(dry.deleted.blobs).toEqual(expect.arrayContaining([a.config, a.layers[0], a.manifest]));
    for (const d of [a.config, a.layers[0], a.manifest]) expect(await blobObject(d)).toBe(true);
    expect((await reg(`/v2/gcdry/app/manifests/${a.manifest}`)).status).toBe(200);
    const real = await collect("graceSeconds=0");
    expect([...real.deleted.blobs].sort()).toEqual([...dry.deleted.blobs].sort());
    expect(real.bytesFreed).toBe(dry.bytesFreed);
  });

  it("keeps what is younger than the grace period (default one hour)", async () => {
    const a = await pushImage("gcgrace/app", "v1");
    const orphan = await pushBlob("gcgrace/app", `orphan-${Math.random()}`);
    expect((await reg("/v2/gcgrace/app/manifests/v1", { method: "DELETE" })).status).toBe(202);
    const report = await collect("");
    expect(report.graceSeconds).toBe(3600);
    expect(report.deleted.blobs).toEqual([]);
    expect(await blobIntact("gcgrace/app", orphan)).toBe(true);
    expect((await reg(`/v2/gcgrace/app/manifests/${a.manifest}`)).status).toBe(200);
    await age(2 * 3600 * 1000);
    const later = await collect("");
    expect(later.deleted.blobs).toEqual(expect.arrayContaining([orphan, a.manifest, a.config]));
    expect(await blobRow(orphan)).toBe(false);
  });

  it("marks index children and referrers of what a tag reaches; referrers of a collected subject go with it", async () => {
    const repo = "gcidx/app";
    const child = await pushImage(repo, "tmp-child");
    const childBody = await (await reg(`/v2/${repo}/manifests/${child.manifest}`)).text();
    expect((await reg(`/v2/${repo}/manifests/tmp-child`, { method: "DELETE" })).status).toBe(202);
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: child.manifest, size: bytesOf(childBody).length, platform: { os: "linux", architecture: "amd64" } }] });
    expect((await putManifest(repo, "multi", index, OCI_INDEX)).status).toBe(201);
    // a signature of the child (a referrer), and an untagged image with its own signature
    const empty = await pushBlob(repo, "{}");
    const sig = (subject: string, size: number) => JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: "application/vnd.example.sig", config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty, size: 2 }, layers: [], subject: { mediaType: OCI_MANIFEST, digest: subject, size }, n: Math.random() });
    const childSig = sig(child.manifest, bytesOf(childBody).length);
    expect((await putManifest(repo, await sha256(childSig), childSig, OCI_MANIFEST)).status).toBe(201);
    const loose = await pushImage(repo, "loose");
    const looseBody = await (await reg(`/v2/${repo}/manifests/loose`)).text();
    expect((await reg(`/v2/${repo}/manifests/loose`, { method: "DELETE" })).status).toBe(202);
    const looseSig = sig(loose.manifest, bytesOf(looseBody).length);
    expect((await putManifest(repo, await sha256(looseSig), looseSig, OCI_MANIFEST)).status).toBe(201);

    const report = await collect("graceSeconds=0");
    expect([...report.deleted.manifests].sort()).toEqual([`${repo}@${loose.manifest}`, `${repo}@${await sha256(looseSig)}`].sort());
    expect((await reg(`/v2/${repo}/manifests/${child.manifest}`)).status).toBe(200);
    expect((await reg(`/v2/${repo}/manifests/${await sha256(childSig)}`)).status).toBe(200);
    for (const d of [child.config, ...child.layers, empty]) expect(await blobIntact(repo, d)).toBe(true);
    expect(await blobRow(loose.layers[0])).toBe(false);
  });

  it("lists each run's report (digests deleted, bytes freed, duration) on GET /v1/gc", async () => {
    const orphan = await pushBlob("gclist/app", `orphan-${Math.random()}`);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.blobs).toContain(orphan);
    const res = await reg("/v1/gc", { headers: ADMIN });
    expect(res.status).toBe(200);
    const { runs } = (await res.json()) as { runs: any[] };
    const run = runs.find((r) => r.id === report.id);
    expect(run).toMatchObject({ status: "done", dryRun: false, trigger: "api" });
    expect(run.report.deleted.blobs).toContain(orphan);
    expect(run.report.bytesFreed).toBe(report.bytesFreed);
    expect(typeof run.report.durationMs).toBe("number");
  });

  it("refuses a bad graceSeconds, and anything but an admin", async () => {
    const bad = await reg("/v1/gc?graceSeconds=-1", { method: "POST", headers: ADMIN });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.message).toMatch(/graceSeconds/);
  });

  it("sweeps R2 objects of interrupted writes no row refers to, after the grace period, and keeps staged upload chunks", async () => {
    await env.BUCKET.put("tmp/interrupted-1", "x");
    await env.BUCKET.put("blobs/objects/orphan-1", "y");
    const start = await reg("/v2/gcobj/app/blobs/uploads/", { method: "POST" });
    const loc = start.headers.get("location")!;
    expect((await reg(loc, { method: "PATCH", body: "chunk-bytes" })).status).toBe(202);
    const kept = await collect("graceSeconds=3600");
    expect(kept.deleted.objects).toBe(0);
    const swept = await collect("graceSeconds=0");
    expect(swept.deleted.objects).toBeGreaterThanOrEqual(2);
    expect(await env.BUCKET.head("tmp/interrupted-1")).toBeNull();
    expect(await env.BUCKET.head("blobs/objects/orphan-1")).toBeNull();
    // the open upload still completes
    const digest = await sha256("chunk-bytes");
    const done = await reg(`${loc}${loc.includes("?") ? "&" : "?"}digest=${digest}`, { method: "PUT" });
    expect(done.status).toBe(201);
    expect(await blobIntact("gcobj/app", digest)).toBe(true);
  });

  it("the daily cron runs one collection (default grace period) and keeps its report", async () => {
    const orphan = await pushBlob("gccron/app", `orphan-${Math.random()}`);
    await env.DB.prepare("UPDATE blobs SET created_at = ? WHERE digest = ?").bind(Date.now() - 2 * 3600 * 1000, orphan).run();
    await env.DB.prepare("UPDATE repo_blobs SET created_at = ? WHERE digest = ?").bind(Date.now() - 2 * 3600 * 1000, orphan).run();
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "17 3 * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    expect(await blobRow(orphan)).toBe(false);
    const { runs } = (await (await reg("/v1/gc", { headers: ADMIN })).json()) as { runs: any[] };
    expect(runs[0]).toMatchObject({ trigger: "cron", status: "done" });
    expect(runs[0].report.deleted.blobs).toContain(orphan);
  });

  it("deletes the context of a build that ended (after the grace period); the image stays whole", async () => {
    const b = await build({ Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\n", "a.txt": `ctx-${Math.random()}` }, "?tag=gcctx/app:1");
    expect(b.status).toBe("succeeded");
    const before = await r2Keys("contexts/");
    expect(before.length).toBeGreaterThanOrEqual(2); // the pack and its file index
    const kept = await collect("graceSeconds=3600");
    expect(kept.deleted.contexts).toBe(0);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.contexts).toBeGreaterThanOrEqual(1);
    expect(await r2Keys("contexts/")).toEqual([]);
    const m = await reg("/v2/gcctx/app/manifests/1", { headers: { accept: OCI_MANIFEST } });
    const doc = (await m.json()) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [doc.config.digest, ...doc.layers.map((l) => l.digest)]) expect(await blobIntact("gcctx/app", d)).toBe(true);
  });

  it("keeps what pull-through records hold (base images fetched from other registries)", async () => {
    const layer = await pushBlob("gcup/app", `upstream-layer-${Math.random()}`);
    await env.DB.prepare("INSERT INTO upstream_links (host, repository, digest, linked_at) VALUES ('docker.io', 'library/alpine', ?, ?)").bind(layer, Date.now()).run();
    expect((await reg(`/v2/gcup/app/blobs/${layer}`, { method: "DELETE" })).status).toBe(202);
    const report = await collect("graceSeconds=0");
    expect(report.deleted.blobs).not.toContain(layer);
    expect(await blobRow(layer)).toBe(true);
    expect(await blobObject(layer)).toBe(true);
  });
});
