// RegistryClient for a host only a build names (no upstream entry): every request is checked as a
// user-chosen URL — the endpoint, the token realm the registry points to, and every redirect hop.
import { describe, expect, it } from "vitest";
import { clearTokenCache, RegistryClient, UpstreamError } from "./client";

/** A network double answering by URL; it records every request that reached it. */
function network(routes: Record<string, () => Response>) {
  const seen: string[] = [];
  const fetchImpl = async (url: string) => {
    seen.push(url);
    const route = routes[url];
    if (!route) throw new TypeError(`no route to ${url}`);
    return route();
  };
  return { seen, fetchImpl };
}

const MANIFEST = "https://reg.example/v2/team/app/manifests/1";

describe("RegistryClient with outbound checks", () => {
  it("refuses a loopback registry host before connecting, with both ways out in the message", async () => {
    const net = network({});
    const client = new RegistryClient({ host: "127.0.0.1:5000", endpoint: "https://127.0.0.1:5000", outbound: {} }, net.fetchImpl);
    const err = await client.getManifest("team/app", "1").catch((e) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect(err.kind).toBe("refused");
    expect(err.message).toBe(
      "127.0.0.1:5000: refused: 127.0.0.1 is a loopback address (kiln fetches only public addresses; an operator can allow internal hosts with KILN_OUTBOUND_ALLOW); an admin can also configure an upstream entry for 127.0.0.1:5000 (PUT /v1/upstreams/127.0.0.1:5000)",
    );
    expect(net.seen).toEqual([]);
  });

  it("refuses a token realm on an internal address that a public registry points to", async () => {
    clearTokenCache();
    const net = network({
      [MANIFEST]: () => new Response(null, { status: 401, headers: { "www-authenticate": 'Bearer realm="http://169.254.169.254/token",service="x"' } }),
    });
    const client = new RegistryClient({ host: "reg.example", endpoint: "https://reg.example", outbound: {} }, net.fetchImpl);
    const err = await client.getManifest("team/app", "1").catch((e) => e);
    expect(err.kind).toBe("refused");
    expect(err.message).toMatch(/^reg\.example: http:\/\/169\.254\.169\.254: refused: 169\.254\.169\.254 is a link-local address \(the cloud metadata service\)/);
    expect(net.seen).toEqual([MANIFEST]);
  });

  it("refuses a blob redirect to a private address; the allow-list lets it through", async () => {
    const blob = "https://reg.example/v2/team/app/blobs/sha256:" + "a".repeat(64);
    const routes = {
      [blob]: () => new Response(null, { status: 307, headers: { location: "http://10.0.0.7/storage/x" } }),
      "http://10.0.0.7/storage/x": () => new Response("bytes"),
    };
    const refused = network(routes);
    const client = new RegistryClient({ host: "reg.example", endpoint: "https://reg.example", outbound: {} }, refused.fetchImpl);
    const err = await client.getBlob("team/app", "sha256:" + "a".repeat(64)).catch((e) => e);
    expect(err.kind).toBe("refused");
    expect(err.message).toMatch(/^reg\.example: refused redirect 1 to http:\/\/10\.0\.0\.7\/storage\/x: 10\.0\.0\.7 is a private address/);
    expect(refused.seen).toEqual([blob]);

    const allowed = network(routes);
    const ok = new RegistryClient({ host: "reg.example", endpoint: "https://reg.example", outbound: { KILN_OUTBOUND_ALLOW: "10.0.0.7" } }, allowed.fetchImpl);
    const got = await ok.getBlob("team/app", "sha256:" + "a".repeat(64));
    expect(await new Response(got.body).text()).toBe("bytes");
    expect(allowed.seen).toEqual([blob, "http://10.0.0.7/storage/x"]);
  });

  it("a malformed KILN_OUTBOUND_ALLOW is a clear refusal", async () => {
    const client = new RegistryClient({ host: "reg.example", endpoint: "https://reg.example", outbound: { KILN_OUTBOUND_ALLOW: "10.0.0.0/99" } }, network({}).fetchImpl);
    const err = await client.getManifest("team/app", "1").catch((e) => e);
    expect(err.kind).toBe("refused");
    expect(err.message).toBe("reg.example: KILN_OUTBOUND_ALLOW: invalid CIDR 10.0.0.0/99");
  });

  it("an admin-configured entry (no outbound) is not checked", async () => {
    const net = network({ "http://127.0.0.1:5000/v2/team/app/manifests/1": () => new Response("{}", { headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" } }) });
    const client = new RegistryClient({ host: "mirror.lan", endpoint: "http://127.0.0.1:5000" }, net.fetchImpl);
    const got = await client.getManifest("team/app", "1");
    expect(got.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
  });
});
