import { describe, expect, it } from "vitest";
import { DEFAULT_PATH_ENV, StageEnv } from "./env";
import { expandInstruction } from "./expand";
import { ShellLex } from "./shell";
import { parseDockerfile, resolveStageBases, platformArgs } from "./stages";
import type { Instruction } from "./types";

const shell = new ShellLex("\\");

/** Walks the first stage like a builder: ARG applied as written, everything else expanded first. */
function walk(text: string, baseEnv: string[], buildArgs: Record<string, string> = {}) {
  const parsed = parseDockerfile(text, { buildArgs });
  const { metaArgs } = resolveStageBases(parsed, buildArgs, platformArgs());
  const env = new StageEnv(baseEnv, { buildArgs, metaArgs });
  const seen: Instruction[] = [];
  for (const inst of parsed.stages[0].instructions) {
    if (inst.kind === "ARG") seen.push(env.applyArg(inst, shell));
    else {
      const x = expandInstruction(inst, env.env, shell);
      if (x.kind === "ENV") env.applyEnv(x);
      seen.push(x);
    }
  }
  return { env, seen };
}

describe("StageEnv", () => {
  it("defaults PATH and keeps the base env", () => {
    const { env } = walk("FROM a\n", ["LANG=C.UTF-8"]);
    expect(env.configEnv).toEqual(["LANG=C.UTF-8", "PATH=" + DEFAULT_PATH_ENV]);
    expect(new StageEnv(["PATH=/bin"], { buildArgs: {}, metaArgs: new Map() }).configEnv).toEqual(["PATH=/bin"]);
  });

  it("ENV changes the config (replacing in place) and the expansion env; one ENV's words all see the env before it", () => {
    const { env, seen } = walk("FROM a\nENV APP=/srv PATH=$APP/bin:$PATH\nENV PATH=$APP/bin:$PATH\nWORKDIR $APP\n", ["PATH=/bin", "X=1"]);
    expect(seen[0]).toMatchObject({ pairs: [{ key: "APP", value: "/srv" }, { key: "PATH", value: "/bin:/bin" }] });
    expect(env.configEnv).toEqual(["PATH=/srv/bin:/bin:/bin", "X=1", "APP=/srv"]);
    expect(seen[2]).toMatchObject({ kind: "WORKDIR", path: "/srv" });
  });

  it("ARG values reach expansion and RUN but never the config", () => {
    const { env, seen } = walk("ARG VERSION=1.0\nFROM a\nARG VERSION\nARG MODE=release-$VERSION\nWORKDIR /v$VERSION\n", [], {});
    expect(seen[1]).toMatchObject({ args: [{ key: "MODE", value: "release-1.0" }] });
    expect(seen[2]).toMatchObject({ path: "/v1.0" });
    expect(env.configEnv.some((e) => e.startsWith("VERSION="))).toBe(false);
    expect(env.runEnv()).toContain("MODE=release-1.0");
    expect(env.runCommandString(["/bin/sh", "-c", "make"])).toBe("|2 VERSION=1.0 MODE=release-1.0 /bin/sh -c make");
  });

  it("a --build-arg wins over the default and is not expanded", () => {
    const { seen } = walk("FROM a\nARG A=default\nARG B\n", [], { A: "$NOT_EXPANDED", B: "b" });
    expect(seen[0]).toMatchObject({ args: [{ key: "A", value: "$NOT_EXPANDED" }] });
    expect(seen[1]).toMatchObject({ args: [{ key: "B", value: "b" }] });
  });

  it("ENV after ARG shadows it; an ARG after ENV sets the run env but not the config", () => {
    const a = walk("FROM a\nARG X=arg\nENV X=env\n", []).env;
    expect(a.env.get("X")).toBe("env");
    const b = walk("FROM a\nENV X=env\nARG X=arg\n", []).env;
    expect(b.env.get("X")).toBe("arg");
    expect(b.configEnv).toContain("X=env");
  });

  it("an ARG declared without a value and no global leaves the env alone", () => {
    const { env } = walk("FROM a\nARG NOPE\n", []);
    expect(env.env.has("NOPE")).toBe(false);
    expect(env.buildArgs).toEqual([{ key: "NOPE" }]);
    expect(env.runCommandString(["x"])).toBe("|1 NOPE= x");
  });

  it("adds proxy args to the RUN env only", () => {
    const env = new StageEnv(["PATH=/bin"], { buildArgs: {}, metaArgs: new Map() });
    expect(env.runEnv(new Map([["HTTP_PROXY", "http://p"]]))).toEqual(["PATH=/bin", "HTTP_PROXY=http://p"]);
  });
});

describe("StageEnv snapshots", () => {
  it("restore(configEnv, snapshot) through JSON gives the same env, args and history text; an ARG without value stays unset", () => {
    const { env } = walk("FROM a\nENV A=1\nARG A=2\nARG UNSET\nARG B=$A\n", ["PATH=/bin"]);
    const json = JSON.parse(JSON.stringify({ config: env.configEnv, snap: env.snapshot() }));
    const back = StageEnv.restore(json.config, json.snap, { buildArgs: {}, metaArgs: new Map() });
    expect(back.configEnv).toEqual(env.configEnv);
    expect([...back.env]).toEqual([...env.env]);
    expect(back.runEnv()).toEqual(["PATH=/bin", "A=2", "B=2"]);
    expect(back.runEnv().some((e) => e.startsWith("UNSET"))).toBe(false);
    expect(back.buildArgs).toEqual([{ key: "A", value: "2" }, { key: "UNSET" }, { key: "B", value: "2" }]);
    expect(back.runCommandString(["/bin/sh", "-c", "x"])).toBe(env.runCommandString(["/bin/sh", "-c", "x"]));
    // a restored env keeps applying with the same options
    back.applyArg({ kind: "ARG", args: [{ key: "C", value: "$B" }], location: { startLine: 9, endLine: 9 }, original: "ARG C=$B" }, shell);
    expect(back.env.get("C")).toBe("2");
  });
});
