// Shared helpers for the auth integration tests (workerd, SELF.fetch against the real Worker).
import { SELF, env } from "cloudflare:test";
import { Hono } from "hono";
import type { Env } from "../../../src/env";
import { ApiError, OciError } from "../../../src/errors";
import { authorizeRegistry, canPull, type RegistryAction } from "../../../src/auth/registry";
import { requireApiScope, type ApiScope } from "../../../src/auth/api";

export const ORIGIN = "http://kiln.test";
export const ADMIN = "kiln-test-admin";
export const testEnv = env as unknown as Env;

let counter = 0;
/** A repository name no other test uses. */
export function uniqueRepo(prefix = "auth"): string {
  return `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}`;
}

export function basic(password: string, username = "someone"): string {
  return `Basic ${btoa(`${username}:${password}`)}`;
}

export async function api(path: string, init: RequestInit & { token?: string | null } = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const token = init.token === undefined ? ADMIN : init.token;
  if (token) headers.set("authorization", `Bearer ${token}`);
  if (init.body && !headers.has("content-type")) headers.set("content-type", "application/json");
  return SELF.fetch(`${ORIGIN}${path}`, { ...init, headers });
}

export async function createToken(scopes: string[], name = "test"): Promise<{ id: string; token: string }> {
  const res = await api("/v1/tokens", { method: "POST", body: JSON.stringify({ name, scopes }) });
  if (res.status !== 201) throw new Error(`POST /v1/tokens ${res.status}: ${await res.text()}`);
  return res.json();
}

export async function setPublic(repo: string, value: boolean): Promise<void> {
  const res = await api(`/v1/repositories/${repo}`, { method: "PUT", body: JSON.stringify({ public: value }) });
  if (res.status !== 200) throw new Error(`PUT /v1/repositories/${repo} ${res.status}: ${await res.text()}`);
}

/** GET /v2/token with the given Authorization (or none) and scopes; returns status and body. */
export async function fetchRegistryToken(
  scopes: string[],
  authorization?: string,
): Promise<{ status: number; body: { token?: string; access_token?: string; expires_in?: number; issued_at?: string } }> {
  const u = new URL(`${ORIGIN}/v2/token`);
  u.searchParams.set("service", "kiln.test");
  for (const s of scopes) u.searchParams.append("scope", s);
  const res = await SELF.fetch(u, { headers: authorization ? { authorization } : {} });
  return { status: res.status, body: await res.json() };
}

/** The claims of a JWT (no verification; for asserting what was granted). */
export function claims(jwt: string): { sub: string; exp: number; access: { type: string; name: string; actions: string[] }[] } {
  const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4)));
}

/**
 * A stand-in for the registry's handlers: each route calls the gate exactly as /v2 handlers do, so the
 * gate's decisions are tested independently of the registry routes.
 */
export function gateApp(): Hono<{ Bindings: Env }> {
  const app = new Hono<{ Bindings: Env }>();
  app.get("/v2/", async (c) => {
    await authorizeRegistry(c, undefined, "pull");
    return c.json({});
  });
  app.get("/v2/_catalog", async (c) => {
    await authorizeRegistry(c, undefined, "pull");
    const names = (c.req.query("names") ?? "").split(",").filter(Boolean);
    const visible: string[] = [];
    for (const n of names) if (await canPull(c, n)) visible.push(n);
    return c.json({ repositories: visible });
  });
  const act = (action: RegistryAction) => async (c: import("hono").Context<{ Bindings: Env }>) => {
    await authorizeRegistry(c, c.req.param("name"), action);
    return c.json({ ok: true, action });
  };
  app.get("/v2/:name{.+}/manifests/:ref", act("pull"));
  app.put("/v2/:name{.+}/manifests/:ref", act("push"));
  app.delete("/v2/:name{.+}/manifests/:ref", act("delete"));
  // Cross-repo mount as the registry does it: push on the target, then canPull on the source.
  app.post("/v2/:name{.+}/blobs/uploads/", async (c) => {
    await authorizeRegistry(c, c.req.param("name"), "push");
    const from = c.req.query("from");
    if (from && (await canPull(c, from))) return c.body(null, 201);
    return c.body(null, 202);
  });
  app.get("/v1/gate/:kind", async (c) => {
    const kind = c.req.param("kind");
    const scope: ApiScope =
      kind === "repository"
        ? { kind: "repository", repository: c.req.query("repo")!, action: c.req.query("action") as "pull" | "push" }
        : { kind: kind as "admin" | "runner" };
    const principal = await requireApiScope(c, scope);
    return c.json({ principal: principal.kind });
  });
  app.onError((err) => {
    if (err instanceof OciError || err instanceof ApiError) return err.toResponse();
    throw err;
  });
  return app;
}

export function gate(app: Hono<{ Bindings: Env }>, path: string, init: RequestInit = {}, e: Env = testEnv): Promise<Response> {
  return Promise.resolve(app.request(`${ORIGIN}${path}`, init, e));
}
