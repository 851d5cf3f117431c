import { beforeEach, describe, expect, it } from "vitest";
import { clearTokenCache, parseChallenge, RegistryClient, UpstreamError } from "./client";
import { formatReference, parseReference } from "./reference";

describe("image references", () => {
  const cases: [string, string][] = [
    ["alpine", "docker.io/library/alpine:latest"],
    ["alpine:3.20", "docker.io/library/alpine:3.20"],
    ["library/alpine", "docker.io/library/alpine:latest"],
    ["user/img:v1", "docker.io/user/img:v1"],
    ["docker.io/alpine", "docker.io/library/alpine:latest"],
    ["index.docker.io/library/alpine:1", "docker.io/library/alpine:1"],
    ["ghcr.io/org/base", "ghcr.io/org/base:latest"],
    ["127.0.0.1:5000/a/b:t", "127.0.0.1:5000/a/b:t"],
    ["localhost/x", "localhost/x:latest"],
    ["localhost:5000/x", "localhost:5000/x:latest"],
    [`alpine@sha256:${"a".repeat(64)}`, `docker.io/library/alpine@sha256:${"a".repeat(64)}`],
    [`quay.io/a/b:1@sha256:${"b".repeat(64)}`, `quay.io/a/b:1@sha256:${"b".repeat(64)}`],
  ];
  it.each(cases)("normalizes %s", (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  it.each(["", "Alpine", "alpine:", "alpine@sha256:abc", "a//b", "-a", "alpine:t@g", "ghcr.io/", "a/b/../c"])("refuses %j", (input) => {
    expect(() => parseReference(input)).toThrow(/reference/);
  });
});

describe("registry client", () => {
  beforeEach(() => clearTokenCache());

  it("parses Bearer challenges", () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/alpine:pull" },
    });
  });

  /** A fake registry demanding a Bearer token obtained with user:pass. */
  function fakeRegistry(opts: { user?: string; pass?: string; status?: number } = {}) {
    const calls: string[] = [];
    let tokens = 0;
    const fetchImpl = async (input: string, init?: RequestInit) => {
      const url = new URL(input);
      const auth = new Headers(init?.headers).get("authorization") ?? "";
      calls.push(`${init?.method ?? "GET"} ${url.pathname}${url.search}`);
      if (url.pathname === "/token") {
        if (opts.user && auth !== `Basic ${btoa(`${opts.user}:${opts.pass}`)}`) return new Response("no", { status: 401 });
        tokens++;
        return Response.json({ token: `tok-${tokens}`, expires_in: 300 });
      }
      if (opts.status) return new Response("slow down", { status: opts.status });
      if (!auth.startsWith("Bearer tok-")) {
        return new Response("", { status: 401, headers: { "www-authenticate": 'Bearer realm="https://up.test/token",service="up.test"' } });
      }
      if (url.pathname === "/v2/lib/img/manifests/missing") return new Response("", { status: 404 });
      return new Response('{"schemaVersion":2}', { headers: { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": "sha256:x" } });
    };
    return { calls, fetchImpl, tokenCount: () => tokens };
  }

  it("answers the token challenge once and caches the token until it expires", async () => {
    const reg = fakeRegistry({ user: "u", pass: "p" });
    const client = new RegistryClient({ host: "up.test", endpoint: "https://up.test", username: "u", password: "p" }, reg.fetchImpl);
    const m = await client.getManifest("lib/img", "1");
    expect(m.mediaType).toBe("application/vnd.oci.image.manifest.v1+json");
    await client.getManifest("lib/img", "2");
    expect(reg.tokenCount()).toBe(1);
    expect(reg.calls).toContain("GET /token?service=up.test&scope=repository%3Alib%2Fimg%3Apull");
  });

  it("gives clear errors for not found, wrong credentials and rate limits", async () => {
    const ok = new RegistryClient({ host: "up.test", endpoint: "https://up.test", username: "u", password: "p" }, fakeRegistry({ user: "u", pass: "p" }).fetchImpl);
    await expect(ok.getManifest("lib/img", "missing")).rejects.toMatchObject({ kind: "not-found" });
    const wrong = new RegistryClient({ host: "up.test", endpoint: "https://up.test", username: "u", password: "bad" }, fakeRegistry({ user: "u", pass: "p" }).fetchImpl);
    await expect(wrong.getManifest("lib/img", "1")).rejects.toMatchObject({ kind: "unauthorized", message: expect.stringContaining("refused the credentials of u") });
    const limited = new RegistryClient({ host: "up.test", endpoint: "https://up.test" }, fakeRegistry({ status: 429 }).fetchImpl);
    await expect(limited.getManifest("lib/img", "1")).rejects.toBeInstanceOf(UpstreamError);
    await expect(limited.getManifest("lib/img", "1")).rejects.toMatchObject({ kind: "rate-limited" });
  });

  it("falls back from a failing mirror to the endpoint", async () => {
    const reg = fakeRegistry();
    const fetchImpl = async (input: string, init?: RequestInit) => {
      if (input.startsWith("https://mirror.test")) throw new TypeError("connection refused");
      return reg.fetchImpl(input, init);
    };
    const client = new RegistryClient({ host: "up.test", endpoint: "https://up.test", mirrors: ["https://mirror.test"] }, fetchImpl);
    expect((await client.getManifest("lib/img", "1")).digest).toBe("sha256:x");
  });
});
