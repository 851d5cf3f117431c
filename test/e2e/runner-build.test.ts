// RUN steps end to end: builds submitted to a real kiln server (wrangler dev), executed by real runner
// processes under runc, images pulled with skopeo and unpacked with umoci.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import os from "node:os";
import { gunzipSync } from "node:zlib";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { BUSYBOX, containerSandbox, contextDir, credsArg, registryCreds, skopeo, startTlsGuard, submitBuild, tarOf, waitForBuild, type BuildResult, type ContainerSandbox, type Credentials, type TlsGuard } from "./helpers";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX) && have("skopeo") && have("umoci");
if (!canRun) console.warn("runner-build tests skipped: need root, runc, busybox-static, skopeo and umoci");

const busybox = () => readFileSync(BUSYBOX);
const BASE = ["FROM scratch", "COPY busybox /bin/busybox", 'RUN ["/bin/busybox","--install","-s","/bin"]'];

/** The text of every `log` event of a finished build. */
async function buildLog(url: string, id: string): Promise<string> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), 10_000);
  let text = "";
  try {
    const res = await fetch(`${url}/v1/builds/${id}/events`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, signal: ac.signal });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const type = /^event: (.*)$/m.exec(frame)?.[1];
        const data = /^data: (.*)$/m.exec(frame)?.[1];
        if (type === "log" && data) text += (JSON.parse(data) as { text: string }).text;
        if (type === "done") { ac.abort(); return text; }
      }
    }
  } catch { /* aborted */ } finally {
    clearTimeout(timer);
  }
  return text;
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const containers = (r: RunnerProcess) => spawnSync("runc", ["--root", path.join(r.workDir, "runc"), "list", "-q"]).stdout?.toString().trim() ?? "";

