// Registry benchmarks: kiln (scripts/local-server.mjs: the bundled Worker in Miniflare's workerd, fresh
// local state) against Debian's docker-registry (distribution 2.x, filesystem storage in a temp dir),
// both on 127.0.0.1, alternating per repetition; and the local runtime's own ceiling: a bare Worker
// (bench/ceiling-worker.js) streaming the same 200 MB into the same local R2 and back out, under the
// same local server, so kiln's push and pull read as a fraction of what the runtime itself allows.
//   - push of a 200 MB blob: monolithic (POST + one PUT) and in 5 MiB PATCH chunks; pull of it (one GET)
//   - manifest GET requests/second with 8 concurrent clients
//   - server peak RSS (whole process tree from /proc) while pushing and pulling a 2 GiB blob (streamed)
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { ADMIN_TOKEN, type KilnServer } from "../test/e2e/server";
import { snapshotRoot, startKilnAt, GeneratedBlob, RegistryClient, sha256, startPeerRegistry, treeRssByCommand, withDigest, haveDockerRegistry, pushSmallBlob, type PeerRegistry } from "../test/e2e/helpers";
import { result, timed, type BenchContext, type BenchResult } from "./types";

const MiB = 1 << 20;
const BLOB = 200_000_000;
const CHUNK = 5 * MiB;
const MANIFEST_CLIENTS = 8;
const MANIFEST_REQUESTS = Number(process.env.BENCH_MANIFEST_REQUESTS ?? 2000);
const BIG = Number(process.env.BENCH_BIG_BYTES ?? 2 * 1024 * MiB);
const BIG_TIMEOUT_MS = Number(process.env.BENCH_BIG_TIMEOUT_S ?? 900) * 1000;

interface Server { name: string; client: RegistryClient; pid: number }

/** The bare Worker of bench/ceiling-worker.js: PUT /<key> into R2, GET /<key> back out. */
async function ceilingPush(url: string, key: string, buf: Buffer): Promise<void> {
  const res = await fetch(`${url}/${key}`, { method: "PUT", body: buf as unknown as BodyInit });
  if (res.status !== 201) throw new Error(`ceiling PUT: ${res.status} ${await res.text()}`);
}

async function ceilingPull(url: string, key: string, size: number): Promise<void> {
  const res = await fetch(`${url}/${key}`);
  if (res.status !== 200) throw new Error(`ceiling GET: ${res.status} ${await res.text()}`);
  const n = await drain(res);
  if (n !== size) throw new Error(`ceiling: pulled ${n} bytes, expected ${size}`);
}

async function drain(res: Response): Promise<number> {
  let n = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return n;
    n += value.byteLength;
  }
}

/**
 * Before a timed operation: a request that must answer within 10 s, retried (under `wrangler dev`, the
 * request after a large upload on the same keep-alive connection sometimes hung; the local server no
 * longer does, test/e2e/connections.test.ts). Also fetches the registry tokens of both scopes so that
 * token requests are not timed.
 */
async function settle(s: Server, repo: string): Promise<void> {
  for (let i = 0; i < 3; i++) {
    try {
      const res = await fetch(`${s.client.url}/v2/`, { signal: AbortSignal.timeout(10_000) });
      await res.body?.cancel();
      break;
    } catch { /* stalled connection dropped; try again */ }
  }
  await s.client.authorization(`repository:${repo}:pull,push`);
  await s.client.authorization(`repository:${repo}:pull`);
}

