import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { api, basic, createToken, gate, gateApp } from "./helpers";

describe("POST/GET/DELETE /v1/tokens", () => {
  it("creates a token shown once as kiln_ + 32 random bytes, stores only its SHA-256", async () => {
    const res = await api("/v1/tokens", { method: "POST", body: JSON.stringify({ name: "ci", scopes: ["repository:team/*:pull,push"] }) });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { id: string; token: string };
    expect(body.token).toMatch(/^kiln_[A-Za-z0-9_-]{43}$/);
    expect(body.id).toBeTruthy();

    const row = await env.DB.prepare("SELECT * FROM tokens WHERE id = ?").bind(body.id).first<Record<string, unknown>>();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body.token)));
    const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
    expect(row?.hash).toBe(hex);
    expect(JSON.stringify(row)).not.toContain(body.token);
  });

  it("lists tokens without secrets or hashes", async () => {
    const { id, token } = await createToken(["runner"], "lister");
    const res = await api("/v1/tokens");
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).not.toContain(token);
    const row = await env.DB.prepare("SELECT hash FROM tokens WHERE id = ?").bind(id).first<{ hash: string }>();
    expect(text).not.toContain(row!.hash);
    const listed = (JSON.parse(text) as { tokens: Record<string, unknown>[] }).tokens.find((t) => t.id === id);
    expect(listed).toMatchObject({ id, name: "lister", scopes: ["runner"], revoked: false });
    expect(Object.keys(listed!)).not.toContain("hash");
    expect(Object.keys(listed!)).not.toContain("token");
  });

  it("revokes a token: it fails at once on /v1 and /v2, and the list marks it revoked", async () => {
    const { id, token } = await createToken(["repository:revoked/*:pull", "admin"], "to-revoke");
    const app = gateApp();
    expect((await api("/v1/tokens", { token })).status).toBe(200);
    expect((await gate(app, "/v2/revoked/x/manifests/latest", { headers: { authorization: basic(token) } })).status).toBe(200);

    const del = await api(`/v1/tokens/${id}`, { method: "DELETE" });
    expect(del.status).toBe(204);

    expect((await api("/v1/tokens", { token })).status).toBe(401);
    const v2 = await gate(app, "/v2/revoked/x/manifests/latest", { headers: { authorization: basic(token) } });
    expect(v2.status).toBe(401);
    expect(((await v2.json()) as { errors: { code: string }[] }).errors[0].code).toBe("UNAUTHORIZED");
    const list = (await (await api("/v1/tokens")).json()) as { tokens: { id: string; revoked: boolean }[] };
    expect(list.tokens.find((t) => t.id === id)?.revoked).toBe(true);
  });

  it("404s when revoking an unknown token", async () => {
    const res = await api("/v1/tokens/tok_nope", { method: "DELETE" });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { message: "no token tok_nope" } });
  });

  it.each([
    [["repository:team:pull,delete"], /unknown action "delete"/],
    [["repository:Team/App:pull"], /may contain only/],
    [["repository:team//app:pull"], /empty path segment/],
    [["repository::pull"], /empty repository pattern/],
    [["repository:team:"], /unknown action ""/],
    [["repo:team:pull"], /expected "admin", "runner"/],
    [["repository:team:pull:push"], /expected/],
    [["superuser"], /expected/],
    [["repository:a/***:pull"], /\*\*\*/],
    [[42], /must be a string/],
    [[], /non-empty array/],
    ["admin", /non-empty array/],
  ])("refuses malformed scopes %j with 400", async (scopes, message) => {
    const res = await api("/v1/tokens", { method: "POST", body: JSON.stringify({ name: "bad", scopes }) });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(message);
  });

  it("refuses a missing name and a non-JSON body with 400", async () => {
    expect((await api("/v1/tokens", { method: "POST", body: JSON.stringify({ scopes: ["admin"] }) })).status).toBe(400);
    expect((await api("/v1/tokens", { method: "POST", body: "not json" })).status).toBe(400);
  });

  it("accepts the documented scope forms", async () => {
    const res = await api("/v1/tokens", {
      method: "POST",
      body: JSON.stringify({ name: "all", scopes: ["repository:team/app:pull", "repository:team/*:push,pull", "repository:team/**:pull", "repository:*:pull", "runner", "admin"] }),
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { scopes: string[] };
    expect(body.scopes).toEqual(["repository:team/app:pull", "repository:team/*:pull,push", "repository:team/**:pull", "repository:*:pull", "runner", "admin"]);
  });

  it("requires admin: 401 without or with a wrong token, 403 for a non-admin token", async () => {
    expect((await api("/v1/tokens", { token: null })).status).toBe(401);
    expect((await api("/v1/tokens", { token: "kiln-test-admin-not" })).status).toBe(401);
    const { token } = await createToken(["repository:x:pull,push", "runner"]);
    const res = await api("/v1/tokens", { method: "POST", token, body: JSON.stringify({ name: "escalate", scopes: ["admin"] }) });
    expect(res.status).toBe(403);
    expect((await res.json()) as object).toEqual({ error: { message: "token lacks scope admin" } });
  });

  it("lets an admin-scoped API token manage tokens", async () => {
    const { token } = await createToken(["admin"]);
    const res = await api("/v1/tokens", { method: "POST", token, body: JSON.stringify({ name: "child", scopes: ["runner"] }) });
    expect(res.status).toBe(201);
  });

  it("disables admin when KILN_ADMIN_TOKEN is unset", async () => {
    const app = gateApp();
    const noAdmin = { ...(env as object), KILN_ADMIN_TOKEN: undefined } as never;
    const res = await gate(app, "/v1/gate/admin", { headers: { authorization: "Bearer kiln-test-admin" } }, noAdmin);
    expect(res.status).toBe(401);
    const empty = await gate(app, "/v1/gate/admin", { headers: { authorization: "Bearer " } }, { ...(env as object), KILN_ADMIN_TOKEN: "" } as never);
    expect(empty.status).toBe(401);
  });
});
