// `kiln push` and the request body limit (issue 14), against a real server run with
// KILN_MAX_REQUEST_BYTES at 100 MB: a 300 MB layer lands through `kiln push` (chunked PATCH uploads);
// a docker-style single-request layer upload over the limit gets a 413 naming `kiln push`; the other
// sources (docker-archive, docker:// from a registry with the token flow) copy too.
import { spawn, spawnSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync, ftruncateSync } from "node:fs";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, ROOT, startKiln, type KilnServer } from "./server";
import { tarMembers } from "../../src/cli/push";

const MB = 1024 * 1024;

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

function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(file).on("data", (d) => h.update(d)).on("end", () => resolve(`sha256:${h.digest("hex")}`)).on("error", reject);
  });
}

/** A ustar header for a regular file. */
function tarHeader(name: string, size: number): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0);
  b.write("0000644\0", 100);
  b.write("0000000\0", 108);
  b.write("0000000\0", 116);
  b.write(size.toString(8).padStart(11, "0") + "\0", 124);
  b.write("00000000000\0", 136);
  b.write("        ", 148);
  b.write("0", 156);
  b.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return b;
}

/** A tar holding one file of `size` bytes: a unique first block, the rest a hole (sparse on disk). */
function sparseLayer(file: string, size: number, stamp: string): void {
  const fd = openSync(file, "w");
  writeSync(fd, tarHeader("big.bin", size), 0, 512, 0);
  writeSync(fd, Buffer.from(stamp), 0, stamp.length, 512);
  const end = 512 + Math.ceil(size / 512) * 512;
  ftruncateSync(fd, end + 1024); // the body's hole and the two zero blocks of the end
  closeSync(fd);
}

/** A tar of small in-memory files. */
function tarOf(files: Record<string, Buffer | string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, data] of Object.entries(files)) {
    const body = Buffer.from(data);
    parts.push(tarHeader(name, body.length), body, Buffer.alloc((512 - (body.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const sha = (b: Buffer | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function ociLayout(dir: string, tag: string, layers: { file: string; digest: string; size: number }[]): string {
  mkdirSync(path.join(dir, "blobs", "sha256"), { recursive: true });
  const put = (b: Buffer | string) => { const d = sha(b); writeFileSync(path.join(dir, "blobs", "sha256", d.slice(7)), b); return d; };
  const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: layers.map((l) => l.digest) }, config: {} });
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: put(config), size: Buffer.byteLength(config) },
    layers: layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: l.digest, size: l.size })),
  });
  const md = put(manifest);
  writeFileSync(path.join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  writeFileSync(path.join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: md, size: Buffer.byteLength(manifest), annotations: { "org.opencontainers.image.ref.name": tag } }] }));
  return md;
}

