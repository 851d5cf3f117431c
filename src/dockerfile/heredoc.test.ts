import { describe, expect, it } from "vitest";
import { chompHeredocContent, parse, parseHeredocWord } from "./parser";

// The cases of BuildKit's parser_heredoc_test.go, run against kiln's parser.
const dockerfile = `
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN "<<NOHEREDOC"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<X <<Y /dest
Y
X
X
Y
\t`;

const doc = (name: string, content: string, extra: { expand?: boolean; chomp?: boolean; fileDescriptor?: number } = {}) => ({
  name,
  content,
  expand: extra.expand ?? true,
  chomp: extra.chomp ?? false,
  fileDescriptor: extra.fileDescriptor ?? 0,
});

describe("heredocs (BuildKit's parser_heredoc_test cases)", () => {
  it("extracts every heredoc with its content, expansion and chomping", () => {
    const expected = [
      [], // ENV
      [], // RUN ls
      [], // USER <<INVALID
      [], // INVALID
      [doc("EMPTY", "")],
      [doc("EMPTY2", "", { fileDescriptor: 3 })],
      [], // RUN "<<NOHEREDOC"
      [doc("INDENT", "\tfoo\n\tbar\n")],
      [doc("UNINDENT", "\tbaz\n\tquux\n", { chomp: true })],
      [doc("UNINDENT2", "\tbaz\n\tquux\n", { chomp: true })],
      [doc("EXPAND", "\texpand $NAME\n", { chomp: true })],
      [doc("NOEXPAND", "\tdon't expand $NAME\n", { expand: false, chomp: true })],
      [doc("COPY", "echo hello world\necho foo bar\n")],
      [doc("COMMENT", "# internal comment\necho hello world\necho foo bar # trailing comment\n")],
      [doc("MOUNT", "echo hello\n")],
      [doc("FILE1", "content 1\n"), doc("FILE2", "content 2\n")],
      [doc("X", "Y\n"), doc("Y", "X\n")],
    ];
    const { ast } = parse(dockerfile);
    expected.forEach((docs, i) => expect(ast.children[i + 1].heredocs).toEqual(docs));
  });

  it("ignores heredoc markers in JSON form", () => {
    const { ast } = parse('\nFROM alpine:3.6\n\nRUN ["whoami"]\nRUN ["<<EOF"]\nRUN ["<<\'EOF\'"]\n\t');
    for (let i = 1; i <= 3; i++) expect(ast.children[i].heredocs).toEqual([]);
  });

  it("chomps leading tabs", () => {
    expect(chompHeredocContent("\thello\n\tworld\n")).toBe("hello\nworld\n");
  });

  it("recognizes valid, invalid and non-heredoc words", () => {
    for (const w of ["<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<-"EOF"']) expect(parseHeredocWord(w)?.name).toBe("EOF");
    for (const w of ["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"']) expect(() => parseHeredocWord(w)).toThrow();
    for (const w of ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF"]) expect(parseHeredocWord(w)).toBeNull();
  });

  it("finds the heredocs of a line", () => {
    const names = (line: string) => parse(`FROM a\n${line}\n${"EOF\nEOF2\n"}`).ast.children[1].heredocs.map((h) => h.name);
    expect(names("RUN <<EOF")).toEqual(["EOF"]);
    expect(names("RUN <<-EOF")).toEqual(["EOF"]);
    expect(names("RUN <<'EOF'")).toEqual(["EOF"]);
    expect(names("RUN 4<<EOF")).toEqual(["EOF"]);
    expect(names("RUN <<EOF <<EOF2")).toEqual(["EOF", "EOF2"]);
    expect(names("RUN '<<EOF'")).toEqual([]);
    expect(names('RUN "<<EOF"')).toEqual([]);
  });
});
