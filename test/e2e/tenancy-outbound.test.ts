// Outbound fetches of URLs a user chose (issue 17, finding 4): ADD <url>, the archive a webhook
// names and registries named in FROM never reach loopback, private, link-local or kiln's own
// addresses, whatever the spelling; every redirect hop is checked again, at most 5; the operator's
// KILN_OUTBOUND_ALLOW lets exactly the listed internal hosts through. One kiln (`wrangler dev`) and
// two loopback HTTP servers for the whole file; no RUN, so no runner.
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, freePort, startKiln, type KilnServer } from "./server";
import { build, contextDir, createToken, waitForBuild, type BuildResult } from "./helpers";

const HINT = "(kiln fetches only public addresses; an operator can allow internal hosts with KILN_OUTBOUND_ALLOW)";

interface Served {
  port: number;
  requests: string[];
  close(): Promise<void>;
}

async function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void, port = 0): Promise<Served> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe("outbound fetches of user-chosen URLs", () => {
  const SECRET = `top-secret-${randomBytes(8).toString("hex")}`;
  let kiln: KilnServer;
  /** An internal service nobody allowed: it must never see a request. */
  let secret: Served;
  /** The one internal host the operator allowed (KILN_OUTBOUND_ALLOW=127.0.0.1:<port>). */
  let allowed: Served;
  let token: string;

  beforeAll(async () => {
    secret = await serve((_req, res) => res.end(SECRET));
    const allowedPort = await freePort();
    allowed = await serve((req, res) => {
      const hop = /^\/hop\/(\d+)$/.exec(req.url ?? "");
      if (req.url === "/public.txt") res.end("public file\n");
      else if (req.url === "/to-secret") res.writeHead(302, { location: `http://127.0.0.1:${secret.port}/secret` }).end();
      else if (req.url === "/to-metadata") res.writeHead(307, { location: "http://169.254.169.254/latest/meta-data/" }).end();
      else if (hop) res.writeHead(302, { location: `/hop/${Number(hop[1]) + 1}` }).end();
      else res.writeHead(404).end("no");
    }, allowedPort);
    // kiln's own port is allow-listed too: kiln itself must be refused all the same
    const kilnPort = await freePort();
    kiln = await startKiln({ port: kilnPort, vars: { KILN_OUTBOUND_ALLOW: `127.0.0.1:${allowedPort},127.0.0.1:${kilnPort}` } });
    token = (await createToken(kiln.url, ["repository:a/*:pull,push"], "tenant-a")).token;
  }, 120_000);

  afterAll(async () => {
    await kiln?.stop(true);
    await secret?.close();
    await allowed?.close();
  });

  const addBuild = (url: string, tag: string) => build(kiln.url, token, contextDir({ Dockerfile: `FROM scratch\nADD ${url} /s\n` }), { tag });

  async function tagsOf(repo: string): Promise<string[]> {
    const res = await fetch(`${kiln.url}/v2/${repo}/tags/list`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    if (res.status !== 200) return [];
    return ((await res.json()) as { tags?: string[] }).tags ?? [];
  }

  /** The build failed on the ADD step (line 2) with exactly `message`, and nothing of the secret shows anywhere. */
  function refused(b: BuildResult, message: string) {
    expect(b.status, JSON.stringify(b.error)).toBe("failed");
    expect(b.error).toMatchObject({ step: 2, line: 2 });
    expect(b.error!.message).toBe(message);
    expect(JSON.stringify(b)).not.toContain(SECRET);
  }

  it("ADD http://127.0.0.1:<port>/secret is refused before anything connects; nothing is pushed", async () => {
    const url = `http://127.0.0.1:${secret.port}/secret`;
    refused(await addBuild(url, "a/leak:loopback"), `ADD ${url}: refused: 127.0.0.1 is a loopback address ${HINT}`);
    expect(await tagsOf("a/leak")).toEqual([]);
    expect(secret.requests).toEqual([]);
  });

  it("the same service through localhost, 2130706433, 0x7f.1, [::ffff:127.0.0.1] and 0.0.0.0 is refused too", async () => {
    const p = secret.port;
    const cases: Array<[string, string]> = [
      [`http://localhost:${p}/secret`, "localhost is a local name (localhost)"],
      [`http://2130706433:${p}/secret`, "127.0.0.1 is a loopback address"],
      [`http://0x7f.1:${p}/secret`, "127.0.0.1 is a loopback address"],
      [`http://[::ffff:127.0.0.1]:${p}/secret`, "[::ffff:7f00:1] is an IPv4-mapped address of 127.0.0.1, a loopback address"],
      [`http://0.0.0.0:${p}/secret`, "0.0.0.0 is an unspecified address (0.0.0.0/8)"],
    ];
    const results = await Promise.all(cases.map(([url], i) => addBuild(url, `a/leak:spelling${i}`)));
    results.forEach((b, i) => refused(b, `ADD ${cases[i][0]}: refused: ${cases[i][1]} ${HINT}`));
    expect(await tagsOf("a/leak")).toEqual([]);
    expect(secret.requests).toEqual([]);
  });

  it("kiln's own port is refused although allow-listed, in any loopback spelling", async () => {
    for (const [i, url] of [`http://127.0.0.1:${kiln.port}/v1/builds`, `http://localhost:${kiln.port}/healthz`].entries()) {
      const b = await addBuild(url, `a/self:${i}`);
      refused(b, `ADD ${url}: refused: ${new URL(url).host} is kiln itself (a build never calls kiln's own API)`);
    }
    expect(await tagsOf("a/self")).toEqual([]);
  });

  it("169.254.169.254 is refused without connecting", async () => {
    const url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
    const t0 = Date.now();
    refused(await addBuild(url, "a/leak:metadata"), `ADD ${url}: refused: 169.254.169.254 is a link-local address (the cloud metadata service) ${HINT}`);
    // a connection attempt to a black-holed address would wait for its timeout
    expect(Date.now() - t0).toBeLessThan(15_000);
  });

  it("a redirect from the allowed host to a loopback port that is not allowed is a refused hop", async () => {
    allowed.requests.length = 0;
    const url = `http://127.0.0.1:${allowed.port}/to-secret`;
    refused(await addBuild(url, "a/leak:redirect"), `ADD ${url}: refused redirect 1 to http://127.0.0.1:${secret.port}/secret: 127.0.0.1 is a loopback address ${HINT}`);
    expect(allowed.requests).toEqual(["GET /to-secret"]);
    expect(secret.requests).toEqual([]);

    const meta = `http://127.0.0.1:${allowed.port}/to-metadata`;
    refused(await addBuild(meta, "a/leak:redirect-meta"), `ADD ${meta}: refused redirect 1 to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local address (the cloud metadata service) ${HINT}`);
    expect(await tagsOf("a/leak")).toEqual([]);
  });

  it("more than 5 redirects are refused; 5 are followed", async () => {
    allowed.requests.length = 0;
    const url = `http://127.0.0.1:${allowed.port}/hop/0`;
    refused(await addBuild(url, "a/hops:1"), `ADD ${url}: more than 5 redirects (the last to /hop/6)`);
    expect(allowed.requests).toEqual([0, 1, 2, 3, 4, 5].map((n) => `GET /hop/${n}`));
  });

  it("the allow-listed host works: its file lands in the image", async () => {
    const b = await addBuild(`http://127.0.0.1:${allowed.port}/public.txt`, "a/ok:1");
    expect(b.status, JSON.stringify(b.error)).toBe("succeeded");
    const auth = { authorization: `Bearer ${token}` };
    const m = (await (await fetch(`${kiln.url}/v2/a/ok/manifests/1`, { headers: { ...auth, accept: "application/vnd.oci.image.manifest.v1+json" } })).json()) as { layers: { digest: string }[] };
    const blob = Buffer.from(await (await fetch(`${kiln.url}/v2/a/ok/blobs/${m.layers[0].digest}`, { headers: auth })).arrayBuffer());
    expect(execFileSync("tar", ["-tzvf", "-"], { input: blob, encoding: "utf8" })).toMatch(/^-rw------- 0\/0 +12 .* s$/m);
    expect(execFileSync("tar", ["-xzOf", "-", "s"], { input: blob, encoding: "utf8" })).toBe("public file\n");
  });

  it("FROM a loopback registry without an upstream entry is refused before anything connects", async () => {
    const ref = `127.0.0.1:${secret.port}/team/base:1`;
    const b = await build(kiln.url, token, contextDir({ Dockerfile: `FROM ${ref}\nENV A=1\n` }), { tag: "a/from:1" });
    expect(b.status).toBe("failed");
    expect(b.error).toMatchObject({ step: 1, line: 1 });
    expect(b.error!.message).toContain(`127.0.0.1:${secret.port}: refused: 127.0.0.1 is a loopback address ${HINT}`);
    expect(b.error!.message).toContain(`PUT /v1/upstreams/127.0.0.1:${secret.port}`);
    expect(secret.requests).toEqual([]);
  });

  it("a webhook whose git host is not allowed fails its build with the refusal; the host sees no request", async () => {
    const hookSecret = "outbound-hook-secret";
    const created = await fetch(`${kiln.url}/v1/webhooks`, {
      method: "POST", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ provider: "github", repository: "acme/app", secret: hookSecret, baseUrl: `http://127.0.0.1:${secret.port}`, image: "a/hooked", token: "gh-token" }),
    });
    expect(created.status, await created.clone().text()).toBe(201);
    const hook = (await created.json()) as { url: string };
    const sha = "c1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    const payload = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: sha, repository: { full_name: "acme/app", default_branch: "main" }, head_commit: { id: sha } });
    const res = await fetch(hook.url, {
      method: "POST", body: payload,
      headers: { "x-github-event": "push", "x-github-delivery": "d-1", "x-hub-signature-256": `sha256=${createHmac("sha256", hookSecret).update(payload).digest("hex")}`, "content-type": "application/json" },
    });
    expect(res.status, await res.clone().text()).toBe(202);
    const b = await waitForBuild(kiln.url, ADMIN_TOKEN, ((await res.json()) as { id: string }).id);
    expect(b.status).toBe("failed");
    expect(b.error!.message).toBe(`fetching the source archive http://127.0.0.1:${secret.port}/repos/acme/app/tarball/${sha}: refused: 127.0.0.1 is a loopback address ${HINT}`);
    expect(secret.requests).toEqual([]);
  });
});
