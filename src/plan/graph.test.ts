import { describe, expect, it } from "vitest";
import { DockerfileError } from "../dockerfile/errors";
import { planDockerfile } from "./graph";

const opts = { buildArgs: {}, platform: "linux/amd64" };

describe("planDockerfile (the one planner of builds and /v1/dockerfile/check)", () => {
  it("one step per FROM and instruction, reachable stages only, COPY --from waits for the source stage", async () => {
    const { graph } = await planDockerfile("FROM scratch AS a\nCOPY x /x\nFROM scratch AS unused\nRUN no\nFROM a\nCOPY --from=a /x /y\n", opts);
    expect(graph.steps.map((s) => [s.index, s.stageName, s.kind, s.deps])).toEqual([
      [1, "a", "from", []],
      [2, "a", "copy", [1]],
      [3, "stage-2", "from", [2]],
      [4, "stage-2", "copy", [3, 2]],
    ]);
    expect(graph.target).toBe(2);
    // JSON: the plan is persisted with the build
    expect(JSON.parse(JSON.stringify(graph))).toEqual(graph);
  });

  it("an image base's ONBUILD triggers run right after its FROM, located at the FROM line, reading earlier stages", async () => {
    const asked: [number, string][] = [];
    const { graph } = await planDockerfile("ARG V=1\nFROM scratch AS src\nCOPY f /f\nFROM base:$V\nCOPY --from=src /f /h\n", {
      ...opts,
      triggersOf: async (stage, ref) => {
        asked.push([stage, ref]);
        return ["COPY --from=src /f /g", "RUN echo trig"];
      },
    });
    expect(asked).toEqual([[1, "base:1"]]);
    expect(graph.metaArgs).toMatchObject({ V: "1" });
    expect(graph.steps.slice(2).map((s) => [s.kind, s.instruction, s.line, s.deps])).toEqual([
      ["from", "FROM base:1", 4, []],
      ["copy", "COPY --from=src /f /g", 4, [3, 2]],
      ["run", "RUN echo trig", 4, [4]],
      ["copy", "COPY --from=src /f /h", 5, [5, 2]],
    ]);
  });

  it("a bad trigger is an error at the FROM line; scratch and stage bases are never asked for triggers", async () => {
    await expect(planDockerfile("FROM img\n", { ...opts, triggersOf: async () => ["FROM x"] })).rejects.toThrow(DockerfileError);
    await expect(planDockerfile("FROM img\n", { ...opts, triggersOf: async () => ["FROM x"] })).rejects.toMatchObject({ line: 1 });
    let asked = 0;
    await planDockerfile("FROM scratch AS a\nFROM a\n", { ...opts, triggersOf: async () => (asked++, []) });
    expect(asked).toBe(0);
  });
});
