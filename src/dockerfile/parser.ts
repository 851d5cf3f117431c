/**
 * Dockerfile text → lossless AST, with BuildKit's rules (frontend/dockerfile/parser): parser directives,
 * comments, line continuations with the active escape character, heredocs, exec (JSON) vs shell form and
 * the per-instruction line parsers. Nothing is expanded here.
 */
import type { Directive, DockerfileAst, Heredoc, InstructionNode, ParseResult, Warning } from "./ast";
import { DockerfileError } from "./errors";
import { ShellLex } from "./shell";
import { isSpace, splitWhitespace, trimLeftSpace, trimSpace } from "./text";

const VALID_DIRECTIVES = new Set(["syntax", "escape", "check"]);
const DIRECTIVE_RE = /^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*([^\n]+?)[\t\n\f\r ]*$/;
const HEREDOC_RE = /^(\d*)<<(-?)([^<]*)$/;
/** Instructions whose shell form may carry heredocs, and the ones that may wrap such an instruction. */
const HEREDOC_COMMANDS = new Set(["add", "copy", "run"]);
const HEREDOC_COMPOUND = new Set(["onbuild"]);

class ParserState {
  escapeToken = "\\";
  continuation!: RegExp;
  directivesDone = false;
  seen = new Set<string>();
  directives: Directive[] = [];

  constructor() {
    this.setEscapeToken("\\");
  }

  setEscapeToken(s: string): void {
    if (s !== "`" && s !== "\\") throw new Error(`invalid escape token '${s}' does not match \` or \\`);
    this.escapeToken = s;
    const e = "\\" + s;
    // The escape token at the end of a line continues it, unless it is itself escaped; a lone token
    // on its own line continues too.
    this.continuation = new RegExp(`([^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`);
  }

  /** Directives are comment lines of the form `# key=value` before anything else. */
  possibleDirective(line: string, lineNo: number): void {
    if (this.directivesDone) return;
    const m = DIRECTIVE_RE.exec(line);
    if (!m) {
      this.directivesDone = true;
      return;
    }
    const key = m[1].toLowerCase();
    if (!VALID_DIRECTIVES.has(key)) {
      this.directivesDone = true;
      return;
    }
    if (this.seen.has(key)) throw new Error(`only one ${key} parser directive can be used`);
    this.seen.add(key);
    this.directives.push({ name: key, value: m[2], line: lineNo });
    if (key === "escape") this.setEscapeToken(m[2]);
  }
}

/** Splits text into lines that keep their line endings (BuildKit's scanLines). */
function scanLines(text: string): string[] {
  const lines: string[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf("\n", start);
    if (nl < 0) {
      lines.push(text.slice(start));
      break;
    }
    lines.push(text.slice(start, nl + 1));
    start = nl + 1;
  }
  return lines;
}

function trimNewline(s: string): string {
  let end = s.length;
  while (end > 0 && (s[end - 1] === "\n" || s[end - 1] === "\r")) end--;
  return end === s.length ? s : s.slice(0, end);
}

function isComment(line: string): boolean {
  return trimLeftSpace(trimNewline(line)).startsWith("#");
}

function isEmptyContinuationLine(line: string): boolean {
  return trimLeftSpace(trimNewline(line)).length === 0;
}

function processLine(st: ParserState, token: string, stripLeftWhitespace: boolean, lineNo: number): string {
  token = trimNewline(token);
  if (stripLeftWhitespace) token = trimLeftSpace(token);
  st.possibleDirective(token, lineNo);
  return token.startsWith("#") ? "" : token;
}

function trimContinuation(line: string, st: ParserState): [string, boolean] {
  if (st.continuation.test(line)) return [line.replace(st.continuation, "$1"), false];
  return [line, true];
}

/** BuildKit reads lines with bufio.Scanner's default 64 KiB token limit. */
const MAX_LINE_BYTES = 64 * 1024;
const encoder = new TextEncoder();

