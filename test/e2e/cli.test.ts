// The `kiln` CLI against a real server: streamed context with .dockerignore, BuildKit-style progress
// (a failing multi-step build compared with its transcript), exit codes, login, messages that say
// what failed and what to do (unreachable server, untagged builds, cancel), EPIPE.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, freePort, have, ROOT, startKiln, type KilnServer } from "./server";
import { BUSYBOX, contextDir, submitBuild, waitForBuild } from "./helpers";
import { startRunner, wipeRunnerDir, type RunnerProcess } from "./runner-helpers";

const canRun = process.getuid?.() === 0 && have("runc") && existsSync(BUSYBOX);

/** Durations, sizes and build ids vary from run to run. */
function normalize(out: string): string {
  return out
    .replace(/\b\d+\.\d+s\b/g, "<t>")
    .replace(/\b\d+(?:\.\d+)?(?:B|kB|MB|GB) done\b/g, "<size> done")
    .replace(/\bb[0-9a-z]{10,}\b/g, "<build>");
}

function kiln(args: string[], env: Record<string, string> = {}, input = "", cwd?: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"], cwd });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    child.on("close", (code) => resolve({ code: code ?? 1, out, err }));
    child.stdin.end(input);
  });
}

describe("kiln CLI", () => {
  let server: KilnServer;
  let configDir: string;
  let runner: RunnerProcess | undefined;
  beforeAll(async () => {
    server = await startKiln();
    configDir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-"));
    if (canRun) runner = await startRunner(server.url);
  });
  afterAll(async () => {
    await runner?.stop();
    if (runner) await wipeRunnerDir(runner.workDir);
    await server?.stop(true);
  });

  it("login checks the token and saves it; a wrong token is refused", async () => {
    const bad = await kiln(["login", "--server", server.url, "--token", "nope"], { KILN_CONFIG_DIR: configDir });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/refused the token/);
    const ok = await kiln(["login", "--server", server.url], { KILN_CONFIG_DIR: configDir }, `${ADMIN_TOKEN}\n`);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toContain("Login Succeeded");
    expect(ok.out).toContain(path.join(configDir, "config.json"));
  });

  it("a failing step exits 1 with the step's error and line; the fix rebuilds with CACHED steps; .dockerignore is honoured", async () => {
    const dir = contextDir({
      Dockerfile: "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nENV X=1\nCMD [\"/x\"]\n",
      "a.txt": "a\n",
      ".dockerignore": "secret.txt\n",
      "secret.txt": "do not upload\n",
    });
    const env = { KILN_CONFIG_DIR: configDir };
    const failed = await kiln(["build", "-t", "cli/app:1", dir], env);
    expect(failed.code).toBe(1);
    expect(failed.out).toMatch(/#\d+ \[\S* ?3\/\d\] COPY b\.txt \/b\.txt/);
    expect(failed.out).toMatch(/\nERROR: .*b\.txt/);
    expect(failed.out).toContain("\nDockerfile:3\n");
    expect(failed.out).toContain("   3 | >>> COPY b.txt /b.txt");
    expect(failed.out).not.toMatch(/line 3/);

    writeFileSync(path.join(dir, "b.txt"), "b\n");
    const fixed = await kiln(["build", "-t", "cli/app:1", dir], env);
    expect(fixed.code, fixed.out + fixed.err).toBe(0);
    expect(fixed.out).toMatch(/COPY a\.txt \/a\.txt\n#\d+ CACHED/);
    expect(fixed.out).toMatch(/COPY b\.txt \/b\.txt\n#\d+ DONE/);
    const digest = /digest (sha256:[0-9a-f]{64})/.exec(fixed.out)?.[1];
    expect(digest).toBeTruthy();

    // The ignored file never reached the server: a Dockerfile that copies it fails.
    writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY secret.txt /s\n");
    const ignored = await kiln(["build", "-t", "cli/app:2", dir], env);
    expect(ignored.code).toBe(1);
    expect(ignored.out).toMatch(/secret\.txt/);
  });

  it("usage errors exit 2", async () => {
    const r = await kiln(["build"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("usage:");
  });

  it.skipIf(!canRun)("a failing multi-step build prints BuildKit's plain progress: numbered in order, output once, then its last lines and the excerpt", async () => {
    const run = 'RUN ["/bin/busybox","sh","-c","printf \'part-one \'; sleep 1; echo part-two; echo second line; exit 3"]';
    const dir = contextDir({
      "Dockerfile.run": `FROM scratch\nCOPY busybox /bin/busybox\nCOPY a.txt /a.txt\n${run}\nCMD ["/bin/busybox"]\n`,
      busybox: readFileSync(BUSYBOX),
      "a.txt": "a\n",
    });
    chmodSync(path.join(dir, "busybox"), 0o755);
    const r = await kiln(["build", "--server", server.url, "--token", ADMIN_TOKEN, "-f", path.join(dir, "Dockerfile.run"), "-t", "transcript/app:1", dir]);
    expect(r.code, r.out + r.err).toBe(1);
    expect(r.err).toBe("");
    const name = path.join(dir, "Dockerfile.run");
    expect(normalize(r.out)).toBe(`#1 [internal] load build context
#1 transferring context: 3 files, <size> done
#1 DONE <t>

kiln: build <build> queued

#2 [1/5] FROM scratch
#2 DONE <t>

#3 [2/5] COPY busybox /bin/busybox
#3 DONE <t>

#4 [3/5] COPY a.txt /a.txt
#4 DONE <t>

#5 [4/5] ${run}
#5 kiln: waiting for a runner
#5 part-one part-two
#5 second line
#5 ERROR <t>

------
 > [4/5] ${run}:
part-one part-two
second line
------
${name}:4
--------------------
   1 |     FROM scratch
   2 |     COPY busybox /bin/busybox
   3 |     COPY a.txt /a.txt
   4 | >>> ${run}
   5 |     CMD ["/bin/busybox"]
--------------------
ERROR: process ${run.slice(4)} did not complete successfully: exit code 3
`);

    // The same build followed again (history replayed) reads the same, numbered from #1.
    const id = /kiln: build (\S+) queued/.exec(r.out)![1];
    const logs = await kiln(["logs", "--server", server.url, "--token", ADMIN_TOKEN, id]);
    expect(logs.code).toBe(1);
    expect(logs.out).toContain(`#4 [4/5] ${run}\n#4 kiln: waiting for a runner\n#4 part-one part-two\n#4 second line\n#4 ERROR `);
    expect(logs.out.match(/part-one part-two/g)?.length).toBe(2); // under its step, then among the last lines
    // Without the Dockerfile at hand, the line is named in the error itself.
    expect(logs.out).toMatch(/\n------\nERROR: Dockerfile:4: process .* exit code 3\n$/);

    // On a terminal the default is the tty mode (lines redrawn in place, ` => ` per step).
    if (have("script")) {
      const cmd = [process.execPath, path.join(ROOT, "bin", "kiln.mjs"), "logs", "--server", server.url, "--token", ADMIN_TOKEN, id].map((a) => `'${a}'`).join(" ");
      const tty = spawnSync("script", ["-qec", cmd, "/dev/null"], { encoding: "utf8", timeout: 60_000 });
      expect(tty.stdout).toMatch(/ => ERROR \[4\/5\] RUN/);
      expect(tty.stdout).not.toMatch(/#4 ERROR/);
    }
  });

  it("a Dockerfile syntax error shows the excerpt under the file's own name, the line once", async () => {
    const dir = contextDir({ "Dockerfile.syntax": "FROM scratch\nCOPY a /a\nNOPE x\nCMD [\"x\"]\n", a: "a\n" });
    const r = await kiln(["build", "--server", server.url, "--token", ADMIN_TOKEN, "-f", "Dockerfile.syntax", "-t", "cli/syntax:1", "."], {}, "", dir);
    expect(r.code, r.out + r.err).toBe(1);
    expect(r.out).toContain("Dockerfile.syntax:3\n--------------------\n   1 |     FROM scratch\n   2 |     COPY a /a\n   3 | >>> NOPE x\n   4 |     CMD [\"x\"]\n--------------------\nERROR: unknown instruction: NOPE\n");
    expect(r.out.match(/:3\b/g)?.length).toBe(1);
    expect(r.out).not.toContain("Dockerfile:3");
  });

  it("HTTP errors are one sentence: untagged builds with a non-admin token, a repository the token may not push", async () => {
    const res = await fetch(`${server.url}/v1/tokens`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "cli-team", scopes: ["repository:team/*:pull,push"] }),
    });
    const { token } = (await res.json()) as { token: string };
    const dir = contextDir({ Dockerfile: "FROM scratch\nCOPY a /a\n", a: "a\n" });
    const untagged = await kiln(["build", "--server", server.url, "--token", token, dir]);
    expect(untagged.code).toBe(1);
    expect(untagged.err).toBe("kiln: starting the build failed: untagged builds need an admin token; add -t <repository>:<tag> to push the image somewhere your token may push\n");
    const elsewhere = await kiln(["build", "--server", server.url, "--token", token, "-t", "other/app:1", dir]);
    expect(elsewhere.code).toBe(1);
    expect(elsewhere.err).toBe("kiln: starting the build failed: token lacks scope repository:other/app:push (HTTP 403); use a token with that scope (an admin creates one with POST /v1/tokens)\n");
    const missing = await kiln(["logs", "--server", server.url, "--token", ADMIN_TOKEN, "bnosuchbuild000"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^kiln: reading build bnosuchbuild000 failed: build bnosuchbuild000 not found \(HTTP 404\); check the build id[^\n{]*\n$/);
  });

  it("an unreachable server is named, with what to do; no stack trace", async () => {
    const port = await freePort();
    const dir = contextDir({ Dockerfile: "FROM scratch\n" });
    for (const args of [["build", dir], ["logs", "b123"], ["cancel", "b123"], ["login", "--token", "x"]]) {
      const r = await kiln([...args, "--server", `http://127.0.0.1:${port}`], { KILN_CONFIG_DIR: mkdtempSync(path.join(os.tmpdir(), "kiln-cli-none-")) });
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.err, args.join(" ")).toBe(`kiln: cannot reach http://127.0.0.1:${port}: connection refused (is kiln running? start it with npm start)\n`);
    }
  });

  it("kiln cancel says what it cancelled and what state the build was in", async () => {
    // A RUN step for a platform no runner serves waits: the build stays running.
    const dir = contextDir({ Dockerfile: "FROM scratch\nCOPY a /a\nRUN [\"/bin/true\"]\n", a: "a\n" });
    const res = await submitBuild(server.url, ADMIN_TOKEN, dir, { tag: "cli/cancel:1", platform: "linux/s390x" });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const deadline = Date.now() + 60_000;
    for (;;) {
      const b = (await (await fetch(`${server.url}/v1/builds/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as { steps: { status: string }[] };
      if (b.steps.some((s) => s.status === "running")) break;
      if (Date.now() > deadline) throw new Error(`build ${id} never ran a step`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const r = await kiln(["cancel", "--server", server.url, "--token", ADMIN_TOKEN, id]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(`cancelled build ${id} (it was running RUN ["/bin/true"]; 2 of 3 steps done)\n`);
    expect((await waitForBuild(server.url, ADMIN_TOKEN, id)).status).toBe("cancelled");
    const again = await kiln(["cancel", "--server", server.url, "--token", ADMIN_TOKEN, id]);
    expect(again.out).toBe(`build ${id} had already been cancelled; nothing to cancel\n`);
    const missing = await kiln(["cancel", "--server", server.url, "--token", ADMIN_TOKEN, "bnosuchbuild000"]);
    expect(missing.code).toBe(1);
    expect(missing.out).toBe("");
    expect(missing.err).toMatch(/^kiln: cancelling build bnosuchbuild000 failed: build bnosuchbuild000 not found \(HTTP 404\); [^{]*\n$/);
  });

  it.skipIf(!canRun)("kiln logs … | head ends quietly (EPIPE)", async () => {
    const dir = contextDir({ Dockerfile: "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"seq\",\"1\",\"40000\"]\n", busybox: readFileSync(BUSYBOX) });
    chmodSync(path.join(dir, "busybox"), 0o755);
    const res = await submitBuild(server.url, ADMIN_TOKEN, dir, { tag: "cli/epipe:1" });
    const { id } = (await res.json()) as { id: string };
    expect((await waitForBuild(server.url, ADMIN_TOKEN, id)).status).toBe("succeeded");
    const errFile = path.join(mkdtempSync(path.join(os.tmpdir(), "kiln-epipe-")), "err");
    const cmd = `'${process.execPath}' '${path.join(ROOT, "bin", "kiln.mjs")}' logs --server ${server.url} --token ${ADMIN_TOKEN} ${id} 2>'${errFile}' | head -n 3; echo "kiln exit \${PIPESTATUS[0]}"`;
    const r = spawnSync("bash", ["-c", cmd], { encoding: "utf8", timeout: 120_000 });
    expect(r.stdout).toMatch(/^#1 \[1\/3\] FROM scratch\n#1 (DONE|CACHED)[^\n]*\n\nkiln exit 0\n$/);
    expect(readFileSync(errFile, "utf8")).toBe("");
  });
});
