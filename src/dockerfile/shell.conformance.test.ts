/// <reference types="vite/client" />
// BuildKit's own shell expansion data (../shared/conformance/buildkit): every A/U line of
// shell-envVarTest and every line of shell-wordsTest.
import { describe, expect, it } from "vitest";
import { buildEnvs, ShellError, ShellLex } from "./shell";

const files = import.meta.glob("../../../shared/conformance/buildkit/shell-*", {
  query: "?raw",
  import: "default",
  eager: true,
}) as Record<string, string>;

function data(name: string): string {
  const key = Object.keys(files).find((k) => k.endsWith("/" + name));
  if (!key) throw new Error(`conformance file ${name} not found (have: ${Object.keys(files).join(", ")})`);
  return files[key];
}

// Go's strings.TrimSpace
const trim = (s: string) => s.replace(/^[\t\n\v\f\r \u0085\u00a0]+|[\t\n\v\f\r \u0085\u00a0]+$/g, "");

describe("shell-envVarTest (BuildKit)", () => {
  const env = buildEnvs(["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="]);
  const cases: { line: number; platform: string; source: string; expected: string }[] = [];
  data("shell-envVarTest")
    .split("\n")
    .forEach((raw, i) => {
      if (raw.startsWith("#")) return;
      const line = trim(raw);
      if (line === "") return;
      const parts = line.split("|");
      expect(parts.length, `line ${i + 1}`).toBe(3);
      cases.push({ line: i + 1, platform: trim(parts[0]), source: trim(parts[1]), expected: trim(parts[2]) });
    });

  it("has the expected number of cases", () => {
    expect(cases.filter((c) => c.platform !== "W").length).toBeGreaterThan(200);
  });

  for (const c of cases) {
    if (c.platform === "W") continue;
    it(`line ${c.line}: ${c.source} → ${c.expected}`, () => {
      const lex = new ShellLex("\\");
      if (c.expected === "error") {
        expect(() => lex.processWord(c.source, env)).toThrow(ShellError);
      } else {
        expect(lex.processWord(c.source, env)).toBe(c.expected);
        // the same through the "K=V" list form
        expect(lex.processWord(c.source, ["PWD=/home", "SHELL=bash", "KOREAN=한국어", "NULL="])).toBe(c.expected);
      }
    });
  }
});

describe("shell-wordsTest (BuildKit)", () => {
  const cases: { line: number; input: string; expected: string[]; env: string[] }[] = [];
  const env: string[] = [];
  data("shell-wordsTest")
    .split("\n")
    .forEach((line, i) => {
      if (line.startsWith("#")) return;
      if (line.startsWith("ENV ")) {
        env.push(line.slice(3).replace(/^ +/, ""));
        return;
      }
      if (line === "") return; // bufio.Scanner yields no token after the final newline
      const parts = line.split("|");
      expect(parts.length, `line ${i + 1}`).toBe(2);
      cases.push({ line: i + 1, input: trim(parts[0]), expected: parts[1].replace(/^ +/, "").split(","), env: [...env] });
    });

  it("has the expected number of cases", () => {
    expect(cases.length).toBeGreaterThan(20);
  });

  for (const c of cases) {
    it(`line ${c.line}: ${c.input} → ${c.expected.join(",")}`, () => {
      const lex = new ShellLex("\\");
      let result: string[];
      try {
        result = lex.processWords(c.input, c.env);
      } catch (e) {
        expect(e).toBeInstanceOf(ShellError);
        result = ["error"];
      }
      expect(result).toEqual(c.expected);
      let viaMap: string[];
      try {
        viaMap = lex.processWords(c.input, buildEnvs(c.env));
      } catch {
        viaMap = ["error"];
      }
      expect(viaMap).toEqual(c.expected);
    });
  }
});
