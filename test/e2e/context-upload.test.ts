// Issue 14 against a real server with KILN_MAX_REQUEST_BYTES at 100 MB: `kiln build` uploads only the
// contents the server lacks (a rebuild after a one-file change in a 200 MB context sends under 1% of
// it, counted by a proxy in front of the server), in batches under the limit (a 120 MB file goes in
// pieces); a RUN step that makes a 300 MB layer lands through the runner's chunked upload.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, ftruncateSync, rmSync, writeFileSync, writeSync, readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, ROOT, startKiln, type KilnServer } from "./server";
import { BUSYBOX, waitForBuild } from "./helpers";
import { countingProxy } from "./helpers/count-proxy";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const MB = 1024 * 1024;
const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);

function kiln(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    child.on("close", (code) => resolve({ code: code ?? 1, out, err }));
  });
}

/** The file `name` in a gzip layer blob (a tar), as text. */
async function fileInLayer(url: string, repo: string, digest: string, name: string): Promise<string | undefined> {
  const res = await fetch(`${url}/v2/${repo}/blobs/${digest}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  const tar = gunzipSync(Buffer.from(await res.arrayBuffer()));
  for (let pos = 0; pos + 512 <= tar.length;) {
    const entry = tar.subarray(pos, pos + 100).toString("utf8").replace(/\0.*$/s, "");
    if (!entry) break;
    const size = parseInt(tar.subarray(pos + 124, pos + 136).toString("utf8").replace(/\0.*$/s, "").trim() || "0", 8);
    if (entry === name) return tar.subarray(pos + 512, pos + 512 + size).toString("utf8");
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

describe("content-addressed context upload under the 100 MB body limit", () => {
  let server: KilnServer;
  let work: string;
  beforeAll(async () => {
    server = await startKiln();
    work = mkdtempSync(path.join(os.tmpdir(), "kiln-ctx-"));
  }, 120_000);
  afterAll(async () => {
    rmSync(work, { recursive: true, force: true });
    await server?.stop(true);
  });

  it("a rebuild after a one-file change in a 200 MB context uploads under 1% of it", async () => {
    const dir = path.join(work, "ctx");
    mkdirSync(path.join(dir, "data"), { recursive: true });
    // 40 × 2 MB of random files, one 120 MB file (sparse: larger than a request, so it goes in pieces)
    for (let i = 0; i < 40; i++) writeFileSync(path.join(dir, "data", `f${i}.bin`), randomBytes(2 * MB));
    const fd = openSync(path.join(dir, "data", "big.bin"), "w");
    writeSync(fd, `big ${Date.now()}\n`);
    ftruncateSync(fd, 120 * MB);
    closeSync(fd);
    writeFileSync(path.join(dir, "app.txt"), "version 1\n");
    writeFileSync(path.join(dir, "ignored.bin"), randomBytes(4 * MB));
    writeFileSync(path.join(dir, ".dockerignore"), "ignored.bin\n");
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY app.txt /app.txt\nCOPY data/f7.bin data/big.bin /data/\n");
    const contextBytes = 40 * 2 * MB + 120 * MB;

    const proxy = await countingProxy(server.url);
    try {
      const first = await kiln(["build", "--progress", "plain", "--server", proxy.url, "--token", ADMIN_TOKEN, "-t", "ctxup/app:1", dir]);
      expect(first.code, first.err + first.out).toBe(0);
      const full = proxy.bytes();
      // everything went once (the ignored file not at all), no request over the limit
      expect(full).toBeGreaterThan(contextBytes);
      expect(full).toBeLessThan(contextBytes + 2 * MB);
      expect(proxy.biggest()).toBeLessThan(100 * MB);

      writeFileSync(path.join(dir, "app.txt"), "version 2\n");
      proxy.reset();
      const t0 = Date.now();
      const second = await kiln(["build", "--progress", "plain", "--server", proxy.url, "--token", ADMIN_TOKEN, "-t", "ctxup/app:2", dir]);
      expect(second.code, second.err + second.out).toBe(0);
      const rebuild = proxy.bytes();
      expect(rebuild, `rebuild sent ${rebuild} bytes`).toBeLessThan(contextBytes / 100);
      void t0;

      // the image has the changed file; the unchanged big COPY was a cache hit
      const m = await fetch(`${server.url}/v2/ctxup/app/manifests/2`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.manifest.v1+json" } });
      const manifest = (await m.json()) as { layers: { digest: string }[] };
      expect(await fileInLayer(server.url, "ctxup/app", manifest.layers[0].digest, "app.txt")).toBe("version 2\n");
      expect(second.out + second.err).toMatch(/CACHED/);
    } finally {
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);

  it("a context built with a token of another namespace uploads its contents again", async () => {
    const created = await fetch(`${server.url}/v1/tokens`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify({ name: "other", scopes: ["repository:ctxother/**:pull,push"] }) });
    const { token } = (await created.json()) as { token: string };
    const dir = path.join(work, "shared");
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, "blob.bin"), randomBytes(3 * MB));
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY blob.bin /\n");
    const proxy = await countingProxy(server.url);
    try {
      expect((await kiln(["build", "--progress", "plain", "--server", proxy.url, "--token", ADMIN_TOKEN, "-t", "ctxup/shared:1", dir])).code).toBe(0);
      proxy.reset();
      const other = await kiln(["build", "--progress", "plain", "--server", proxy.url, "--token", token, "-t", "ctxother/shared:1", dir]);
      expect(other.code, other.err + other.out).toBe(0);
      expect(proxy.bytes()).toBeGreaterThan(3 * MB);
    } finally {
      await proxy.close();
    }
  }, 300_000);
});

describe.skipIf(!canRun)("a 300 MB RUN layer under the 100 MB body limit", () => {
  let server: KilnServer;
  let runner: RunnerProcess;
  let dir: string;
  beforeAll(async () => {
    server = await startKiln();
    runner = await startRunner(server.url);
    dir = mkdtempSync(path.join(os.tmpdir(), "kiln-runlayer-"));
  }, 120_000);
  afterAll(async () => {
    await runner?.stop();
    if (runner) await wipeRunnerDir(runner.workDir);
    rmSync(dir, { recursive: true, force: true });
    await server?.stop(true);
  });

  it("lands through the runner's chunked upload", async () => {
    writeFileSync(path.join(dir, "busybox"), readFileSync(BUSYBOX), { mode: 0o755 });
    // 300 MB of incompressible bytes: the layer blob itself is over 300 MB
    writeFileSync(path.join(dir, "Dockerfile"), [
      "FROM scratch",
      "COPY busybox /bin/busybox",
      'RUN ["/bin/busybox","--install","-s","/bin"]',
      "RUN head -c 314572800 /dev/urandom > /big.bin && ls -l /big.bin",
    ].join("\n") + "\n");
    const r = await kiln(["build", "--progress", "plain", "--server", server.url, "--token", ADMIN_TOKEN, "-t", "runlayer/app:1", dir]);
    expect(r.code, r.err + r.out).toBe(0);
    const m = await fetch(`${server.url}/v2/runlayer/app/manifests/1`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.manifest.v1+json" } });
    const manifest = (await m.json()) as { layers: { digest: string; size: number }[] };
    const last = manifest.layers[manifest.layers.length - 1];
    expect(last.size).toBeGreaterThan(300 * MB);
    const head = await fetch(`${server.url}/v2/runlayer/app/blobs/${last.digest}`, { method: "HEAD", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(Number(head.headers.get("content-length"))).toBe(last.size);
    void waitForBuild;
  }, 900_000);
});
