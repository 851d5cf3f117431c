import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { signRegistryToken } from "../../../src/auth/registry-token";
import { tokenServiceRoutes } from "../../../src/auth/token-service";
import { mintRegistryToken } from "../../../src/auth/api";
import { ORIGIN, basic, claims, createToken, fetchRegistryToken, gate, gateApp, testEnv } from "./helpers";

const app = gateApp();

/** Parses `Bearer realm="…",service="…",scope="…"` into its parameters. */
function parseChallenge(header: string | null): Record<string, string> {
  expect(header).toMatch(/^Bearer /);
  const out: Record<string, string> = {};
  for (const m of header!.slice(7).matchAll(/(\w+)="([^"]*)"/g)) out[m[1]] = m[2];
  return out;
}

describe("docker token flow", () => {
  it("challenge → GET /v2/token with Basic → Bearer on /v2 works", async () => {
    const { token } = await createToken(["repository:flow/*:pull,push"]);
    const challenge = await gate(app, "/v2/flow/app/manifests/latest", { method: "PUT" });
    expect(challenge.status).toBe(401);
    const { realm, service, scope } = parseChallenge(challenge.headers.get("www-authenticate"));
    expect(realm).toBe(`${ORIGIN}/v2/token`);

    const u = new URL(realm);
    u.searchParams.set("service", service);
    u.searchParams.set("scope", scope);
    u.searchParams.set("account", "whoever");
    const res = await SELF.fetch(u, { headers: { authorization: basic(token, "whoever") } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
    expect(body.expires_in).toBe(300);
    expect(body.access_token).toBe(body.token);
    expect(Math.abs(Date.parse(body.issued_at) - Date.now())).toBeLessThan(60_000);
    expect(claims(body.token).access).toEqual([{ type: "repository", name: "flow/app", actions: ["pull", "push"] }]);

    const ok = await gate(app, "/v2/flow/app/manifests/latest", { method: "PUT", headers: { authorization: `Bearer ${body.token}` } });
    expect(ok.status).toBe(200);
    expect((await gate(app, "/v2/", { headers: { authorization: `Bearer ${body.token}` } })).status).toBe(200);
  });

  it("grants requested ∩ granted per repository, 200 even when partially or not granted", async () => {
    const { token } = await createToken(["repository:part/ro:pull", "repository:part/rw:pull,push"]);
    const res = await fetchRegistryToken(
      ["repository:part/ro:pull,push", "repository:part/rw:pull,push,delete", "repository:part/none:pull", "repository:part/rw:pull"],
      basic(token),
    );
    expect(res.status).toBe(200);
    expect(claims(res.body.token!).access).toEqual([
      { type: "repository", name: "part/ro", actions: ["pull"] },
      { type: "repository", name: "part/rw", actions: ["pull", "push", "delete"] },
    ]);
  });

  it("accepts several scopes in one space-separated parameter and * actions", async () => {
    const res = await fetchRegistryToken(["repository:a/b:pull repository:c:*"], basic("kiln-test-admin"));
    expect(claims(res.body.token!).access).toEqual([
      { type: "repository", name: "a/b", actions: ["pull"] },
      { type: "repository", name: "c", actions: ["pull", "push", "delete"] },
    ]);
  });

  it("refuses invalid credentials at the token endpoint with 401", async () => {
    for (const authorization of [basic("wrong"), basic("kiln_" + "B".repeat(43)), "Basic %%%", "Bearer nope"]) {
      const res = await fetchRegistryToken(["repository:x:pull"], authorization);
      expect(res.status, authorization).toBe(401);
    }
  });

  it("does not accept a registry token as the password at the token endpoint (no self-renewal)", async () => {
    const first = await fetchRegistryToken(["repository:x:pull"], basic("kiln-test-admin"));
    const res = await fetchRegistryToken(["repository:x:pull"], basic(first.body.token!));
    expect(res.status).toBe(401);
  });

  it("a bearer token lacking the action gets 401 with error=insufficient_scope and the needed scope", async () => {
    const { token } = await createToken(["repository:scope/app:pull,push"]);
    const pullOnly = await fetchRegistryToken(["repository:scope/app:pull"], basic(token));
    const res = await gate(app, "/v2/scope/app/manifests/x", { method: "PUT", headers: { authorization: `Bearer ${pullOnly.body.token}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(
      'Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="repository:scope/app:pull,push",error="insufficient_scope"',
    );
    // a token for one repository is no good for another
    const other = await gate(app, "/v2/scope/other/manifests/x", { headers: { authorization: `Bearer ${pullOnly.body.token}` } });
    expect(other.status).toBe(401);
  });

  it("refuses an expired registry token", async () => {
    const { token } = await signRegistryToken(testEnv, {
      sub: "admin",
      aud: "kiln.test",
      access: [{ type: "repository", name: "exp/app", actions: ["pull"] }],
      ttlSeconds: -1,
    });
    const res = await gate(app, "/v2/exp/app/manifests/x", { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toContain('error="invalid_token"');
    expect(((await res.json()) as { errors: { message: string }[] }).errors[0].message).toMatch(/expired/);
  });

  it("refuses a tampered registry token (access widened, or signed with another key)", async () => {
    const { token } = await createToken(["repository:tamper/app:pull"]);
    const jwt = (await fetchRegistryToken(["repository:tamper/app:pull"], basic(token))).body.token!;
    const [h, p, s] = jwt.split(".");
    const payload = claims(jwt);
    payload.access = [{ type: "repository", name: "tamper/app", actions: ["pull", "push"] }];
    const forged = btoa(JSON.stringify(payload)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    const tampered = `${h}.${forged}.${s}`;
    const res = await gate(app, "/v2/tamper/app/manifests/x", { method: "PUT", headers: { authorization: `Bearer ${tampered}` } });
    expect(res.status).toBe(401);
    expect((await gate(app, "/v2/tamper/app/manifests/x", { headers: { authorization: `Bearer ${tampered}` } })).status).toBe(401);

    const otherKey = await signRegistryToken({ ...testEnv, KILN_TOKEN_SECRET: "another-secret" }, {
      sub: "admin", aud: "kiln.test", access: [{ type: "repository", name: "tamper/app", actions: ["pull"] }], ttlSeconds: 300,
    });
    expect((await gate(app, "/v2/tamper/app/manifests/x", { headers: { authorization: `Bearer ${otherKey.token}` } })).status).toBe(401);
    const noneAlg = `${btoa(JSON.stringify({ alg: "none", typ: "JWT" })).replace(/=+$/, "")}.${p}.`;
    expect((await gate(app, "/v2/tamper/app/manifests/x", { headers: { authorization: `Bearer ${noneAlg}` } })).status).toBe(401);
  });

  it("signs with KILN_TOKEN_SECRET when set, so tokens from the admin-derived key are refused", async () => {
    const withSecret = { ...testEnv, KILN_TOKEN_SECRET: "configured-secret" };
    const derived = (await fetchRegistryToken(["repository:k/app:pull"], basic("kiln-test-admin"))).body.token!;
    const res = await gate(app, "/v2/k/app/manifests/x", { headers: { authorization: `Bearer ${derived}` } }, withSecret);
    expect(res.status).toBe(401);
    const own = await signRegistryToken(withSecret, { sub: "admin", aud: "x", access: [{ type: "repository", name: "k/app", actions: ["pull"] }], ttlSeconds: 60 });
    expect((await gate(app, "/v2/k/app/manifests/x", { headers: { authorization: `Bearer ${own.token}` } }, withSecret)).status).toBe(200);
  });

  it("a registry token dies with its API token", async () => {
    const { id, token } = await createToken(["repository:dies/app:pull"]);
    const jwt = (await fetchRegistryToken(["repository:dies/app:pull"], basic(token))).body.token!;
    expect((await gate(app, "/v2/dies/app/manifests/x", { headers: { authorization: `Bearer ${jwt}` } })).status).toBe(200);
    await SELF.fetch(`${ORIGIN}/v1/tokens/${id}`, { method: "DELETE", headers: { authorization: "Bearer kiln-test-admin" } });
    expect((await gate(app, "/v2/dies/app/manifests/x", { headers: { authorization: `Bearer ${jwt}` } })).status).toBe(401);
  });

  it("accepts a registry token as Basic password too (403, not a challenge, when it lacks the action)", async () => {
    const jwt = (await fetchRegistryToken(["repository:bp/app:pull"], basic("kiln-test-admin"))).body.token!;
    expect((await gate(app, "/v2/bp/app/manifests/x", { headers: { authorization: basic(jwt) } })).status).toBe(200);
    expect((await gate(app, "/v2/bp/app/manifests/x", { method: "PUT", headers: { authorization: basic(jwt) } })).status).toBe(403);
  });

  it("docker login: a token request without scope succeeds with valid credentials and grants nothing", async () => {
    const { token } = await createToken(["repository:login/*:pull"]);
    const res = await fetchRegistryToken([], basic(token));
    expect(res.status).toBe(200);
    expect(claims(res.body.token!).access).toEqual([]);
  });

  it("without admin token and token secret, signs with a key generated once and kept in D1", async () => {
    const bare = { ...testEnv, KILN_ADMIN_TOKEN: undefined, KILN_TOKEN_SECRET: undefined };
    const repo = `gen-${Date.now()}`;
    await testEnv.DB.prepare("INSERT INTO repositories (name, public, created_at) VALUES (?, 1, 0)").bind(repo).run();
    const res = await tokenServiceRoutes.request(`${ORIGIN}/?service=kiln.test&scope=repository:${repo}:pull`, {}, bare);
    expect(res.status).toBe(200);
    const { token } = (await res.json()) as { token: string };
    expect(claims(token).access).toEqual([{ type: "repository", name: repo, actions: ["pull"] }]);
    expect((await gate(app, `/v2/${repo}/manifests/x`, { headers: { authorization: `Bearer ${token}` } }, bare)).status).toBe(200);
    // the admin-derived key is a different key
    expect((await gate(app, `/v2/${repo}/manifests/x`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    // and the admin token no longer works
    expect((await gate(app, "/v2/", { headers: { authorization: "Bearer kiln-test-admin" } }, bare)).status).toBe(401);
  });

  it("mintRegistryToken gives a runner job pull,push on its repository only", async () => {
    const jwt = await mintRegistryToken(testEnv, ORIGIN, [{ repository: "builds/app", actions: ["pull", "push"] }], 600);
    const h = { authorization: `Bearer ${jwt}` };
    expect((await gate(app, "/v2/builds/app/manifests/x", { headers: h })).status).toBe(200);
    expect((await gate(app, "/v2/builds/app/blobs/uploads/", { method: "POST", headers: h })).status).toBe(202);
    expect((await gate(app, "/v2/builds/other/manifests/x", { method: "PUT", headers: h })).status).toBe(401);
    expect(claims(jwt).exp - Date.now() / 1000).toBeGreaterThan(590);
  });
});

describe("POST /v2/token (oauth2)", () => {
  async function post(form: Record<string, string | string[]>) {
    const body = new URLSearchParams();
    for (const [k, v] of Object.entries(form)) for (const x of [v].flat()) body.append(k, x);
    const res = await SELF.fetch(`${ORIGIN}/v2/token`, { method: "POST", body, headers: { "content-type": "application/x-www-form-urlencoded" } });
    return { status: res.status, body: (await res.json()) as Record<string, string> };
  }

  it("grant_type=password issues a token, and a refresh token on access_type=offline", async () => {
    const { token } = await createToken(["repository:oauth/app:pull"]);
    const res = await post({ grant_type: "password", username: "u", password: token, service: "kiln.test", scope: "repository:oauth/app:pull,push", client_id: "podman", access_type: "offline" });
    expect(res.status).toBe(200);
    expect(claims(res.body.access_token).access).toEqual([{ type: "repository", name: "oauth/app", actions: ["pull"] }]);
    expect(res.body.scope).toBe("repository:oauth/app:pull");
    expect(res.body.refresh_token).toBeTruthy();

    const refreshed = await post({ grant_type: "refresh_token", refresh_token: res.body.refresh_token, service: "kiln.test", scope: "repository:oauth/app:pull" });
    expect(refreshed.status).toBe(200);
    expect(claims(refreshed.body.access_token).access).toEqual([{ type: "repository", name: "oauth/app", actions: ["pull"] }]);
    // a refresh token is not an access token
    expect((await gate(app, "/v2/oauth/app/manifests/x", { headers: { authorization: `Bearer ${res.body.refresh_token}` } })).status).toBe(401);
  });

  it("refuses a wrong password, a forged refresh token and unknown grants", async () => {
    expect((await post({ grant_type: "password", username: "u", password: "nope", scope: "repository:x:pull" })).status).toBe(401);
    expect((await post({ grant_type: "refresh_token", refresh_token: "a.b.c" })).status).toBe(401);
    expect((await post({ grant_type: "client_credentials" })).status).toBe(400);
  });
});
