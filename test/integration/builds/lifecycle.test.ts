import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { ADMIN, makeTar, postBuild, r2Keys, rawTarEntry, readSse, waitBuild } from "./helpers";

describe("POST /v1/builds refusals", () => {
  const cases: [string, () => Promise<Uint8Array>, string, RegExp][] = [
    ["absolute path", async () => rawTarEntry("/abs", "0"), "", /absolute path/],
    ["'..' component", async () => rawTarEntry("x/../../y", "0"), "", /'\.\.'/],
    ["device node", async () => rawTarEntry("dev/tty", "3"), "", /device node/],
    ["missing Dockerfile", async () => makeTar({ "a.txt": "a" }), "", /Dockerfile not found/],
    ["missing custom dockerfile", async () => makeTar({ Dockerfile: "FROM scratch" }), "?dockerfile=build/Containerfile", /build\/Containerfile/],
    ["Dockerfile over 1 MiB", async () => makeTar({ Dockerfile: "#".repeat(1024 * 1024 + 10) }), "", /1 MiB/],
    ["Dockerfile syntax error", async () => makeTar({ Dockerfile: "FROM scratch\nCOPY --nope=1 a b\n" }), "", /Dockerfile:2/],
    ["unknown target", async () => makeTar({ Dockerfile: "FROM scratch AS a\n" }), "?target=b", /target stage "b"/],
    ["bad tag", async () => makeTar({ Dockerfile: "FROM scratch\n" }), "?tag=Bad/Name:x", /invalid repository name/],
  ];
  for (const [name, body, query, re] of cases) {
    it(`400 for ${name}, nothing stored`, async () => {
      const before = await r2Keys("contexts/");
      const res = await postBuild(await body(), query);
      expect(res.status).toBe(400);
      const j = (await res.json()) as { error: { message: string; line?: number } };
      expect(j.error.message).toMatch(re);
      if (name === "Dockerfile syntax error") expect(j.error.line).toBe(2);
      expect(await r2Keys("contexts/")).toEqual(before);
    });
  }

  it("401 without a token", async () => {
    const res = await SELF.fetch("http://kiln.test/v1/builds?tag=x/y:1", { method: "POST", body: await makeTar({ Dockerfile: "FROM scratch\n" }) });
    expect(res.status).toBe(401);
  });

  it("202 with id, status, url and events for a good context (the size limit is tested in ingest.test.ts)", async () => {
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\n" }), "?tag=life/ok:1");
    expect(res.status).toBe(202);
    const j = (await res.json()) as { id: string; status: string; url: string; events: string };
    expect(j.status).toBe("queued");
    expect(j.url).toBe(`http://kiln.test/v1/builds/${j.id}`);
    expect(j.events).toBe(`http://kiln.test/v1/builds/${j.id}/events`);
    expect((await waitBuild(j.id)).status).toBe("succeeded");
  });
});

describe("events, RUN queueing and cancel", () => {
  it("SSE: a late subscriber gets the history (step events, done) and the stream ends", async () => {
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nENV A=1\nCOPY f /f\n", f: "x" }), "?tag=life/sse:1");
    const { id } = (await res.json()) as { id: string };
    await waitBuild(id);
    const ev = await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN });
    expect(ev.headers.get("content-type")).toBe("text/event-stream");
    const events = await readSse(ev);
    expect(events[events.length - 1].event).toBe("done");
    expect(events[events.length - 1].data.status).toBe("succeeded");
    const finalSteps = new Map<number, string>();
    for (const e of events) if (e.event === "step") finalSteps.set(e.data.index, e.data.status);
    expect([...finalSteps.keys()]).toEqual([1, 2, 3]);
    expect([...finalSteps.values()].every((s) => s === "done" || s === "cached")).toBe(true);
  });

  it("a RUN step waits for a runner (log says so); DELETE cancels the build and its job", async () => {
    const res = await postBuild(await makeTar({ Dockerfile: "FROM scratch\nENV X=1\nRUN make all\nCMD [\"x\"]\n" }), "?tag=life/run:1");
    const { id } = (await res.json()) as { id: string };
    const ev = await SELF.fetch(`http://kiln.test/v1/builds/${id}/events`, { headers: ADMIN });
    const events = readSse(ev);
    let b: any;
    for (let i = 0; i < 200; i++) {
      b = await (await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { headers: ADMIN })).json();
      if (b.steps[2].status === "running") break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect(b.status).toBe("running");
    expect(b.steps.map((s: any) => s.status).slice(1)).toEqual(["done", "running", "pending"]);
    const del = await SELF.fetch(`http://kiln.test/v1/builds/${id}`, { method: "DELETE", headers: ADMIN });
    expect(del.status).toBe(200);
    const after = await waitBuild(id);
    expect(after.status).toBe("cancelled");
    expect(after.steps.map((s) => s.status).slice(2)).toEqual(["skipped", "skipped"]);
    const all = await events;
    // kiln's own line, marked as such: no runner of linux/amd64 has offered itself in this test
    expect(all.some((e) => e.event === "log" && e.data.step === 3 && e.data.source === "kiln" && /^(waiting for a runner|no runner for linux\/amd64 is connected; waiting up to 6 s)\n$/.test(e.data.text))).toBe(true);
    expect(all[all.length - 1]).toMatchObject({ event: "done", data: { status: "cancelled" } });
  });

  it("GET of an unknown build is 404", async () => {
    const res = await SELF.fetch("http://kiln.test/v1/builds/nope", { headers: ADMIN });
    expect(res.status).toBe(404);
  });
});
