// A namespace's quota against a real client (issue 13): skopeo's push into a namespace without room is
// refused with DENIED naming usage and quota, no tag appears and its upload sessions hold no staged
// bytes; with room the same push goes in, and usage is what the image holds.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have } from "./server";
import { buildBusyboxLayout, containerSandbox, credsArg, readLayout, skopeo, startTarget, TARGET, type ContainerSandbox, type Credentials, type RegistryTarget } from "./helpers";

const haveTools = have("skopeo") && have("umoci") && have("busybox");
if (!haveTools) console.warn("SKIPPING quota client e2e tests: skopeo, umoci and busybox-static are required");

describe.skipIf(!haveTools || TARGET !== "kiln")("quotas with a real client (skopeo)", () => {
  let target: RegistryTarget;
  let sb: ContainerSandbox;
  let creds: Credentials;
  let layout: string;
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };

  beforeAll(async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), "kiln-e2e-quota-"));
    target = await startTarget();
    sb = containerSandbox([target.host]);
    creds = await target.creds(["repository:equota/*:pull,push"]);
    ({ layout } = await buildBusyboxLayout(path.join(tmp, "layout")));
  });
  afterAll(async () => {
    await target?.stop();
  });

  async function setQuota(bytes: number): Promise<void> {
    const res = await fetch(`${target.url}/v1/quotas/equota`, { method: "PUT", headers: admin, body: JSON.stringify({ bytes }) });
    expect(res.status).toBe(200);
  }
  async function usage(): Promise<{ bytes: number; stagedBytes: number; tags: number }> {
    const res = await fetch(`${target.url}/v1/usage`, { headers: admin });
    const all = ((await res.json()) as { namespaces: { namespace: string; bytes: number; stagedBytes: number; tags: number }[] }).namespaces;
    return all.find((u) => u.namespace === "equota") ?? { bytes: 0, stagedBytes: 0, tags: 0 };
  }
  const push = () => skopeo(sb, ["copy", "--dest-creds", credsArg(creds), "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${target.host}/equota/busybox:1`]);

  it("a push past the quota is refused with DENIED naming usage and quota, leaving no tag and no staged bytes; with room it goes in", async () => {
    const a = readLayout(layout);
    const whole = a.manifest.config.size + a.manifest.layers.reduce((n: number, l: { size: number }) => n + l.size, 0) + a.manifestBytes.byteLength;
    await setQuota(1000);
    const refused = await push();
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/denied/i);
    expect(refused.stderr).toMatch(/namespace equota would exceed its quota: it uses \d+ of 1000 bytes/);
    const after = await usage();
    expect(after.tags).toBe(0);
    expect(after.stagedBytes).toBe(0);
    expect(after.bytes).toBeLessThanOrEqual(1000);
    const tag = await fetch(`${target.url}/v2/equota/busybox/manifests/1`, { method: "HEAD", headers: { authorization: `Basic ${btoa(`kiln:${ADMIN_TOKEN}`)}` } });
    expect(tag.status).toBe(404);

    await setQuota(whole);
    const ok = await push();
    expect(ok.code, ok.stderr).toBe(0);
    expect(await usage()).toMatchObject({ bytes: whole, stagedBytes: 0, tags: 1 });
  });
});
