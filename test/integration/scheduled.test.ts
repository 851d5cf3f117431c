import { createExecutionContext, createScheduledController, env, SELF, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";

const auth = { authorization: `Basic ${btoa("kiln:kiln-test-admin")}` };

describe("scheduled clean-up", () => {
  it("drops upload sessions idle for more than a week and keeps fresh ones", async () => {
    const start = async () => {
      const res = await SELF.fetch("http://kiln.test/v2/cron/app/blobs/uploads/", { method: "POST", headers: auth });
      expect(res.status).toBe(202);
      return res.headers.get("docker-upload-uuid")!;
    };
    const stale = await start();
    const fresh = await start();
    await env.DB.prepare("UPDATE uploads SET updated_at = ? WHERE id = ?").bind(Date.now() - 8 * 24 * 3600 * 1000, stale).run();
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: "17 3 * * *" }), env, ctx);
    await waitOnExecutionContext(ctx);
    const status = (id: string) => SELF.fetch(`http://kiln.test/v2/cron/app/blobs/uploads/${id}`, { headers: auth }).then((r) => r.status);
    expect(await status(stale)).toBe(404);
    expect(await status(fresh)).toBe(204);
  });
});
