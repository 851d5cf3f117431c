import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startKiln, type KilnServer } from "./server";

describe("kiln server", () => {
  let kiln: KilnServer;
  beforeAll(async () => { kiln = await startKiln(); });
  afterAll(async () => { await kiln?.stop(true); });

  it("serves the API root on loopback", async () => {
    const res = await fetch(`${kiln.url}/`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: "kiln" });
  });
});