function checkLineLengths(lines: string[]): void {
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (l.length * 3 <= MAX_LINE_BYTES) continue;
    if (l.length > MAX_LINE_BYTES || encoder.encode(l).byteLength > MAX_LINE_BYTES) {
      throw new DockerfileError(`dockerfile line greater than max allowed size of ${MAX_LINE_BYTES - 1}`, i + 1);
    }
  }
}

/** Parses a whole Dockerfile. Throws DockerfileError (with the line) on invalid input. */
export function parse(text: string): ParseResult {
  const st = new ParserState();
  const lines = scanLines(text);
  checkLineLengths(lines);
  const children: InstructionNode[] = [];
  const warnings: Warning[] = [];
  let comments: string[] = [];
  let currentLine = 0;
  let i = 0;

  const located = (e: unknown, line: number, endLine?: number): DockerfileError => {
    if (e instanceof DockerfileError) return e;
    const message = e instanceof Error ? e.message : String(e);
    return new DockerfileError(message, Math.max(line, 1), endLine && endLine !== line ? { endLine } : {});
  };

  while (i < lines.length) {
    let raw = lines[i++];
    if (currentLine === 0 && raw.startsWith("\ufeff")) raw = raw.slice(1);
    if (isComment(raw)) {
      const comment = trimSpace(trimNewline(raw).slice(1));
      if (comment === "") comments = [];
      else comments.push(comment);
    }
    let processed: string;
    try {
      processed = processLine(st, raw, true, currentLine + 1);
    } catch (e) {
      throw located(e, currentLine + 1);
    }
    currentLine++;
    const startLine = currentLine;
    const firstLine = trimNewline(raw);
    const column = firstLine.length - trimLeftSpace(firstLine).length + 1;
    let [line, isEndOfLine] = trimContinuation(processed, st);
    if (isEndOfLine && line === "") continue;

    let hasEmptyContinuationLine = false;
    while (!isEndOfLine && i < lines.length) {
      const next = lines[i++];
      let cont: string;
      try {
        cont = processLine(st, next, false, currentLine + 1);
      } catch (e) {
        throw located(e, currentLine + 1);
      }
      currentLine++;
      if (isComment(next)) continue;
      if (isEmptyContinuationLine(cont)) {
        hasEmptyContinuationLine = true;
        continue;
      }
      let piece: string;
      [piece, isEndOfLine] = trimContinuation(cont, st);
      line += piece;
    }

    if (hasEmptyContinuationLine) {
      warnings.push({ message: `Empty continuation line found in: ${line}`, line: currentLine });
    }

    let child: InstructionNode;
    try {
      child = nodeFromLine(line, st, comments);
    } catch (e) {
      throw located(e, startLine, currentLine);
    }

    if (canContainHeredoc(child) && line.includes("<<")) {
      let docs: Heredoc[];
      try {
        docs = heredocsFromLine(line);
      } catch (e) {
        throw located(e, startLine, currentLine);
      }
      for (const doc of docs) {
        let terminated = false;
        while (i < lines.length) {
          const body = lines[i++];
          currentLine++;
          let possibleTerminator = trimNewline(body);
          if (doc.chomp) possibleTerminator = possibleTerminator.replace(/^\t+/, "");
          if (possibleTerminator === doc.name) {
            terminated = true;
            break;
          }
          doc.content += body;
        }
        if (!terminated) throw new DockerfileError("unterminated heredoc", startLine, { endLine: currentLine });
        child.heredocs.push(doc);
      }
    }

    child.startLine = startLine;
    child.endLine = currentLine;
    child.column = column;
    children.push(child);
    comments = [];
  }

  if (children.length === 0) throw new DockerfileError("file with no instructions", Math.max(currentLine, 1));

  const ast: DockerfileAst = {
    children,
    escapeToken: st.escapeToken,
    directives: st.directives,
    startLine: children[0].startLine,
    endLine: children[children.length - 1].endLine,
  };
  const directives: Record<string, string> = {};
  for (const d of st.directives) directives[d.name] = d.value;
  return { ast, directives, warnings };
}

