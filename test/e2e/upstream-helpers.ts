// Shared setup of the pull-through e2e tests (upstream.test.ts, multiplatform.test.ts).
import { expect } from "vitest";
import { ADMIN_TOKEN, type KilnServer } from "./server";

/** PUT /v1/upstreams/<host> with `body` (endpoint, credentials); expects 200. */
export async function setUpstream(kiln: KilnServer, host: string, body: Record<string, unknown>) {
  const res = await fetch(`${kiln.url}/v1/upstreams/${host}`, {
    method: "PUT", headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" }, body: JSON.stringify(body),
  });
  expect(res.status, await res.clone().text()).toBe(200);
}
