import { describe, expect, it } from "vitest";
import { dumpBuildkit } from "./dump";
import { DockerfileError } from "./errors";
import { parse } from "./parser";

// BuildKit's own parser test data (../shared/conformance/buildkit), inlined at transform time.
const positive = import.meta.glob("../../../shared/conformance/buildkit/parser-testfiles/*/*", {
  query: "?raw",
  import: "default",
  eager: true,
}) as Record<string, string>;
const negative = import.meta.glob("../../../shared/conformance/buildkit/parser-testfiles-negative/*/Dockerfile", {
  query: "?raw",
  import: "default",
  eager: true,
}) as Record<string, string>;

function cases(files: Record<string, string>): Map<string, Record<string, string>> {
  const byCase = new Map<string, Record<string, string>>();
  for (const [path, text] of Object.entries(files)) {
    const parts = path.split("/");
    const name = parts[parts.length - 2];
    const file = parts[parts.length - 1];
    byCase.set(name, { ...byCase.get(name), [file]: text });
  }
  return byCase;
}

const positiveCases = cases(positive);
const negativeCases = cases(negative);

describe("BuildKit parser testfiles", () => {
  it("finds all 33 cases", () => {
    expect(positiveCases.size).toBe(33);
  });
  for (const [name, files] of positiveCases) {
    it(`parses ${name} exactly as BuildKit`, () => {
      const { ast } = parse(files.Dockerfile);
      expect(dumpBuildkit(ast)).toBe(files.result);
    });
  }
});

describe("BuildKit negative parser testfiles", () => {
  it("finds all 4 cases", () => {
    expect(negativeCases.size).toBe(4);
  });
  const expected: Record<string, { message: RegExp; line: number }> = {
    empty_dockerfile: { message: /no instructions/, line: 1 },
    only_comments: { message: /no instructions/, line: 3 },
    env_no_value: { message: /ENV must have two arguments/, line: 3 },
    "shykes-nested-json": { message: /arrays must be comprised of strings only/, line: 1 },
  };
  for (const [name, files] of negativeCases) {
    it(`rejects ${name} with a located error`, () => {
      let err: unknown;
      try {
        parse(files.Dockerfile);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(DockerfileError);
      const de = err as DockerfileError;
      expect(de.message).toMatch(expected[name].message);
      expect(de.line).toBe(expected[name].line);
    });
  }
});
