import { describe, expect, it } from "vitest";
import { dumpBuildkit } from "./dump";
import { DockerfileError } from "./errors";
import { parse } from "./parser";

function parseError(text: string): DockerfileError {
  try {
    parse(text);
  } catch (e) {
    if (e instanceof DockerfileError) return e;
    throw e;
  }
  throw new Error("expected a DockerfileError");
}

describe("parse: lines and original text", () => {
  it("keeps start and end lines across continuations, comments and blank lines", () => {
    const { ast } = parse("FROM alpine\n\n# note\nRUN a \\\n  # inner comment\n  b \\\n  c\nCMD x\n");
    expect(ast.children.map((n) => [n.cmd, n.startLine, n.endLine])).toEqual([
      ["FROM", 1, 1],
      ["RUN", 4, 7],
      ["CMD", 8, 8],
    ]);
    expect(ast.children[1].original).toBe("RUN a   b   c");
    expect(ast.children[1].comments).toEqual(["note"]);
  });

  it("records the keyword column of indented instructions", () => {
    const { ast } = parse("FROM a\n   RUN x\n");
    expect(ast.children[1].column).toBe(4);
  });

  it("warns about empty continuation lines with their line", () => {
    const { warnings, ast } = parse("FROM a\nRUN a \\\n\n  b\n");
    expect(ast.children[1].args).toEqual(["a   b"]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0].message).toContain("Empty continuation line");
    expect(warnings[0].line).toBe(4);
  });

  it("handles CRLF line endings and a byte-order mark", () => {
    const { ast } = parse("\ufeffFROM a\r\nRUN x \\\r\n y\r\n");
    expect(dumpBuildkit(ast)).toBe('(from "a")\n(run "x  y")\n');
  });

  it("keeps keyword case but dumps lower-case", () => {
    const { ast } = parse("from a\nRuN b\n");
    expect(ast.children.map((n) => n.cmd)).toEqual(["from", "RuN"]);
    expect(dumpBuildkit(ast)).toBe('(from "a")\n(run "b")\n');
  });
});

describe("parse: directives", () => {
  it("reads syntax, escape and check at the top", () => {
    const { directives, ast } = parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM a\nRUN x `\n  y\n");
    expect(directives).toEqual({ syntax: "docker/dockerfile:1", escape: "`", check: "skip=all" });
    expect(ast.escapeToken).toBe("`");
    expect(ast.children[1].args).toEqual(["x   y"]);
  });

  it("ignores directives after a comment, a blank line or an instruction", () => {
    expect(parse("# hello\n# escape=`\nFROM a\n").directives).toEqual({});
    expect(parse("\n# escape=`\nFROM a\n").directives).toEqual({});
    expect(parse("FROM a\n# escape=`\nRUN x\n").directives).toEqual({});
  });

  it("stops at an unknown directive", () => {
    expect(parse("# foo=bar\n# escape=`\nFROM a\n").directives).toEqual({});
  });

  it("rejects a repeated directive with its line", () => {
    const e = parseError("# escape=\\\n# escape=`\nFROM a\n");
    expect(e.message).toBe("only one escape parser directive can be used");
    expect(e.line).toBe(2);
  });

  it("rejects an invalid escape token", () => {
    const e = parseError("# escape=x\nFROM a\n");
    expect(e.message).toContain("invalid escape token 'x'");
    expect(e.line).toBe(1);
  });
});