describe.skipIf(!canRun)("RUN steps end to end", () => {
  let kiln: KilnServer;
  let guard: TlsGuard;
  let sb: ContainerSandbox;
  let creds: Credentials;
  let tmp: string;
  let runner: RunnerProcess;
  const runners: RunnerProcess[] = [];

  async function start(dockerfile: string[], tag: string, files: Record<string, string | Uint8Array> = {}): Promise<string> {
    const dir = contextDir({ Dockerfile: dockerfile.join("\n") + "\n", busybox: busybox(), ...files });
    execFileSync("chmod", ["0755", path.join(dir, "busybox")]);
    const res = await submitBuild(kiln.url, ADMIN_TOKEN, dir, { tag });
    const body = (await res.json()) as { id?: string };
    expect(res.status, JSON.stringify(body)).toBe(202);
    rmSync(dir, { recursive: true, force: true });
    return body.id!;
  }

  async function rootfsOf(ref: string): Promise<string> {
    const name = ref.replace(/[^a-z0-9]/g, "-");
    const layout = path.join(tmp, `layout-${name}`);
    const copy = await skopeo(sb, ["copy", "--src-creds", credsArg(creds), "--src-tls-verify=false", `docker://${guard.host}/${ref}`, `oci:${layout}:img`]);
    expect(copy.code, copy.stderr).toBe(0);
    const bundle = path.join(tmp, `bundle-${name}`);
    execFileSync("umoci", ["unpack", "--image", `${layout}:img`, bundle]);
    return path.join(bundle, "rootfs");
  }

  beforeAll(async () => {
    tmp = mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-run-"));
    kiln = await startKiln();
    guard = await startTlsGuard(kiln.port);
    sb = containerSandbox([guard.host]);
    creds = await registryCreds(kiln.url, ["repository:e2e/*:pull,push"]);
    runner = await startRunner(kiln.url, { leaseSeconds: 3, runnerId: "main-runner" });
    runners.push(runner);
  });

  afterAll(async () => {
    for (const r of runners) { await r.stop("SIGKILL"); await wipeRunnerDir(r.workDir); }
    await guard?.close();
    await kiln?.stop(true);
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("a busybox base, then RUN steps that create, change and delete files: the image has exactly the expected files", async () => {
    const id = await start([
      ...BASE,
      "RUN mkdir -p /data/sub && echo one > /data/a && echo two > /data/b && echo x > /data/sub/x && echo keep > /keep && ln /keep /keep-link",
      "RUN echo changed > /data/a && rm /data/b && rm -r /data/sub && mkdir /empty",
      "WORKDIR /work",
      "RUN echo in-workdir > here && chmod 0600 here",
    ], "e2e/run:1");
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status, JSON.stringify(b.error) + runner.output()).toBe("succeeded");
    expect(b.steps.map((s) => s.status)).toEqual(["done", "done", "done", "done", "done", "done", "done"]);

    const rootfs = await rootfsOf("e2e/run:1");
    expect(readdirSync(rootfs).sort()).toEqual(["bin", "data", "empty", "keep", "keep-link", "work"]);
    expect(readdirSync(path.join(rootfs, "data"))).toEqual(["a"]);
    expect(readFileSync(path.join(rootfs, "data/a"), "utf8")).toBe("changed\n");
    expect(readFileSync(path.join(rootfs, "keep"), "utf8")).toBe("keep\n");
    expect(lstatSync(path.join(rootfs, "keep")).ino).toBe(lstatSync(path.join(rootfs, "keep-link")).ino);
    expect(readlinkSync(path.join(rootfs, "bin/sh"))).toBe("/bin/busybox");
    expect(readFileSync(path.join(rootfs, "work/here"), "utf8")).toBe("in-workdir\n");
    expect(lstatSync(path.join(rootfs, "work/here")).mode & 0o7777).toBe(0o600);
    expect(readdirSync(path.join(rootfs, "empty"))).toEqual([]);

    // Rebuilding is fully cached; the same layers come back.
    const again = await waitForBuild(kiln.url, ADMIN_TOKEN, await start([
      ...BASE,
      "RUN mkdir -p /data/sub && echo one > /data/a && echo two > /data/b && echo x > /data/sub/x && echo keep > /keep && ln /keep /keep-link",
    ], "e2e/run:2"));
    expect(again.steps.map((s) => s.status)).toEqual(["cached", "cached", "cached", "cached"]);
  });

  it("a failing RUN fails the build with its exit code and output; later steps are skipped", async () => {
    const id = await start([...BASE, "RUN echo about-to-fail && exit 3", "RUN echo never > /never"], "e2e/fail:1");
    const b: BuildResult = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status).toBe("failed");
    expect(b.steps.map((s) => s.status)).toEqual([expect.stringMatching(/done|cached/), expect.stringMatching(/done|cached/), expect.stringMatching(/done|cached/), "failed", "skipped"]);
    expect(b.error?.message).toMatch(/exit code:? 3/);
    expect(b.error?.step).toBe(4);
    const log = await buildLog(kiln.url, id);
    expect(log).toContain("about-to-fail");
    expect(log).not.toContain("never");
  });

  it("a runner killed with SIGKILL mid-step: the lease expires and a second runner completes the build", async () => {
    const victim = await startRunner(kiln.url, { leaseSeconds: 2, runnerId: "victim" });
    runners.push(victim);
    await runner.stop(); // only the victim claims the step
    const id = await start([...BASE, "RUN echo started && sleep 5 && echo finished > /finished"], "e2e/kill:1");
    await waitUntil("the victim to run the step", () => /sleep 5/.test(victim.output()) && containers(victim) !== "");
    await new Promise((r) => setTimeout(r, 1000));
    await victim.stop("SIGKILL");
    await wipeRunnerDir(victim.workDir); // its orphaned container must not finish the step either
    const mid: BuildResult = await (await fetch(`${kiln.url}/v1/builds/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json() as BuildResult;
    expect(mid.status).toBe("running");
    expect(mid.image).toBeUndefined();

    runner = await startRunner(kiln.url, { leaseSeconds: 3, runnerId: "rescuer" });
    runners.push(runner);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status, JSON.stringify(b.error) + runner.output()).toBe("succeeded");
    expect(runner.output()).toMatch(/sleep 5/);
    const rootfs = await rootfsOf("e2e/kill:1");
    expect(readFileSync(path.join(rootfs, "finished"), "utf8")).toBe("finished\n");
  });

  it("cancel during a long RUN kills the process within seconds", async () => {
    const id = await start([...BASE, "RUN echo going-to-sleep && sleep 300"], "e2e/cancel:1");
    await waitUntil("the step's container", () => containers(runner) !== "");
    const t = Date.now();
    const del = await fetch(`${kiln.url}/v1/builds/${id}`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(del.status).toBe(200);
    await waitUntil("the container to be killed", () => containers(runner) === "", 15_000);
    expect(Date.now() - t).toBeLessThan(10_000);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, id);
    expect(b.status).toBe("cancelled");
  });

  it("a secret used in RUN appears in no layer, no log and no config", async () => {
    const secret = "kiln-e2e-s3cr3t-9f1c";
    const dir = contextDir({
      Dockerfile: [...BASE,
        "RUN --mount=type=secret,id=token grep -q '^kiln-e2e-s3' /run/secrets/token && echo secret-ok && cat /run/secrets/token | wc -c > /secret-length",
        "RUN --mount=type=secret,id=token,env=TOKEN test -n \"$TOKEN\" && echo env-ok",
        // Printed on purpose, in two pieces that arrive in different log batches: still redacted.
        "RUN --mount=type=secret,id=token s=$(cat /run/secrets/token); printf %s \"${s:0:6}\"; sleep 1; echo \"${s:6}\"",
        "",
      ].join("\n"),
      busybox: busybox(),
    });
    execFileSync("chmod", ["0755", path.join(dir, "busybox")]);
    const boundary = `kiln-${Date.now()}`;
    const body = Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="secrets"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify({ token: secret })}\r\n`),
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="context"; filename="context.tar"\r\nContent-Type: application/x-tar\r\n\r\n`),
      await tarOf(dir),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
    const res = await fetch(`${kiln.url}/v1/builds?tag=e2e/secret:1`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": `multipart/form-data; boundary=${boundary}` }, body,
    });
    const started = (await res.json()) as { id: string };
    expect(res.status, JSON.stringify(started)).toBe(202);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, started.id);
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const log = await buildLog(kiln.url, started.id);
    expect(log).toContain("secret-ok");
    expect(log).toContain("env-ok");
    expect(log).not.toContain(secret);
    expect(log, log).toContain("****");
    expect(JSON.stringify(b)).not.toContain(secret);

    // Every blob of the image (config and each layer, uncompressed) is free of the secret.
    const layout = path.join(tmp, "layout-secret");
    const copy = await skopeo(sb, ["copy", "--src-creds", credsArg(creds), "--src-tls-verify=false", `docker://${guard.host}/e2e/secret:1`, `oci:${layout}:img`]);
    expect(copy.code, copy.stderr).toBe(0);
    const blobs = readdirSync(path.join(layout, "blobs/sha256"));
    expect(blobs.length).toBeGreaterThan(3);
    for (const blob of blobs) {
      const raw = readFileSync(path.join(layout, "blobs/sha256", blob));
      const text = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw).toString("latin1") : raw.toString("latin1");
      expect(text.includes(secret), `blob ${blob}`).toBe(false);
    }
    const rootfs = await rootfsOf("e2e/secret:1");
    expect(readFileSync(path.join(rootfs, "secret-length"), "utf8").trim()).toBe(String(secret.length));
    expect(existsSync(path.join(rootfs, "run"))).toBe(false);
  });

  it("a RUN --mount=type=cache directory is still there for the next build on the same runner", async () => {
    const first = await waitForBuild(kiln.url, ADMIN_TOKEN, await start([...BASE, "RUN --mount=type=cache,target=/var/cache/tool echo from-build-1 >> /var/cache/tool/log"], "e2e/cache:1"));
    expect(first.status, JSON.stringify(first.error)).toBe("succeeded");
    const second = await waitForBuild(kiln.url, ADMIN_TOKEN, await start([...BASE, "RUN --mount=type=cache,target=/var/cache/tool cp /var/cache/tool/log /seen"], "e2e/cache:2"));
    expect(second.status, JSON.stringify(second.error)).toBe("succeeded");
    const rootfs = await rootfsOf("e2e/cache:2");
    expect(readFileSync(path.join(rootfs, "seen"), "utf8")).toBe("from-build-1\n");
    expect(existsSync(path.join(rootfs, "var/cache/tool"))).toBe(false);
    const r1 = await rootfsOf("e2e/cache:1");
    expect(existsSync(path.join(r1, "var"))).toBe(false);
  });
});
