import { describe, expect, it } from "vitest";
import { basic, createToken, fetchRegistryToken, gate, gateApp } from "./helpers";

const app = gateApp();
const bearer = (t: string) => ({ headers: { authorization: `Bearer ${t}` } });

describe("requireApiScope", () => {
  it("401 without credentials, with a WWW-Authenticate challenge and a JSON error", async () => {
    const res = await gate(app, "/v1/gate/runner");
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="kiln"');
    expect(await res.json()).toEqual({ error: { message: "missing credentials: send Authorization: Bearer <token>" } });
  });

  it("admin passes every scope", async () => {
    for (const path of ["/v1/gate/admin", "/v1/gate/runner", "/v1/gate/repository?repo=a/b&action=push"]) {
      const res = await gate(app, path, bearer("kiln-test-admin"));
      expect(res.status, path).toBe(200);
      expect(await res.json()).toEqual({ principal: "admin" });
    }
  });

  it("runner tokens may call runner routes only", async () => {
    const { token } = await createToken(["runner"]);
    expect((await gate(app, "/v1/gate/runner", bearer(token))).status).toBe(200);
    expect((await gate(app, "/v1/gate/admin", bearer(token))).status).toBe(403);
    expect((await gate(app, "/v1/gate/repository?repo=a&action=pull", bearer(token))).status).toBe(403);
  });

  it("repository scopes follow the pattern and the action", async () => {
    const { token } = await createToken(["repository:team/*:push"]);
    expect((await gate(app, "/v1/gate/repository?repo=team/app&action=push", bearer(token))).status).toBe(200);
    expect((await gate(app, "/v1/gate/repository?repo=team/app&action=pull", bearer(token))).status).toBe(403);
    expect((await gate(app, "/v1/gate/repository?repo=other/app&action=push", bearer(token))).status).toBe(403);
    expect((await gate(app, "/v1/gate/runner", bearer(token))).status).toBe(403);
  });

  it("an admin-scoped API token passes every scope", async () => {
    const { token } = await createToken(["admin"]);
    expect((await gate(app, "/v1/gate/runner", bearer(token))).status).toBe(200);
    expect((await gate(app, "/v1/gate/repository?repo=x&action=push", bearer(token))).status).toBe(200);
  });

  it("refuses wrong tokens and registry tokens with 401", async () => {
    expect((await gate(app, "/v1/gate/runner", bearer("nope"))).status).toBe(401);
    const jwt = (await fetchRegistryToken(["repository:x:pull"], basic("kiln-test-admin"))).body.token!;
    const res = await gate(app, "/v1/gate/runner", bearer(jwt));
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/registry tokens/);
  });

  it("accepts Basic with the token as password (curl -u)", async () => {
    const { token } = await createToken(["runner"]);
    expect((await gate(app, "/v1/gate/runner", { headers: { authorization: basic(token) } })).status).toBe(200);
  });
});