describe("parse: heredocs", () => {
  it("attaches heredoc bodies to RUN and counts their lines", () => {
    const { ast } = parse("FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nCMD x\n");
    const run = ast.children[1];
    expect(run.heredocs).toEqual([{ name: "EOF", content: "echo hi\necho there\n", expand: true, chomp: false, fileDescriptor: 0 }]);
    expect([run.startLine, run.endLine]).toEqual([2, 5]);
    expect(ast.children[2].startLine).toBe(6);
  });

  it("supports quoted delimiters (no expansion), <<- and several heredocs on one line", () => {
    const { ast } = parse("FROM a\nCOPY <<'A' <<-\"B\" /dst/\n$x\nA\n\t\tindented\n\tB\n");
    const docs = ast.children[1].heredocs;
    expect(docs.map((d) => [d.name, d.expand, d.chomp, d.content])).toEqual([
      ["A", false, false, "$x\n"],
      ["B", false, true, "\t\tindented\n"],
    ]);
  });

  it("reads file descriptors and ignores heredocs in exec form and other instructions", () => {
    expect(parse("FROM a\nRUN 3<<EOF cat /dev/fd/3\nx\nEOF\n").ast.children[1].heredocs[0].fileDescriptor).toBe(3);
    const { ast } = parse('FROM a\nRUN ["cat", "<<EOF"]\nENV A=<<EOF\n');
    expect(ast.children.map((n) => n.heredocs.length)).toEqual([0, 0, 0]);
  });

  it("supports heredocs inside ONBUILD", () => {
    const { ast } = parse("FROM a\nONBUILD RUN <<EOF\necho\nEOF\n");
    expect(ast.children[1].heredocs).toHaveLength(1);
    expect(ast.children[1].endLine).toBe(4);
  });

  it("rejects an unterminated heredoc with its lines", () => {
    const e = parseError("FROM a\nRUN <<EOF\necho\n");
    expect(e.message).toBe("unterminated heredoc");
    expect(e.line).toBe(2);
    expect(e.endLine).toBe(3);
  });
});

describe("parse: forms and flags", () => {
  it("falls back to shell form for invalid JSON but rejects non-string arrays", () => {
    const e = parseError('FROM a\nCMD ["a", 1]\n');
    expect(e.message).toContain("arrays must be comprised of strings only");
    expect(e.line).toBe(2);
    const { ast } = parse("FROM a\nCMD [\"a\", 'b']\nRUN [oops\n");
    expect(ast.children[1].json).toBe(false);
    expect(ast.children[2].args).toEqual(["[oops"]);
  });

  it("splits builder flags, removing quotes, and stops at --", () => {
    const { ast } = parse('FROM a\nCOPY --from="build stage" --chmod=755 -- --not-a-flag /dst\n');
    expect(ast.children[1].flags).toEqual(["--from=build stage", "--chmod=755"]);
    expect(ast.children[1].args).toEqual(["--not-a-flag", "/dst"]);
  });

  it("parses ENV/LABEL pairs with quotes kept for expansion", () => {
    const { ast } = parse('FROM a\nLABEL "com.example.key"="a b" other=1\n');
    expect(ast.children[1].args).toEqual(['"com.example.key"', '"a b"', "=", "other", "1", "="]);
  });

  it("rejects ENV pairs without =", () => {
    const e = parseError("FROM a\nENV A=1 B\n");
    expect(e.message).toContain("can't find = in \"B\"");
    expect(e.line).toBe(2);
  });

  it("reports a file with no instructions", () => {
    expect(parseError("").message).toBe("file with no instructions");
    expect(parseError("# only\n\n").line).toBe(2);
  });
});

describe("BuildKit's parser_test cases", () => {
  it("warns on empty continuation lines, not on comment lines inside a continuation", () => {
    const { warnings } = parse(
      "\nFROM alpine:3.6\n\nRUN something \\\n\n    following \\\n\n    more\n\nRUN another \\\n\n    thing\nRUN non-indented \\\n# this is a comment\n   after-comment\n\nRUN indented \\\n    # this is an indented comment\n    comment\n\t",
    );
    expect(warnings.map((w) => w.message)).toEqual([
      "Empty continuation line found in: RUN something     following     more",
      "Empty continuation line found in: RUN another     thing",
    ]);
  });

  it("rejects lines longer than BuildKit's 64 KiB scanner limit", () => {
    const e = parseError(`\n\t\tFROM image\n\t\tLABEL test=${"a".repeat(65536)}\n`);
    expect(e.message).toBe("dockerfile line greater than max allowed size of 65535");
    expect(e.line).toBe(3);
    expect(parse(`FROM image\nLABEL test=${"a".repeat(60000)}\n`).ast.children).toHaveLength(2);
  });
});
