import { describe, expect, it } from "vitest";
import { lintDockerfile } from "./lint";
import { parse } from "./parser";
import { parseDockerfile } from "./stages";

function lint(text: string) {
  return lintDockerfile(parse(text).ast, parseDockerfile(text, { buildArgs: { B: "x" } })).map((w) => [w.rule, w.line, w.message]);
}

describe("lintDockerfile", () => {
  it("finds nothing in a clean Dockerfile", () => {
    expect(lint('FROM alpine AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /\nCMD ["/app"]\n')).toEqual([]);
  });

  it("checks keyword and stage-name casing", () => {
    expect(lint("FROM alpine as Build\nrun x\nRUN y\nRUN z\n")).toEqual([
      ["FromAsCasing", 1, "'as' and 'FROM' keywords' casing do not match"],
      ["StageNameCasing", 1, "Stage name 'Build' should be lowercase"],
      ["ConsistentInstructionCasing", 2, "Command 'run' should match the case of the command majority (uppercase)"],
    ]);
  });

  it("checks duplicate and reserved stage names", () => {
    expect(lint("FROM a AS x\nFROM b AS x\nFROM c AS scratch\n").map((w) => w[0])).toEqual(["DuplicateStageName", "ReservedStageName"]);
  });

  it("recommends JSON for CMD/ENTRYPOINT and flags repeated ones", () => {
    expect(lint("FROM a\nCMD run.sh\nCMD [\"x\"]\nENTRYPOINT [\"y\"]\n")).toEqual([
      ["JSONArgsRecommended", 2, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"],
      ["MultipleInstructionsDisallowed", 2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"],
    ]);
  });

  it("checks legacy ENV/LABEL format, MAINTAINER, relative WORKDIR, EXPOSE protocol casing", () => {
    expect(lint("FROM a\nENV A b\nLABEL x y\nMAINTAINER me\nWORKDIR app\nWORKDIR /srv\nWORKDIR sub\nEXPOSE 80/TCP\n").map((w) => [w[0], w[1]])).toEqual([
      ["LegacyKeyValueFormat", 2],
      ["LegacyKeyValueFormat", 3],
      ["MaintainerDeprecated", 4],
      ["WorkdirRelativePath", 5],
      ["ExposeProtoCasing", 8],
    ]);
  });

  it("checks undeclared FROM args, constant --platform and secrets in ARG/ENV", () => {
    expect(lint("ARG B\nFROM --platform=linux/amd64 img:${B}${UNDECLARED}\nARG GITHUB_TOKEN\nENV DB_PASSWORD=x PUBLIC_KEY=y API_URL=z\n").map((w) => [w[0], w[1]])).toEqual([
      ["FromPlatformFlagConstDisallowed", 2],
      ["UndefinedArgInFrom", 2],
      ["SecretsUsedInArgOrEnv", 3],
      ["SecretsUsedInArgOrEnv", 4],
    ]);
  });

  it("honours # check=skip=", () => {
    expect(lint("# check=skip=JSONArgsRecommended,StageNameCasing\nFROM a AS X\nCMD x\n")).toEqual([]);
    expect(lint("# check=skip=all\nfrom a AS X\nCMD x\n")).toEqual([]);
  });
});
