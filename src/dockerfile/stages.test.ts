import { describe, expect, it } from "vitest";
import { DockerfileError } from "./errors";
import { expandInstruction } from "./expand";
import { ShellLex } from "./shell";
import { argValueInStage, parseDockerfile, platformArgs, proxyEnv, resolveStageBases, stageDependencies } from "./stages";
import type { Instruction } from "./types";

function failure(fn: () => unknown): DockerfileError {
  try {
    fn();
  } catch (e) {
    if (e instanceof DockerfileError) return e;
    throw e;
  }
  throw new Error("expected a DockerfileError");
}

describe("parseDockerfile: stages and global args", () => {
  it("splits stages, keeps global ARGs apart and base names unexpanded", () => {
    const p = parseDockerfile("# syntax=docker/dockerfile:1\nARG TAG=3.19\nFROM --platform=$BUILDPLATFORM alpine:${TAG} AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /\n");
    expect(p.directives).toEqual({ syntax: "docker/dockerfile:1" });
    expect(p.globalArgs.map((a) => a.args)).toEqual([[{ key: "TAG", value: "3.19" }]]);
    expect(p.stages.map((s) => [s.index, s.name, s.baseName, s.platform, s.instructions.length, s.location.startLine])).toEqual([
      [0, "build", "alpine:${TAG}", "$BUILDPLATFORM", 1, 3],
      [1, undefined, "scratch", undefined, 1, 5],
    ]);
  });

  it("keeps duplicate stage names (a later one shadows an earlier one for --from and --target)", () => {
    const p = parseDockerfile("FROM a AS x\nFROM b AS X\nFROM c\nCOPY --from=x / /\n");
    const g = stageDependencies(p, resolveStageBases(p, {}, platformArgs()));
    expect(g[2].dependencies.map((d) => d.stage)).toEqual([1]);
  });
});

describe("resolveStageBases", () => {
  const df = "ARG REGISTRY=docker.io\nARG IMAGE=${REGISTRY}/library/alpine\nARG UNSET\nFROM ${IMAGE}:${TAG:-3.19} AS base\nFROM base AS child\nFROM Base\nFROM scratch\nFROM busybox${UNSET-x}\n";

  it("expands FROM with global args, build-arg overrides and stage references", () => {
    const p = parseDockerfile(df);
    const r = resolveStageBases(p, {}, platformArgs());
    expect(r.stages.map((s) => [s.baseName, s.base])).toEqual([
      ["docker.io/library/alpine:3.19", { kind: "image", ref: "docker.io/library/alpine:3.19" }],
      ["base", { kind: "stage", index: 0 }],
      ["Base", { kind: "stage", index: 0 }],
      ["scratch", { kind: "scratch" }],
      ["busybox", { kind: "image", ref: "busybox" }],
    ]);
    const o = resolveStageBases(p, { REGISTRY: "ghcr.io", TAG: "edge" }, platformArgs());
    // TAG was never declared as a global ARG, so the build arg does not reach FROM.
    expect(o.stages[0].baseName).toBe("ghcr.io/library/alpine:3.19");
    expect(o.metaArgs.get("IMAGE")).toBe("ghcr.io/library/alpine");
    expect(o.metaArgs.has("UNSET")).toBe(false);
  });

  it("provides the predefined platform args", () => {
    const p = parseDockerfile("FROM --platform=$BUILDPLATFORM golang:1.22-${TARGETOS}-${TARGETARCH}\n");
    const r = resolveStageBases(p, {}, platformArgs("linux/arm64", "linux/amd64"));
    expect(r.stages[0]).toMatchObject({ baseName: "golang:1.22-linux-arm64", platform: "linux/amd64" });
    expect(platformArgs("linux/arm/v7")).toMatchObject({ TARGETPLATFORM: "linux/arm/v7", TARGETARCH: "arm", TARGETVARIANT: "v7" });
    expect(platformArgs("linux/arm64/v8").TARGETPLATFORM).toBe("linux/arm64");
  });

  it("rejects an empty base after expansion, and ${V:?} errors, with the FROM line", () => {
    const e = failure(() => parseDockerfile("ARG BASE\nFROM a\nFROM ${BASE}\n"));
    expect(e.message).toBe("base name (${BASE}) should not be blank");
    expect(e.line).toBe(3);
    const e2 = failure(() => parseDockerfile("ARG V\nFROM ${V:?unset}\n"));
    expect(e2.message).toContain("unset");
    expect(e2.line).toBe(2);
    const q = parseDockerfile("ARG V\nFROM ${V:?unset}\n", { buildArgs: { V: "ok" } });
    expect(resolveStageBases(q, { V: "ok" }, platformArgs()).stages[0].baseName).toBe("ok");
    expect(failure(() => resolveStageBases(q, {}, platformArgs())).line).toBe(2);
  });

  it("parseDockerfile runs the same checks with its options", () => {
    expect(failure(() => parseDockerfile("FROM ${NOPE}\n")).message).toContain("should not be blank");
    expect(failure(() => parseDockerfile("FROM a AS one\n", { target: "two" })).message).toContain('target stage "two" could not be found');
  });
});