describe("kiln push with the 100 MB request body limit", () => {
  let kilnServer: KilnServer;
  let work: string;
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  beforeAll(async () => {
    kilnServer = await startKiln();
    work = mkdtempSync(path.join(os.tmpdir(), "kiln-push-"));
  }, 120_000);
  afterAll(async () => {
    rmSync(work, { recursive: true, force: true });
    await kilnServer?.stop(true);
  });

  it("pushes a 300 MB layer from an OCI layout in chunks under the limit", async () => {
    const dir = path.join(work, "layout");
    mkdirSync(dir, { recursive: true });
    mkdirSync(path.join(dir, "blobs", "sha256"), { recursive: true });
    const tmp = path.join(dir, "layer.tmp");
    sparseLayer(tmp, 300 * MB, `push-${Date.now()}`);
    const digest = await hashFile(tmp);
    const size = 512 + 300 * MB + 1024;
    const blob = path.join(dir, "blobs", "sha256", digest.slice(7));
    spawnSync("mv", [tmp, blob]);
    const manifestDigest = ociLayout(dir, "v1", [{ file: blob, digest, size }]);

    const r = await kiln(["push", "--server", kilnServer.url, "--token", ADMIN_TOKEN, `oci:${dir}:v1`, "push/big:1"]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain(`Copied blob   ${digest}`);
    const head = await fetch(`${kilnServer.url}/v2/push/big/blobs/${digest}`, { method: "HEAD", headers: auth });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get("content-length"))).toBe(size);
    const m = await fetch(`${kilnServer.url}/v2/push/big/manifests/1`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(m.status).toBe(200);
    expect(m.headers.get("docker-content-digest")).toBe(manifestDigest);

    // A second push finds every blob there and uploads nothing.
    const again = await kiln(["push", "--server", kilnServer.url, "--token", ADMIN_TOKEN, `oci:${dir}:v1`, "push/big:2"]);
    expect(again.code, again.err).toBe(0);
    expect(again.err).toContain(`Blob exists   ${digest}`);

    // The same layer pushed the way docker and podman push (one request) is refused with a 413 naming kiln push.
    const start = await fetch(`${kilnServer.url}/v2/push/mono/blobs/uploads/`, { method: "POST", headers: auth });
    expect(start.status).toBe(202);
    const location = new URL(start.headers.get("location")!, kilnServer.url);
    location.searchParams.set("digest", digest);
    const refused = await new Promise<{ status?: number; body: string }>((resolve) => {
      const req = http.request(location, { method: "PUT", headers: { ...auth, "content-type": "application/octet-stream", "content-length": String(size) } }, (res) => {
        let body = "";
        res.on("data", (d) => { body += d; });
        res.on("end", () => { resolve({ status: res.statusCode, body }); req.destroy(); });
      });
      req.on("error", () => resolve({ body: "" }));
      req.flushHeaders(); // the refusal comes before a byte of the body is read
    });
    expect(refused.status).toBe(413);
    const err = JSON.parse(refused.body) as { errors: { code: string; message: string }[] };
    expect(err.errors[0].message).toMatch(/KILN_MAX_REQUEST_BYTES/);
    expect(err.errors[0].message).toMatch(/kiln push/);
    expect((await fetch(`${kilnServer.url}/v2/push/mono/blobs/${digest}`, { method: "HEAD", headers: auth })).status).toBe(404);

    // skopeo (like docker and podman) sends the layer in one request (--preserve-digests: as it is, not
    // recompressed): it fails, and nothing is tagged.
    if (have("skopeo")) {
      // (run without blocking the event loop: the server may close this test's idle kept-alive
      // connections meanwhile, and a blocked loop would hand the next fetch a socket already closed)
      const sk = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = spawn("skopeo", ["copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", `kiln:${ADMIN_TOKEN}`, `oci:${dir}:v1`, `docker://127.0.0.1:${kilnServer.port}/push/skopeo:1`], { stdio: ["ignore", "ignore", "pipe"], timeout: 120_000 });
        let stderr = "";
        child.stderr!.on("data", (d) => { stderr += d; });
        child.on("close", (status) => resolve({ status, stderr }));
      });
      expect(sk.status, sk.stderr).not.toBe(0);
      // kiln cuts the chunked PATCH at the limit with a 413, but the local workerd resets a connection
      // whose body it did not read to the end, so skopeo, still sending, often sees the reset before
      // the answer (the exact streamed 413 is asserted in workerd by test/integration/http/body-limit.test.ts;
      // a declared length gets its 413 whole, above).
      // (Go names the cut variously: a reset, a broken pipe, a failed readfrom, a closed connection, EOF)
      expect(sk.stderr).toMatch(/413|too large|kiln push|connection reset|broken pipe|readfrom tcp|use of closed network connection|EOF/i);
      expect((await fetch(`${kilnServer.url}/v2/push/skopeo/manifests/1`, { headers: auth })).status).toBe(404);
    }
    rmSync(dir, { recursive: true, force: true });
  }, 600_000);

  it("pushes a docker save archive, then copies it from kiln over docker:// with the token flow", async () => {
    const layer = tarOf({ "hello.txt": "hello from docker-archive\n" });
    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [sha(layer)] }, config: { Cmd: ["/hello"] } });
    const archive = path.join(work, "image.tar");
    writeFileSync(archive, tarOf({
      "manifest.json": JSON.stringify([{ Config: "cfg.json", RepoTags: ["hello:1"], Layers: ["abc/layer.tar"] }]),
      "cfg.json": config,
      "abc/layer.tar": layer,
    }));
    expect([...tarMembers(archive).keys()]).toEqual(["manifest.json", "cfg.json", "abc/layer.tar"]);
    const r = await kiln(["push", "--server", kilnServer.url, "--token", ADMIN_TOKEN, `docker-archive:${archive}`, "push/archive:1"]);
    expect(r.code, r.err).toBe(0);
    const m = await fetch(`${kilnServer.url}/v2/push/archive/manifests/1`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(m.status).toBe(200);
    const manifest = (await m.json()) as { config: { digest: string }; layers: { digest: string; mediaType: string }[] };
    expect(manifest.config.digest).toBe(sha(config));
    expect(manifest.layers).toEqual([expect.objectContaining({ digest: sha(layer), mediaType: "application/vnd.oci.image.layer.v1.tar" })]);
    const got = await fetch(`${kilnServer.url}/v2/push/archive/blobs/${sha(layer)}`, { headers: auth });
    expect(Buffer.from(await got.arrayBuffer()).equals(layer)).toBe(true);

    // docker://: kiln itself as the source registry (401 → token endpoint with --src-creds → pull).
    const copy = await kiln(["push", "--server", kilnServer.url, "--token", ADMIN_TOKEN, "--src-creds", `kiln:${ADMIN_TOKEN}`, `docker://127.0.0.1:${kilnServer.port}/push/archive:1`, "push/copied:1"]);
    expect(copy.code, copy.err).toBe(0);
    const c = await fetch(`${kilnServer.url}/v2/push/copied/manifests/1`, { method: "HEAD", headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } });
    expect(c.headers.get("docker-content-digest")).toBe(m.headers.get("docker-content-digest"));

    // Without credentials the private source refuses, and the message says what to do.
    const anon = await kiln(["push", "--server", kilnServer.url, "--token", ADMIN_TOKEN, `docker://127.0.0.1:${kilnServer.port}/push/archive:1`, "push/anon:1"]);
    expect(anon.code).toBe(1);
    expect(anon.err).toMatch(/--src-creds/);
  }, 300_000);
});
