// Garbage collection (issue 13): a store of 10,000 blobs (half of them used by 200 tagged images, the
// other half unreferenced) is collected with POST /v1/gc?graceSeconds=0, while a manifest GET by tag
// and a blob GET are asked every 100 ms (one at a time): the collection's wall time, and the
// latency of those requests meanwhile. Each repetition pushes the unreferenced half again.
//   BENCH_GC_BLOBS=10000   blobs in the store
import { createHash } from "node:crypto";
import { ADMIN_TOKEN, type KilnServer } from "../test/e2e/server";
import { snapshotRoot, startKilnAt } from "../test/e2e/helpers";
import { result, type BenchContext, type BenchResult } from "./types";

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
const IMAGES = 200;

const digestOf = (b: Uint8Array | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function pushBlob(url: string, repo: string, body: string): Promise<string> {
  const digest = digestOf(body);
  const res = await fetch(`${url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", headers: auth, body });
  if (res.status !== 201) throw new Error(`push ${repo}: ${res.status} ${await res.text()}`);
  return digest;
}

/** Runs `fn` over 0..n-1, `width` at a time. */
async function parallel(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await fn(next++);
  }));
}

/** The images: `IMAGES` tagged manifests of `perImage` small layers each (their blobs stay). */
async function pushImages(url: string, perImage: number): Promise<{ repo: string; tag: string; layer: string }> {
  let probe = { repo: "", tag: "", layer: "" };
  await parallel(IMAGES, 8, async (i) => {
    const repo = `bench/app${i % 10}`;
    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, image: i });
    const cfg = await pushBlob(url, repo, config);
    const layers: { mediaType: string; digest: string; size: number }[] = [];
    for (let j = 0; j < perImage - 1; j++) {
      const body = `layer ${i}/${j} ${"x".repeat(512)}`;
      layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: await pushBlob(url, repo, body), size: Buffer.byteLength(body) });
    }
    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: cfg, size: Buffer.byteLength(config) }, layers });
    const res = await fetch(`${url}/v2/${repo}/manifests/v${i}`, { method: "PUT", headers: { ...auth, "content-type": "application/vnd.oci.image.manifest.v1+json" }, body: manifest });
    if (res.status !== 201) throw new Error(`manifest: ${res.status} ${await res.text()}`);
    if (i === 0) probe = { repo, tag: `v${i}`, layer: layers[0].digest };
  });
  return probe;
}

async function pushGarbage(url: string, n: number, rep: number): Promise<void> {
  await parallel(n, 16, async (i) => {
    await pushBlob(url, `bench/junk${i % 10}`, `junk ${rep}/${i} ${"y".repeat(512)}`);
  });
}

/** Runs `fn` while a manifest GET and a blob GET are asked in turn every 100 ms, recording their latencies (ms). */
async function whileProbing<T>(url: string, probe: { repo: string; tag: string; layer: string }, latencies: number[], fn: () => Promise<T>): Promise<T> {
  let done = false;
  const loop = (async () => {
    for (let k = 0; !done; k++) {
      const path = k % 2 ? `/v2/${probe.repo}/blobs/${probe.layer}` : `/v2/${probe.repo}/manifests/${probe.tag}`;
      const t0 = performance.now();
      const res = await fetch(`${url}${path}`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" }, signal: AbortSignal.timeout(60_000) });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`probe ${path}: ${res.status}`);
      latencies.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    return await fn();
  } finally {
    done = true;
    await loop;
  }
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const total = Number(process.env.BENCH_GC_BLOBS ?? 10_000);
  const perImage = Math.max(2, Math.round(total / 2 / IMAGES));
  const garbage = total - IMAGES * perImage;
  let server: KilnServer | undefined;
  const times: number[] = [];
  const latencies: number[] = [];
  const freed: number[] = [];
  // kiln from a snapshot of HEAD: wrangler dev would reload on every edit in the work tree
  const snap = snapshotRoot();
  try {
    ctx.log(`bench gc: kiln at ${snap.rev} (snapshot ${snap.root})`);
    server = await startKilnAt(snap.root);
    ctx.log(`bench gc: pushing ${IMAGES} images of ${perImage} blobs`);
    const probe = await pushImages(server.url, perImage);
    for (let rep = 0; rep < ctx.reps; rep++) {
      ctx.log(`bench gc: rep ${rep + 1}/${ctx.reps}: pushing ${garbage} unreferenced blobs`);
      await pushGarbage(server.url, garbage, rep);
      const t0 = performance.now();
      const report = await whileProbing(server.url, probe, latencies, async () => {
        const res = await fetch(`${server!.url}/v1/gc?graceSeconds=0&wait=300`, { method: "POST", headers: auth, signal: AbortSignal.timeout(30 * 60_000) });
        if (res.status !== 200) throw new Error(`POST /v1/gc: ${res.status} ${await res.text()}`);
        return (await res.json()) as { counts: { blobs: number }; durationMs: number };
      });
      times.push((performance.now() - t0) / 1000);
      freed.push(report.counts.blobs);
      if (report.counts.blobs !== garbage) throw new Error(`the collection deleted ${report.counts.blobs} blobs, expected the ${garbage} unreferenced ones`);
      ctx.log(`bench gc: rep ${rep + 1}: ${times[times.length - 1].toFixed(1)} s, ${report.counts.blobs} blobs deleted; requests meanwhile up to ${Math.round(Math.max(...latencies))} ms`);
    }
  } finally {
    await server?.stop(true);
    snap.remove();
  }
  const sorted = [...latencies].sort((a, b) => a - b);
  const note = sorted.length ? `${sorted.length} requests answered meanwhile, median ${Math.round(sorted[sorted.length >> 1])} ms, max ${Math.round(sorted[sorted.length - 1])} ms` : undefined;
  return [
    result({ name: `gc.collect-${total}-blobs`, what: `POST /v1/gc?graceSeconds=0 on a store of ${total} blobs (${IMAGES} tagged images of ${perImage} blobs kept, ${garbage} unreferenced deleted)`, unit: "s", kiln: times }),
    result({ name: `gc.collect-${total}-blobs.latency`, what: "latency of a manifest GET by tag and a blob GET (in turn, every 100 ms) while the collection runs", unit: "ms", kiln: latencies, note }),
  ];
}

export default run;