describe("stage graph", () => {
  it("finds base, COPY --from (name or index) and RUN --mount from= dependencies", () => {
    const p = parseDockerfile(
      "FROM golang AS build\nRUN go build\nFROM alpine AS assets\nFROM build AS test\nCOPY --from=0 /a /a\nCOPY --from=ASSETS /b /b\nRUN --mount=from=assets,target=/x true\nCOPY --from=nginx:latest /etc/nginx /etc/nginx\n",
    );
    const g = stageDependencies(p, resolveStageBases(p, {}, platformArgs()));
    expect(g[2].dependencies.map((d) => [d.kind, d.stage])).toEqual([
      ["base", 0],
      ["copy-from", 0],
      ["copy-from", 1],
      ["mount-from", 1],
    ]);
    expect(g[2].externalSources).toEqual([{ ref: "nginx:latest", instruction: 3, line: 8 }]);
  });

  it("takes --from as written, like BuildKit (no variable expansion)", () => {
    const p = parseDockerfile("ARG SRC=build\nFROM alpine AS build\nFROM alpine\nARG SRC\nCOPY --from=${SRC} /a /a\n");
    const g = stageDependencies(p, resolveStageBases(p, {}, platformArgs()));
    expect(g[1].dependencies).toEqual([]);
    expect(g[1].externalSources).toEqual([{ ref: "${SRC}", instruction: 1, line: 5 }]);
  });

  it("rejects a stage index out of range with its line", () => {
    const e = failure(() => parseDockerfile("FROM a\nFROM b\nCOPY --from=2 /x /x\n"));
    expect(e.message).toContain("invalid stage index 2");
    expect(e.line).toBe(3);
  });

  it("rejects self and circular references (BuildKit's message)", () => {
    const self = failure(() => parseDockerfile("FROM busybox AS stage0\nCOPY --from=stage0 f1 /sub/\n"));
    expect(self.message).toBe("circular dependency detected on stage: stage0");
    expect(self.line).toBe(2);
    const cycle = failure(() =>
      parseDockerfile("FROM busybox AS stage0\nCOPY --from=stage2 f1 /sub/\nFROM busybox AS stage1\nCOPY --from=stage0 f2 /sub/\nFROM busybox AS stage2\nCOPY --from=stage1 f2 /sub/\n"),
    );
    expect(cycle.message).toMatch(/^circular dependency detected on stage: stage[012]$/);
    expect(failure(() => parseDockerfile("FROM a\nCOPY --from=0 /x /y\n")).message).toBe("circular dependency detected on stage: stage-0");
  });

  it("treats an unknown --from name as an image, like BuildKit", () => {
    const p = parseDockerfile("FROM a\nCOPY --from=unknown-stage /x /y\n");
    const g = stageDependencies(p, resolveStageBases(p, {}, platformArgs()));
    expect(g[0].dependencies).toEqual([]);
    expect(g[0].externalSources[0].ref).toBe("unknown-stage");
  });
});

describe("args inside stages", () => {
  it("a stage sees a global arg only when it re-declares it; build args win over defaults", () => {
    const meta = new Map([["VERSION", "1.0"], ["TARGETARCH", "amd64"]]);
    expect(argValueInStage({ key: "VERSION" }, {}, meta)).toBe("1.0");
    expect(argValueInStage({ key: "VERSION", value: "2.0" }, {}, meta)).toBe("2.0");
    expect(argValueInStage({ key: "VERSION", value: "2.0" }, { VERSION: "3.0" }, meta)).toBe("3.0");
    expect(argValueInStage({ key: "OTHER" }, {}, meta)).toBeUndefined();
    expect(argValueInStage({ key: "TARGETARCH" }, {}, meta)).toBe("amd64");
  });

  it("proxy args are picked from the build args", () => {
    expect([...proxyEnv({ HTTP_PROXY: "http://p:3128", FOO: "x", no_proxy: "localhost" })]).toEqual([
      ["HTTP_PROXY", "http://p:3128"],
      ["no_proxy", "localhost"],
    ]);
  });
});

