// /v1/dockerfile/check and builds share one planner (issue 11): the steps the check shows are the
// steps a build of the same Dockerfile runs.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { makeTar, postBuild, waitBuild } from "../builds/helpers";

describe("the check endpoint plans as builds do", () => {
  it("shows the steps, stages and lines a build runs", async () => {
    const df = "ARG V=1\nFROM scratch AS a\nCOPY f /f\nFROM scratch AS skipped\nCOPY f /nope\nFROM a\nLABEL v=$V\nCOPY --from=a /f /g\n";
    const res = await SELF.fetch("http://kiln.test/v1/dockerfile/check?build-arg=V=2", { method: "POST", headers: { "content-type": "text/plain" }, body: df });
    expect(res.status).toBe(200);
    const checked = (await res.json()) as { steps: { index: number; stage: string; kind: string; instruction: string; line: number; deps: number[] }[] };
    const started = await postBuild(await makeTar({ Dockerfile: df, f: "x" }), "?build-arg=V=2");
    const { id } = (await started.json()) as { id: string };
    const built = await waitBuild(id);
    expect(built.status, JSON.stringify(built.error)).toBe("succeeded");
    expect(checked.steps.map((s) => ({ index: s.index, stage: s.stage, instruction: s.instruction, line: s.line }))).toEqual(
      built.steps.map((s) => ({ index: s.index, stage: s.stage, instruction: s.instruction, line: s.line })),
    );
    expect(checked.steps.map((s) => s.kind)).toEqual(["from", "copy", "from", "metadata", "copy"]);
    expect(checked.steps[4].deps).toEqual([4, 2]);
  });
});
