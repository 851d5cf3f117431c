import { describe, expect, it } from "vitest";
import { DockerfileError, formatDockerfileError } from "./errors";

describe("formatDockerfileError", () => {
  it("shows the lines around the error with markers, like BuildKit", () => {
    const text = "FROM alpine\nRUN echo ok\nCOPPY a b\nCMD x\n";
    expect(formatDockerfileError(new DockerfileError("unknown instruction: COPPY", 3), text)).toBe(
      [
        "Dockerfile:3",
        "--------------------",
        "   1 |     FROM alpine",
        "   2 |     RUN echo ok",
        "   3 | >>> COPPY a b",
        "   4 |     CMD x",
        "--------------------",
        "ERROR: unknown instruction: COPPY",
      ].join("\n"),
    );
  });

  it("marks every line of a multi-line instruction", () => {
    const out = formatDockerfileError(new DockerfileError("bad", 2, { endLine: 3 }), "FROM a\nRUN x \\\n  y\n", "df");
    expect(out.split("\n").slice(0, 5)).toEqual(["df:2-3", "--------------------", "   1 |     FROM a", "   2 | >>> RUN x \\", "   3 | >>>   y"]);
  });
});
