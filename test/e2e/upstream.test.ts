// FROM other registries: Debian's docker-registry on 127.0.0.1 is the upstream, seeded with skopeo.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { setUpstream } from "./upstream-helpers";
import { build, contextDir, containerSandbox, haveDockerRegistry, runOk, skopeo, startPeerRegistry, startUpstreamProxy, writeLayout, type PeerRegistry, type UpstreamProxy } from "./helpers";

const ready = have("skopeo") && haveDockerRegistry();

async function manifestOf(kiln: KilnServer, repo: string, ref: string) {
  const res = await fetch(`${kiln.url}/v2/${repo}/manifests/${ref}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json" },
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { config: { digest: string }; layers: Array<{ digest: string }>; manifests?: Array<{ digest: string; platform: { architecture: string } }> };
}

async function configOf(kiln: KilnServer, repo: string, digest: string) {
  const res = await fetch(`${kiln.url}/v2/${repo}/blobs/${digest}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as { architecture: string; config: { Env?: string[]; Cmd?: string[]; Labels?: Record<string, string>; WorkingDir?: string; User?: string } };
}

describe.skipIf(!ready)("FROM another registry (pull-through)", () => {
  let kiln: KilnServer;
  let peer: PeerRegistry;
  let open: UpstreamProxy;
  let locked: UpstreamProxy;
  let multi: ReturnType<typeof writeLayout>;
  let single: ReturnType<typeof writeLayout>;

  beforeAll(async () => {
    peer = await startPeerRegistry();
    const sb = containerSandbox([peer.host]);
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-upstream-"));
    multi = writeLayout(path.join(dir, "multi"), "1", [
      { arch: "amd64", env: ["PATH=/bin", "FLAVOR=amd"], cmd: ["/bin/amd"], file: { name: "arch.txt", content: "amd64\n" }, labels: { base: "multi" }, workdir: "/srv", user: "1000" },
      { arch: "arm64", variant: "v8", env: ["PATH=/bin", "FLAVOR=arm"], cmd: ["/bin/arm"], file: { name: "arch.txt", content: "arm64\n" }, labels: { base: "multi" }, workdir: "/srv", user: "1000" },
    ]);
    single = writeLayout(path.join(dir, "single"), "1", [
      { arch: "amd64", env: ["PATH=/bin", "ONLY=1"], cmd: ["sh"], file: { name: "single.txt", content: "single\n" } },
    ], true);
    await runOk("skopeo", ["--policy", sb.policy, "copy", "--all", "--dest-tls-verify=false", `oci:${path.join(dir, "multi")}:1`, `docker://${peer.host}/base/multi:1`], { env: sb.env });
    await runOk("skopeo", ["--policy", sb.policy, "copy", "--dest-tls-verify=false", `oci:${path.join(dir, "single")}:1`, `docker://${peer.host}/base/single:1`], { env: sb.env });
    void skopeo;
    open = await startUpstreamProxy(peer.url);
    locked = await startUpstreamProxy(peer.url, { user: "puller", pass: "pa55word" });
    kiln = await startKiln();
    await setUpstream(kiln, open.host, { endpoint: open.url });
  });

  afterAll(async () => {
    await kiln?.stop(true);
    await open?.close();
    await locked?.close();
    await peer?.stop(true);
  });

  it("FROM a tag of a multi-platform index picks the build platform's manifest and inherits its config", async () => {
    const ctx = contextDir({ Dockerfile: `FROM ${open.host}/base/multi:1\nLABEL app=yes\n` });
    for (const [platform, arch, flavor, cmd] of [["linux/arm64", "arm64", "FLAVOR=arm", "/bin/arm"], ["linux/amd64", "amd64", "FLAVOR=amd", "/bin/amd"]]) {
      const b = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: `up/multi:${arch}`, platform });
      expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
      const m = await manifestOf(kiln, "up/multi", arch);
      const cfg = await configOf(kiln, "up/multi", m.config.digest);
      expect(cfg.architecture).toBe(arch);
      expect(cfg.config.Env).toContain(flavor);
      expect(cfg.config.Cmd).toEqual([cmd]);
      expect(cfg.config.WorkingDir).toBe("/srv");
      expect(cfg.config.User).toBe("1000");
      expect(cfg.config.Labels).toMatchObject({ base: "multi", app: "yes" });
      const baseManifest = JSON.stringify(b);
      expect(baseManifest).toContain(multi.manifests[arch]);
      expect(m.layers).toHaveLength(1);
    }
  });

  it("FROM by digest and FROM a single-platform image", async () => {
    const byDigest = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${open.host}/base/multi@${multi.manifests.arm64}\n` }), { tag: "up/digest:1", platform: "linux/arm64" });
    expect(byDigest.status, JSON.stringify(byDigest.error)).toBe("succeeded");
    const cfg = await configOf(kiln, "up/digest", (await manifestOf(kiln, "up/digest", "1")).config.digest);
    expect(cfg.config.Env).toContain("FLAVOR=arm");
    const one = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${open.host}/base/single:1\nENV MORE=2\n` }), { tag: "up/single:1" });
    expect(one.status, JSON.stringify(one.error)).toBe("succeeded");
    const cfg2 = await configOf(kiln, "up/single", (await manifestOf(kiln, "up/single", "1")).config.digest);
    expect(cfg2.config.Env).toEqual(expect.arrayContaining(["ONLY=1", "MORE=2"]));
    expect(cfg2.config.Cmd).toEqual(["sh"]);
    expect(JSON.stringify(one)).toContain(single.top);
  });

  it("a second build fetches nothing from upstream but re-resolves the tag", async () => {
    const ctx = contextDir({ Dockerfile: `FROM ${open.host}/base/multi:1\nENV SECOND=1\n` });
    const first = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "up/again:1", platform: "linux/amd64" });
    expect(first.status).toBe("succeeded");
    open.requests.length = 0;
    const second = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "up/again:2", platform: "linux/amd64" });
    expect(second.status).toBe("succeeded");
    expect(open.requests.filter((r) => r.startsWith("GET"))).toEqual([]);
    expect(open.requests.every((r) => r.startsWith("HEAD") && r.includes("/manifests/"))).toBe(true);
  });

  it("answers the Bearer token challenge with configured credentials and reports wrong ones clearly", async () => {
    const ctx = contextDir({ Dockerfile: `FROM ${locked.host}/base/single:1\n` });
    await setUpstream(kiln, locked.host, { endpoint: locked.url, username: "puller", password: "wrong" });
    const denied = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "up/locked:1" });
    expect(denied.status).toBe("failed");
    expect(denied.error?.message).toMatch(/refused the credentials of puller/);
    expect(denied.error?.line).toBe(1);
    await setUpstream(kiln, locked.host, { endpoint: locked.url, username: "puller", password: "pa55word" });
    const ok = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "up/locked:2" });
    expect(ok.status, JSON.stringify(ok.error)).toBe("succeeded");
    expect(locked.tokenRequests).toBeGreaterThan(0);
    const list = await (await fetch(`${kiln.url}/v1/upstreams`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json();
    expect(JSON.stringify(list)).not.toContain("pa55word");
  });

  it("bad references and missing images fail the build with a clear error", async () => {
    const missing = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${open.host}/base/nope:1\n` }), { tag: "up/bad:1" });
    expect(missing.status).toBe("failed");
    expect(missing.error?.message).toMatch(/not found/);
    const noPlatform = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${open.host}/base/multi:1\n` }), { tag: "up/bad:2", platform: "linux/s390x" });
    expect(noPlatform.status).toBe("failed");
    expect(noPlatform.error?.message).toMatch(/no image for platform linux\/s390x/);
    const res = await fetch(`${kiln.url}/v1/builds?tag=up/bad:3`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/x-tar" },
      body: new Uint8Array(await (await import("./helpers")).tarOf(contextDir({ Dockerfile: `FROM ${open.host}/Base/UPPER:1\n` }))),
    });
    const body = (await res.json()) as { id?: string; error?: { message: string } };
    if (res.status === 202) {
      const { waitForBuild } = await import("./helpers");
      const b = await waitForBuild(kiln.url, ADMIN_TOKEN, body.id!);
      expect(b.status).toBe("failed");
      expect(b.error?.message).toMatch(/invalid reference format/);
    } else {
      expect(res.status).toBe(400);
      expect(body.error?.message).toMatch(/invalid reference format/);
    }
  });
});