function canContainHeredoc(node: InstructionNode): boolean {
  let n = node;
  if (HEREDOC_COMPOUND.has(n.cmd.toLowerCase()) && n.sub) n = n.sub;
  return HEREDOC_COMMANDS.has(n.cmd.toLowerCase()) && !n.json;
}

// ---------------------------------------------------------------------------------------------------
// splitCommand: keyword, builder flags, rest

/** Leading `--flag[=value]` words, quotes and backslashes processed; `--` ends the flags. */
function extractBuilderFlags(line: string): [string, string[]] {
  const IN_SPACES = 0;
  const IN_WORD = 1;
  const IN_QUOTE = 2;
  const words: string[] = [];
  let phase = IN_SPACES;
  let word = "";
  let quote = "";
  let blankOK = false;
  let ch = "";
  for (let pos = 0; pos <= line.length; pos++) {
    if (pos !== line.length) ch = line[pos];
    if (phase === IN_SPACES) {
      if (pos === line.length) break;
      if (isSpace(ch)) continue;
      if (ch !== "-" || pos + 1 === line.length || line[pos + 1] !== "-") return [line.slice(pos), words];
      phase = IN_WORD;
    }
    if ((phase === IN_WORD || phase === IN_QUOTE) && pos === line.length) {
      if (word !== "--" && (blankOK || word.length > 0)) words.push(word);
      break;
    }
    if (phase === IN_WORD) {
      if (isSpace(ch)) {
        phase = IN_SPACES;
        if (word === "--") return [line.slice(pos), words];
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = IN_QUOTE;
        continue;
      }
      if (ch === "\\") {
        if (pos + 1 === line.length) continue;
        pos++;
        ch = line[pos];
      }
      word += ch;
      continue;
    }
    if (phase === IN_QUOTE) {
      if (ch === quote) {
        phase = IN_WORD;
        continue;
      }
      if (ch === "\\") {
        if (pos + 1 === line.length) {
          phase = IN_WORD;
          continue;
        }
        pos++;
        ch = line[pos];
      }
      word += ch;
    }
  }
  return ["", words];
}

function splitCommand(line: string): { cmd: string; flags: string[]; rest: string } {
  const cmdline = splitWhitespace(trimSpace(line), 2);
  let rest = "";
  let flags: string[] = [];
  if (cmdline.length === 2) [rest, flags] = extractBuilderFlags(cmdline[1]);
  return { cmd: cmdline[0], flags, rest: trimSpace(rest) };
}

// ---------------------------------------------------------------------------------------------------
// line parsers

interface LineResult {
  args: string[];
  json?: boolean;
  sub?: InstructionNode;
  ignored?: boolean;
}

type LineParser = (rest: string, st: ParserState) => LineResult;

const DISPATCH: Record<string, LineParser> = {
  add: parseMaybeJSONToList,
  arg: parseNameOrNameVal,
  cmd: parseMaybeJSON,
  copy: parseMaybeJSONToList,
  entrypoint: parseMaybeJSON,
  env: (rest, st) => parseNameVal(rest, "ENV", st),
  expose: parseStringsWhitespaceDelimited,
  from: parseStringsWhitespaceDelimited,
  healthcheck: parseHealthConfig,
  label: (rest, st) => parseNameVal(rest, "LABEL", st),
  maintainer: parseString,
  onbuild: parseSubCommand,
  run: parseMaybeJSON,
  shell: parseMaybeJSON,
  stopsignal: parseString,
  user: parseString,
  volume: parseMaybeJSONToList,
  workdir: parseString,
};

