// `kiln gc` and `kiln usage` against a real server (wrangler dev).
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, ROOT, startKiln, type KilnServer } from "./server";

function kiln(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), ...args], { env: { ...process.env, KILN_CONFIG_DIR: "/nonexistent-kiln-config" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { err += d; });
    child.on("close", (code) => resolve({ code: code ?? 1, out, err }));
  });
}

describe("kiln gc / kiln usage", () => {
  let server: KilnServer;
  beforeAll(async () => {
    server = await startKiln();
  });
  afterAll(async () => {
    await server?.stop(true);
  });

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  async function pushBlob(repo: string, body: string): Promise<string> {
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    const res = await fetch(`${server.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", headers: admin, body });
    expect(res.status).toBe(201);
    return digest;
  }

  it("kiln usage lists namespaces; kiln gc --dry-run lists what would go and keeps it; kiln gc deletes it", async () => {
    const orphan = await pushBlob("cligc/app", `orphan-${Math.random()}`);
    const usage = await kiln(["usage", "--server", server.url, "--token", ADMIN_TOKEN]);
    expect(usage.code, usage.err).toBe(0);
    expect(usage.out).toMatch(/^NAMESPACE\s+BYTES\s+QUOTA/m);
    expect(usage.out).toMatch(/^cligc\s+\d+ B\s+-\s+1\s+0\s+0/m);

    const dry = await kiln(["gc", "--dry-run", "--grace-seconds", "0", "--server", server.url, "--token", ADMIN_TOKEN]);
    expect(dry.code, dry.err).toBe(0);
    expect(dry.out).toContain(`would delete blob ${orphan}`);
    expect(dry.out).toMatch(/dry run: would free/);
    expect((await fetch(`${server.url}/v2/cligc/app/blobs/${orphan}`, { method: "HEAD", headers: admin })).status).toBe(200);

    const real = await kiln(["gc", "--grace-seconds", "0", "--server", server.url, "--token", ADMIN_TOKEN]);
    expect(real.code, real.err).toBe(0);
    expect(real.out).toContain(`deleted blob ${orphan}`);
    expect(real.out).toMatch(/^freed \d/m);
    expect((await fetch(`${server.url}/v2/cligc/app/blobs/${orphan}`, { method: "HEAD", headers: admin })).status).toBe(404);
  });

  it("kiln gc with a token that is not admin exits 1 and says why", async () => {
    const res = await fetch(`${server.url}/v1/tokens`, { method: "POST", headers: { ...admin, "content-type": "application/json" }, body: JSON.stringify({ name: "cli-gc", scopes: ["repository:clitenant/**:pull,push"] }) });
    const { token } = (await res.json()) as { token: string };
    const gc = await kiln(["gc", "--server", server.url, "--token", token]);
    expect(gc.code).toBe(1);
    expect(gc.err).toMatch(/admin/);
    const usage = await kiln(["usage", "--server", server.url, "--token", token]);
    expect(usage.code, usage.err).toBe(0);
    expect(usage.out).not.toContain("cligc");
  });
});
