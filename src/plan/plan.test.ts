import { describe, expect, it } from "vitest";
import { DockerfileError } from "../dockerfile/errors";
import { parseDockerfile } from "../dockerfile/stages";
import { planBuild } from "./plan";

const multi = `FROM golang:1.22 AS deps
RUN go mod download
FROM deps AS build
COPY . .
RUN go build -o /out/app
FROM node:20 AS web
RUN npm ci
FROM alpine AS debug
RUN apk add gdb
FROM gcr.io/distroless/static AS final
COPY --from=build /out/app /app
COPY --from=web /dist /www
USER nonroot
WORKDIR /app
ENTRYPOINT ["/app"]
`;

describe("planBuild", () => {
  it("plans only the stages reachable from the last stage, dependencies first", () => {
    const plan = planBuild(parseDockerfile(multi));
    expect(plan.stages.map((s) => s.name)).toEqual(["deps", "build", "web", "final"]);
    expect(plan.target).toBe(4);
    expect(plan.stages.find((s) => s.name === "debug")).toBeUndefined();
    expect(plan.stages.map((s) => s.dependencies)).toEqual([[], [0], [], [1, 2]]);
  });

  it("plans a named --target (case-insensitive) and nothing after it", () => {
    const plan = planBuild(parseDockerfile(multi), { target: "BUILD" });
    expect(plan.stages.map((s) => s.name)).toEqual(["deps", "build"]);
    expect(plan.target).toBe(1);
  });

  it("rejects an unknown target", () => {
    let err: unknown;
    try {
      planBuild(parseDockerfile(multi), { target: "prod" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as Error).message).toContain('target stage "prod" could not be found');
  });

  it("classifies every instruction", () => {
    const plan = planBuild(
      parseDockerfile(
        "FROM a\nENV A=1\nLABEL l=1\nUSER u\nEXPOSE 80\nVOLUME /v\nCMD x\nENTRYPOINT y\nSHELL [\"sh\",\"-c\"]\nSTOPSIGNAL 9\nHEALTHCHECK NONE\nARG X\nONBUILD RUN x\nMAINTAINER m\nWORKDIR /w\nRUN x\nCOPY a b\nADD c d\n",
      ),
    );
    expect(plan.stages[0].instructions.map((i) => `${i.instruction.kind}:${i.classification}`)).toEqual([
      "ENV:metadata",
      "LABEL:metadata",
      "USER:metadata",
      "EXPOSE:metadata",
      "VOLUME:metadata",
      "CMD:metadata",
      "ENTRYPOINT:metadata",
      "SHELL:metadata",
      "STOPSIGNAL:metadata",
      "HEALTHCHECK:metadata",
      "ARG:metadata",
      "ONBUILD:metadata",
      "MAINTAINER:metadata",
      "WORKDIR:workdir",
      "RUN:layer",
      "COPY:layer",
      "ADD:layer",
    ]);
  });

  it("resolves bases and COPY --from targets with build args", () => {
    const df = "ARG VARIANT=alpine\nFROM node:20-${VARIANT} AS web\nFROM scratch\nCOPY --from=web /a /a\nCOPY --from=0 /b /b\nCOPY --from=busybox:1.36 /bin/sh /sh\n";
    const plan = planBuild(parseDockerfile(df), { buildArgs: { VARIANT: "slim" } });
    expect(plan.stages[0]).toMatchObject({ baseName: "node:20-slim", base: { kind: "image", ref: "node:20-slim" } });
    expect(plan.stages[1].base).toEqual({ kind: "scratch" });
    expect(plan.stages[1].instructions.map((i) => i.from)).toEqual([{ stage: 0 }, { stage: 0 }, { image: "busybox:1.36" }]);
    expect(plan.stages[1].externalSources.map((s) => s.ref)).toEqual(["busybox:1.36"]);
  });

  it("builds a stage used by several others once, before all of them", () => {
    const df = "FROM a AS common\nFROM common AS x\nFROM common AS y\nFROM scratch\nCOPY --from=y / /\nCOPY --from=x / /\n";
    const plan = planBuild(parseDockerfile(df));
    expect(plan.stages.map((s) => s.index)).toEqual([0, 1, 2, 3]);
  });

  it("rejects reading a stage defined later, like BuildKit (only when that stage is planned)", () => {
    const df = "FROM a AS first\nCOPY --from=later /x /x\nFROM b AS later\nRUN --mount=from=later2,target=/m true\nFROM c AS later2\n";
    let err: unknown;
    try {
      planBuild(parseDockerfile(df), { target: "first" });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DockerfileError);
    expect((err as DockerfileError).message).toBe('cannot copy from stage "later", it needs to be defined before current stage "first"');
    expect((err as DockerfileError).line).toBe(2);
    try {
      planBuild(parseDockerfile(df), { target: "later" });
    } catch (e) {
      err = e;
    }
    expect((err as DockerfileError).message).toContain('cannot mount from stage "later2"');
    expect((err as DockerfileError).line).toBe(4);
    expect(planBuild(parseDockerfile(df), { target: "later2" }).stages.map((s) => s.name)).toEqual(["later2"]);
  });

  it("includes the target platform", () => {
    expect(planBuild(parseDockerfile("FROM a\n"), { platform: "linux/arm64" }).platform).toBe("linux/arm64");
    expect(planBuild(parseDockerfile("FROM --platform=$BUILDPLATFORM a\n"), { platform: "linux/arm64", buildPlatform: "linux/amd64" }).stages[0].platform).toBe("linux/amd64");
  });
});

describe("planBuild on long stage chains", () => {
  it("plans thousands of chained stages without deep recursion", () => {
    let df = "FROM alpine AS s0\n";
    for (let i = 1; i < 5000; i++) df += `FROM s${i - 1} AS s${i}\nCOPY --from=s${Math.max(0, i - 2)} /a /a\n`;
    const plan = planBuild(parseDockerfile(df));
    expect(plan.stages).toHaveLength(5000);
    expect(plan.stages[0].index).toBe(0);
    expect(plan.stages[4999].index).toBe(4999);
  });
});
