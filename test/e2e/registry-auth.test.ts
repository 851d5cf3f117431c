// Pushes are refused without credentials and with a token for another repository — with raw HTTP and
// with skopeo, and the repository has no tags afterwards. A token with the right scope works (control).
// kiln only: the docker-registry peer runs without auth.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { have } from "./server";
import {
  buildBusyboxLayout, containerSandbox, credsArg, parseChallenge, RegistryClient, sha256, skopeo, startTarget, TARGET,
  withDigest, type ContainerSandbox, type RegistryTarget,
} from "./helpers";

const haveTools = have("skopeo") && have("umoci") && have("busybox");
if (!haveTools) console.warn("SKIPPING skopeo auth e2e tests: skopeo, umoci and busybox-static are required");

describe.skipIf(TARGET !== "kiln")("registry auth with real clients (kiln)", () => {
  let target: RegistryTarget;
  let admin: RegistryClient;

  beforeAll(async () => {
    target = await startTarget();
    admin = new RegistryClient(target.url, await target.adminCreds());
  });
  afterAll(async () => { await target?.stop(); });

  it("answers a push without credentials with 401 and the Bearer challenge", async () => {
    const ping = await fetch(`${target.url}/v2/`);
    expect(ping.status).toBe(401);
    const ch = parseChallenge(ping.headers.get("www-authenticate"));
    expect(ch?.scheme).toBe("bearer");
    expect(ch?.params.realm).toBe(`${target.url}/v2/token`);
    expect(ch?.params.service).toBeTruthy();
    await ping.body?.cancel();

    const post = await fetch(`${target.url}/v2/e2e/anon/blobs/uploads/`, { method: "POST" });
    expect(post.status).toBe(401);
    const pch = parseChallenge(post.headers.get("www-authenticate"));
    expect(pch?.scheme).toBe("bearer");
    expect(pch?.params.realm).toBe(`${target.url}/v2/token`);
    expect(pch?.params.scope ?? "").toContain("repository:e2e/anon:");
    expect(((await post.json()) as { errors: Array<{ code: string }> }).errors[0].code).toBe("UNAUTHORIZED");

    const manifest = JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha256("{}"), size: 2 }, layers: [] });
    const put = await fetch(`${target.url}/v2/e2e/anon/manifests/1`, { method: "PUT", body: manifest, headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } });
    expect(put.status).toBe(401);
    await put.body?.cancel();
    expect(await admin.tags("e2e/anon")).toEqual([]);
  });

  it("refuses a push with a token scoped to another repository, and a pull-only token", async () => {
    for (const scopes of [["repository:other/*:pull,push"], ["repository:e2e/scoped:pull"]]) {
      const client = new RegistryClient(target.url, await target.creds(scopes));
      const post = await client.request("e2e/scoped", "POST", "blobs/uploads/");
      expect([401, 403], `${scopes}: POST → ${post.status}`).toContain(post.status);
      await post.body?.cancel();
      // Basic with the API token directly (no token exchange) is refused as well
      const basic = Buffer.from(`kiln:${client.creds!.password}`).toString("base64");
      const direct = await fetch(`${target.url}/v2/e2e/scoped/blobs/uploads/`, { method: "POST", headers: { authorization: `Basic ${basic}` } });
      expect([401, 403], `${scopes}: Basic POST → ${direct.status}`).toContain(direct.status);
      await direct.body?.cancel();
    }
    // control: the right scope may push
    const ok = new RegistryClient(target.url, await target.creds(["repository:e2e/scoped:pull,push"]));
    const loc = await ok.startUpload("e2e/scoped");
    const put = await ok.request("e2e/scoped", "PUT", withDigest(loc, sha256("x")), { body: "x" });
    expect(put.status).toBe(201);
  });

  describe.skipIf(!haveTools)("skopeo", () => {
    let sb: ContainerSandbox;
    let layout: string;
    beforeAll(async () => {
      sb = containerSandbox([target.host]);
      ({ layout } = await buildBusyboxLayout(path.join(mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-auth-")), "layout")));
    });

    it("skopeo copy without credentials fails and leaves no tag", async () => {
      const r = await skopeo(sb, ["copy", "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${target.host}/e2e/nocreds:1`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/unauthorized|authentication required|401/i);
      expect(await admin.tags("e2e/nocreds")).toEqual([]);
    });

    it("skopeo copy with a token for another repository fails and leaves no tag; the right token succeeds", async () => {
      const other = await target.creds(["repository:someone/else:pull,push"]);
      const r = await skopeo(sb, ["copy", "--dest-creds", credsArg(other), "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${target.host}/e2e/denied:1`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/denied|unauthorized|authentication required|40[13]/i);
      expect(await admin.tags("e2e/denied")).toEqual([]);

      const right = await target.creds(["repository:e2e/denied:pull,push"]);
      const ok = await skopeo(sb, ["copy", "--dest-creds", credsArg(right), "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${target.host}/e2e/denied:1`]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(await admin.tags("e2e/denied")).toEqual(["1"]);
    });
  });
});
