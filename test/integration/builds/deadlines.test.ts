import { env, SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, makeTar, postBuild, readSse, waitBuild } from "./helpers";

// vitest.config.ts sets KILN_RUNNER_WAIT_SECONDS=6 and KILN_STEP_TIMEOUT_SECONDS=15.
describe("step deadlines", () => {
  it("a RUN step for a platform no runner serves fails with `no runner for linux/arm64`, and says so at once", async () => {
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nRUN true\n" }), "?tag=deadline/arm:1&platform=linux/arm64");
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const b = await waitBuild(id, 40_000);
    expect(b.status).toBe("failed");
    expect(b.error).toMatchObject({ step: 2, line: 2 });
    expect(b.error!.message).toMatch(/^no runner for linux\/arm64: none offered itself within 6 s/);
    expect(b.steps.map((s) => s.status)).toEqual(["done", "failed"]);
    const events = await readSse(await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN }));
    const logs = events.filter((e) => e.event === "log").map((e) => e.data);
    expect(logs[0]).toEqual({ step: 2, text: "no runner for linux/arm64 is connected; waiting up to 6 s\n", source: "kiln" });
    expect(logs.at(-1)).toMatchObject({ step: 2, source: "kiln", text: expect.stringMatching(/^ERROR: no runner for linux\/arm64/) });
    // Every frame has its id, in order: a reconnect with Last-Event-ID gets only what follows.
    const ids = events.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, z) => a - z));
    const after = await readSse(await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: { ...ADMIN, "last-event-id": String(ids[ids.length - 2]) } }));
    expect(after.map((e) => e.event)).toEqual(["done"]);
  });

  it("a stalled Worker step fails at its deadline with a message naming it", async () => {
    // TEST_STALL_HOST (vitest.config.ts) accepts the connection and never answers.
    const url = `http://${(env as unknown as { TEST_STALL_HOST: string }).TEST_STALL_HOST}/file`;
    const res = await postBuild(await makeTar({ Dockerfile: `FROM scratch\nADD ${url} /file\nCMD ["x"]\n` }), "?tag=deadline/stall:1");
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const started = Date.now();
    const b = await waitBuild(id, 50_000);
    expect(b.status).toBe("failed");
    expect(Date.now() - started).toBeGreaterThanOrEqual(14_000);
    expect(b.error).toMatchObject({ step: 2, line: 2, message: `ADD ${url} /file: did not finish within 15 s (KILN_STEP_TIMEOUT_SECONDS)` });
    expect(b.steps.map((s) => s.status)).toEqual(["done", "failed", "skipped"]);
  });
});