function nodeFromLine(line: string, st: ParserState, comments: string[]): InstructionNode {
  const { cmd, flags, rest } = splitCommand(line);
  const fn = DISPATCH[cmd.toLowerCase()];
  const res: LineResult = fn ? fn(rest, st) : { args: [], ignored: true };
  const node: InstructionNode = {
    cmd,
    flags,
    args: res.args,
    json: res.json ?? false,
    heredocs: [],
    original: line,
    startLine: 0,
    endLine: 0,
    comments,
  };
  if (res.sub) node.sub = res.sub;
  if (res.ignored) node.ignored = true;
  return node;
}

function parseSubCommand(rest: string, st: ParserState): LineResult {
  if (rest === "") return { args: [] };
  return { args: [], sub: nodeFromLine(rest, st, []) };
}

/** Words separated by whitespace; quotes and escapes are kept (they are processed at expansion). */
function parseWords(rest: string, st: ParserState): string[] {
  const IN_SPACES = 0;
  const IN_WORD = 1;
  const IN_QUOTE = 2;
  const words: string[] = [];
  let phase = IN_SPACES;
  let word = "";
  let quote = "";
  let blankOK = false;
  const chars = Array.from(rest);
  let ch = "";
  for (let pos = 0; pos <= chars.length; pos++) {
    if (pos !== chars.length) ch = chars[pos];
    if (phase === IN_SPACES) {
      if (pos === chars.length) break;
      if (isSpace(ch)) continue;
      phase = IN_WORD;
    }
    if ((phase === IN_WORD || phase === IN_QUOTE) && pos === chars.length) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === IN_WORD) {
      if (isSpace(ch)) {
        phase = IN_SPACES;
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = IN_QUOTE;
      }
      if (ch === st.escapeToken) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos];
      }
      word += ch;
      continue;
    }
    if (phase === IN_QUOTE) {
      if (ch === quote) phase = IN_WORD;
      if (ch === st.escapeToken && quote !== "'") {
        if (pos + 1 === chars.length) {
          phase = IN_WORD;
          continue;
        }
        pos++;
        word += ch;
        ch = chars[pos];
      }
      word += ch;
    }
  }
  return words;
}

/** ENV and LABEL: `KEY value with spaces` (old form) or `k=v k2=v2`. Triples key, value, separator. */
function parseNameVal(rest: string, key: string, st: ParserState): LineResult {
  const words = parseWords(rest, st);
  if (words.length === 0) return { args: [] };
  if (!words[0].includes("=")) {
    const parts = splitWhitespace(rest, 2);
    if (parts.length < 2) throw new Error(`${key} must have two arguments`);
    return { args: [parts[0], parts[1], ""] };
  }
  const args: string[] = [];
  for (const word of words) {
    const eq = word.indexOf("=");
    if (eq < 0) throw new Error(`Syntax error - can't find = in ${JSON.stringify(word)}. Must be of the form: name=value`);
    args.push(word.slice(0, eq), word.slice(eq + 1), "=");
  }
  return { args };
}

function parseNameOrNameVal(rest: string, st: ParserState): LineResult {
  return { args: parseWords(rest, st) };
}

function parseStringsWhitespaceDelimited(rest: string): LineResult {
  if (rest === "") return { args: [] };
  return { args: splitWhitespace(rest) };
}

