// Unit tests of ShellLex edge cases, taken from BuildKit's shell/lex_test.go, plus a property test
// of the glob matcher against JavaScript regular expressions built the way BuildKit builds its Go
// regular expressions.
import { describe, expect, it } from "vitest";
import { buildEnvs, goQuote, ShellError, ShellLex } from "./shell";
import { rng } from "./testing";

const env = (o: Record<string, string>) => new Map(Object.entries(o));

describe("ShellLex: BuildKit TestProcessWithMatches", () => {
  type Case = { input: string; envs: Record<string, string>; expected?: string; err?: true; matches?: string[]; unmatched?: string[] };
  const cases: Case[] = [
    { input: "x", envs: { DUMMY: "dummy" }, expected: "x" },
    { input: "x ${UNUSED}", envs: { DUMMY: "dummy" }, expected: "x ", unmatched: ["UNUSED"] },
    { input: "x ${FOO}", envs: { FOO: "y" }, expected: "x y", matches: ["FOO"] },
    { input: "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", envs: { FOO: "xxx", BAR: "" }, expected: "xxx  ccc", matches: ["FOO", "BAR"], unmatched: ["BAZ"] },
    { input: "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", envs: { FOO: "xxx", BAR: "" }, expected: "xxx bbb ccc", matches: ["FOO", "BAR"], unmatched: ["BAZ"] },
    { input: "${FOO:-}", envs: { FOO: "xxx", BAR: "" }, expected: "xxx", matches: ["FOO"] },
    { input: "${FOO:-}", envs: {}, expected: "", unmatched: ["FOO"] },
    { input: "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", envs: { FOO: "xxx", BAR: "" }, expected: "aaa bbb ", matches: ["FOO", "BAR"], unmatched: ["BAZ"] },
    { input: "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", envs: { FOO: "xxx", BAR: "" }, expected: "aaa  ", matches: ["FOO", "BAR"], unmatched: ["BAZ"] },
    { input: "${FOO?aaa}", envs: { FOO: "xxx", BAR: "" }, expected: "xxx", matches: ["FOO"] },
    { input: "${BAR?bbb}", envs: { FOO: "xxx", BAR: "" }, expected: "", matches: ["BAR"] },
    { input: "${BAZ?ccc}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${FOO:?aaa}", envs: { FOO: "xxx", BAR: "" }, expected: "xxx", matches: ["FOO"] },
    { input: "${BAR:?bbb}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${BAZ:?ccc}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${BAZ:?}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${FOO=aaa}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${FOO=:aaa}", envs: { FOO: "xxx", BAR: "" }, err: true },
    { input: "${FOO=}", envs: {}, err: true },
    { input: "${FOO#()[]{\\}^$.\\*\\?|\\\\}", envs: { FOO: "()[]{}^$.*?|\\x" }, expected: "x", matches: ["FOO"] },
    { input: "${FOO%%\\**}", envs: { FOO: "xx**" }, expected: "xx", matches: ["FOO"] },
    { input: "${FOO#*x*y}", envs: { FOO: "xxyy" }, expected: "y", matches: ["FOO"] },
    { input: "${FOO#*}", envs: { FOO: "xxyy" }, expected: "xxyy", matches: ["FOO"] },
    { input: "${FOO#$BAR}", envs: { FOO: "xxyy", BAR: "x" }, expected: "xyy", matches: ["FOO", "BAR"] },
    { input: "${FOO#$BAR}", envs: { FOO: "xxyy", BAR: "" }, expected: "xxyy", matches: ["FOO", "BAR"] },
    { input: "${FOO#}", envs: { FOO: "xxyy" }, expected: "xxyy", matches: ["FOO"] },
    { input: "${FOO##*x}", envs: { FOO: "xxyy" }, expected: "yy", matches: ["FOO"] },
    { input: "${FOO##}", envs: { FOO: "xxyy" }, expected: "xxyy", matches: ["FOO"] },
    { input: "${FOO#?\\?}", envs: { FOO: "???y" }, expected: "?y", matches: ["FOO"] },
    { input: "${ABC:-.}${FOO%x}${ABC:-.}", envs: { FOO: "xxyy" }, expected: ".xxyy.", matches: ["FOO"], unmatched: ["ABC"] },
    { input: "${FOO%%\\**\\*}", envs: { FOO: "a***yy*" }, expected: "a", matches: ["FOO"] },
    { input: "${FOO%}", envs: { FOO: "xxyy" }, expected: "xxyy", matches: ["FOO"] },
    { input: "${FOO%%$BAR}", envs: { FOO: "xxyy", BAR: "" }, expected: "xxyy", matches: ["FOO", "BAR"] },
    { input: "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}", envs: { FOO: "/foo*/*/*.txt", NEEDLE: "\\*/" }, expected: "/foo.*/*.txt - /foo..*.txt", matches: ["FOO", "NEEDLE"] },
    { input: "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}", envs: { FOO: "/tmp/tmp/bar.txt", NEEDLE: "/tmp" }, expected: "/tmp/bar.txt - /bar.txt", matches: ["FOO", "NEEDLE"] },
    { input: "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}", envs: { FOO: "/a/foo/b/c.txt", NEEDLE: "/?/", REPLACEMENT: "/" }, expected: "/foo/b/c.txt - /foo/c.txt", matches: ["FOO", "NEEDLE", "REPLACEMENT"] },
    { input: "${FOO/$NEEDLE/$REPLACEMENT}", envs: { FOO: "http://google.de", NEEDLE: "http://", REPLACEMENT: "https://" }, expected: "https://google.de", matches: ["FOO", "NEEDLE", "REPLACEMENT"] },
    { input: "${FOO//\\//\\/}", envs: { FOO: "/tmp/foo.txt" }, expected: "\\/tmp\\/foo.txt", matches: ["FOO"] },
    { input: "${FOO/$BAR/ww}", envs: { FOO: "xxyy", BAR: "" }, expected: "wwxxyy", matches: ["FOO", "BAR"] },
    { input: "${FOO//ww}", envs: { FOO: "xxyy" }, err: true },
    { input: "${FOO//}", envs: { FOO: "xxyy" }, err: true },
    { input: "${FOO///}", envs: { FOO: "xxyy" }, expected: "xxyy", matches: ["FOO"] },
    { input: "${FOO///}", envs: {}, expected: "", unmatched: ["FOO"] },
  ];
  const lex = new ShellLex("\\");
  for (const c of cases) {
    it(c.input + (c.err ? " → error" : ` → ${JSON.stringify(c.expected)}`), () => {
      if (c.err) {
        expect(() => lex.processWordWithMatches(c.input, env(c.envs))).toThrow(ShellError);
        return;
      }
      const r = lex.processWordWithMatches(c.input, env(c.envs));
      expect(r.result).toBe(c.expected);
      expect([...r.matched].sort()).toEqual([...(c.matches ?? [])].sort());
      expect([...r.unmatched].sort()).toEqual([...(c.unmatched ?? [])].sort());
    });
  }

  it("platform-style release names", () => {
    const r = lex.processWordWithMatches(
      "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
      env({ VERSION: "v1.2.3", TARGETOS: "linux", TARGETARCH: "arm", TARGETVARIANT: "v7" }),
    );
    expect(r.result).toBe("something-v1.2.3.linux-arm-v7.tar.gz");
    const r2 = lex.processWordWithMatches(
      "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
      env({ VERSION: "v1.2.3", TARGETOS: "linux", TARGETARCH: "amd64" }),
    );
    expect(r2.result).toBe("something-v1.2.3.linux-amd64.tar.gz");
    expect(r2.unmatched).toEqual(new Set(["TARGETVARIANT"]));
  });
});