async function ok(res: Response, status: number, what: string): Promise<Response> {
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${(await res.text()).slice(0, 300)}`);
  return res;
}

/** A fresh 200 MB blob per measurement: the shared random buffer stamped with a unique prefix. */
function stamp(buf: Buffer, label: string): string {
  buf.write(`${label}:${Date.now()}:${Math.random()}`.padEnd(64, "."), 0, 64, "latin1");
  return sha256(buf);
}

async function pushMonolithic(s: Server, repo: string, buf: Buffer, digest: string) {
  const res = await s.client.pushMonolithic(repo, buf, digest, buf.byteLength);
  await res.body?.cancel();
}

async function pushChunks(s: Server, repo: string, buf: Buffer, digest: string) {
  let loc = await s.client.startUpload(repo);
  for (let start = 0; start < buf.byteLength; start += CHUNK) {
    const end = Math.min(buf.byteLength, start + CHUNK);
    loc = await s.client.patch(repo, loc, start, end, buf.subarray(start, end), false);
  }
  await (await ok(await s.client.request(repo, "PUT", withDigest(loc, digest), { body: "" }), 201, "PUT close")).body?.cancel();
}

async function pull(s: Server, repo: string, digest: string, size: number) {
  const res = await ok(await s.client.getBlob(repo, digest), 200, "GET blob");
  const n = await drain(res);
  if (n !== size) throw new Error(`pulled ${n} bytes, expected ${size}`);
}

/** Pull in 5 MiB `Range` requests, one after the other. */
async function pullRanges(s: Server, repo: string, digest: string, size: number) {
  let n = 0;
  for (let start = 0; start < size; start += CHUNK) {
    const end = Math.min(size, start + CHUNK) - 1;
    const res = await ok(await s.client.getBlob(repo, digest, { range: `bytes=${start}-${end}` }), 206, `GET blob range ${start}-${end}`);
    n += await drain(res);
  }
  if (n !== size) throw new Error(`pulled ${n} bytes in ranges, expected ${size}`);
}

async function pushImage(s: Server, repo: string): Promise<void> {
  const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, config: {} });
  const layer = randomBytes(4096);
  const configDigest = await pushSmallBlob(s.client, repo, config);
  const layerDigest = await pushSmallBlob(s.client, repo, layer);
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: Buffer.byteLength(config) },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigest, size: layer.byteLength }],
  });
  await (await ok(await s.client.putManifest(repo, "bench", manifest, "application/vnd.oci.image.manifest.v1+json"), 201, "PUT manifest")).body?.cancel();
}

/** Requests per second of `GET /v2/<repo>/manifests/bench` with 8 concurrent clients. */
async function manifestRps(s: Server, repo: string, total: number): Promise<number> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      next++;
      const res = await s.client.getManifest(repo, "bench");
      if (res.status !== 200) throw new Error(`GET manifest: ${res.status}`);
      await res.arrayBuffer();
    }
  };
  const secs = await timed(() => Promise.all(Array.from({ length: MANIFEST_CLIENTS }, worker)));
  return total / secs;
}

/** Peak RSS of the server's process tree (sampled every 100 ms) while `fn` runs; also the peak of its workerd processes. */
async function peakRss(pid: number, fn: () => Promise<void>): Promise<{ peak: number; workerd: number; error?: string }> {
  let peak = 0;
  let workerd = 0;
  const sample = async () => {
    const r = await treeRssByCommand(pid);
    peak = Math.max(peak, r.total);
    workerd = Math.max(workerd, r.byCommand.workerd ?? 0);
  };
  await sample();
  let running = true;
  const sampler = (async () => {
    while (running) {
      await sample();
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  let error: string | undefined;
  try { await fn(); } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    error = `${err.message.split("\n")[0]}${err.cause ? ` (${err.cause.code ?? err.cause.message})` : ""}`;
  }
  running = false;
  await sampler;
  return { peak, workerd, error };
}

/** 2 GiB: one streamed PATCH (no Content-Length, like docker push) and an empty PUT; then one GET. */
async function bigPushPull(s: Server, blob: GeneratedBlob, ctx: BenchContext) {
  const repo = "bench/big";
  const digest = blob.digest();
  await settle(s, repo);
  let t0 = performance.now();
  const push = await peakRss(s.pid, async () => {
    const signal = AbortSignal.timeout(BIG_TIMEOUT_MS);
    let loc = await s.client.startUpload(repo);
    const res = await s.client.request(repo, "PATCH", loc, { body: blob.stream(0, blob.size, 4 * MiB), headers: { "content-type": "application/octet-stream" }, signal });
    await ok(res, 202, "PATCH 2 GiB");
    loc = s.client.location(res);
    await (await ok(await s.client.request(repo, "PUT", withDigest(loc, digest), { body: "", signal }), 201, "PUT close")).body?.cancel();
  });
  ctx.log(`  ${s.name}: 2 GiB push peak RSS ${(push.peak / MiB).toFixed(0)} MiB${push.error ? ` (error: ${push.error})` : ""}`);
  const pushSecs = (performance.now() - t0) / 1000;
  await settle(s, repo);
  t0 = performance.now();
  const pullRes = await peakRss(s.pid, async () => {
    const res = await ok(await s.client.request(repo, "GET", `blobs/${digest}`, { signal: AbortSignal.timeout(BIG_TIMEOUT_MS) }, "pull"), 200, "GET 2 GiB");
    const n = await drain(res);
    if (n !== blob.size) throw new Error(`pulled ${n} of ${blob.size} bytes`);
  });
  ctx.log(`  ${s.name}: 2 GiB pull peak RSS ${(pullRes.peak / MiB).toFixed(0)} MiB${pullRes.error ? ` (error: ${pullRes.error})` : ""}`);
  const pullSecs = (performance.now() - t0) / 1000;
  return { push, pull: pullRes, pushSecs, pullSecs };
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  // kiln from a snapshot of HEAD: the figures belong to one commit, whatever is edited meanwhile
  const snap = snapshotRoot();
  ctx.log(`registry: kiln at ${snap.rev} (snapshot ${snap.root})`);
  const logFile = path.join(os.tmpdir(), `kiln-bench-server-${process.pid}.log`);
  ctx.log(`registry: kiln server output → ${logFile}`);
  const kilnServer: KilnServer = await startKilnAt(snap.root, { logFile });
  const ceiling: KilnServer = await startKilnAt(snap.root, { script: path.join(snap.root, "bench", "ceiling-worker.js") });
  let peerServer: PeerRegistry | undefined;
  if (haveDockerRegistry()) peerServer = await startPeerRegistry();
  else ctx.log("registry: docker-registry not installed (apt-get install docker-registry): kiln figures only");
  const servers: Server[] = [{ name: "kiln", client: new RegistryClient(kilnServer.url, { username: "admin", password: ADMIN_TOKEN }), pid: kilnServer.process.pid! }];
  if (peerServer) servers.push({ name: peerServer.name, client: new RegistryClient(peerServer.url), pid: peerServer.process.pid! });
  const peerName = peerServer?.name ?? "docker-registry";

  // Idle memory right after start, before any request but the health check.
  await new Promise((r) => setTimeout(r, 2000));
  const idleAtStart: Record<string, Awaited<ReturnType<typeof treeRssByCommand>>> = {};
  for (const s of servers) idleAtStart[s.name] = await treeRssByCommand(s.pid);

  type Key = "mono" | "chunked" | "pull" | "ranges" | "rps";
  const samples: Record<string, Record<Key, number[]>> = {};
  const errors: Record<Key, string[]> = { mono: [], chunked: [], pull: [], ranges: [], rps: [] };
  for (const s of servers) samples[s.name] = { mono: [], chunked: [], pull: [], ranges: [], rps: [] };
  const ceilingSamples = { push: [] as number[], pull: [] as number[], errors: [] as string[] };
  const attempt = async (s: Server, key: Key, fn: () => Promise<number>) => {
    try {
      const v = await fn();
      samples[s.name][key].push(v);
      ctx.log(`  ${s.name} ${key}: ${v.toFixed(3)}`);
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } };
      const msg = `${s.name}: ${err.message.split("\n")[0]}${err.cause ? ` (${err.cause.code ?? err.cause.message})` : ""}`;
      if (!errors[key].includes(msg)) errors[key].push(msg);
      ctx.log(`  ${s.name} ${key} FAILED: ${msg}`);
    }
  };

  try {
    const buf = randomBytes(BLOB);
    for (const s of servers) {
      try { await pushImage(s, "bench/manifest"); } catch (e) { errors.rps.push(`${s.name}: ${(e as Error).message}`); }
      try { await manifestRps(s, "bench/manifest", 50); } catch { /* warm-up */ }
    }
    for (let rep = 0; rep < ctx.reps; rep++) {
      const order = rep % 2 === 0 ? servers : [...servers].reverse();
      for (const s of order) {
        ctx.log(`registry rep ${rep + 1}/${ctx.reps}: ${s.name}`);
        let digest = stamp(buf, `${s.name}-${rep}-mono`);
        await settle(s, "bench/blob");
        await attempt(s, "mono", () => timed(() => pushMonolithic(s, "bench/blob", buf, digest)));
        const pulled = digest;
        await settle(s, "bench/blob");
        await attempt(s, "pull", () => timed(() => pull(s, "bench/blob", pulled, BLOB)));
        await settle(s, "bench/blob");
        await attempt(s, "ranges", () => timed(() => pullRanges(s, "bench/blob", pulled, BLOB)));
        digest = stamp(buf, `${s.name}-${rep}-chunked`);
        await settle(s, "bench/blob");
        await attempt(s, "chunked", () => timed(() => pushChunks(s, "bench/blob", buf, digest)));
        await settle(s, "bench/manifest");
        await attempt(s, "rps", () => manifestRps(s, "bench/manifest", MANIFEST_REQUESTS));
      }
      // The ceiling: the same bytes through a bare Worker into the same local R2 and back.
      const key = `blob-${rep}`;
      stamp(buf, `ceiling-${rep}`);
      try {
        ceilingSamples.push.push(await timed(() => ceilingPush(ceiling.url, key, buf)));
        ceilingSamples.pull.push(await timed(() => ceilingPull(ceiling.url, key, BLOB)));
        ctx.log(`  ceiling push ${ceilingSamples.push.at(-1)!.toFixed(3)} pull ${ceilingSamples.pull.at(-1)!.toFixed(3)}`);
      } catch (e) {
        const msg = (e as Error).message.split("\n")[0];
        if (!ceilingSamples.errors.includes(msg)) ceilingSamples.errors.push(msg);
        ctx.log(`  ceiling FAILED: ${msg}`);
      }
    }
  } finally { /* the 200 MB buffer goes out of scope here */ }

  const fig = (key: Key, name: string, what: string, unit: string, note?: (m: number) => string, peerNote = note): BenchResult => {
    const k = samples.kiln[key];
    const p = peerServer ? samples[peerServer.name][key] : [];
    const r = result({ name, what, unit, kiln: k, peer: peerServer ? { name: peerName, samples: p } : undefined });
    const notes = [k.length && note ? note(r.kiln.median) : "", p.length && peerNote && r.peer ? `${peerName}: ${peerNote(r.peer.median)}` : "", ...errors[key].map((e) => `failed: ${e}`)].filter(Boolean);
    if (notes.length) r.note = notes.join("; ");
    return r;
  };
  const mbps = (secs: number) => `${(BLOB / 1e6 / secs).toFixed(0)} MB/s`;
  const ceilPush = result({ name: "registry.ceiling.push.200MB", what: "the local runtime's ceiling: a bare Worker (bench/ceiling-worker.js) under the same local server streams a 200 MB PUT body into the same local R2 (FixedLengthStream; no auth, digest or D1)", unit: "s", kiln: ceilingSamples.push });
  const ceilPull = result({ name: "registry.ceiling.pull.200MB", what: "the local runtime's ceiling: the bare Worker streams the 200 MB R2 object back out (one GET)", unit: "s", kiln: ceilingSamples.pull });
  for (const r of [ceilPush, ceilPull]) {
    const notes = [r.kiln.samples.length ? mbps(r.kiln.median) : "", ...ceilingSamples.errors.map((e) => `failed: ${e}`)].filter(Boolean);
    if (notes.length) r.note = notes.join("; ");
  }
  /** kiln's figure as a fraction of the ceiling's throughput (ceiling time ÷ kiln time). */
  const ofCeiling = (c: BenchResult) => (secs: number) => c.kiln.samples.length ? `${mbps(secs)}, ${Math.round((c.kiln.median / secs) * 100)}% of the local ceiling (${mbps(c.kiln.median)})` : mbps(secs);
  const results: BenchResult[] = [
    fig("mono", "registry.push.200MB.monolithic", "push a 200 MB blob: POST + one PUT with the body (wall time)", "s", ofCeiling(ceilPush), mbps),
    fig("chunked", "registry.push.200MB.chunked", "push a 200 MB blob: POST + 5 MiB PATCH chunks (Content-Range) + PUT", "s", ofCeiling(ceilPush), mbps),
    fig("pull", "registry.pull.200MB", "pull a 200 MB blob: one GET, body read to the end", "s", ofCeiling(ceilPull), mbps),
    fig("ranges", "registry.pull.200MB.ranges", "pull a 200 MB blob in 5 MiB Range GETs (206), one after the other", "s", mbps),
    fig("rps", "registry.manifest.rps", `GET manifest by tag, ${MANIFEST_CLIENTS} concurrent clients, ${MANIFEST_REQUESTS} requests`, "req/s"),
    ceilPush,
    ceilPull,
  ];
  {
    const k = idleAtStart.kiln;
    const p = peerServer ? idleAtStart[peerServer.name] : undefined;
    const r = result({
      name: "registry.rss.idle", what: "server RSS (whole process tree) idle, just started", unit: "MiB",
      kiln: [k.total / MiB], peer: p ? { name: peerName, samples: [p.total / MiB] } : undefined,
    });
    r.note = `kiln: ${Object.entries(k.byCommand).map(([c, v]) => `${c} ${(v / MiB).toFixed(0)} MiB`).join(", ")}`;
    results.push(r);
  }
  await ceiling.stop(true);

  // Memory: one 2 GiB push + pull per server (the slowest figure; one sample each).
  if (BIG > 0) {
    const blob = new GeneratedBlob(BIG, "bench-big");
    ctx.log(`registry: 2 GiB digest ${blob.digest()}`);
    const mem: Record<string, { push: number; pull: number; errors: string[]; idle: number; idleWorkerd: number; workerd: { push: number; pull: number }; secs: { push: number; pull: number } }> = {};
    for (const s of servers) {
      const idle = await treeRssByCommand(s.pid);
      const r = await bigPushPull(s, blob, ctx);
      mem[s.name] = {
        push: r.push.peak / MiB, pull: r.pull.peak / MiB, idle: idle.total / MiB, idleWorkerd: (idle.byCommand.workerd ?? 0) / MiB,
        workerd: { push: r.push.workerd / MiB, pull: r.pull.workerd / MiB }, secs: { push: r.pushSecs, pull: r.pullSecs },
        errors: [r.push.error, r.pull.error].filter((e): e is string => !!e),
      };
    }
    for (const dir of ["push", "pull"] as const) {
      const k = mem.kiln;
      const p = peerServer ? mem[peerServer.name] : undefined;
      const r = result({
        name: `registry.rss.2GiB.${dir}`,
        what: `server peak RSS (process tree) during a ${BIG / (1024 * MiB)} GiB blob ${dir === "push" ? "push (one streamed PATCH + PUT)" : "pull (one GET)"}`,
        unit: "MiB", kiln: [k[dir]], peer: p ? { name: peerName, samples: [p[dir]] } : undefined,
      });
      const notes = [
        `kiln idle ${k.idle.toFixed(0)} MiB (the local server's node + workerd); workerd alone ${k.idleWorkerd.toFixed(0)} MiB idle, ${k.workerd[dir].toFixed(0)} MiB peak`,
        `${dir} took ${k.secs[dir].toFixed(0)} s on kiln`,
      ];
      if (p) notes.push(`${peerName} idle ${p.idle.toFixed(0)} MiB, ${dir} took ${p.secs[dir].toFixed(0)} s`);
      for (const [n, m] of Object.entries(mem)) for (const e of m.errors) notes.push(`failed: ${n}: ${e}`);
      r.note = notes.join("; ");
      results.push(r);
    }
  }

  await kilnServer.stop(true);
  await peerServer?.stop(true);
  snap.remove();
  return results;
}
