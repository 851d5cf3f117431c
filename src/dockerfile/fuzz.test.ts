/// <reference types="vite/client" />
// Property tests: random and mutated Dockerfiles (seeded, reproducible) go through the whole pure
// frontend — parse, dumpBuildkit, parseDockerfile, resolveStageBases, stageDependencies,
// expandInstruction — and ShellLex. Nothing may throw anything but a located DockerfileError
// (numeric line inside the file) or a ShellError, and every case must finish quickly.
import { describe, expect, it } from "vitest";
import {
  DockerfileError,
  dumpBuildkit,
  expandInstruction,
  parse,
  parseDockerfile,
  resolveStageBases,
  stageDependencies,
} from "./index";
import { ShellError, ShellLex } from "./shell";
import { rng } from "./testing";

const SEED = 0x6b696c6e; // "kiln"
/** Wall-clock budget of one case (generous: the machine is shared). */
// Catches pathological (exponential) cases, not speed: the machine may be loaded.
const CASE_BUDGET_MS = 15_000;

const files = import.meta.glob("../../../shared/conformance/buildkit/parser-testfiles*/*/Dockerfile", {
  query: "?raw",
  import: "default",
  eager: true,
}) as Record<string, string>;
const corpus = Object.entries(files)
  .sort(([a], [b]) => (a < b ? -1 : 1))
  .map(([, text]) => text);

type Rand = () => number;
const int = (r: Rand, n: number) => Math.floor(r() * n);
const pick = <T,>(r: Rand, a: readonly T[]): T => a[int(r, a.length)];

const TOKENS = [
  "\\", "\\\n", "`", "`\n", '"', "'", "<<EOF\n", "<<-EOF\n", "<<'EOF'\n", '<<"EOT" ', "EOF\n", "\tEOF\n", "${", "}", "$", "$$",
  "${A:-", "${A#", "${A%%*", "${A//x/", "[", "]", '["', '"]', ",", "\n", "\r\n", "\r", "#", "# escape=`\n", "# escape=\\\n",
  "# syntax=docker/dockerfile:1\n", "--", "--from=", "--mount=type=cache,target=", "--chmod=", "=", " ", "\t", "\u0000", "\uFEFF",
  "FROM ", "RUN ", "ONBUILD ", "ENV ", "ARG ", "COPY ", "HEALTHCHECK ", "SHELL ", "LABEL ", "EXPOSE ", "AS ", "{", "\\\\", "*", "?",
  "한국어", "🚀", "\u2028", "\\$", "\\'", '\\"',
];

function mutate(r: Rand, text: string): string {
  let s = text;
  const n = 1 + int(r, 4);
  for (let k = 0; k < n; k++) {
    const pos = int(r, s.length + 1);
    switch (int(r, 8)) {
      case 0: // character flip
        if (s.length) s = s.slice(0, pos) + String.fromCharCode(int(r, 128)) + s.slice(pos + 1);
        break;
      case 1: // truncation
        s = s.slice(0, pos);
        break;
      case 2:
      case 3:
      case 4: // insert an interesting token
        s = s.slice(0, pos) + pick(r, TOKENS) + s.slice(pos);
        break;
      case 5: // delete a range
        s = s.slice(0, pos) + s.slice(pos + int(r, 20));
        break;
      case 6: { // duplicate or swap lines
        const lines = s.split("\n");
        const i = int(r, lines.length);
        const j = int(r, lines.length);
        if (r() < 0.5) lines.splice(i, 0, lines[j]);
        else [lines[i], lines[j]] = [lines[j], lines[i]];
        s = lines.join("\n");
        break;
      }
      case 7: // any UTF-16 unit, including lone surrogates
        s = s.slice(0, pos) + String.fromCharCode(int(r, 0x10000)) + s.slice(pos);
        break;
    }
  }
  return s;
}