describe("expandInstruction", () => {
  const shell = new ShellLex("\\");
  const env = new Map([
    ["APP", "/srv/app"],
    ["USERNAME", "web"],
    ["PORTS", "80 443/tcp"],
    ["V", "1.2"],
  ]);
  const stage = parseDockerfile(
    [
      "FROM base",
      'ENV DIR=$APP/bin MSG="v ${V}"',
      "LABEL version=$V",
      "WORKDIR ${APP}",
      "USER $USERNAME",
      "EXPOSE $PORTS",
      "VOLUME $APP/data",
      "COPY --chown=$USERNAME --from=stage-$V $APP/a ${APP}/",
      "COPY <<EOF <<'RAW' /x/",
      "v=$V \"quoted\"",
      "EOF",
      "v=$V",
      "RAW",
      "ADD --checksum=$V src /dst",
      "RUN echo $APP",
      "CMD echo $APP",
      'ENTRYPOINT ["$APP"]',
      "ARG A=$V",
      "STOPSIGNAL ${SIG:-SIGQUIT}",
      "RUN --mount=type=cache,target=$APP/cache true",
      "HEALTHCHECK CMD curl $APP",
    ].join("\n") + "\n",
  ).stages[0].instructions;
  const expanded = stage.map((i) => expandInstruction(i, env, shell));
  const byKind = (k: Instruction["kind"], n = 0) => expanded.filter((i) => i.kind === k)[n];

  it("expands the fields BuildKit expands", () => {
    expect(byKind("ENV")).toMatchObject({ pairs: [{ key: "DIR", value: "/srv/app/bin" }, { key: "MSG", value: "v 1.2" }] });
    expect(byKind("LABEL")).toMatchObject({ pairs: [{ key: "version", value: "1.2" }] });
    expect(byKind("WORKDIR")).toMatchObject({ path: "/srv/app" });
    expect(byKind("USER")).toMatchObject({ user: "web" });
    expect(byKind("EXPOSE")).toMatchObject({ ports: ["80", "443/tcp"] });
    expect(byKind("VOLUME")).toMatchObject({ volumes: ["/srv/app/data"] });
    expect(byKind("COPY")).toMatchObject({ chown: "web", from: "stage-$V", sources: ["/srv/app/a"], dest: "/srv/app/" });
    expect(byKind("COPY", 1)).toMatchObject({
      sourceContents: [
        { path: "EOF", data: 'v=1.2 "quoted"\n', expand: true },
        { path: "RAW", data: "v=$V\n", expand: false },
      ],
    });
    expect(byKind("ADD")).toMatchObject({ checksum: "1.2" });
    expect(byKind("ARG")).toMatchObject({ args: [{ key: "A", value: "1.2" }] });
    expect(byKind("STOPSIGNAL")).toMatchObject({ signal: "SIGQUIT" });
    expect(byKind("RUN", 1)).toMatchObject({ mounts: [{ type: "cache", target: "/srv/app/cache" }] });
  });

  it("leaves RUN, CMD, ENTRYPOINT and HEALTHCHECK to the shell", () => {
    expect(byKind("RUN")).toMatchObject({ args: ["echo $APP"] });
    expect(byKind("CMD")).toMatchObject({ args: ["echo $APP"] });
    expect(byKind("ENTRYPOINT")).toMatchObject({ args: ["$APP"] });
    expect(byKind("HEALTHCHECK")).toMatchObject({ test: ["CMD-SHELL", "curl $APP"] });
  });

  it("does not modify the parsed instruction", () => {
    expect(stage.find((i) => i.kind === "WORKDIR")).toMatchObject({ path: "${APP}" });
  });

  it("reports expansion errors at the instruction's line", () => {
    const [inst] = parseDockerfile("FROM a\n\nWORKDIR ${DIR:?DIR must be set}\n").stages[0].instructions;
    const e = failure(() => expandInstruction(inst, new Map(), shell));
    expect(e.message).toContain("DIR must be set");
    expect(e.line).toBe(3);
  });
});