function parseString(rest: string): LineResult {
  if (rest === "") return { args: [] };
  return { args: [rest] };
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

class NotStringArrayError extends Error {
  constructor() {
    super("when using JSON array syntax, arrays must be comprised of strings only");
  }
}

/**
 * The first JSON value of `rest` when it is an array of strings (what follows it is ignored, as Go's
 * json.Decoder does); undefined when `rest` is not valid JSON; throws when it is an array of non-strings.
 */
function parseJSON(rest: string): string[] | undefined {
  rest = trimLeftSpace(rest);
  if (!rest.startsWith("[")) return undefined;
  let depth = 0;
  let end = -1;
  for (let i = 0; i < rest.length && end < 0; i++) {
    const c = rest[i];
    if (c === '"') {
      for (i++; i < rest.length && rest[i] !== '"'; i++) if (rest[i] === "\\") i++;
      continue;
    }
    if (c === "[" || c === "{") depth++;
    else if (c === "]" || c === "}") {
      depth--;
      if (depth === 0) end = i + 1;
    }
  }
  if (end < 0) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(rest.slice(0, end));
  } catch {
    return undefined;
  }
  if (!Array.isArray(value)) return undefined;
  for (const v of value) if (typeof v !== "string") throw new NotStringArrayError();
  // Go's decoder turns unpaired surrogate escapes into U+FFFD.
  return (value as string[]).map((v) => v.replace(LONE_SURROGATE, "\ufffd"));
}

function parseMaybeJSON(rest: string): LineResult {
  if (rest === "") return { args: [] };
  const json = parseJSON(rest);
  if (json) return { args: json, json: true };
  return { args: [rest] };
}

function parseMaybeJSONToList(rest: string): LineResult {
  const json = parseJSON(rest);
  if (json) return { args: json, json: true };
  return parseStringsWhitespaceDelimited(rest);
}

function parseHealthConfig(rest: string): LineResult {
  let sep = 0;
  while (sep < rest.length && !isSpace(rest[sep])) sep++;
  let next = sep;
  while (next < rest.length && isSpace(rest[next])) next++;
  if (sep === 0) return { args: [] };
  const cmd = parseMaybeJSON(rest.slice(next));
  return { args: [rest.slice(0, sep), ...cmd.args], json: cmd.json };
}

// ---------------------------------------------------------------------------------------------------
// heredocs

function countQuotes(s: string): number {
  let n = 0;
  for (const c of s) if (c === "'" || c === '"') n++;
  return n;
}

const NO_ENV: ReadonlyMap<string, string> = new Map();

/**
 * A heredoc marker word (`<<EOF`, `<<-"EOF"`, `3<<EOF`) → its description; null for other words.
 * The content is expanded unless some part of the delimiter is quoted. Throws on a malformed word.
 */
export function parseHeredocWord(word: string): Heredoc | null {
  const m = HEREDOC_RE.exec(word);
  if (!m) return null;
  const rest = m[3];
  if (rest.length === 0) return null;
  const lex = new ShellLex("\\");
  lex.skipUnsetEnv = true;
  const words = lex.processWords(rest, NO_ENV);
  if (words.length !== 1) return null;
  lex.rawQuotes = true;
  const wordsRaw = lex.processWords(rest, NO_ENV);
  if (wordsRaw.length !== words.length) throw new Error(`internal lexing of heredoc produced inconsistent results: ${rest}`);
  const name = words[0];
  return {
    name,
    content: "",
    expand: countQuotes(name) === countQuotes(wordsRaw[0]),
    chomp: m[2] === "-",
    fileDescriptor: m[1] ? Number.parseInt(m[1], 10) : 0,
  };
}

/** parseHeredocWord without errors (BuildKit's MustParseHeredoc). */
export function mustParseHeredocWord(word: string): Heredoc | null {
  try {
    return parseHeredocWord(word);
  } catch {
    return null;
  }
}

function heredocsFromLine(line: string): Heredoc[] {
  const lex = new ShellLex("\\");
  lex.rawQuotes = true;
  lex.rawEscapes = true;
  lex.skipUnsetEnv = true;
  let words: string[];
  try {
    words = lex.processWords(line, NO_ENV);
  } catch {
    words = [];
  }
  const docs: Heredoc[] = [];
  for (const w of words) {
    const doc = parseHeredocWord(w);
    if (doc) docs.push(doc);
  }
  return docs;
}

/** Removes leading tabs from every line (`<<-`). */
export function chompHeredocContent(src: string): string {
  return src.replace(/^\t+/gm, "");
}
