import { describe, expect, it } from "vitest";
import { DockerfileError } from "./errors";
import { parseOnbuildTriggers } from "./onbuild";
import { parseDockerfile } from "./stages";

const at = { startLine: 4, endLine: 4 };

describe("parseOnbuildTriggers", () => {
  it("turns a base image's ONBUILD expressions back into instructions located at FROM", () => {
    const insts = parseOnbuildTriggers(["RUN echo hi", "COPY --from=build /a /b", 'CMD ["x"]'], at);
    expect(insts.map((i) => i.kind)).toEqual(["RUN", "COPY", "CMD"]);
    expect(insts[1]).toMatchObject({ from: "build", sources: ["/a"], dest: "/b", location: at });
  });

  it("round-trips the expression an ONBUILD instruction stores, heredocs included", () => {
    const [ob] = parseDockerfile("FROM a\nONBUILD RUN <<EOF\necho later\nEOF\n").stages[0].instructions;
    if (ob.kind !== "ONBUILD") throw new Error("expected ONBUILD");
    expect(ob.expression).toBe("RUN <<EOF\necho later\nEOF");
    const [run] = parseOnbuildTriggers([ob.expression], at);
    expect(run).toMatchObject({ kind: "RUN", args: ["<<EOF"], heredocs: [{ name: "EOF", content: "echo later\n" }] });
  });

  it("rejects bad triggers at the FROM line", () => {
    for (const [trigger, message] of [
      ["RUN a\nRUN b", "onbuild trigger should be a single expression"],
      ["BOGUS x", "unknown instruction: BOGUS"],
      ["FROM x", "FROM isn't allowed as an ONBUILD trigger"],
    ] as const) {
      let err: unknown;
      try {
        parseOnbuildTriggers([trigger], at);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DockerfileError);
      expect((err as DockerfileError).message).toContain(message);
      expect((err as DockerfileError).line).toBe(4);
    }
  });
});
