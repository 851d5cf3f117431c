import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { OCI_MANIFEST, bytesOf, pushBlob, putManifest, randomBytes, reg, sha256 } from "../registry/helpers";
import { build } from "../builds/helpers";
import { age, blobIntact, collectBeside } from "./helpers";

/** Pushes an image whose layer is `layer`, tagged `tag`. */
async function pushImage(repo: string, tag: string, layer: Uint8Array): Promise<void> {
  const config = bytesOf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"tag":"${tag}"}`);
  const cfg = await pushBlob(repo, config);
  const lay = await pushBlob(repo, layer);
  const body = JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg, size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: lay, size: layer.length }],
  });
  const res = await putManifest(repo, tag, body, OCI_MANIFEST);
  if (res.status !== 201) throw new Error(`push ${repo}:${tag}: ${res.status} ${await res.text()}`);
}

describe("online collection", () => {
  it("a collection running while 20 pushes and a build go on loses nothing: every referenced blob is there and hashes to its digest", async () => {
    // old garbage (some of which the pushes below bring back), and an old image that must stay
    const garbage = Array.from({ length: 120 }, (_, i) => randomBytes(2048, 1000 + i));
    for (const g of garbage) await pushBlob("online/old", g);
    await pushImage("online/keep", "v1", randomBytes(4096, 99));
    await age(2 * 3600 * 1000);

    const gc = collectBeside("graceSeconds=60").then((r) => {
      if (r.status !== 200) throw new Error(`POST /v1/gc ${r.status}: ${JSON.stringify(r.body)}`);
      return r.body;
    });
    const pushedAt: number[] = [];
    const pushesStarted = Date.now();
    const pushes = Array.from({ length: 20 }, (_, i) =>
      // even pushes re-upload the bytes of an old garbage blob the collector is deleting
      pushImage(`online/app${i % 4}`, `t${i}`, i % 2 === 0 ? garbage[i] : randomBytes(3000, 5000 + i)).then(() => pushedAt.push(Date.now())));
    const built = build({ Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\n", "a.txt": "a", "b.txt": `b-${Math.random()}` }, "?tag=online/built:1");
    const [report, , b] = await Promise.all([gc, Promise.all(pushes), built]);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    // the pushes were under way while the collection ran: some ended before it did
    expect(pushesStarted).toBeLessThan(report.finishedAt);
    expect(pushedAt.filter((t) => t > report.startedAt && t < report.finishedAt).length).toBeGreaterThan(0);
    // it did collect: the old garbage nobody pushed again is gone
    expect(report.counts.blobs).toBeGreaterThanOrEqual(60);
    for (let i = 1; i < 20; i += 2) expect(await blobIntact("online/old", await sha256(garbage[i]))).toBe(false);

    // every blob and child a manifest references is present in its repository and hashes to its digest
    const { results: manifests } = await env.DB.prepare("SELECT repo, digest FROM manifests").all<{ repo: string; digest: string }>();
    expect(manifests.length).toBeGreaterThanOrEqual(22);
    let checked = 0;
    for (const m of manifests) {
      const res = await reg(`/v2/${m.repo}/manifests/${m.digest}`);
      expect(res.status).toBe(200);
      const doc = JSON.parse(await res.text()) as { config?: { digest: string }; layers?: { digest: string }[] };
      for (const d of [doc.config?.digest, ...(doc.layers ?? []).map((l) => l.digest)]) {
        if (!d) continue;
        expect(await blobIntact(m.repo, d), `${m.repo} ${d}`).toBe(true);
        checked++;
      }
    }
    expect(checked).toBeGreaterThanOrEqual(44);
    for (let i = 0; i < 20; i++) expect((await reg(`/v2/online/app${i % 4}/manifests/t${i}`)).status).toBe(200);
    expect((await reg("/v2/online/keep/manifests/v1")).status).toBe(200);
    expect((await reg("/v2/online/built/manifests/1")).status).toBe(200);
  });

  it("a second collection asked for while one runs is refused with 409 naming the running one", async () => {
    for (let i = 0; i < 60; i++) await pushBlob("online/busy", randomBytes(512, 7000 + i));
    await age(2 * 3600 * 1000);
    const first = collectBeside("graceSeconds=0");
    await new Promise((r) => setTimeout(r, 30));
    const second = await collectBeside("graceSeconds=0");
    expect((await first).status).toBe(200);
    expect(second.status).toBe(409);
    expect(second.body.error.message).toMatch(/a collection is running/);
  });
});
