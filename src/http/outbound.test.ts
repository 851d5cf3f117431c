import { describe, expect, it } from "vitest";
import { checkOutboundUrl, classifyIPv6, MAX_REDIRECTS, OutboundError, outboundPolicy, parseIPv4, parseIPv6, safeFetch, type OutboundPolicy } from "./outbound";

const none: OutboundPolicy = outboundPolicy({});

function why(url: string, policy: OutboundPolicy = none): string | null {
  const v = checkOutboundUrl(url, policy);
  return v.ok ? null : v.reason;
}

describe("checkOutboundUrl: refused addresses", () => {
  // [URL, what the reason must say]
  const refused: Array<[string, RegExp]> = [
    ["http://127.0.0.1:9/x", /^127\.0\.0\.1 is a loopback address \(kiln fetches only public addresses; an operator can allow internal hosts with KILN_OUTBOUND_ALLOW\)$/],
    ["http://127.255.255.254/", /loopback/],
    // non-canonical IPv4 spellings, normalized by WHATWG URL parsing
    ["http://2130706433/", /^127\.0\.0\.1 is a loopback/],
    ["http://0x7f.1/", /^127\.0\.0\.1 is a loopback/],
    ["http://0177.0.0.1/", /^127\.0\.0\.1 is a loopback/],
    ["http://127.1/", /^127\.0\.0\.1 is a loopback/],
    ["http://0x7f000001/", /^127\.0\.0\.1 is a loopback/],
    ["http://127.0.0.1./", /^127\.0\.0\.1 is a loopback/],
    ["http://0/", /^0\.0\.0\.0 is an unspecified/],
    ["http://0.0.0.0:8787/", /unspecified/],
    ["http://10.1.2.3/", /private address \(10\.0\.0\.0\/8\)/],
    ["http://172.16.0.1/", /private address \(172\.16\.0\.0\/12\)/],
    ["http://172.31.255.255/", /private/],
    ["http://192.168.1.1/", /private address \(192\.168/],
    ["http://169.254.169.254/latest/meta-data/", /^169\.254\.169\.254 is a link-local address \(the cloud metadata service\)/],
    ["http://169.254.1.1/", /link-local/],
    ["http://100.64.0.1/", /CGNAT/],
    ["http://100.127.255.255/", /CGNAT/],
    ["http://224.0.0.1/", /multicast/],
    ["http://239.255.255.250/", /multicast/],
    ["http://240.0.0.1/", /reserved/],
    ["http://255.255.255.255/", /broadcast/],
    ["http://192.0.2.1/", /documentation/],
    ["http://198.18.0.1/", /benchmarking/],
    // IPv6
    ["http://[::1]:8787/", /^\[::1\] is a loopback address/],
    ["http://[0:0:0:0:0:0:0:1]/", /^\[::1\] is a loopback/],
    ["http://[::]/", /unspecified/],
    ["http://[fc00::1]/", /unique local/],
    ["http://[fd12:3456::1]/", /unique local/],
    ["http://[fe80::1]/", /link-local/],
    ["http://[febf::1]/", /link-local/],
    ["http://[fec0::1]/", /site-local/],
    ["http://[ff02::1]/", /multicast/],
    ["http://[::ffff:127.0.0.1]/", /^\[::ffff:7f00:1\] is an IPv4-mapped address of 127\.0\.0\.1, a loopback address/],
    ["http://[::ffff:7f00:1]/", /IPv4-mapped address of 127\.0\.0\.1/],
    ["http://[::ffff:10.0.0.1]/", /IPv4-mapped address of 10\.0\.0\.1, a private/],
    ["http://[::ffff:169.254.169.254]/", /metadata/],
    ["http://[::127.0.0.1]/", /IPv4-compatible address of 127\.0\.0\.1/],
    ["http://[::8.8.8.8]/", /deprecated IPv4-compatible/],
    ["http://[64:ff9b::7f00:1]/", /NAT64 address of 127\.0\.0\.1/],
    ["http://[64:ff9b::10.0.0.1]/", /NAT64 address of 10\.0\.0\.1/],
    ["http://[64:ff9b:1::1]/", /local-use NAT64/],
    ["http://[2002:7f00:1::]/", /6to4 address of 127\.0\.0\.1/],
    ["http://[2002:c0a8:101::1]/", /6to4 address of 192\.168\.1\.1/],
    ["http://[::ffff:0:a00:1]/", /IPv4-translated address of 10\.0\.0\.1/],
    // names
    ["http://localhost:8080/", /^localhost is a local name/],
    ["http://LOCALHOST/", /^localhost is a local name/],
    ["http://localhost./", /local name/],
    ["http://api.localhost/", /local name/],
    ["http://printer.local/", /local-network name \(\*\.local\)/],
    ["http://metadata.google.internal/", /\*\.internal/],
    ["http://nas.home.arpa/", /home\.arpa/],
    ["http://gitea:3000/", /^gitea is a single-label name/],
    ["http://metadata/", /single-label/],
  ];
  for (const [url, reason] of refused) {
    it(url, () => {
      const r = why(url);
      expect(r, `${url} must be refused`).not.toBeNull();
      expect(r).toMatch(reason);
    });
  }

  it("only http and https", () => {
    for (const url of ["file:///etc/passwd", "ftp://example.com/x", "gopher://example.com/", "data:text/plain,hi", "javascript:alert(1)"]) {
      expect(why(url), url).toMatch(/not fetched \(only http and https\)/);
    }
    expect(why("not a url")).toBe("not a valid URL");
  });
});

describe("checkOutboundUrl: allowed", () => {
  const allowed = [
    "https://example.com/x.tar.gz",
    "http://example.com:8080/",
    "https://8.8.8.8/",
    "https://1.1.1.1/",
    "http://172.15.255.255/",
    "http://172.32.0.1/",
    "http://100.63.255.255/",
    "http://100.128.0.1/",
    "http://169.253.255.255/",
    "http://192.169.0.1/",
    "http://11.0.0.1/",
    "https://[2606:4700:4700::1111]/",
    "http://[64:ff9b::808:808]/", // NAT64 of 8.8.8.8
    "http://[2002:808:808::1]/", // 6to4 of 8.8.8.8
    "https://registry-1.docker.io/v2/",
    "https://localhost.example.com/", // a public name that merely starts with localhost
  ];
  for (const url of allowed) it(url, () => expect(why(url)).toBeNull());
});

describe("KILN_OUTBOUND_ALLOW", () => {
  it("lets exactly the listed host, host:port, suffix and CIDR through", () => {
    const p = outboundPolicy({ KILN_OUTBOUND_ALLOW: " 127.0.0.1:5000, gitea ,*.corp.example, 10.20.0.0/16, fd00:1::/32, [::1]:6000, localhost:7000" });
    expect(why("http://127.0.0.1:5000/v2/", p)).toBeNull();
    expect(why("http://2130706433:5000/", p)).toBeNull(); // the same address, spelled otherwise
    expect(why("http://127.0.0.1:5001/", p)).toMatch(/loopback/);
    expect(why("http://127.0.0.2:5000/", p)).toMatch(/loopback/);
    expect(why("http://gitea:3000/", p)).toBeNull();
    expect(why("http://gitea.corp.example/", p)).toBeNull();
    expect(why("http://corp.example.evil/", p)).toBeNull(); // public name anyway
    expect(why("http://10.20.3.4/", p)).toBeNull();
    expect(why("http://[::ffff:10.20.3.4]/", p)).toBeNull();
    expect(why("http://10.21.0.1/", p)).toMatch(/private/);
    expect(why("http://[fd00:1::5]/", p)).toBeNull();
    expect(why("http://[fd00:2::5]/", p)).toMatch(/unique local/);
    expect(why("http://[::1]:6000/", p)).toBeNull();
    expect(why("http://[::1]:6001/", p)).toMatch(/loopback/);
    expect(why("http://localhost:7000/", p)).toBeNull();
    expect(why("http://127.0.0.1:7000/", p)).toMatch(/loopback/); // names are matched as names
    expect(why("http://169.254.169.254/", p)).toMatch(/metadata/);
  });

  it("a port-less entry matches the default ports too", () => {
    const p = outboundPolicy({ KILN_OUTBOUND_ALLOW: "192.168.1.10" });
    expect(why("http://192.168.1.10/", p)).toBeNull();
    expect(why("https://192.168.1.10:8443/", p)).toBeNull();
    const q = outboundPolicy({ KILN_OUTBOUND_ALLOW: "192.168.1.10:443" });
    expect(why("https://192.168.1.10/", q)).toBeNull();
    expect(why("http://192.168.1.10/", q)).toMatch(/private/);
  });

  it("refuses malformed entries with the setting's name", () => {
    expect(() => outboundPolicy({ KILN_OUTBOUND_ALLOW: "10.0.0.0/33" })).toThrow(/KILN_OUTBOUND_ALLOW: invalid CIDR 10\.0\.0\.0\/33/);
    expect(() => outboundPolicy({ KILN_OUTBOUND_ALLOW: "http://x/" })).toThrow(/KILN_OUTBOUND_ALLOW: invalid entry/);
    expect(() => outboundPolicy({ KILN_OUTBOUND_ALLOW: "host:99999" })).toThrow(/invalid port/);
  });
});

describe("kiln's own hosts", () => {
  it("the build's origin is refused even when allow-listed, in every loopback spelling of its port", () => {
    const p = outboundPolicy({ KILN_OUTBOUND_ALLOW: "127.0.0.1, localhost" }, "http://127.0.0.1:8787");
    for (const url of ["http://127.0.0.1:8787/v1/tokens", "http://localhost:8787/", "http://2130706433:8787/", "http://[::1]:8787/", "http://127.0.0.2:8787/", "http://0.0.0.0:8787/"]) {
      expect(why(url, p), url).toMatch(/is kiln itself/);
    }
    expect(why("http://127.0.0.1:5000/", p)).toBeNull();
  });

  it("a public origin and KILN_HOSTS are refused although public", () => {
    const p = outboundPolicy({ KILN_HOSTS: "kiln.example.com, registry.example.com:8443" }, "https://kiln.acme.dev");
    expect(why("https://kiln.acme.dev/v2/", p)).toMatch(/^kiln\.acme\.dev is kiln itself/);
    expect(why("https://KILN.example.com/", p)).toMatch(/kiln itself/);
    expect(why("http://kiln.example.com:8080/", p)).toMatch(/kiln itself/);
    expect(why("https://registry.example.com:8443/", p)).toMatch(/kiln itself/);
    expect(why("https://registry.example.com/", p)).toBeNull();
    expect(why("https://kiln.acme.dev.other.org/", p)).toBeNull();
  });
});

describe("address parsers", () => {
  it("parseIPv4 takes canonical dotted decimal only", () => {
    expect(parseIPv4("192.168.0.1")).toBe(0xc0a80001);
    for (const bad of ["256.0.0.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "a.b.c.d"]) expect(parseIPv4(bad), bad).toBeNull();
  });
  it("parseIPv6 expands :: and a dotted tail", () => {
    expect(parseIPv6("::1")).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
    expect(parseIPv6("::")).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(parseIPv6("2001:db8::8:800:200c:417a")).toEqual([0x2001, 0xdb8, 0, 0, 8, 0x800, 0x200c, 0x417a]);
    expect(parseIPv6("::ffff:1.2.3.4")).toEqual([0, 0, 0, 0, 0, 0xffff, 0x102, 0x304]);
    expect(parseIPv6("1:2:3:4:5:6:1.2.3.4")).toEqual([1, 2, 3, 4, 5, 6, 0x102, 0x304]);
    for (const bad of ["1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", ":::", "1:2:3:4:5:6:7", "::ffff:1.2.3"]) expect(parseIPv6(bad), bad).toBeNull();
  });
  it("classifyIPv6 leaves public unicast alone", () => {
    expect(classifyIPv6(parseIPv6("2606:4700::1")!)).toBeNull();
  });
});

/** A network double: answers from `routes` by URL and records every request it was asked for. */
function network(routes: Record<string, (init: RequestInit) => Response>) {
  const seen: Array<{ url: string; method: string; headers: Headers; redirect?: string }> = [];
  const fetch = async (url: string, init: RequestInit) => {
    seen.push({ url, method: init.method ?? "GET", headers: new Headers(init.headers), redirect: init.redirect });
    const route = routes[url];
    if (!route) throw new TypeError(`no route to ${url}`);
    return route(init);
  };
  return { seen, fetch };
}

const redirect = (to: string, status = 302) => () => new Response(null, { status, headers: { location: to } });

describe("safeFetch", () => {
  it("refuses before connecting, naming what was fetched and how to allow it", async () => {
    const net = network({});
    const err = await safeFetch("http://127.0.0.1:9/x", {}, { policy: none, label: "ADD http://127.0.0.1:9/x", fetch: net.fetch }).catch((e) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect(err.kind).toBe("refused");
    expect(err.message).toBe("ADD http://127.0.0.1:9/x: refused: 127.0.0.1 is a loopback address (kiln fetches only public addresses; an operator can allow internal hosts with KILN_OUTBOUND_ALLOW)");
    expect(net.seen).toEqual([]);
  });

  it("follows redirects by hand, checking each hop; a hop to an internal address is refused unfetched", async () => {
    const net = network({
      "https://a.example/x": redirect("/y"),
      "https://a.example/y": redirect("http://169.254.169.254/latest/meta-data/", 307),
    });
    const err = await safeFetch("https://a.example/x", {}, { policy: none, fetch: net.fetch }).catch((e) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect(err.message).toMatch(/^https:\/\/a\.example\/x: refused redirect 2 to http:\/\/169\.254\.169\.254\/latest\/meta-data\/: 169\.254\.169\.254 is a link-local address \(the cloud metadata service\)/);
    expect(net.seen.map((s) => s.url)).toEqual(["https://a.example/x", "https://a.example/y"]);
    expect(net.seen.every((s) => s.redirect === "manual")).toBe(true);
  });

  it(`stops after ${MAX_REDIRECTS} redirects`, async () => {
    const routes: Record<string, () => Response> = {};
    for (let i = 0; i < 10; i++) routes[`https://r.example/${i}`] = redirect(`/${i + 1}`);
    routes["https://r.example/5"] = () => new Response("five");
    const ok = await safeFetch("https://r.example/0", {}, { policy: none, fetch: network(routes).fetch });
    expect(await ok.text()).toBe("five");
    delete routes["https://r.example/5"];
    routes["https://r.example/5"] = redirect("/6");
    const net = network(routes);
    const err = await safeFetch("https://r.example/0", {}, { policy: none, fetch: net.fetch }).catch((e) => e);
    expect(err.kind).toBe("redirects");
    expect(err.message).toMatch(/more than 5 redirects/);
    expect(net.seen).toHaveLength(6);
  });

  it("drops credentials on a hop to another origin, keeps them on the same origin; 303 turns POST into GET", async () => {
    const net = network({
      "https://git.example/a": redirect("https://git.example/b"),
      "https://git.example/b": redirect("https://cdn.example/c"),
      "https://cdn.example/c": () => new Response("ok"),
    });
    const res = await safeFetch("https://git.example/a", { headers: { authorization: "Bearer s3cret", "private-token": "t", accept: "x/y" } }, { policy: none, fetch: net.fetch });
    expect(await res.text()).toBe("ok");
    expect(net.seen.map((s) => s.headers.get("authorization"))).toEqual(["Bearer s3cret", "Bearer s3cret", null]);
    expect(net.seen[2].headers.get("private-token")).toBeNull();
    expect(net.seen[2].headers.get("accept")).toBe("x/y");

    const post = network({ "https://h.example/p": redirect("https://h.example/q", 303), "https://h.example/q": () => new Response("done") });
    await safeFetch("https://h.example/p", { method: "POST", body: "{}", headers: { "content-type": "application/json" } }, { policy: none, fetch: post.fetch });
    expect(post.seen.map((s) => s.method)).toEqual(["POST", "GET"]);
    expect(post.seen[1].headers.get("content-type")).toBeNull();
  });

  it("a response without headers in time is a timeout error", async () => {
    const hang = (_url: string, init: RequestInit) =>
      new Promise<Response>((_resolve, reject) => init.signal!.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    const err = await safeFetch("https://slow.example/x", {}, { policy: none, fetch: hang, headersTimeoutMs: 50, label: "ADD https://slow.example/x" }).catch((e) => e);
    expect(err).toBeInstanceOf(OutboundError);
    expect(err.kind).toBe("timeout");
    expect(err.message).toBe("ADD https://slow.example/x: slow.example sent no response within 0.05 s");
  });

  it("network errors pass through unchanged", async () => {
    const err = await safeFetch("https://gone.example/", {}, { policy: none, fetch: network({}).fetch }).catch((e) => e);
    expect(err).toBeInstanceOf(TypeError);
    expect(err.message).toBe("no route to https://gone.example/");
  });
});
