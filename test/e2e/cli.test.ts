// The `kiln` CLI against a real server: streamed context with .dockerignore, BuildKit-style progress,
// exit codes, login.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, ROOT, startKiln, type KilnServer } from "./server";
import { contextDir } from "./helpers";

function kiln(args: string[], env: Record<string, string> = {}, input = ""): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
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
  beforeAll(async () => {
    server = await startKiln();
    configDir = mkdtempSync(path.join(os.tmpdir(), "kiln-cli-"));
  });
  afterAll(async () => { await server?.stop(true); });

  it("login checks the token and saves it; a wrong token is refused", async () => {
    const bad = await kiln(["login", "--server", server.url, "--token", "nope"], { KILN_CONFIG_DIR: configDir });
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/refused the token/);
    const ok = await kiln(["login", "--server", server.url], { KILN_CONFIG_DIR: configDir }, `${ADMIN_TOKEN}\n`);
    expect(ok.code, ok.err).toBe(0);
    expect(ok.out).toContain("Login Succeeded");
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
    expect(failed.out).toMatch(/ERROR: .*b\.txt.*\(Dockerfile line 3\)/);
    expect(failed.out).toContain(">>>   3 | COPY b.txt /b.txt");

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
});
