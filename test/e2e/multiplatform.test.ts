// Multi-platform builds end to end: FROM an upstream multi-platform index (Debian's docker-registry
// on 127.0.0.1, seeded with skopeo), platform=linux/amd64,linux/arm64 → an OCI index that skopeo reads.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { setUpstream } from "./upstream-helpers";
import { build, contextDir, containerSandbox, haveDockerRegistry, run, runOk, skopeo, startPeerRegistry, startUpstreamProxy, writeLayout, type ContainerSandbox, type PeerRegistry, type UpstreamProxy } from "./helpers";

const ready = have("skopeo") && haveDockerRegistry();

describe.skipIf(!ready)("multi-platform builds (platform=linux/amd64,linux/arm64)", () => {
  let kiln: KilnServer;
  let peer: PeerRegistry;
  let open: UpstreamProxy;
  let sb: ContainerSandbox;
  let multi: ReturnType<typeof writeLayout>;

  beforeAll(async () => {
    peer = await startPeerRegistry();
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-mp-"));
    multi = writeLayout(path.join(dir, "multi"), "1", [
      { arch: "amd64", env: ["PATH=/bin", "FLAVOR=amd"], cmd: ["/bin/amd"], file: { name: "arch.txt", content: "amd64\n" } },
      { arch: "arm64", variant: "v8", env: ["PATH=/bin", "FLAVOR=arm"], cmd: ["/bin/arm"], file: { name: "arch.txt", content: "arm64\n" } },
    ]);
    const seed = containerSandbox([peer.host]);
    await runOk("skopeo", ["--policy", seed.policy, "copy", "--all", "--dest-tls-verify=false", `oci:${path.join(dir, "multi")}:1`, `docker://${peer.host}/base/multi:1`], { env: seed.env });
    open = await startUpstreamProxy(peer.url);
    kiln = await startKiln();
    sb = containerSandbox([new URL(kiln.url).host]);
    await setUpstream(kiln, open.host, { endpoint: open.url });
  });

  afterAll(async () => {
    await kiln?.stop(true);
    await open?.close();
    await peer?.stop(true);
  });

  it("FROM <upstream>/base/multi:1 picks each platform's base; skopeo sees an index of both", async () => {
    const ctx = contextDir({ Dockerfile: `FROM ${open.host}/base/multi:1\nCOPY app.txt /app.txt\nENV APP=1\n`, "app.txt": "app\n" });
    const b = await build(kiln.url, ADMIN_TOKEN, ctx, { tag: "mp/e2e:1", platform: "linux/amd64,linux/arm64" });
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const children = b.children as { platform: string; digest: string }[];
    expect(children.map((c) => c.platform)).toEqual(["linux/amd64", "linux/arm64"]);

    const host = new URL(kiln.url).host;
    const creds = `kiln:${ADMIN_TOKEN}`;
    const raw = await skopeo(sb, ["inspect", "--raw", "--tls-verify=false", "--creds", creds, `docker://${host}/mp/e2e:1`]);
    expect(raw.code, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as { mediaType: string; manifests: { digest: string; platform: { os: string; architecture: string } }[] };
    expect(index.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`)).toEqual(["linux/amd64", "linux/arm64"]);
    expect(index.manifests.map((m) => m.digest)).toEqual(children.map((c) => c.digest));

    for (const [arch, flavor, cmd] of [["amd64", "FLAVOR=amd", "/bin/amd"], ["arm64", "FLAVOR=arm", "/bin/arm"]]) {
      const cfg = await skopeo(sb, ["inspect", "--config", "--tls-verify=false", "--creds", creds, "--override-os", "linux", "--override-arch", arch, `docker://${host}/mp/e2e:1`]);
      expect(cfg.code, cfg.stderr).toBe(0);
      const c = JSON.parse(cfg.stdout) as { architecture: string; config: { Env: string[]; Cmd: string[] }; rootfs: { diff_ids: string[] } };
      expect(c.architecture).toBe(arch);
      expect(c.config.Env).toEqual(expect.arrayContaining([flavor, "APP=1"]));
      expect(c.config.Cmd).toEqual([cmd]);
      expect(c.rootfs.diff_ids).toHaveLength(2); // the base's layer and the COPY
    }
    // each child records the base manifest of its platform
    expect(JSON.stringify(await (await fetch(`${kiln.url}/v1/builds/${b.id}-linux-arm64`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json())).toContain(multi.manifests.arm64);
  });

  it("kiln build --platform linux/amd64,linux/arm64 follows the build to the end and prints the index digest", async () => {
    const ctx = contextDir({ Dockerfile: `FROM ${open.host}/base/multi:1\nENV CLI=1\n` });
    const home = mkdtempSync(path.join(os.tmpdir(), "kiln-mp-home-"));
    const r = await run(process.execPath, [path.resolve("bin/kiln.mjs"), "build", "--platform", "linux/amd64,linux/arm64", "-t", "mp/cli:1", "--server", kiln.url, "--token", ADMIN_TOKEN, ctx], {
      env: { ...process.env, HOME: home, XDG_CONFIG_HOME: path.join(home, ".config") }, timeoutMs: 180_000,
    });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\[linux\/amd64[^\]]*\] build /);
    expect(r.stdout).toMatch(/\[linux\/arm64[^\]]*\] build /);
    const digest = /digest (sha256:[0-9a-f]{64})/.exec(r.stdout)?.[1];
    const res = await fetch(`${kiln.url}/v2/mp/cli/manifests/1`, { method: "HEAD", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, accept: "application/vnd.oci.image.index.v1+json" } });
    expect(res.headers.get("content-type")).toBe("application/vnd.oci.image.index.v1+json");
    expect(digest).toBe(res.headers.get("docker-content-digest"));
  });
});