describe("ShellLex: mandatory variables and error messages", () => {
  const lex = new ShellLex();
  it("${VAR:?msg} / ${VAR?msg} (BuildKit TestShellParserMandatoryEnvVars)", () => {
    const noEmpty = "${VAR:?message here$ARG}";
    const noUnset = "${VAR?message here$ARG}";
    expect(lex.processWord(noEmpty, ["VAR=plain", "ARG=x"])).toBe("plain");
    expect(() => lex.processWord(noEmpty, ["VAR=", "ARG=x"])).toThrow("message herex");
    expect(() => lex.processWord(noEmpty, ["ARG=x"])).toThrow("message herex");
    expect(lex.processWord(noUnset, ["VAR=plain", "ARG=x"])).toBe("plain");
    expect(lex.processWord(noUnset, ["VAR=", "ARG=x"])).toBe("");
    expect(() => lex.processWord(noUnset, ["ARG=x"])).toThrow("message herex");
  });

  it("messages are BuildKit's, wrapped with the word", () => {
    const msg = (w: string) => {
      try {
        lex.processWord(w, env({ NULL: "" }));
      } catch (e) {
        expect(e).toBeInstanceOf(ShellError);
        return (e as ShellError).message;
      }
      throw new Error("no error");
    };
    expect(msg("${X:?}")).toBe('failed to process "${X:?}": X: is not allowed to be unset');
    expect(msg("${NULL:?}")).toBe('failed to process "${NULL:?}": NULL: is not allowed to be empty');
    expect(msg("${X:?custom message}")).toBe('failed to process "${X:?custom message}": X: custom message');
    expect(msg("'abc")).toBe(`failed to process "'abc": unexpected end of statement while looking for matching single-quote`);
    expect(msg('"abc')).toBe('failed to process "\\"abc": unexpected end of statement while looking for matching double-quote');
    expect(msg("${}")).toBe('failed to process "${}": syntax error: bad substitution');
    expect(msg("${")).toBe(`failed to process "\${": syntax error: missing '}'`);
    expect(msg("${X:-abc")).toBe(`failed to process "\${X:-abc": syntax error: missing '}'`);
    expect(msg("${X:=y}")).toBe('failed to process "${X:=y}": unsupported modifier (:=) in substitution');
    expect(msg("${X/abc")).toBe(`failed to process "\${X/abc": syntax error: missing '/' in \${}`);
    expect(msg("${X#\\x}")).toBe(`failed to process "\${X#\\\\x}": invalid pattern (\\x) in substitution: invalid escape '\\x'`);
    expect(msg("a\tb${")).toBe(`failed to process "a\\tb\${": syntax error: missing '}'`);
  });

  it("goQuote follows strconv.Quote", () => {
    expect(goQuote('a"b\\c\n\t\x01é한')).toBe('"a\\"b\\\\c\\n\\t\\x01é한"');
  });
});

