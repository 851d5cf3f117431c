import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, basic, claims, createToken, fetchRegistryToken, gate, gateApp, setPublic, uniqueRepo } from "./helpers";

const app = gateApp();

describe("public repositories", () => {
  it("PUT /v1/repositories/:name sets the flag (nested names), creating the row; GET reads it back", async () => {
    const name = `${uniqueRepo("pub")}/nested/app`;
    const put = await api(`/v1/repositories/${name}`, { method: "PUT", body: JSON.stringify({ public: true }) });
    expect(put.status).toBe(200);
    expect(await put.json()).toEqual({ name, public: true });
    const row = await env.DB.prepare("SELECT public FROM repositories WHERE name = ?").bind(name).first<{ public: number }>();
    expect(row?.public).toBe(1);
    expect(await (await api(`/v1/repositories/${name}`)).json()).toEqual({ name, public: true });

    await setPublic(name, false);
    expect(await (await api(`/v1/repositories/${name}`)).json()).toEqual({ name, public: false });
  });

  it("keeps an existing repository row (created_at) when the flag changes", async () => {
    const name = uniqueRepo("existing");
    await env.DB.prepare("INSERT INTO repositories (name, public, created_at) VALUES (?, 0, 123)").bind(name).run();
    await setPublic(name, true);
    const row = await env.DB.prepare("SELECT public, created_at FROM repositories WHERE name = ?").bind(name).first();
    expect(row).toEqual({ public: 1, created_at: 123 });
  });

  it("lets a token with push on the repository change it, not one with pull only or another repo", async () => {
    const name = uniqueRepo("vis");
    const { token: pusher } = await createToken([`repository:${name}:pull,push`]);
    const { token: puller } = await createToken([`repository:${name}:pull`]);
    const body = JSON.stringify({ public: true });
    expect((await api(`/v1/repositories/${name}`, { method: "PUT", token: puller, body })).status).toBe(403);
    expect((await api(`/v1/repositories/other-${name}`, { method: "PUT", token: pusher, body })).status).toBe(403);
    expect((await api(`/v1/repositories/${name}`, { method: "PUT", token: null, body })).status).toBe(401);
    expect((await api(`/v1/repositories/${name}`, { method: "PUT", token: pusher, body })).status).toBe(200);
  });

  it("validates the body and the name", async () => {
    const name = uniqueRepo("val");
    const bad = await api(`/v1/repositories/${name}`, { method: "PUT", body: JSON.stringify({ public: "yes" }) });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: { message: "public must be true or false" } });
    expect((await api(`/v1/repositories/Upper/Case`, { method: "PUT", body: JSON.stringify({ public: true }) })).status).toBe(400);
    expect((await api(`/v1/repositories/a/b..c`, { method: "PUT", body: JSON.stringify({ public: true }) })).status).toBe(400);
  });

  it("GET of a private or unknown repository: 401 anonymous, 404 without pull, 200 with pull", async () => {
    const name = uniqueRepo("priv");
    await setPublic(name, false);
    expect((await api(`/v1/repositories/${name}`, { token: null })).status).toBe(401);
    const { token: stranger } = await createToken(["repository:elsewhere:pull"]);
    expect((await api(`/v1/repositories/${name}`, { token: stranger })).status).toBe(404);
    const { token: reader } = await createToken([`repository:${name}:pull`]);
    expect(await (await api(`/v1/repositories/${name}`, { token: reader })).json()).toEqual({ name, public: false });
    expect((await api(`/v1/repositories/${uniqueRepo("missing")}`)).status).toBe(404);
  });

  it("allows anonymous pull of a public repository on /v2, never push or delete", async () => {
    const name = uniqueRepo("anon");
    await setPublic(name, true);
    expect((await gate(app, `/v2/${name}/manifests/latest`)).status).toBe(200);
    expect((await gate(app, `/v2/${name}/manifests/latest`, { method: "HEAD" })).status).toBe(200);
    const push = await gate(app, `/v2/${name}/manifests/latest`, { method: "PUT" });
    expect(push.status).toBe(401);
    expect(push.headers.get("www-authenticate")).toContain(`scope="repository:${name}:pull,push"`);
    expect((await gate(app, `/v2/${name}/manifests/latest`, { method: "DELETE" })).status).toBe(401);
  });

  it("challenges anonymous pull of a private repository with 401", async () => {
    const name = uniqueRepo("private");
    await setPublic(name, false);
    const res = await gate(app, `/v2/${name}/manifests/latest`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe(`Bearer realm="http://kiln.test/v2/token",service="kiln.test",scope="repository:${name}:pull"`);
    expect((await gate(app, `/v2/never-created-${name}/manifests/latest`)).status).toBe(401);
  });

  it("anonymous token requests get pull on public repositories only", async () => {
    const pub = uniqueRepo("tpub");
    const priv = uniqueRepo("tpriv");
    await setPublic(pub, true);
    await setPublic(priv, false);
    const res = await fetchRegistryToken([`repository:${pub}:pull,push`, `repository:${priv}:pull`, "registry:catalog:*"]);
    expect(res.status).toBe(200);
    expect(claims(res.body.token!)).toMatchObject({ sub: "anonymous", access: [{ type: "repository", name: pub, actions: ["pull"] }] });
    const h = { authorization: `Bearer ${res.body.token}` };
    expect((await gate(app, `/v2/${pub}/manifests/x`, { headers: h })).status).toBe(200);
    expect((await gate(app, `/v2/${priv}/manifests/x`, { headers: h })).status).toBe(401);
    expect((await gate(app, `/v2/${pub}/manifests/x`, { method: "PUT", headers: h })).status).toBe(401);
  });

  it("a token without pull on a public repository may still pull it; push still needs the scope", async () => {
    const name = uniqueRepo("pubtok");
    await setPublic(name, true);
    const { token } = await createToken(["repository:unrelated:pull,push"]);
    expect((await gate(app, `/v2/${name}/manifests/x`, { headers: { authorization: basic(token) } })).status).toBe(200);
    expect((await gate(app, `/v2/${name}/manifests/x`, { method: "PUT", headers: { authorization: basic(token) } })).status).toBe(403);
  });

  it("invalid credentials on a public repository are still refused", async () => {
    const name = uniqueRepo("pubbad");
    await setPublic(name, true);
    expect((await gate(app, `/v2/${name}/manifests/x`, { headers: { authorization: basic("wrong") } })).status).toBe(401);
  });
});
