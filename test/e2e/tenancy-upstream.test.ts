// Issue 17, finding 9: upstream credentials are no longer everyone's. Debian's docker-registry on
// 127.0.0.1 (seeded with skopeo) is the upstream, once behind an open proxy and once behind a proxy
// that demands a Bearer token obtained with user:pass (`locked`). The admin gives the locked host's
// credentials to namespace a only; b must not read a's private base, by tag or by the digest a pulled.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, have, startKiln, type KilnServer } from "./server";
import { setUpstream } from "./upstream-helpers";
import { build, containerSandbox, contextDir, createToken, haveDockerRegistry, runOk, startPeerRegistry, startUpstreamProxy, writeLayout, type PeerRegistry, type UpstreamProxy } from "./helpers";

const ready = have("skopeo") && haveDockerRegistry();

describe.skipIf(!ready)("tenants never cross: upstream credentials and the pull-through store", () => {
  let kiln: KilnServer;
  let peer: PeerRegistry;
  let open: UpstreamProxy;
  let locked: UpstreamProxy;
  let privateImage: ReturnType<typeof writeLayout>;
  let publicImage: ReturnType<typeof writeLayout>;
  let tokenA: string;
  let tokenB: string;

  beforeAll(async () => {
    peer = await startPeerRegistry();
    const sb = containerSandbox([peer.host]);
    const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-tenancy-upstream-"));
    privateImage = writeLayout(path.join(dir, "private"), "1", [
      { arch: "amd64", env: ["PATH=/bin", "SECRET_BASE=a-only"], cmd: ["sh"], file: { name: "secret.txt", content: "a's private base\n" } },
    ], true);
    publicImage = writeLayout(path.join(dir, "public"), "1", [
      { arch: "amd64", env: ["PATH=/bin", "PUBLIC_BASE=1"], cmd: ["sh"], file: { name: "public.txt", content: "for everyone\n" } },
    ], true);
    await runOk("skopeo", ["--policy", sb.policy, "copy", "--dest-tls-verify=false", `oci:${path.join(dir, "private")}:1`, `docker://${peer.host}/base/single:1`], { env: sb.env });
    await runOk("skopeo", ["--policy", sb.policy, "copy", "--dest-tls-verify=false", `oci:${path.join(dir, "public")}:1`, `docker://${peer.host}/lib/public:1`], { env: sb.env });
    open = await startUpstreamProxy(peer.url);
    locked = await startUpstreamProxy(peer.url, { user: "puller", pass: "pa55word" });
    kiln = await startKiln();
    await setUpstream(kiln, open.host, { endpoint: open.url });
    await setUpstream(kiln, locked.host, { endpoint: locked.url, username: "puller", password: "pa55word", namespaces: ["a"] });
    tokenA = (await createToken(kiln.url, ["repository:a/*:pull,push"], "tenant-a")).token;
    tokenB = (await createToken(kiln.url, ["repository:b/*:pull,push"], "tenant-b")).token;
  });

  afterAll(async () => {
    await kiln?.stop(true);
    await open?.close();
    await locked?.close();
    await peer?.stop(true);
  });

  it("GET /v1/upstreams shows who may use the credentials, never the password", async () => {
    const res = await fetch(`${kiln.url}/v1/upstreams`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    const text = await res.text();
    expect(text).not.toContain("pa55word");
    const entry = (JSON.parse(text) as { upstreams: Array<{ host: string; namespaces?: string[]; username?: string }> }).upstreams.find((u) => u.host === locked.host);
    expect(entry).toMatchObject({ username: "puller", namespaces: ["a"] });
  });

  it("a's build reads the private base with the credentials; b's build of the same ref fails clearly", async () => {
    const ref = `${locked.host}/base/single:1`;
    const a = await build(kiln.url, tokenA, contextDir({ Dockerfile: `FROM ${ref}\nENV APP=a\n` }), { tag: "a/app:1" });
    expect(a.status, JSON.stringify(a.error)).toBe("succeeded");
    expect(JSON.stringify(a)).toContain(privateImage.top);
    expect(locked.tokenRequests).toBeGreaterThan(0);

    locked.requests.length = 0;
    const b = await build(kiln.url, tokenB, contextDir({ Dockerfile: `FROM ${ref}\nENV APP=b\n` }), { tag: "b/app:1" });
    expect(b.status).toBe("failed");
    expect(b.error?.message).toMatch(new RegExp(`unauthorized: .*the credentials for ${locked.host.replace(/\./g, "\\.")} are not available to namespace b`));
    expect(b.error?.line).toBe(1);
    expect(locked.requests.filter((r) => r.startsWith("GET"))).toEqual([]);
  });

  it("b naming the digest a pulled is asked for at the upstream, not served from kiln's store", async () => {
    const byDigest = `${locked.host}/base/single@${privateImage.top}`;
    locked.requests.length = 0;
    const b = await build(kiln.url, tokenB, contextDir({ Dockerfile: `FROM ${byDigest}\n` }), { tag: "b/stolen:1" });
    expect(b.status).toBe("failed");
    expect(b.error?.message).toMatch(/are not available to namespace b/);
    // the upstream was asked (and said no); nothing of the image reached b's repository
    expect(locked.requests).toContain(`HEAD /v2/base/single/manifests/${privateImage.top}`);
    const pulled = await fetch(`${kiln.url}/v2/b/stolen/manifests/1`, { headers: { authorization: `Bearer ${tokenB}` } });
    expect(pulled.status).toBe(404);

    // a by digest: authorized with its credentials (a HEAD), nothing downloaded again
    locked.requests.length = 0;
    const a = await build(kiln.url, tokenA, contextDir({ Dockerfile: `FROM ${byDigest}\nENV AGAIN=1\n` }), { tag: "a/app:2" });
    expect(a.status, JSON.stringify(a.error)).toBe("succeeded");
    expect(locked.requests.filter((r) => r.startsWith("GET"))).toEqual([]);
    expect(locked.requests).toContain(`HEAD /v2/base/single/manifests/${privateImage.top}`);
  });

  it("a public image stays usable by both namespaces, by tag and by digest", async () => {
    const ref = `${open.host}/lib/public:1`;
    const a = await build(kiln.url, tokenA, contextDir({ Dockerfile: `FROM ${ref}\nENV APP=a\n` }), { tag: "a/pub:1" });
    expect(a.status, JSON.stringify(a.error)).toBe("succeeded");
    const b = await build(kiln.url, tokenB, contextDir({ Dockerfile: `FROM ${ref}\nENV APP=b\n` }), { tag: "b/pub:1" });
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    open.requests.length = 0;
    const bDigest = await build(kiln.url, tokenB, contextDir({ Dockerfile: `FROM ${open.host}/lib/public@${publicImage.top}\n` }), { tag: "b/pub:2" });
    expect(bDigest.status, JSON.stringify(bDigest.error)).toBe("succeeded");
    // a pinned digest of an image that was public upstream is served from the store without asking
    expect(open.requests).toEqual([]);
  });

  it("with the upstream unreachable, a keeps its base and b still gets nothing", async () => {
    await locked.close();
    const byDigest = `${locked.host}/base/single@${privateImage.top}`;
    const a = await build(kiln.url, tokenA, contextDir({ Dockerfile: `FROM ${byDigest}\nENV OFFLINE=1\n` }), { tag: "a/app:3" });
    expect(a.status, JSON.stringify(a.error)).toBe("succeeded");
    for (const from of [byDigest, `${locked.host}/base/single:1`]) {
      const b = await build(kiln.url, tokenB, contextDir({ Dockerfile: `FROM ${from}\n` }), { tag: "b/offline:1" });
      expect(b.status, from).toBe("failed");
      expect(b.error?.message).toMatch(/unreachable.*namespace b was never authorized for it/);
    }
  });
});
