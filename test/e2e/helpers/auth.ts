// API tokens for e2e tests: created through the public API (POST /v1/tokens with the admin token).
import { ADMIN_TOKEN } from "../server";
import type { Credentials } from "./distribution";

export interface CreatedToken { id: string; token: string }

/** POST /v1/tokens `{ name, scopes }` as admin; throws with the server's answer unless 201. */
export async function createToken(baseUrl: string, scopes: string[], name = `e2e-${Date.now()}`, adminToken = ADMIN_TOKEN): Promise<CreatedToken> {
  const res = await fetch(`${baseUrl}/v1/tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ name, scopes }),
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /v1/tokens ${JSON.stringify(scopes)}: ${res.status} ${text}`);
  const body = JSON.parse(text) as Partial<CreatedToken>;
  if (!body.token || !body.id) throw new Error(`POST /v1/tokens: no id/token in ${text}`);
  return { id: body.id, token: body.token };
}

/** Registry credentials (user name is free; the API token is the password) for `scopes`. */
export async function registryCreds(baseUrl: string, scopes: string[], name?: string): Promise<Credentials> {
  const { token } = await createToken(baseUrl, scopes, name);
  return { username: "kiln", password: token };
}

export const credsArg = (c: Credentials) => `${c.username}:${c.password}`;