const WORDS = ["alpine", "${BASE}", "$V", "${V:-x}", "a b", '"q w"', "'s'", "/app", ".", "x=y", 'k="v v"', "\\\n  more", "${A/b/c}", "${A#a}", "${A%%c*}", "${A:?must}", "$EMPTY", "*", "한국어"];
const FLAGS: Record<string, string[]> = {
  FROM: ["--platform=$BUILDPLATFORM"],
  RUN: ["--mount=type=cache,target=/root/.cache", "--mount=type=bind,from=stage0,target=/x", "--mount=type=secret,id=s", "--network=none", "--security=sandbox"],
  COPY: ["--from=stage0", "--from=0", "--from=${S:-stage0}", "--chown=1:1", "--chmod=755", "--link", "--parents", "--exclude=*.md"],
  ADD: ["--chown=app", "--chmod=0644", "--link", "--checksum=sha256:" + "0".repeat(64), "--keep-git-dir=true"],
  HEALTHCHECK: ["--interval=5s", "--timeout=1m", "--start-period=2s", "--start-interval=1s", "--retries=3"],
};
const BAD_FLAGS = ["--bogus", "--from", "--chmod", "--interval=abc", "-x", "--mount=type=nope"];
const INSTS = ["RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"];

function randomArgs(r: Rand, inst: string): string[] {
  const w = () => pick(r, WORDS);
  switch (inst) {
    case "ENV":
    case "LABEL":
      return Array.from({ length: 1 + int(r, 3) }, (_, i) => `K${i}=${pick(r, ["v", '"a b"', "$V", "${A:-d}", "''"])}`);
    case "ARG":
      return [pick(r, ["V", "S=stage0", "A=abc", "X=${V}", "BASE"])];
    case "EXPOSE":
      return [pick(r, ["80", "443/tcp", "${PORT:-8080}", "53/udp 54"])];
    case "SHELL":
      return ['["/bin/bash", "-c"]'];
    case "CMD":
    case "ENTRYPOINT":
      return r() < 0.5 ? ['["/bin/sh", "-c", "echo $V"]'] : [w(), w()];
    case "HEALTHCHECK":
      return r() < 0.2 ? ["NONE"] : ["CMD", w()];
    case "ONBUILD":
      return ["RUN", w()];
    case "COPY":
    case "ADD":
      return [w(), pick(r, ["/dst/", "/app", "${V:-/x}"])];
    case "USER":
    case "WORKDIR":
    case "STOPSIGNAL":
      return [w()];
    default:
      return Array.from({ length: 1 + int(r, 4) }, w);
  }
}

function randomDockerfile(r: Rand): string {
  const lines: string[] = [];
  if (r() < 0.3) lines.push(pick(r, ["# syntax=docker/dockerfile:1", "# escape=`", "# check=skip=all", "# escape=\\"]));
  if (r() < 0.5) lines.push(`ARG BASE=${pick(r, ["alpine", "${X:-debian}", ""])}`);
  const n = 1 + int(r, 25);
  let stages = 0;
  for (let i = 0; i < n; i++) {
    const inst = i === 0 || r() < 0.12 ? "FROM" : r() < 0.005 ? "BOGUS" : pick(r, INSTS);
    const parts: string[] = [r() < 0.1 ? inst.toLowerCase() : inst];
    const flags = FLAGS[inst] ?? [];
    const nf = flags.length ? int(r, 3) : 0;
    const shuffled = [...flags].sort(() => r() - 0.5);
    parts.push(...shuffled.slice(0, nf));
    if (r() < 0.005) parts.push(pick(r, BAD_FLAGS));
    if (inst === "FROM") {
      parts.push(pick(r, ["alpine", "${BASE:-alpine}", "scratch", `stage${int(r, stages + 1)}`, "busybox:${TAG:-1}", "$EMPTY"]));
      if (r() < 0.6) parts.push("AS", `stage${stages}`);
      stages++;
    } else {
      parts.push(...randomArgs(r, inst));
    }
    let line = parts.join(" ");
    if ((inst === "RUN" || inst === "COPY") && r() < 0.2) line += " <<EOF\nbody $V\nEOF";
    if (r() < 0.1) line = line.replace(" ", " \\\n   # comment\n  ");
    lines.push(line);
    if (r() < 0.1) lines.push(r() < 0.5 ? "" : "# a comment");
  }
  let text = lines.join(r() < 0.1 ? "\r\n" : "\n");
  if (r() < 0.5) text += "\n";
  return r() < 0.2 ? mutate(r, text) : text;
}

