// Builds end to end against a real server (`wrangler dev`): the 5-step fail → fix → cached scenario,
// the image pulled with skopeo and unpacked with umoci (files, modes, owners, config as docker build
// makes them), reproducible digests across fresh stores, and refusals that leave nothing behind.
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, freePort, have, startKiln, type KilnServer } from "./server";
import { build, containerSandbox, contextDir, credsArg, registryCreds, skopeo, startTlsGuard, submitBuild, type ContainerSandbox, type Credentials, type TlsGuard } from "./helpers";

const haveTools = have("skopeo") && have("umoci");
if (!haveTools) console.warn("SKIPPING image checks of the build e2e tests: skopeo and umoci are required");
const isRoot = process.getuid?.() === 0;

/** Files in the local R2 store of a wrangler dev state dir (blobs + contexts + cache entries). */
function r2ObjectCount(stateDir: string): number {
  const root = path.join(stateDir, "v3", "r2");
  if (!existsSync(root)) return 0;
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (!e.name.endsWith(".sqlite") && !e.name.endsWith("-wal") && !e.name.endsWith("-shm")) n++;
    }
  };
  walk(root);
  return n;
}

describe("builds end to end", () => {
  let kiln: KilnServer;
  let guard: TlsGuard;
  let sb: ContainerSandbox;
  let creds: Credentials;
  let tmp: string;
  /** The port of the ADD test's file server: the only loopback address kiln may fetch (KILN_OUTBOUND_ALLOW). */
  let addPort: number;

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-build-"));
    addPort = await freePort();
    kiln = await startKiln({ vars: { KILN_OUTBOUND_ALLOW: `127.0.0.1:${addPort}` } });
    guard = await startTlsGuard(kiln.port);
    sb = containerSandbox([guard.host]);
    creds = await registryCreds(kiln.url, ["repository:e2e/*:pull,push"]);
  });
  afterAll(async () => {
    await guard?.close();
    await kiln?.stop(true);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("step 3 fails → 4–5 skipped with the line; after the fix 1–2 are cached and 3–5 built; a third build is fully cached", async () => {
    const dockerfile = ["FROM scratch", "COPY a.txt /a.txt", "COPY missing.txt /x", "ENV A=b", "COPY b.txt /b.txt", ""].join("\n");
    const dir = contextDir({ Dockerfile: dockerfile, "a.txt": "a\n", "b.txt": "b\n" });
    const first = await build(kiln.url, ADMIN_TOKEN, dir, { tag: "e2e/five:1" });
    expect(first.status).toBe("failed");
    expect(first.steps.map((s) => s.status)).toEqual(["done", "done", "failed", "skipped", "skipped"]);
    expect(first.error).toMatchObject({ step: 3, line: 3 });
    expect(first.error!.message).toMatch(/missing\.txt.*not found/);

    writeFileSync(path.join(dir, "missing.txt"), "now here\n");
    const second = await build(kiln.url, ADMIN_TOKEN, dir, { tag: "e2e/five:2" });
    expect(second.status, JSON.stringify(second.error)).toBe("succeeded");
    expect(second.steps.map((s) => s.status)).toEqual(["cached", "cached", "done", "done", "done"]);
    expect(second.steps[1].cacheKey).toBe(first.steps[1].cacheKey);

    const third = await build(kiln.url, ADMIN_TOKEN, dir, { tag: "e2e/five:3" });
    expect(third.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached", "cached"]);
    expect(third.image!.digest).toBe(second.image!.digest);
    expect(third.image).toMatchObject({ repository: "e2e/five", tags: ["3"] });
  });

  it.skipIf(!haveTools || !isRoot)("the image pulled with skopeo and unpacked with umoci has docker's files, modes, owners and config", async () => {
    const dir = contextDir({
      Dockerfile: [
        "FROM scratch",
        "ENV APP_HOME=/app",
        "WORKDIR $APP_HOME",
        "COPY --chown=1000:1000 src/ ./",
        "COPY --chmod=0755 run.sh /usr/local/bin/run",
        "COPY conf/*.conf /etc/app/",
        "USER 1000",
        "EXPOSE 8080",
        "LABEL org.opencontainers.image.title=demo",
        'ENTRYPOINT ["/usr/local/bin/run"]',
        'CMD ["--port", "8080"]',
        "",
      ].join("\n"),
      "src/main.txt": "main\n",
      "src/lib/util.txt": "util\n",
      "run.sh": "#!/bin/sh\necho run\n",
      "conf/a.conf": "a=1\n",
      "conf/b.conf": "b=2\n",
      "conf/skip.txt": "no\n",
      ".dockerignore": "src/lib/ignored*\n",
      "src/lib/ignored.txt": "should not be copied\n",
    });
    execFileSync("chmod", ["0640", path.join(dir, "src/main.txt")]);
    execFileSync("ln", ["-s", "main.txt", path.join(dir, "src/link")]);
    const b = await build(kiln.url, ADMIN_TOKEN, dir, { tag: ["e2e/demo:1", "e2e/demo:latest"] });
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    expect(b.image).toMatchObject({ repository: "e2e/demo", tags: ["1", "latest"] });

    const layout = path.join(tmp, "layout");
    const copy = await skopeo(sb, ["copy", "--src-creds", credsArg(creds), "--src-tls-verify=false", `docker://${guard.host}/e2e/demo:1`, `oci:${layout}:demo`]);
    expect(copy.code, copy.stderr).toBe(0);
    const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8"));
    expect(index.manifests[0].digest).toBe(b.image!.digest);
    const bundle = path.join(tmp, "bundle");
    const unpack = execFileSync("umoci", ["unpack", "--image", `${layout}:demo`, bundle], { encoding: "utf8" });
    void unpack;
    const rootfs = path.join(bundle, "rootfs");
    const st = (p: string) => lstatSync(path.join(rootfs, p));
    expect(readFileSync(path.join(rootfs, "app/main.txt"), "utf8")).toBe("main\n");
    expect(st("app/main.txt").mode & 0o7777).toBe(0o640);
    expect([st("app/main.txt").uid, st("app/main.txt").gid]).toEqual([1000, 1000]);
    expect([st("app/lib").uid, st("app/lib/util.txt").gid]).toEqual([1000, 1000]);
    expect(readlinkSync(path.join(rootfs, "app/link"))).toBe("main.txt");
    expect(existsSync(path.join(rootfs, "app/lib/ignored.txt"))).toBe(false);
    expect(st("app").isDirectory()).toBe(true);
    expect(st("usr/local/bin/run").mode & 0o7777).toBe(0o755);
    expect([st("usr/local/bin/run").uid, st("usr/local/bin/run").gid]).toEqual([0, 0]);
    expect(st("usr/local/bin").mode & 0o7777).toBe(0o755);
    expect(readdirSync(path.join(rootfs, "etc/app")).sort()).toEqual(["a.conf", "b.conf"]);
    expect(statSync(path.join(rootfs, "etc/app/a.conf")).mode & 0o7777).toBe(0o644);

    const manifest = JSON.parse(readFileSync(path.join(layout, "blobs/sha256", b.image!.digest.slice(7)), "utf8"));
    const config = JSON.parse(readFileSync(path.join(layout, "blobs/sha256", manifest.config.digest.slice(7)), "utf8"));
    expect(config.os).toBe("linux");
    expect(config.architecture).toBe("amd64");
    expect(config.config).toMatchObject({
      Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "APP_HOME=/app"],
      Entrypoint: ["/usr/local/bin/run"],
      Cmd: ["--port", "8080"],
      WorkingDir: "/app",
      User: "1000",
      ExposedPorts: { "8080/tcp": {} },
      Labels: { "org.opencontainers.image.title": "demo" },
    });
    expect(config.history.map((h: { created_by: string; empty_layer?: boolean }) => [h.created_by, !!h.empty_layer])).toEqual([
      ["ENV APP_HOME=/app", true],
      ["WORKDIR /app", false],
      ["COPY --chown=1000:1000 src/ ./ # buildkit", false],
      ["COPY --chmod=0755 run.sh /usr/local/bin/run # buildkit", false],
      ["COPY conf/*.conf /etc/app/ # buildkit", false],
      ["USER 1000", true],
      ["EXPOSE map[8080/tcp:{}]", true],
      ["LABEL org.opencontainers.image.title=demo", true],
      ['ENTRYPOINT ["/usr/local/bin/run"]', true],
      ['CMD ["--port" "8080"]', true],
    ]);
    expect(config.rootfs.diff_ids).toHaveLength(4);
    expect(manifest.layers).toHaveLength(4);
  });

  it("the same context and Dockerfile built on two fresh stores give the same manifest digest", async () => {
    const dir = contextDir({
      Dockerfile: "FROM scratch\nCOPY . /src\nENV X=1\nCMD [\"/src/x\"]\n",
      x: "x\n",
      "sub/y": "y\n",
    });
    const a = await build(kiln.url, ADMIN_TOKEN, dir, { tag: "e2e/repro:1" });
    const other = await startKiln();
    try {
      const b = await build(other.url, ADMIN_TOKEN, dir, { tag: "e2e/repro:1" });
      expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
      expect(b.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done"]);
      expect(b.image!.digest).toBe(a.image!.digest);
    } finally {
      await other.stop(true);
    }
  });

  it("bad contexts and Dockerfiles get a clear 400 and leave nothing in storage", async () => {
    const before = r2ObjectCount(kiln.stateDir);
    const cases: [Record<string, string>, Record<string, string>, RegExp][] = [
      [{ "a.txt": "a" }, {}, /Dockerfile not found in the build context: Dockerfile/],
      [{ Dockerfile: "FROM scratch\nCOPY a b\nFOO bar\n" }, {}, /Dockerfile:3: .*unknown instruction/i],
      [{ Dockerfile: "FROM scratch\n" }, { dockerfile: "nope/Dockerfile" }, /nope\/Dockerfile/],
      [{ Dockerfile: "#".repeat(1024 * 1024 + 1) }, {}, /larger than 1 MiB/],
    ];
    for (const [files, query, re] of cases) {
      const res = await submitBuild(kiln.url, ADMIN_TOKEN, contextDir(files), query);
      const body = (await res.json()) as { error?: { message: string } };
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(body.error!.message).toMatch(re);
    }
    // a tar with an absolute path (GNU tar -P keeps it)
    const absDir = contextDir({ Dockerfile: "FROM scratch\n" });
    const abs = execFileSync("tar", ["-P", "-cf", "-", path.join(absDir, "Dockerfile")]);
    const res = await fetch(`${kiln.url}/v1/builds`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/x-tar" }, body: abs });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/absolute path/);
    // the same refusal inside multipart/form-data (as `kiln build` sends a Dockerfile from outside the context)
    const boundary = "kiln-e2e-boundary";
    const multipart = (df: string, tar: Buffer) => Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="dockerfile"\r\n\r\n${df}\r\n--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="c.tar"\r\n\r\n`),
      tar,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const mp = await fetch(`${kiln.url}/v1/builds`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": `multipart/form-data; boundary=${boundary}` }, body: multipart("FROM scratch\n", abs) });
    expect(mp.status).toBe(400);
    expect(((await mp.json()) as { error: { message: string } }).error.message).toMatch(/absolute path/);
    expect(r2ObjectCount(kiln.stateDir)).toBe(before);
    const okDir = contextDir({ "f.txt": "f" });
    const okTar = execFileSync("tar", ["-C", okDir, "-cf", "-", "."]);
    const good = await fetch(`${kiln.url}/v1/builds?tag=e2e/multipart:1`, { method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": `multipart/form-data; boundary=${boundary}` }, body: multipart("FROM scratch\nCOPY f.txt /f.txt\n", okTar) });
    expect(good.status).toBe(202);
  });

  it("a build survives a restart of the server and continues from its persisted state", async () => {
    const { randomBytes } = await import("node:crypto");
    const dir = contextDir({
      Dockerfile: "FROM scratch\nCOPY big1.bin /big1.bin\nCOPY big2.bin /big2.bin\nCOPY big3.bin /big3.bin\nENV DONE=1\n",
      "big1.bin": randomBytes(16 * 1024 * 1024),
      "big2.bin": randomBytes(16 * 1024 * 1024),
      "big3.bin": randomBytes(16 * 1024 * 1024),
    });
    const server = await startKiln();
    let restarted: KilnServer | undefined;
    try {
      const res = await submitBuild(server.url, ADMIN_TOKEN, dir, { tag: "e2e/restart:1" });
      const { id } = (await res.json()) as { id: string };
      expect(res.status).toBe(202);
      // stop the server while the build is in its COPY steps
      for (let i = 0; i < 400; i++) {
        const b = (await (await fetch(`${server.url}/v1/builds/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as { steps: { status: string }[] };
        if (b.steps.some((s) => s.status === "running" && b.steps.indexOf(s) >= 1)) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      await server.stop();
      restarted = await startKiln({ stateDir: server.stateDir });
      const { waitForBuild } = await import("./helpers");
      const done = await waitForBuild(restarted.url, ADMIN_TOKEN, id, 180_000);
      expect(done.status, JSON.stringify(done.error)).toBe("succeeded");
      expect(done.steps.map((s) => s.status).every((s) => s === "done" || s === "cached")).toBe(true);
      const m = await fetch(`${restarted.url}/v2/e2e/restart/manifests/1`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.manifest.v1+json" } });
      expect(m.status).toBe(200);
      expect(((await m.json()) as { layers: unknown[] }).layers).toHaveLength(3);
    } finally {
      await server.stop();
      await restarted?.stop(true);
    }
  });

  it("ADD of an http URL verifies --checksum and stores the file 0600 under the URL's name", async () => {
    const http = await import("node:http");
    const { createHash } = await import("node:crypto");
    const body = "downloaded tool\n";
    const srv = http.createServer((req, res) => {
      if (req.url === "/files/tool.txt") res.end(body);
      else { res.statusCode = 404; res.end("no"); }
    });
    await new Promise<void>((r) => srv.listen(addPort, "127.0.0.1", r));
    const port = addPort;
    const good = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    try {
      const ok = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM scratch\nADD --checksum=${good} http://127.0.0.1:${port}/files/tool.txt /opt/\n` }), { tag: "e2e/add:1" });
      expect(ok.status, JSON.stringify(ok.error)).toBe("succeeded");
      const m = (await (await fetch(`${kiln.url}/v2/e2e/add/manifests/1`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.manifest.v1+json" } })).json()) as { layers: { digest: string }[] };
      const blob = Buffer.from(await (await fetch(`${kiln.url}/v2/e2e/add/blobs/${m.layers[0].digest}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).arrayBuffer());
      const listing = execFileSync("tar", ["-tzvf", "-"], { input: blob, encoding: "utf8" });
      expect(listing).toMatch(/-rw------- 0\/0 .* opt\/tool\.txt/);
      const bad = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM scratch\nADD --checksum=sha256:${"0".repeat(64)} http://127.0.0.1:${port}/files/tool.txt /opt/\n` }));
      expect(bad.status).toBe("failed");
      expect(bad.error).toMatchObject({ step: 2, line: 2 });
      expect(bad.error!.message).toMatch(/digest mismatch/);
      const missing = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM scratch\nADD http://127.0.0.1:${port}/nope /opt/\n` }));
      expect(missing.error!.message).toMatch(/404/);
    } finally {
      srv.close();
    }
  });

  it("GET /v1/builds/:id/events streams step, log and done events live through wrangler dev", async () => {
    const dir = contextDir({ Dockerfile: "FROM scratch\nCOPY f /f\nCOPY missing /m\n", f: "f" });
    const res = await submitBuild(kiln.url, ADMIN_TOKEN, dir, { tag: "e2e/sse:1" });
    const { id } = (await res.json()) as { id: string };
    const ev = await fetch(`${kiln.url}/v1/builds/${id}/events`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "text/event-stream" } });
    expect(ev.status).toBe(200);
    expect(ev.headers.get("content-type")).toContain("text/event-stream");
    const text = await ev.text(); // ends after `done`
    const frames = text.trim().split("\n\n").map((f) => ({ event: /^event: (.*)$/m.exec(f)![1], data: JSON.parse(/^data: (.*)$/m.exec(f)![1]) }));
    expect(frames.filter((f) => f.event === "step").length).toBeGreaterThanOrEqual(6);
    expect(frames.some((f) => f.event === "log" && f.data.step === 3 && /missing/.test(f.data.text))).toBe(true);
    const done = frames[frames.length - 1];
    expect(done.event).toBe("done");
    expect(done.data).toMatchObject({ id, status: "failed", error: { step: 3, line: 3 } });
  });
});
