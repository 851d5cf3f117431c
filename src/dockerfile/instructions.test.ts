import { describe, expect, it } from "vitest";
import { DockerfileError } from "./errors";
import { checkLiteralValues } from "./instructions";
import { parseDockerfile } from "./stages";
import type { Instruction } from "./types";

/** The instructions of the only stage of `FROM base\n<body>`. */
function insts(body: string): Instruction[] {
  return parseDockerfile(`FROM base\n${body}`).stages[0].instructions;
}
function one<K extends Instruction["kind"]>(body: string, kind: K): Extract<Instruction, { kind: K }> {
  const [i] = insts(body);
  expect(i.kind).toBe(kind);
  return i as Extract<Instruction, { kind: K }>;
}
function failure(text: string): DockerfileError {
  try {
    parseDockerfile(text);
  } catch (e) {
    if (e instanceof DockerfileError) return e;
    throw e;
  }
  throw new Error("expected a DockerfileError");
}

describe("typed instructions", () => {
  it("RUN: shell and exec form, mounts, network, security, heredocs", () => {
    const shell = one("RUN --mount=type=cache,target=/root/.cache,id=go --network=none apt-get update", "RUN");
    expect(shell.args).toEqual(["apt-get update"]);
    expect(shell.prependShell).toBe(true);
    expect(shell.network).toBe("none");
    expect(shell.mounts).toEqual([{ type: "cache", target: "/root/.cache", id: "go", readOnly: false }]);
    expect(shell.location).toEqual({ startLine: 2, endLine: 2 });
    expect(shell.original).toBe("RUN --mount=type=cache,target=/root/.cache,id=go --network=none apt-get update");

    const exec = one('RUN --security=insecure ["echo", "a b"]', "RUN");
    expect(exec.args).toEqual(["echo", "a b"]);
    expect(exec.prependShell).toBe(false);
    expect(exec.security).toBe("insecure");

    const doc = one("RUN <<EOF\nset -e\necho $HOME\nEOF", "RUN");
    expect(doc.args).toEqual(["<<EOF"]);
    expect(doc.heredocs[0].content).toBe("set -e\necho $HOME\n");
    expect(doc.location).toEqual({ startLine: 2, endLine: 5 });
  });

  it("RUN --mount: bind from a stage is read-only by default, secrets need an id or target", () => {
    const r = one("RUN --mount=from=build,source=/out,target=/in --mount=type=secret,id=tok,required cat /run/secrets/tok", "RUN");
    expect(r.mounts[0]).toEqual({ type: "bind", from: "build", source: "/out", target: "/in", readOnly: true });
    expect(r.mounts[1]).toEqual({ type: "secret", id: "tok", readOnly: true, required: true });
    expect(failure("FROM a\nRUN --mount=type=secret true").message).toContain("invalid secret mount");
    expect(failure("FROM a\nRUN --mount=type=bogus,target=/x true").message).toContain('unsupported mount type "bogus"');
    expect(failure("FROM a\nRUN --mount=type=bind,target=/x,mode=0700 true").message).toContain("mode not allowed");
    expect(failure("FROM a\nRUN --mount=type=cache,target=/x,colour=red true").message).toContain("unexpected key 'colour'");
  });

  it("COPY: sources, dest, every flag, JSON form and heredoc sources", () => {
    const c = one("COPY --from=build --chown=1000:1000 --chmod=0644 --link --parents --exclude=*.md --exclude=tmp a b /dst/", "COPY");
    expect(c).toMatchObject({
      sources: ["a", "b"],
      dest: "/dst/",
      from: "build",
      chown: "1000:1000",
      chmod: "0644",
      link: true,
      parents: true,
      exclude: ["*.md", "tmp"],
      json: false,
    });
    const j = one('COPY ["with space", "/d st/"]', "COPY");
    expect([j.sources, j.dest, j.json, j.link]).toEqual([["with space"], "/d st/", true, false]);
    const h = one("COPY <<EOF <<'RAW' /etc/\nhi $USER\nEOF\n$keep\nRAW", "COPY");
    expect(h.sources).toEqual([]);
    expect(h.sourceContents).toEqual([
      { path: "EOF", data: "hi $USER\n", expand: true },
      { path: "RAW", data: "$keep\n", expand: false },
    ]);
    expect(one("COPY --link=false a b", "COPY").link).toBe(false);
  });

  it("ADD: checksum, keep-git-dir, link", () => {
    const a = one("ADD --checksum=sha256:abc --keep-git-dir=true --link https://example.com/x.tgz /x", "ADD");
    expect(a).toMatchObject({ sources: ["https://example.com/x.tgz"], dest: "/x", checksum: "sha256:abc", keepGitDir: true, link: true });
  });

  it("ENV and LABEL: both forms, quotes kept for expansion", () => {
    expect(one("ENV PATH=/x:$PATH DEBUG=1", "ENV").pairs).toEqual([
      { key: "PATH", value: "/x:$PATH" },
      { key: "DEBUG", value: "1" },
    ]);
    expect(one("ENV GREETING hello world", "ENV").pairs).toEqual([{ key: "GREETING", value: "hello world" }]);
    expect(one('LABEL org.opencontainers.image.title="kiln app" v=1', "LABEL").pairs).toEqual([
      { key: "org.opencontainers.image.title", value: '"kiln app"' },
      { key: "v", value: "1" },
    ]);
  });

  it("ARG with and without defaults", () => {
    expect(one('ARG A B=2 C="x y"', "ARG").args).toEqual([{ key: "A" }, { key: "B", value: "2" }, { key: "C", value: '"x y"' }]);
  });

  it("EXPOSE, VOLUME (JSON or words), USER, WORKDIR, STOPSIGNAL, MAINTAINER", () => {
    expect(one("EXPOSE 8080 80/tcp", "EXPOSE").ports).toEqual(["80/tcp", "8080"]);
    expect(one("EXPOSE 7000-7010/udp 127.0.0.1:8080:80 $PORT", "EXPOSE").ports).toEqual(["$PORT", "127.0.0.1:8080:80", "7000-7010/udp"]);
    expect(one('VOLUME ["/a", "/b"]', "VOLUME").volumes).toEqual(["/a", "/b"]);
    expect(one("VOLUME /a /b", "VOLUME").volumes).toEqual(["/a", "/b"]);
    expect(one("USER app:app", "USER").user).toBe("app:app");
    expect(one("WORKDIR /src/app", "WORKDIR").path).toBe("/src/app");
    expect(one("STOPSIGNAL SIGTERM", "STOPSIGNAL").signal).toBe("SIGTERM");
    expect(one("STOPSIGNAL 9", "STOPSIGNAL").signal).toBe("9");
    expect(one("STOPSIGNAL rtmin+3", "STOPSIGNAL").signal).toBe("rtmin+3");
    expect(one("MAINTAINER Jane <jane@example.com>", "MAINTAINER").maintainer).toBe("Jane <jane@example.com>");
  });

  it("CMD, ENTRYPOINT and SHELL", () => {
    expect(one('CMD ["node", "server.js"]', "CMD")).toMatchObject({ args: ["node", "server.js"], prependShell: false });
    expect(one("CMD node server.js", "CMD")).toMatchObject({ args: ["node server.js"], prependShell: true });
    expect(one("ENTRYPOINT []", "ENTRYPOINT")).toMatchObject({ args: [], prependShell: false });
    expect(one('SHELL ["/bin/bash", "-o", "pipefail", "-c"]', "SHELL").shell).toEqual(["/bin/bash", "-o", "pipefail", "-c"]);
  });

  it("HEALTHCHECK: NONE, CMD forms, durations in nanoseconds", () => {
    expect(one("HEALTHCHECK NONE", "HEALTHCHECK").test).toEqual(["NONE"]);
    const h = one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=1.5s --start-interval=500ms --retries=3 CMD curl -f http://x/", "HEALTHCHECK");
    expect(h).toMatchObject({
      test: ["CMD-SHELL", "curl -f http://x/"],
      interval: 30e9,
      timeout: 90e9,
      startPeriod: 1.5e9,
      startInterval: 500e6,
      retries: 3,
    });
    expect(one('HEALTHCHECK CMD ["true"]', "HEALTHCHECK").test).toEqual(["CMD", "true"]);
  });

  it("ONBUILD keeps the trigger expression", () => {
    expect(one("ONBUILD RUN echo hi", "ONBUILD").expression).toBe("RUN echo hi");
    expect(one("onbuild  COPY . /app", "ONBUILD").expression).toBe("COPY . /app");
  });
});