function lineCount(text: string): number {
  return text.split(/\r\n|\r|\n/).length;
}

type Reached = "parse-error" | "parsed" | "typed" | "expanded";

/** Runs the whole frontend on `text`; throws (test failure) on anything not allowed. */
function exercise(text: string): Reached {
  const ok = (e: unknown, where: string) => {
    if (e instanceof DockerfileError) {
      if (typeof e.line !== "number" || !Number.isInteger(e.line) || e.line < 1 || e.line > lineCount(text) + 1) {
        throw new Error(`${where}: DockerfileError with a bad line ${String(e.line)} (${lineCount(text)} lines): ${e.message}`);
      }
      return;
    }
    if (e instanceof ShellError) throw new Error(`${where}: unlocated ShellError escaped: ${e.message}`);
    throw new Error(`${where}: unexpected ${(e as Error)?.name ?? typeof e}: ${(e as Error)?.stack ?? String(e)}`);
  };

  let ast;
  try {
    ast = parse(text).ast;
  } catch (e) {
    ok(e, "parse");
    return "parse-error";
  }
  try {
    dumpBuildkit(ast);
  } catch (e) {
    throw new Error(`dumpBuildkit threw: ${(e as Error)?.stack ?? e}`);
  }

  // every argument through ShellLex: only ShellError may come out
  const lex = new ShellLex(ast.escapeToken);
  const env = new Map([["V", "v a l"], ["A", "abcabc"], ["EMPTY", ""], ["BASE", "alpine"]]);
  for (const node of ast.children) {
    for (const w of [...node.args, ...node.flags]) {
      try {
        lex.processWord(w, env);
        lex.processWords(w, env);
      } catch (e) {
        if (!(e instanceof ShellError)) throw new Error(`ShellLex threw ${(e as Error)?.stack ?? e} on ${show(w)}`);
      }
    }
  }

  let parsed;
  try {
    parsed = parseDockerfile(text);
  } catch (e) {
    ok(e, "parseDockerfile");
    return "parsed";
  }
  let resolved;
  try {
    resolved = resolveStageBases(parsed, { TAG: "1" });
    stageDependencies(parsed, resolved);
  } catch (e) {
    ok(e, "resolveStageBases/stageDependencies");
    return "typed";
  }
  const shell = new ShellLex(parsed.escapeToken);
  for (const stage of parsed.stages) {
    for (const inst of stage.instructions) {
      try {
        expandInstruction(inst, env, shell);
      } catch (e) {
        ok(e, `expandInstruction(${inst.kind})`);
      }
    }
  }
  return "expanded";
}

const tally = () => ({ "parse-error": 0, parsed: 0, typed: 0, expanded: 0 }) as Record<Reached, number>;

const show = (s: string) => (s.length > 600 ? JSON.stringify(s.slice(0, 600)) + ` … (${s.length} chars)` : JSON.stringify(s));
const clip = (s: string) => (s.length > 1500 ? s.slice(0, 1500) + " …" : s);

function runCase(label: string, text: string, counts?: Record<Reached, number>): number {
  const t0 = Date.now();
  try {
    const reached = exercise(text);
    if (counts) counts[reached]++;
  } catch (e) {
    throw new Error(`${label}: ${clip((e as Error).message)}\ninput: ${show(text)}`);
  }
  const ms = Date.now() - t0;
  if (ms > CASE_BUDGET_MS) throw new Error(`${label}: took ${ms} ms (budget ${CASE_BUDGET_MS} ms)\ninput: ${show(text)}`);
  return ms;
}

