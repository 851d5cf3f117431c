import { describe, expect, it } from "vitest";
import { runCommand, withShell } from "./run";
import { parseDockerfile } from "./stages";
import type { RunInstruction } from "./types";

function run(body: string): RunInstruction {
  const [inst] = parseDockerfile(`FROM a\n${body}\n`).stages[0].instructions;
  if (inst.kind !== "RUN") throw new Error("not a RUN");
  return inst;
}

describe("runCommand", () => {
  it("prepends the shell for the shell form only", () => {
    expect(runCommand(run("RUN make -j4 all"))).toEqual({ args: ["/bin/sh", "-c", "make -j4 all"], files: [] });
    expect(runCommand(run('RUN ["make", "all"]'))).toEqual({ args: ["make", "all"], files: [] });
    expect(runCommand(run("RUN echo hi"), ["/bin/bash", "-o", "pipefail", "-c"]).args).toEqual(["/bin/bash", "-o", "pipefail", "-c", "echo hi"]);
  });

  it("runs a lone heredoc's body as the command", () => {
    expect(runCommand(run("RUN <<EOF\napk add curl\necho done\nEOF")).args).toEqual(["/bin/sh", "-c", "apk add curl\necho done\n"]);
    expect(runCommand(run("RUN <<-EOF\n\techo tabbed\n\tEOF")).args).toEqual(["/bin/sh", "-c", "echo tabbed\n"]);
  });

  it("runs a shebang heredoc as a script file", () => {
    const r = runCommand(run("RUN <<EOF\n#!/usr/bin/env python3\nprint('hi')\nEOF"));
    expect(r.args).toEqual(["/bin/sh", "-c", "/dev/pipes/EOF"]);
    expect(r.files).toEqual([{ path: "/dev/pipes/EOF", data: "#!/usr/bin/env python3\nprint('hi')\n", mode: 0o755 }]);
  });

  it("hands a command with heredocs to the shell whole", () => {
    expect(runCommand(run("RUN cat <<A > /a && cat <<B > /b\none\nA\ntwo\nB")).args).toEqual(["/bin/sh", "-c", "cat <<A > /a && cat <<B > /b\none\nA\ntwo\nB"]);
  });

  it("withShell joins arguments into one command", () => {
    expect(withShell(["cmd", "/S", "/C"], ["echo", "hi"])).toEqual(["cmd", "/S", "/C", "echo hi"]);
  });
});
