// .dockerignore: table-driven tests from moby/patternmatcher (patternmatcher_test.go,
// ignorefile_test.go) and docker/cli's rule that the Dockerfile and .dockerignore stay in the build.
import { describe, expect, it } from "vitest";
import { cleanPath, DockerIgnore, DockerignoreError, filterPaths, isExcluded, parseDockerignore, readDockerignore } from "./dockerignore";

const FAIL = 0;
const EXACT = 1;
const INEXACT = 2;

// patternmatcher TestMatches: [pattern, text, result]; INEXACT = matched only through a parent dir.
const matchCases: [string, string, number][] = [
  ["**", "file", EXACT],
  ["**", "file/", EXACT],
  ["**/", "file", EXACT],
  ["**/", "file/", EXACT],
  // ["**", "/"] and ["**/", "/"]: "/" is the context root here, which is never excluded (below).
  ["**", "dir/file", EXACT],
  ["**/", "dir/file", EXACT],
  ["**", "dir/file/", EXACT],
  ["**/", "dir/file/", EXACT],
  ["**/**", "dir/file", EXACT],
  ["**/**", "dir/file/", EXACT],
  ["dir/**", "dir/file", EXACT],
  ["dir/**", "dir/file/", EXACT],
  ["dir/**", "dir/dir2/file", EXACT],
  ["dir/**", "dir/dir2/file/", EXACT],
  ["**/dir", "dir", EXACT],
  ["**/dir", "dir/file", INEXACT],
  ["**/dir2/*", "dir/dir2/file", EXACT],
  ["**/dir2/*", "dir/dir2/file/", INEXACT],
  ["**/dir2/**", "dir/dir2/dir3/file", EXACT],
  ["**/dir2/**", "dir/dir2/dir3/file/", EXACT],
  ["**file", "file", EXACT],
  ["**file", "dir/file", EXACT],
  ["**/file", "dir/file", EXACT],
  ["**file", "dir/dir/file", EXACT],
  ["**/file", "dir/dir/file", EXACT],
  ["**/file*", "dir/dir/file", EXACT],
  ["**/file*", "dir/dir/file.txt", EXACT],
  ["**/file*txt", "dir/dir/file.txt", EXACT],
  ["**/file*.txt", "dir/dir/file.txt", EXACT],
  ["**/file*.txt*", "dir/dir/file.txt", EXACT],
  ["**/**/*.txt", "dir/dir/file.txt", EXACT],
  ["**/**/*.txt2", "dir/dir/file.txt", FAIL],
  ["**/*.txt", "file.txt", EXACT],
  ["**/**/*.txt", "file.txt", EXACT],
  ["a**/*.txt", "a/file.txt", EXACT],
  ["a**/*.txt", "a/dir/file.txt", EXACT],
  ["a**/*.txt", "a/dir/dir/file.txt", EXACT],
  ["a/*.txt", "a/dir/file.txt", FAIL],
  ["a/*.txt", "a/file.txt", EXACT],
  ["a/*.txt**", "a/file.txt", EXACT],
  ["a[b-d]e", "ae", FAIL],
  ["a[b-d]e", "ace", EXACT],
  ["a[b-d]e", "aae", FAIL],
  ["a[^b-d]e", "aze", EXACT],
  [".*", ".foo", EXACT],
  [".*", "foo", FAIL],
  ["abc.def", "abcdef", FAIL],
  ["abc.def", "abc.def", EXACT],
  ["abc.def", "abcZdef", FAIL],
  ["abc?def", "abcZdef", EXACT],
  ["abc?def", "abcdef", FAIL],
  ["**/foo/bar", "foo/bar", EXACT],
  ["**/foo/bar", "dir/foo/bar", EXACT],
  ["**/foo/bar", "dir/dir2/foo/bar", EXACT],
  ["abc/**", "abc", FAIL],
  ["abc/**", "abc/def", EXACT],
  ["abc/**", "abc/def/ghi", EXACT],
  ["**/.foo", ".foo", EXACT],
  ["**/.foo", "bar.foo", FAIL],
  ["a(b)c/def", "a(b)c/def", EXACT],
  ["a(b)c/def", "a(b)c/xyz", FAIL],
  ["a.|)$(}+{bc", "a.|)$(}+{bc", EXACT],
  ["dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT],
  ["dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT],
  ["a\\\\", "a\\", EXACT],
  ["a\\*b", "a*b", EXACT],
];

const multiCases: [string[], string, number][] = [
  [["**", "!util/docker/web"], "util/docker/web/foo", FAIL],
  [["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", EXACT],
  [["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL],
  [["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL],
];

// Go's filepath.Match tests as patternmatcher runs them: [pattern, path, match, badPattern]
const goMatchCases: [string, string, boolean, boolean?][] = [
  ["abc", "abc", true],
  ["*", "abc", true],
  ["*c", "abc", true],
  ["a*", "a", true],
  ["a*", "abc", true],
  ["a*", "ab/c", true],
  ["a*/b", "abc/b", true],
  ["a*/b", "a/c/b", false],
  ["a*b*c*d*e*/f", "axbxcxdxe/f", true],
  ["a*b*c*d*e*/f", "axbxcxdxexxx/f", true],
  ["a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false],
  ["a*b*c*d*e*/f", "axbxcxdxexxx/fff", false],
  ["a*b?c*x", "abxbbxdbxebxczzx", true],
  ["a*b?c*x", "abxbbxdbxebxczzy", false],
  ["ab[c]", "abc", true],
  ["ab[b-d]", "abc", true],
  ["ab[e-g]", "abc", false],
  ["ab[^c]", "abc", false],
  ["ab[^b-d]", "abc", false],
  ["ab[^e-g]", "abc", true],
  ["a\\*b", "a*b", true],
  ["a\\*b", "ab", false],
  ["a?b", "a☺b", true],
  ["a[^a]b", "a☺b", true],
  ["a???b", "a☺b", false],
  ["a[^a][^a][^a]b", "a☺b", false],
  ["[a-ζ]*", "α", true],
  ["*[a-ζ]", "A", false],
  ["a?b", "a/b", false],
  ["a*b", "a/b", false],
  ["[\\]a]", "]", true],
  ["[\\-]", "-", true],
  ["[x\\-]", "x", true],
  ["[x\\-]", "-", true],
  ["[x\\-]", "z", false],
  ["[\\-x]", "x", true],
  ["[\\-x]", "-", true],
  ["[\\-x]", "a", false],
  ["[]a]", "]", false, true],
  ["[-]", "-", false, true],
  ["[x-]", "x", false, true],
  ["[x-]", "-", false, true],
  ["[x-]", "z", false, true],
  ["[-x]", "x", false, true],
  ["[-x]", "-", false, true],
  ["[-x]", "a", false, true],
  ["\\", "a", false, true],
  ["[a-b-c]", "a", false, true],
  ["[", "a", false, true],
  ["[^", "a", false, true],
  ["[^bc", "a", false, true],
  ["a[", "a", false, true],
  ["a[", "ab", false, true],
  ["*x", "xxx", true],
];

describe("DockerIgnore: patternmatcher TestMatches", () => {
  for (const [pattern, text, pass] of matchCases) {
    it(`${pattern} vs ${text} → ${pass === FAIL ? "kept" : "excluded"}`, () => {
      expect(new DockerIgnore([pattern]).matches(text)).toBe(pass !== FAIL);
    });
  }
  for (const [patterns, text, pass] of multiCases) {
    it(`${patterns.join(" ")} vs ${text} → ${pass === FAIL ? "kept" : "excluded"}`, () => {
      expect(new DockerIgnore(patterns).matches(text)).toBe(pass !== FAIL);
    });
  }
  it("the context root is never excluded, even by **", () => {
    expect(new DockerIgnore(["**"]).matches("/")).toBe(false);
    expect(new DockerIgnore(["**"]).matches(".")).toBe(false);
  });
  it("match types are BuildKit's (exact / prefix / suffix / regexp)", () => {
    const type = (p: string) => parseDockerignore(p)[0].matchType;
    expect(type("*")).toBe("regexp");
    expect(type("**")).toBe("suffix");
    expect(type("**/**")).toBe("regexp");
    expect(type("dir/**")).toBe("prefix");
    expect(type("**/dir")).toBe("suffix");
    expect(type("**file")).toBe("suffix");
    expect(type("a[b-d]e")).toBe("regexp");
    expect(type("abc.def")).toBe("exact");
    expect(type("a.|)$(}+{bc")).toBe("exact");
    expect(type("**/foo/bar")).toBe("suffix");
  });
});

describe("DockerIgnore: Go filepath.Match cases", () => {
  for (const [pattern, s, match, bad] of goMatchCases) {
    it(`${pattern} vs ${s} → ${bad ? "bad pattern" : match}`, () => {
      if (bad) {
        expect(() => new DockerIgnore([pattern])).toThrow(DockerignoreError);
      } else {
        expect(new DockerIgnore([pattern]).matches(s)).toBe(match);
      }
    });
  }
  it("an inverted range is a bad pattern, as Go's regexp says", () => {
    expect(() => new DockerIgnore("[Local-Only]/")).toThrow(DockerignoreError);
  });
});

describe("DockerIgnore: patternmatcher simple cases", () => {
  const m = (file: string, patterns: string[]) => new DockerIgnore(patterns).matches(file);
  it("wildcards, exceptions in order, folders with exceptions", () => {
    expect(m("fileutils.go", ["*"])).toBe(true);
    expect(m("fileutils.go", ["*.go"])).toBe(true);
    expect(m("fileutils.go", ["!fileutils.go", "*.go"])).toBe(true);
    expect(m("docs/README.md", ["docs", "!docs/README.md"])).toBe(false);
    expect(m("docs/README.md", ["docs/", "!docs/README.md"])).toBe(false);
    expect(m("docs/README.md", ["docs/*", "!docs/README.md"])).toBe(false);
    expect(m("fileutils.go", ["*.go", "!fileutils.go"])).toBe(false);
    expect(m(".", ["*.go"])).toBe(false);
    expect(m("/any/path/there", [])).toBe(false);
    expect(m("docs/other.md", ["docs", "!docs/README.md"])).toBe(true);
  });
  it("a lone ! is an error, with its line", () => {
    expect(() => new DockerIgnore(["!"])).toThrow('illegal exclusion pattern: "!"');
    try {
      new DockerIgnore("a\n\n!\n");
      throw new Error("no error");
    } catch (e) {
      expect(e).toBeInstanceOf(DockerignoreError);
      expect((e as DockerignoreError).line).toBe(3);
    }
  });
  it("malformed [ is an error", () => {
    expect(() => new DockerIgnore(["["])).toThrow(DockerignoreError);
  });
  it("patterns are trimmed and empty ones dropped", () => {
    expect(new DockerIgnore(["docs", "config", ""]).patterns.length).toBe(2);
    expect(new DockerIgnore(["docs", "  !docs/README.md"]).exclusions).toBe(true);
    expect(new DockerIgnore(["docs", "!docs/README.md  "]).exclusions).toBe(true);
  });
});

describe("readDockerignore (docker ReadAll)", () => {
  it("comments, blank lines, leading / and ! handling", () => {
    const content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    expect(readDockerignore(content).map((l) => l.text)).toEqual(["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]);
  });
  it("a BOM, CRLF line ends, ./ and .. are cleaned; an indented # is a pattern", () => {
    const lines = readDockerignore("\uFEFF./a/../b/\r\n  # not a comment\r\n#comment\r\nx//y/.\n");
    expect(lines.map((l) => l.text)).toEqual(["b", "# not a comment", "x/y"]);
    expect(lines.map((l) => l.line)).toEqual([1, 2, 4]);
  });
  it("cleanPath follows Go's path.Clean", () => {
    expect(cleanPath("")).toBe(".");
    expect(cleanPath("./")).toBe(".");
    expect(cleanPath("/../a/./b//c/..")).toBe("/a/b");
    expect(cleanPath("../../a")).toBe("../../a");
    expect(cleanPath("a/../..")).toBe("..");
  });
});

describe("DockerIgnore as a user sees it", () => {
  const text = [
    "# build output",
    "node_modules",
    "/dist/",
    "*.log",
    "**/*.tmp",
    "!keep.log",
    "secrets/**",
    "!secrets/public.pem",
    ".git",
    "Dockerfile*",
    ".dockerignore",
  ].join("\n");
  const di = new DockerIgnore(text);

  it("excludes what the patterns say, children of excluded dirs included", () => {
    expect(di.matches("node_modules")).toBe(true);
    expect(di.matches("node_modules/a/b.js")).toBe(true);
    expect(di.matches("src/node_modules")).toBe(false);
    expect(di.matches("dist/app.js")).toBe(true);
    expect(di.matches("./dist/app.js")).toBe(true);
    expect(di.matches("/dist")).toBe(true);
    expect(di.matches("a.log")).toBe(true);
    expect(di.matches("logs/a.log")).toBe(false); // * does not cross /
    expect(di.matches("keep.log")).toBe(false); // exception
    expect(di.matches("a/b/c.tmp")).toBe(true);
    expect(di.matches("secrets/key")).toBe(true);
    expect(di.matches("secrets/public.pem")).toBe(false);
    expect(di.matches(".git/HEAD")).toBe(true);
    expect(di.matches("src/main.ts")).toBe(false);
    expect(di.matches("")).toBe(false);
    expect(di.matches(".")).toBe(false);
  });

  it("the Dockerfile and .dockerignore are always kept", () => {
    expect(di.matches("Dockerfile")).toBe(true);
    expect(di.isExcluded("Dockerfile")).toBe(false);
    expect(di.isExcluded(".dockerignore")).toBe(false);
    expect(di.isExcluded("./Dockerfile")).toBe(false);
    expect(di.isExcluded("Dockerfile.prod")).toBe(true);
    expect(di.isExcluded("Dockerfile.prod", { dockerfilePath: "Dockerfile.prod" })).toBe(false);
    expect(isExcluded(di, "Dockerfile", { dockerfilePath: "Dockerfile" })).toBe(false);
    expect(isExcluded(di, "a.log", {})).toBe(true);
    const nested = new DockerIgnore("build\n");
    expect(nested.isExcluded("build/Dockerfile", { dockerfilePath: "build/Dockerfile" })).toBe(false);
    expect(nested.canSkipDir("build", { dockerfilePath: "build/Dockerfile" })).toBe(false);
    expect(nested.canSkipDir("build")).toBe(true);
  });

  it("filterPaths keeps order and the build files", () => {
    const paths = ["Dockerfile", ".dockerignore", "src/a.ts", "a.log", "keep.log", "node_modules/x", "secrets/public.pem", "secrets/k"];
    expect(filterPaths(paths, di)).toEqual(["Dockerfile", ".dockerignore", "src/a.ts", "keep.log", "secrets/public.pem"]);
    expect(filterPaths(paths, text)).toEqual(["Dockerfile", ".dockerignore", "src/a.ts", "keep.log", "secrets/public.pem"]);
  });

  it("canSkipDir: only when no exception can re-include something below", () => {
    expect(di.canSkipDir("node_modules")).toBe(true);
    expect(di.canSkipDir("secrets")).toBe(false); // !secrets/public.pem
    expect(di.canSkipDir("src")).toBe(false); // not excluded
    const wild = new DockerIgnore("docs\n!docs/**/*.md\n");
    expect(wild.canSkipDir("docs")).toBe(false); // a wildcard exception: must walk
    expect(wild.matches("docs/a/b.md")).toBe(false);
    expect(wild.matches("docs/a/b.txt")).toBe(true);
    const none = new DockerIgnore("*\n");
    expect(none.canSkipDir("anything")).toBe(true);
  });

  it("an exception re-includes a directory below an excluded one, later patterns win", () => {
    const d = new DockerIgnore("*\n!src\nsrc/*.bak\n!src/important.bak\n");
    expect(d.matches("README.md")).toBe(true);
    expect(d.matches("src")).toBe(false);
    expect(d.matches("src/a/b.ts")).toBe(false);
    expect(d.matches("src/x.bak")).toBe(true);
    expect(d.matches("src/important.bak")).toBe(false);
    expect(d.matches("src/a/x.bak")).toBe(false);
  });

  it("character classes, ? and escapes", () => {
    const d = new DockerIgnore("file[0-9].txt\nlog?\n\\#literal\nwe\\ird*\n[!]x\n");
    expect(d.matches("file7.txt")).toBe(true);
    expect(d.matches("filex.txt")).toBe(false);
    expect(d.matches("log1")).toBe(true);
    expect(d.matches("log/")).toBe(false);
    expect(d.matches("log12")).toBe(false);
    expect(d.matches("#literal")).toBe(true);
    expect(d.matches("weird-thing")).toBe(true);
    expect(d.matches("!x")).toBe(true);
  });

  it("directories matched as parents work at any depth and with ** patterns", () => {
    const d = new DockerIgnore("**/__pycache__\na/b\n");
    expect(d.matches("x/y/__pycache__/m.pyc")).toBe(true);
    expect(d.matches("__pycache__/m.pyc")).toBe(true);
    expect(d.matches("a/b/c/d")).toBe(true);
    expect(d.matches("a/bc")).toBe(false);
  });
});

describe("DockerIgnore: no pattern can make matching slow", () => {
  it("many stars against a long name (a backtracking regexp would take ages; Go's RE2 and kiln are linear)", () => {
    const d = new DockerIgnore(["*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "**/x/**/x/**/x/**/x/**/x/**/y"]);
    const t0 = Date.now();
    expect(d.matches("a".repeat(3000))).toBe(false);
    expect(d.matches("x/".repeat(1500) + "z")).toBe(false);
    expect(d.matches("a".repeat(3000) + "b")).toBe(true);
    expect(d.matches("x/".repeat(300) + "y")).toBe(true);
    // A backtracking matcher takes minutes here; the generous bound only catches that, not speed.
    expect(Date.now() - t0).toBeLessThan(20_000);
  });

  it("random patterns and paths: only DockerignoreError, never anything else", () => {
    let s = 7;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const alpha = ["a", "b", "/", "*", "**", "?", "[", "]", "^", "-", "\\", "!", ".", "..", " ", "#", "\n", "é"];
    for (let i = 0; i < 3000; i++) {
      const text = Array.from({ length: Math.floor(rand() * 30) }, () => alpha[Math.floor(rand() * alpha.length)]).join("");
      let d: DockerIgnore;
      try {
        d = new DockerIgnore(text);
      } catch (e) {
        expect(e).toBeInstanceOf(DockerignoreError);
        continue;
      }
      for (let j = 0; j < 5; j++) {
        const p = Array.from({ length: Math.floor(rand() * 12) }, () => ["a", "b", "/", ".", "é", "*"][Math.floor(rand() * 6)]).join("");
        expect(typeof d.matches(p)).toBe("boolean");
        expect(typeof d.canSkipDir(p)).toBe("boolean");
      }
    }
  });
});

describe("DockerIgnore: the linear matcher equals patternmatcher's regexp (property test)", () => {
  /** patternmatcher's compile() as a JS RegExp (Go's `.` = [^\n]); only for valid, class-free patterns. */
  function refRegex(pattern: string): RegExp {
    let reg = "^";
    const cps = Array.from(pattern);
    let k = 0;
    for (let i = 0; k < cps.length; i++) {
      const ch = cps[k++];
      if (ch === "*") {
        if (cps[k] === "*") {
          k++;
          if (cps[k] === "/") k++;
          reg += k >= cps.length ? "[^\\n]*" : "(?:[^\\n]*/)?";
        } else reg += "[^/]*";
      } else if (ch === "?") reg += "[^/]";
      else if (ch === "\\") reg += "\\u{" + cps[k++].codePointAt(0)!.toString(16) + "}";
      else reg += "\\u{" + ch.codePointAt(0)!.toString(16) + "}";
    }
    return new RegExp(reg + "$", "u");
  }

  it("4000 random patterns × paths agree", () => {
    let s = 99;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const pAlpha = ["a", "b", "/", "*", "**", "?", "\\*", "."];
    const sAlpha = ["a", "b", "/", "*", "."];
    let compared = 0;
    for (let i = 0; i < 4000; i++) {
      const raw = Array.from({ length: 1 + Math.floor(rand() * 7) }, () => pAlpha[Math.floor(rand() * pAlpha.length)]).join("");
      let pats;
      try {
        pats = parseDockerignore(raw);
      } catch {
        continue;
      }
      if (pats.length !== 1 || pats[0].exclusion || pats[0].matchType !== "regexp") continue;
      const re = refRegex(pats[0].pattern);
      for (let j = 0; j < 4; j++) {
        const path = Array.from({ length: Math.floor(rand() * 9) }, () => sAlpha[Math.floor(rand() * sAlpha.length)]).join("");
        expect(pats[0].match(path), `${pats[0].pattern} vs ${path}`).toBe(re.test(path));
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(3000);
  });
});