describe("fuzz: the Dockerfile frontend never throws anything but a located error", () => {
  it("reads the BuildKit conformance Dockerfiles", () => {
    expect(corpus.length).toBeGreaterThanOrEqual(37);
  });

  it("the conformance Dockerfiles themselves", () => {
    corpus.forEach((text, i) => runCase(`corpus #${i}`, text));
  });

  it("2,000 mutations of the conformance Dockerfiles (byte flips, truncation, inserted \\ quotes heredocs ${)", () => {
    const r = rng(SEED);
    let slowest = 0;
    const counts = tally();
    for (let i = 0; i < 2000; i++) {
      const base = corpus[i % corpus.length];
      slowest = Math.max(slowest, runCase(`mutation #${i} (seed ${SEED})`, mutate(r, base), counts));
    }
    expect(slowest).toBeLessThan(CASE_BUDGET_MS);
    // the mutations must exercise both the error paths and the full pipeline
    expect(counts["parse-error"]).toBeGreaterThan(50);
    expect(counts.expanded).toBeGreaterThan(300);
  });

  it("1,500 random Dockerfiles from a grammar of instructions, flags and words", () => {
    const r = rng(SEED + 1);
    const counts = tally();
    for (let i = 0; i < 1500; i++) runCase(`random #${i} (seed ${SEED + 1})`, randomDockerfile(r), counts);
    expect(counts["parse-error"] + counts.parsed + counts.typed).toBeGreaterThan(100);
    expect(counts.expanded).toBeGreaterThan(500);
  });

  it("pathological shapes stay fast: long continuations, many heredocs, deep nesting, huge lines", () => {
    const cases = [
      "FROM a\nRUN " + "x \\\n".repeat(20000) + "y\n",
      "FROM a\n" + "RUN <<A <<B <<C\na\nA\nb\nB\nc\nC\n".repeat(2000),
      "FROM a\nRUN <<EOF\n" + "line\n".repeat(50000), // unterminated heredoc
      "FROM a\nENV X=" + "${A:-".repeat(5000) + "}".repeat(5000) + "\n",
      "FROM a\nLABEL " + 'k="v" '.repeat(20000) + "\n",
      "FROM a\nCMD [" + '"x",'.repeat(20000) + '"y"]\n',
      "FROM a\nCMD [" + '"x",'.repeat(20000) + "\n", // invalid JSON → shell form
      "# escape=`\nFROM a\nRUN " + "x `\n".repeat(20000) + "y\n",
      "FROM a\n" + "\\\n".repeat(20000),
      "#".repeat(100000),
      "\n".repeat(100000) + "FROM a\n",
      "FROM a\nCOPY " + "--from=x ".repeat(5000) + "a b\n",
    ];
    cases.forEach((text, i) => runCase(`pathological #${i}`, text));
  });
});

describe("fuzz: ShellLex alone", () => {
  it("5,000 random words: only ShellError, bounded time", () => {
    const r = rng(SEED + 2);
    const alphabet = ["$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "\\", "'", '"', "`", "a", "B", "_", "1", " ", "\n", "*", "=", "é", "🚀", "\uFEFF", "\uD800"];
    const env = new Map([["a", "x*y"], ["B", ""], ["_1", "/p/q/"], ["a1", "a\nb"]]);
    for (const esc of ["\\", "`"]) {
      const lex = new ShellLex(esc);
      for (let i = 0; i < 2500; i++) {
        const len = int(r, 40);
        let w = "";
        for (let k = 0; k < len; k++) w += pick(r, alphabet);
        const t0 = Date.now();
        for (const f of [() => lex.processWord(w, env), () => lex.processWords(w, env), () => lex.processWordWithMatches(w, env)]) {
          try {
            const out = f();
            expect(out).toBeDefined();
          } catch (e) {
            if (!(e instanceof ShellError)) throw new Error(`word ${JSON.stringify(w)} (escape ${esc}): ${(e as Error)?.stack ?? e}`);
            expect(e.message.startsWith("failed to process ")).toBe(true);
          }
        }
        expect(Date.now() - t0).toBeLessThan(CASE_BUDGET_MS);
      }
    }
  });

  it("expansion results are deterministic and words never contain unquoted-space splits", () => {
    const r = rng(SEED + 3);
    const lex = new ShellLex();
    const env = new Map([["S", " a  b "], ["T", "t"]]);
    for (let i = 0; i < 1000; i++) {
      const parts = Array.from({ length: 1 + int(r, 6) }, () => pick(r, ["$S", "$T", "x", " ", "${S:+y}", "${U:-u v}", "z"]));
      const w = parts.join("");
      const words = lex.processWords(w, env);
      expect(lex.processWords(w, env)).toEqual(words);
      for (const word of words) expect(word).not.toMatch(/\s/);
    }
  });
});