describe("ShellLex: quoting, escapes and words", () => {
  it("a backtick escape token (# escape=`)", () => {
    const lex = new ShellLex("`");
    const e = env({ P: "C:\\dir" });
    expect(lex.processWord("c:\\windows\\$P", e)).toBe("c:\\windows\\C:\\dir");
    expect(lex.processWord("a`$P", e)).toBe("a$P");
    expect(lex.processWord('"x`"y"', e)).toBe('x"y');
    expect(lex.processWords("a` b c", e)).toEqual(["a b", "c"]);
  });

  it("words: quoted empty strings are not words, expanded whitespace splits", () => {
    const lex = new ShellLex();
    const e = env({ S: " a  b ", E: "" });
    expect(lex.processWords('"" x ""', e)).toEqual(["x"]);
    expect(lex.processWords("$S", e)).toEqual(["a", "b"]);
    expect(lex.processWords('"$S"', e)).toEqual([" a  b "]);
    expect(lex.processWords("x${E}y z", e)).toEqual(["xy", "z"]);
    expect(lex.processWord("x${E}y z", e)).toBe("xy z");
  });

  it("a leading byte-order mark is skipped like Go's text/scanner does", () => {
    expect(new ShellLex().processWord("\uFEFFabc", new Map())).toBe("abc");
    expect(new ShellLex().processWord("a\uFEFFbc", new Map())).toBe("a\uFEFFbc");
  });

  it("non-ASCII names and values", () => {
    const lex = new ShellLex();
    expect(lex.processWord("${이름:-기본}/$이름", env({}))).toBe("기본/");
    expect(lex.processWord("$KOREAN🚀", env({ KOREAN: "한국어" }))).toBe("한국어🚀");
    expect(lex.processWord("${V%🚀*}", env({ V: "a🚀b🚀c" }))).toBe("a🚀b");
    expect(lex.processWord("${V%%🚀*}", env({ V: "a🚀b🚀c" }))).toBe("a");
  });

  it("options: skipUnsetEnv keeps unset references, rawQuotes keeps quotes, skipProcessQuotes ignores them", () => {
    const lex = new ShellLex();
    lex.skipUnsetEnv = true;
    expect(lex.processWord("$A ${B} ${C:-x} ${D/a/b} $S", env({ S: "set" }))).toBe("$A ${B} ${C:-x} ${D/a/b} set");
    const raw = new ShellLex();
    raw.rawQuotes = true;
    expect(raw.processWord(`'a'"b"`, env({}))).toBe(`'a'"b"`);
    const noq = new ShellLex();
    noq.skipProcessQuotes = true;
    expect(noq.processWord(`it's "$X"`, env({ X: "1" }))).toBe(`it's "1"`);
    const re = new ShellLex();
    re.rawEscapes = true;
    expect(re.processWord("a\\ b\\$X", env({ X: "1" }))).toBe("a\\ b\\$X");
  });

  it("a lexer is reusable after an error", () => {
    const lex = new ShellLex();
    expect(() => lex.processWord("'x", env({}))).toThrow(ShellError);
    expect(lex.processWord("$X", env({ X: "ok" }))).toBe("ok");
  });

  it("$0 in a // replacement is the match, as in Go's ReplaceAllString; / replacement is literal", () => {
    const lex = new ShellLex();
    const e = env({ V: "abcabc", R: "<$0>", D: "$$" });
    expect(lex.processWord("${V//b/$R}", e)).toBe("a<b>ca<b>c");
    expect(lex.processWord("${V/b/$R}", e)).toBe("a<$0>cabc");
    expect(lex.processWord("${V//b/$D}", e)).toBe("a$ca$c");
    expect(lex.processWord("${V//*/x}", e)).toBe("x");
    expect(lex.processWord("${V//c*/x}", e)).toBe("abx");
  });

  it("huge values and adversarial patterns stay fast (no regexp backtracking)", () => {
    const lex = new ShellLex();
    const e = env({ V: "a".repeat(20000) });
    const t0 = Date.now();
    expect(lex.processWord("${V//*a*a*a*a*a*a*a*a*a*a*a*a*b/x}", e)).toBe("a".repeat(20000));
    expect(lex.processWord("${V%%*a*a*a*a*a*a*a*a*a*b}", e).length).toBe(20000);
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it("buildEnvs: last value wins, a bare name is set and empty", () => {
    expect(buildEnvs(["a=1", "b", "a=2=3"])).toEqual(new Map([["a", "2=3"], ["b", ""]]));
  });
});

// ---------------------------------------------------------------------------------------------
// Property test: the linear glob matcher against RegExp versions of BuildKit's Go regexps.

/** convertShellPatternToRegex, producing a JS regexp; `.` becomes [^\n] like Go's. */
function refRegex(pattern: string, greedy: boolean, anchored: boolean, flags: string): RegExp {
  let out = anchored ? "^" : "";
  const r = Array.from(pattern);
  for (let i = 0; i < r.length; i++) {
    const tok = r[i];
    if (tok === "*") out += greedy ? "[^\\n]*" : "[^\\n]*?";
    else if (tok === "?") out += "[^\\n]";
    else if (tok === "\\") {
      if (r[i + 1] === "}" || r[i + 1] === "/") continue;
      const nx = r[++i];
      if (nx !== "*" && nx !== "?" && nx !== "\\") throw new Error("invalid escape");
      out += "\\" + nx;
    } else out += "\\u{" + tok.codePointAt(0)!.toString(16) + "}";
  }
  return new RegExp(out, flags);
}

function refReplaceAll(re: RegExp, src: string, repl: (m: string) => string): string {
  let out = "";
  let lastMatchEnd = 0;
  let searchPos = 0;
  while (searchPos <= src.length) {
    re.lastIndex = searchPos;
    const m = re.exec(src);
    if (!m) break;
    const a0 = m.index;
    const a1 = a0 + m[0].length;
    out += src.slice(lastMatchEnd, a0);
    if (a1 > lastMatchEnd || a0 === 0) out += repl(m[0]);
    lastMatchEnd = a1;
    if (searchPos + 1 > a1) searchPos++;
    else searchPos = a1;
  }
  return out + src.slice(lastMatchEnd);
}

describe("ShellLex: glob matcher = BuildKit's regexps (property test)", () => {
  it("3000 random patterns and values agree for #, ##, %, %%, / and //", () => {
    const rand = rng(12345);
    const pick = <T,>(a: readonly T[]) => a[Math.floor(rand() * a.length)];
    const vAlpha = ["a", "b", "\n", "*", "c"];
    const pAlpha = ["a", "b", "\n", "*", "*", "?", "\\*", "\\?", "c"];
    const lex = new ShellLex();
    for (let n = 0; n < 3000; n++) {
      const value = Array.from({ length: Math.floor(rand() * 9) }, () => pick(vAlpha)).join("");
      const pattern = Array.from({ length: Math.floor(rand() * 5) }, () => pick(pAlpha)).join("");
      const e = env({ V: value, P: pattern });
      // #, ## (anchored prefix)
      for (const greedy of [false, true]) {
        const m = refRegex(pattern, greedy, true, "u").exec(value);
        const want = m ? value.slice(m[0].length) : value;
        expect(lex.processWord(greedy ? "${V##$P}" : "${V#$P}", e), `${JSON.stringify(value)} #${greedy ? "#" : ""} ${JSON.stringify(pattern)}`).toBe(want);
      }
      // %, %% (on the reversed strings, as BuildKit does)
      for (const greedy of [false, true]) {
        const rev = (s: string) => Array.from(s).reverse().join("");
        // reversePattern keeps escapes in front of what they escape
        const rp = Array.from(pattern);
        const outp: string[] = new Array(rp.length);
        for (let i = 0; i < rp.length; ) {
          const o = rp.length - 1 - i;
          if (rp[i] === "\\" && i !== rp.length - 1) {
            outp[o - 1] = "\\";
            outp[o] = rp[i + 1];
            i += 2;
          } else {
            outp[o] = rp[i];
            i++;
          }
        }
        const rv = rev(value);
        const m = refRegex(outp.join(""), greedy, true, "u").exec(rv);
        const want = rev(m ? rv.slice(m[0].length) : rv);
        expect(lex.processWord(greedy ? "${V%%$P}" : "${V%$P}", e), `${JSON.stringify(value)} %${greedy ? "%" : ""} ${JSON.stringify(pattern)}`).toBe(want);
      }
      // / (first) and // (all)
      const m = refRegex(pattern, true, false, "u").exec(value);
      const wantFirst = m ? value.slice(0, m.index) + "X" + value.slice(m.index + m[0].length) : value;
      expect(lex.processWord("${V/$P/X}", e), `${JSON.stringify(value)} / ${JSON.stringify(pattern)}`).toBe(wantFirst);
      const wantAll = refReplaceAll(refRegex(pattern, true, false, "gu"), value, () => "X");
      expect(lex.processWord("${V//$P/X}", e), `${JSON.stringify(value)} // ${JSON.stringify(pattern)}`).toBe(wantAll);
    }
  });
});

describe("ShellLex: nesting limit", () => {
  it("200 nested ${…} expand; absurdly deep nesting is a ShellError, not a stack overflow", () => {
    const lex = new ShellLex();
    expect(lex.processWord("${A:-".repeat(199) + "x" + "}".repeat(199), new Map())).toBe("x");
    expect(() => lex.processWord("${A:-".repeat(5000) + "}".repeat(5000), new Map())).toThrow(/nested more than 200 levels/);
    expect(() => lex.processWord("${A:-".repeat(5000) + "}".repeat(5000), new Map())).toThrow(ShellError);
  });
});
