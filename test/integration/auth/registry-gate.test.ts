import { describe, expect, it } from "vitest";
import { basic, createToken, fetchRegistryToken, gate, gateApp, setPublic, uniqueRepo } from "./helpers";

const app = gateApp();
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const viaBasic = (t: string) => ({ authorization: basic(t) });

async function status(path: string, method: string, headers: Record<string, string> = {}): Promise<number> {
  return (await gate(app, path, { method, headers })).status;
}

describe("authorizeRegistry", () => {
  it("challenges a request without credentials: 401 UNAUTHORIZED, Bearer realm/service/scope, API version header", async () => {
    const res = await gate(app, "/v2/team/app/manifests/latest");
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(
      'Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="repository:team/app:pull"',
    );
    expect(res.headers.get("docker-distribution-api-version")).toBe("registry/2.0");
    const body = (await res.json()) as { errors: { code: string }[] };
    expect(body.errors[0].code).toBe("UNAUTHORIZED");

    const push = await gate(app, "/v2/team/app/manifests/latest", { method: "PUT" });
    expect(push.headers.get("www-authenticate")).toBe(
      'Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="repository:team/app:pull,push"',
    );
    const del = await gate(app, "/v2/team/app/manifests/latest", { method: "DELETE" });
    expect(del.headers.get("www-authenticate")).toContain('scope="repository:team/app:delete"');
  });

  it("omits scope on the /v2/ ping and names registry:catalog:* on _catalog", async () => {
    const ping = await gate(app, "/v2/");
    expect(ping.status).toBe(401);
    expect(ping.headers.get("www-authenticate")).toBe('Bearer realm="http://kiln.test/v2/token",service="kiln.test"');
    const cat = await gate(app, "/v2/_catalog");
    expect(cat.headers.get("www-authenticate")).toBe('Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="registry:catalog:*"');
  });

  it("uses the request's origin for the realm", async () => {
    const res = await app.request("http://127.0.0.1:8787/v2/", {}, (await import("./helpers")).testEnv);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="http://127.0.0.1:8787/v2/token",service="127.0.0.1:8787"');
  });

  it("accepts the admin token as Bearer and as Basic password for every action", async () => {
    for (const h of [bearer("kiln-test-admin"), viaBasic("kiln-test-admin")]) {
      expect(await status("/v2/", "GET", h)).toBe(200);
      expect(await status("/v2/any/repo/manifests/x", "PUT", h)).toBe(200);
      expect(await status("/v2/any/repo/manifests/x", "DELETE", h)).toBe(200);
    }
  });

  it("refuses wrong credentials with 401 whatever the scheme", async () => {
    for (const authorization of ["Bearer nope", basic("nope"), basic("kiln_" + "A".repeat(43)), "Basic !!!", "Digest x", "Bearer a.b.c"]) {
      const res = await gate(app, "/v2/", { headers: { authorization } });
      expect(res.status, authorization).toBe(401);
    }
    const bad = await gate(app, "/v2/team/app/manifests/x", { headers: bearer("nope") });
    expect(bad.headers.get("www-authenticate")).toContain('error="invalid_token"');
  });

  it("enforces repository patterns: exact, * within a segment, ** across segments", async () => {
    const { token } = await createToken([
      "repository:exact/app:pull",
      "repository:team/*:pull,push",
      "repository:deep/**:pull",
    ]);
    const h = viaBasic(token);
    expect(await status("/v2/exact/app/manifests/x", "GET", h)).toBe(200);
    expect(await status("/v2/exact/app/manifests/x", "PUT", h)).toBe(403);
    expect(await status("/v2/exact/app2/manifests/x", "GET", h)).toBe(403);
    expect(await status("/v2/team/app/manifests/x", "PUT", h)).toBe(200);
    expect(await status("/v2/team/app/manifests/x", "GET", h)).toBe(200);
    expect(await status("/v2/team/app/sub/manifests/x", "GET", h)).toBe(403);
    expect(await status("/v2/team/manifests/x", "GET", h)).toBe(403);
    expect(await status("/v2/deep/a/b/c/manifests/x", "GET", h)).toBe(200);
    expect(await status("/v2/deep/a/b/c/manifests/x", "PUT", h)).toBe(403);
    expect(await status("/v2/other/manifests/x", "GET", h)).toBe(403);
  });

  it("top-level * matches only one-segment names", async () => {
    const { token } = await createToken(["repository:*:pull"]);
    expect(await status("/v2/alpine/manifests/x", "GET", viaBasic(token))).toBe(200);
    expect(await status("/v2/library/alpine/manifests/x", "GET", viaBasic(token))).toBe(403);
  });

  it("answers 403 DENIED (not 401) to Basic and API-token Bearer credentials lacking the action", async () => {
    const { token } = await createToken(["repository:mine:pull,push"]);
    for (const h of [viaBasic(token), bearer(token)]) {
      const res = await gate(app, "/v2/theirs/manifests/x", { method: "PUT", headers: h });
      expect(res.status).toBe(403);
      expect(((await res.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DENIED");
      expect(await status("/v2/mine/manifests/x", "PUT", h)).toBe(200);
    }
  });

  it("delete requires push", async () => {
    const { token: reader } = await createToken(["repository:del/app:pull"]);
    const { token: writer } = await createToken(["repository:del/app:push"]);
    expect(await status("/v2/del/app/manifests/x", "DELETE", viaBasic(reader))).toBe(403);
    expect(await status("/v2/del/app/manifests/x", "DELETE", viaBasic(writer))).toBe(200);
    // push alone does not grant pull
    expect(await status("/v2/del/app/manifests/x", "GET", viaBasic(writer))).toBe(403);
  });

  it("lets any valid credentials ping /v2/", async () => {
    const { token } = await createToken(["runner"]);
    expect(await status("/v2/", "GET", bearer(token))).toBe(200);
    const anon = await fetchRegistryToken([]);
    expect(await status("/v2/", "GET", bearer(anon.body.token!))).toBe(200);
  });

  it("checks the mount source with canPull: 201 when readable, 202 fallback otherwise", async () => {
    const { token } = await createToken(["repository:dst/app:pull,push", "repository:src/readable:pull"]);
    const h = viaBasic(token);
    expect(await status("/v2/dst/app/blobs/uploads/?from=src/readable&mount=sha256:00", "POST", h)).toBe(201);
    expect(await status("/v2/dst/app/blobs/uploads/?from=src/secret&mount=sha256:00", "POST", h)).toBe(202);
    // a public source is readable by anyone
    const pub = uniqueRepo("src");
    await setPublic(pub, true);
    expect(await status(`/v2/dst/app/blobs/uploads/?from=${pub}&mount=sha256:00`, "POST", h)).toBe(201);
    // no push on the target: refused before the source is looked at
    expect(await status("/v2/src/readable/blobs/uploads/?from=dst/app&mount=sha256:00", "POST", h)).toBe(403);
  });

  it("filters _catalog to the repositories the caller can pull", async () => {
    const pub = uniqueRepo("catpub");
    await setPublic(pub, true);
    const { token } = await createToken(["repository:cat/*:pull"]);
    const res = await gate(app, `/v2/_catalog?names=cat/a,cat/b/c,other,${pub}`, { headers: viaBasic(token) });
    expect(await res.json()).toEqual({ repositories: ["cat/a", pub] });

    // a registry token with registry:catalog:* sees what its API token can pull
    const t = await fetchRegistryToken(["registry:catalog:*"], basic(token));
    const viaJwt = await gate(app, `/v2/_catalog?names=cat/a,other`, { headers: bearer(t.body.token!) });
    expect(await viaJwt.json()).toEqual({ repositories: ["cat/a"] });
  });
});