describe("instruction errors carry their line", () => {
  const cases: [string, string, number, RegExp][] = [
    ["unknown instruction", "FROM a\nRUN x\nCOPPY a b\n", 3, /unknown instruction: COPPY \(did you mean copy\?\)/],
    ["unknown flag", "FROM a\nCOPY --form=b a b\n", 2, /unknown flag: form/],
    ["flag without value", "FROM a\nCOPY --from a b\n", 2, /missing a value on flag: from/],
    ["duplicate flag", "FROM a\nCOPY --chown=1 --chown=2 a b\n", 2, /duplicate flag specified: chown/],
    ["bad boolean", "FROM a\nCOPY --link=yes a b\n", 2, /expecting boolean value for flag link, not: yes/],
    ["COPY without destination", "FROM a\nCOPY onlyone\n", 2, /COPY requires at least two arguments/],
    ["heredoc as destination", "FROM a\nCOPY a <<EOF\nx\nEOF\n", 2, /cannot accept a heredoc as a destination/],
    ["ENV without value", "FROM a\n\nENV PATH\n", 3, /ENV must have two arguments/],
    ["ENV without arguments", "FROM a\nENV\n", 2, /ENV requires at least one argument/],
    ["blank ENV name", "FROM a\nENV =x\n", 2, /ENV names can not be blank/],
    ["blank ARG name", "FROM a\nARG =x\n", 2, /ARG names can not be blank/],
    ["FROM arity", "FROM a b\n", 1, /FROM requires either one or three arguments/],
    ["bad stage name", "FROM a AS 1st\n", 1, /invalid name for build stage: "1st"/],
    ["instruction before FROM", "RUN x\nFROM a\n", 1, /no build stage in current context/],
    ["no FROM at all", "ARG A=1\n", 1, /no build stage/],
    ["WORKDIR arity", "FROM a\nWORKDIR\n", 2, /WORKDIR requires exactly one argument/],
    ["USER arity", "FROM a\nUSER\n", 2, /USER requires exactly one argument/],
    ["EXPOSE arity", "FROM a\nEXPOSE\n", 2, /EXPOSE requires at least one argument/],
    ["VOLUME empty", 'FROM a\nVOLUME [""]\n', 2, /VOLUME specified can not be an empty string/],
    ["SHELL not JSON", "FROM a\nSHELL /bin/bash -c\n", 2, /SHELL requires the arguments to be in JSON form/],
    ["HEALTHCHECK NONE args", "FROM a\nHEALTHCHECK NONE x\n", 2, /HEALTHCHECK NONE takes no arguments/],
    ["HEALTHCHECK unknown type", "FROM a\nHEALTHCHECK PING x\n", 2, /Unknown type "PING" in HEALTHCHECK/],
    ["HEALTHCHECK empty CMD", "FROM a\nHEALTHCHECK CMD\n", 2, /Missing command after HEALTHCHECK CMD/],
    ["HEALTHCHECK short interval", "FROM a\nHEALTHCHECK --interval=10us CMD x\n", 2, /cannot be less than 1ms/],
    ["HEALTHCHECK bad duration", "FROM a\nHEALTHCHECK --timeout=5 CMD x\n", 2, /missing unit in duration/],
    ["HEALTHCHECK negative retries", "FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, /--retries cannot be negative/],
    ["ONBUILD ONBUILD", "FROM a\nONBUILD ONBUILD RUN x\n", 2, /Chaining ONBUILD/],
    ["ONBUILD FROM", "FROM a\nONBUILD FROM b\n", 2, /FROM isn't allowed as an ONBUILD trigger/],
    ["ONBUILD unknown", "FROM a\nONBUILD FOO x\n", 2, /unknown instruction: FOO/],
    ["RUN bad network", "FROM a\nRUN --network=bridge x\n", 2, /unsupported network mode "bridge"/],
    ["RUN bad security", "FROM a\nRUN --security=root x\n", 2, /security "root" is not valid/],
    ["multi-line instruction", "FROM a\nRUN --mount=type=cache \\\n  true\n", 2, /mount type cache requires a target/],
  ];
  for (const [name, text, line, message] of cases) {
    it(name, () => {
      const e = failure(text);
      expect(e.message).toMatch(message);
      expect(e.line).toBe(line);
    });
  }

  it("points the column at an unknown flag and an unknown instruction", () => {
    expect(failure("FROM a\nCOPY --link --form=b a b\n").column).toBe(13);
    expect(failure("FROM a\n  BOGUS x\n").column).toBe(3);
  });

  it("reports the whole range of a multi-line instruction", () => {
    const e = failure("FROM a\nCOPY \\\n  --bogus \\\n  a b\n");
    expect([e.line, e.endLine]).toEqual([2, 4]);
  });
});

describe("RUN --mount with variables", () => {
  it("defers values with variables to build time, and rejects variables in from", () => {
    const r = one("RUN --mount=type=$KIND,target=$DIR true", "RUN");
    expect(r.mountSpecs).toEqual(["type=$KIND,target=$DIR"]);
    expect(failure("FROM a\nRUN --mount=from=$STAGE,target=/x true").message).toBe("'from' doesn't support variable expansion, define alias stage instead");
  });
});

describe("checkLiteralValues (build-time errors found early)", () => {
  const check = (body: string) => {
    try {
      checkLiteralValues(insts(body)[0]);
    } catch (e) {
      return e as DockerfileError;
    }
    return undefined;
  };
  it("accepts valid signals and ports, and values with variables", () => {
    for (const ok of ["STOPSIGNAL SIGTERM", "STOPSIGNAL 9", "STOPSIGNAL rtmin+3", "STOPSIGNAL $SIG", "EXPOSE 80 443/tcp 7000-7010/udp 127.0.0.1:8080:80", "EXPOSE ${PORT}"]) {
      expect(check(ok)).toBeUndefined();
    }
  });
  it("rejects bad signals and port specs with the line", () => {
    expect(check("STOPSIGNAL SIGBOGUS")).toMatchObject({ message: "Invalid signal: SIGBOGUS", line: 2 });
    expect(check("STOPSIGNAL 0")?.message).toBe("Invalid signal: 0");
    expect(check("EXPOSE 80 http")?.message).toBe("invalid containerPort: http");
    expect(check("EXPOSE 80/tpc")?.message).toBe("invalid proto: tpc");
    expect(check("EXPOSE 70000")?.message).toContain("invalid range");
  });
});

describe("BuildKit's instructions/parse_test cases", () => {
  it("exactly-one-argument, at-least-one-argument and destination errors", () => {
    for (const cmd of ["MAINTAINER", "WORKDIR", "USER", "STOPSIGNAL"]) expect(failure(`FROM a\n${cmd}\n`).message).toBe(`${cmd} requires exactly one argument`);
    for (const cmd of ["ENV", "LABEL", "ONBUILD", "HEALTHCHECK", "EXPOSE", "VOLUME"]) expect(failure(`FROM a\n${cmd}\n`).message).toBe(`${cmd} requires at least one argument`);
    for (const cmd of ["ADD", "COPY"]) {
      expect(failure(`FROM a\n${cmd} arg1\n`).message).toBe(`${cmd} requires at least two arguments, but only one was provided. Destination could not be determined`);
    }
  });

  it("HEALTHCHECK CMD shell form", () => {
    expect(one("HEALTHCHECK CMD hello world", "HEALTHCHECK").test).toEqual(["CMD-SHELL", "hello world"]);
    expect(failure("FROM a\nHEALTHCHECK --interval=50ns CMD x\n").message).toContain("cannot be less than 1ms");
    expect(one("HEALTHCHECK --interval=1ms CMD x", "HEALTHCHECK").interval).toBe(1e6);
  });

  it("doc comments of stages and args", () => {
    const p = parseDockerfile("# foo sets foo\nARG foo=bar\n\n# base defines first stage\nFROM busybox AS base\n# this is irrelevant\nARG foo\n# bar defines bar\n# baz is something else\nARG bar baz=123\n");
    expect(p.stages[0].comment).toBe("defines first stage");
    expect(p.globalArgs[0].args[0]).toEqual({ key: "foo", value: "bar", comment: "sets foo" });
    const [a1, a2] = p.stages[0].instructions;
    expect(a1.kind === "ARG" && a1.args).toEqual([{ key: "foo" }]);
    expect(a2.kind === "ARG" && a2.args).toEqual([
      { key: "bar", comment: "defines bar" },
      { key: "baz", value: "123", comment: "is something else" },
    ]);
  });

  it("error cases", () => {
    expect(failure("FROM a\nCOPY\t\n\t\tquux \\\n      bar").message).toContain("COPY requires at least two arguments");
    expect(failure("FROM a\nMAINTAINER --boo joe@example.com\n").message).toContain("unknown flag: boo");
    expect(failure("FROM a\nFOO bar\n").message).toContain("unknown instruction: FOO");
    expect(failure("FROM a\nfoo bar\n").message).toContain("unknown instruction: foo");
  });
});
