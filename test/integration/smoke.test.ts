import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

describe("worker", () => {
  it("answers unknown /v1 routes with a JSON error", async () => {
    const res = await SELF.fetch("http://kiln.test/v1/nope");
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { message: "no route for GET /v1/nope" } });
  });
});
