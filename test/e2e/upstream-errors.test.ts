// A base image that cannot be fetched fails its FROM step with the cause and what to do: a name that
// does not resolve, a registry that speaks plain HTTP where TLS was expected, nothing listening, a
// rate limit. Never workerd's "internal error; reference = …". (Issue 12, item 5.)
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_TOKEN, freePort, startKiln, type KilnServer } from "./server";
import { setUpstream } from "./upstream-helpers";
import { build, contextDir } from "./helpers";

async function listen(handler: http.RequestListener): Promise<{ port: number; close(): Promise<void> }> {
  const srv = http.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  return { port: (srv.address() as AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

describe("upstream failures name their cause", () => {
  let kiln: KilnServer;
  let plain: Awaited<ReturnType<typeof listen>>;
  let limited: Awaited<ReturnType<typeof listen>>;

  beforeAll(async () => {
    plain = await listen((_req, res) => { res.writeHead(404); res.end(); });
    limited = await listen((_req, res) => { res.writeHead(429, { "retry-after": "30" }); res.end("slow down"); });
    kiln = await startKiln();
    await setUpstream(kiln, "plain.test", { endpoint: `https://127.0.0.1:${plain.port}` });
    await setUpstream(kiln, "limited.test", { endpoint: `http://127.0.0.1:${limited.port}` });
    await setUpstream(kiln, "down.test", { endpoint: `http://127.0.0.1:${await freePort()}` });
  }, 120_000);

  afterAll(async () => {
    await kiln?.stop(true);
    await plain?.close();
    await limited?.close();
  });

  const fromError = async (ref: string) => {
    const b = await build(kiln.url, ADMIN_TOKEN, contextDir({ Dockerfile: `FROM ${ref}\nENV X=1\n` }), { tag: "errs/app:1" });
    expect(b.status).toBe("failed");
    expect(b.error?.line).toBe(1);
    const message = b.error?.message ?? "";
    expect(message).not.toMatch(/internal error|reference =/);
    return message;
  };

  it("a host name that does not resolve says so", async () => {
    const m = await fromError("no-such-registry.invalid/team/base:1");
    expect(m).toContain("no-such-registry.invalid");
    expect(m).toContain("could not be resolved");
  });

  it("TLS spoken to a plain-HTTP registry says to use http://", async () => {
    const m = await fromError("plain.test/team/base:1");
    expect(m).toContain(`127.0.0.1:${plain.port} answers plain HTTP, not TLS`);
    expect(m).toContain(`http://127.0.0.1:${plain.port}`);
    expect(m).toContain("PUT /v1/upstreams/plain.test");
  });

  it("a closed port says nothing accepted the connection", async () => {
    const m = await fromError("down.test/team/base:1");
    expect(m).toContain("nothing accepted the connection");
  });

  it("a 429 names the rate limit and the remedies", async () => {
    const m = await fromError("limited.test/team/base:1");
    expect(m).toMatch(/rate limited \(429\)/);
    expect(m).toMatch(/credentials or a mirror/);
  });
});
