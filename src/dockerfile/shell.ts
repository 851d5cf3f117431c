// Shell-word expansion exactly as BuildKit's frontend/dockerfile/shell/lex.go does it: quotes,
// escapes, $V, ${V}, ${V:-w} ${V-w} ${V:+w} ${V+w} ${V:?m} ${V?m}, ${V#p} ${V##p} ${V%p} ${V%%p},
// ${V/p/r} ${V//p/r}, and word splitting after expansion. Pure: no Workers or Node imports.
//
// Patterns (`#`, `%`, `/`) are BuildKit's shell globs (`*`, `?`, `\` escapes; no brackets) that
// BuildKit turns into Go regular expressions. Here they are matched by a linear-time matcher with
// the same leftmost-first semantics (Go's `.` never matches "\n"), so no input can backtrack
// exponentially.

import { goQuote } from "./text";

/** A word could not be expanded (unterminated quote, bad substitution, `${V:?msg}`, …). */
export class ShellError extends Error {
  override name = "ShellError";
  /** The word being processed. */
  readonly word: string;
  /** BuildKit's inner message, without the `failed to process "…":` prefix. */
  readonly detail: string;
  constructor(word: string, detail: string) {
    super(`failed to process ${goQuote(word)}: ${detail}`);
    this.word = word;
    this.detail = detail;
  }
}

/** Internal error (BuildKit's unwrapped errors); turned into ShellError at the top. */
class LexError extends Error {}

export interface ProcessWordResult {
  result: string;
  words: string[];
  /** Variables looked up and found. */
  matched: Set<string>;
  /** Variables looked up and not set. */
  unmatched: Set<string>;
}

export type ShellEnv = ReadonlyMap<string, string> | readonly string[] | Readonly<Record<string, string>>;

/** BuildKit's BuildEnvs: "K=V" strings to a map (last one wins; "K" alone means K=""). */
export function buildEnvs(env: readonly string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of env) {
    const i = e.indexOf("=");
    if (i < 0) m.set(e, "");
    else m.set(e.slice(0, i), e.slice(i + 1));
  }
  return m;
}

function toEnvMap(env: ShellEnv): ReadonlyMap<string, string> {
  if (env instanceof Map) return env;
  if (Array.isArray(env)) return buildEnvs(env as readonly string[]);
  return new Map(Object.entries(env as Record<string, string>));
}

// ---------------------------------------------------------------------------------------------
// Go character classes (unicode package) and helpers

const EOF = -1;
/** Deepest ${…} nesting accepted (each level is a few JS stack frames). */
const MAX_NESTING = 200;
const BACKSLASH = 0x5c;

export function isGoSpace(cp: number): boolean {
  switch (cp) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20: case 0x85: case 0xa0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
      return true;
  }
  return cp >= 0x2000 && cp <= 0x200a;
}

const RE_LETTER = /^\p{L}$/u;
const RE_DIGIT = /^\p{Nd}$/u;

function isGoLetter(cp: number): boolean {
  if (cp < 0x80) return (cp >= 0x41 && cp <= 0x5a) || (cp >= 0x61 && cp <= 0x7a);
  return cp >= 0 && RE_LETTER.test(String.fromCodePoint(cp));
}

function isGoDigit(cp: number): boolean {
  if (cp < 0x80) return cp >= 0x30 && cp <= 0x39;
  return cp >= 0 && RE_DIGIT.test(String.fromCodePoint(cp));
}

/** Go's string(rune): EOF, surrogates and out-of-range runes become U+FFFD. */
function runeStr(cp: number): string {
  if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return "\uFFFD";
  return String.fromCodePoint(cp);
}

function toRunes(s: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        out.push(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
        i++;
        continue;
      }
    }
    // A lone surrogate is what Go sees as invalid UTF-8: utf8.RuneError.
    out.push(c >= 0xd800 && c <= 0xdfff ? 0xfffd : c);
  }
  return out;
}

/** Go's strconv.Quote (used in error messages); one definition, in text.ts. */
export { goQuote };

/** Go's text/scanner as lex.go uses it: Peek/Next over runes, a leading BOM skipped. */
class Scanner {
  private readonly runes: number[];
  private pos: number;
  constructor(s: string) {
    this.runes = toRunes(s);
    this.pos = this.runes[0] === 0xfeff ? 1 : 0;
  }
  peek(): number {
    return this.pos < this.runes.length ? this.runes[this.pos] : EOF;
  }
  next(): number {
    if (this.pos < this.runes.length) return this.runes[this.pos++];
    return EOF;
  }
}

// ---------------------------------------------------------------------------------------------
// Word accumulation (wordsStruct)

class Words {
  word = "";
  words: string[] = [];
  inWord = false;

  addChar(ch: number): void {
    const space = isGoSpace(ch);
    if (space && this.inWord) {
      if (this.word.length !== 0) {
        this.words.push(this.word);
        this.word = "";
        this.inWord = false;
      }
    } else if (!space) {
      this.addRawChar(ch);
    }
  }
  addRawChar(ch: number): void {
    this.word += runeStr(ch);
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of toRunes(s)) this.addChar(ch);
  }
  addRawString(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  getWords(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = "";
      this.inWord = false;
    }
    return this.words;
  }
}

function isSpecialParam(ch: number): boolean {
  switch (ch) {
    case 0x40: /* @ */ case 0x2a: /* * */ case 0x23: /* # */ case 0x3f: /* ? */
    case 0x2d: /* - */ case 0x24: /* $ */ case 0x21: /* ! */ case 0x30: /* 0 */
      return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// ShellLex

export class ShellLex {
  readonly escapeToken: number;
  /** Keep quote characters in the result (BuildKit's RawQuotes). */
  rawQuotes = false;
  /** Keep escape characters in the result (BuildKit's RawEscapes). */
  rawEscapes = false;
  /** Treat ' and " as ordinary characters (BuildKit's SkipProcessQuotes, used for heredocs). */
  skipProcessQuotes = false;
  /** Leave references to unset variables as written (BuildKit's SkipUnsetEnv). */
  skipUnsetEnv = false;

  // per-call state
  private sc!: Scanner;
  private envs!: ReadonlyMap<string, string>;
  private curRawEscapes = false;
  private depth = 0;
  private matches!: Set<string>;
  private nonmatches!: Set<string>;

  constructor(escapeToken: string = "\\") {
    const cp = escapeToken.codePointAt(0);
    this.escapeToken = cp === undefined ? BACKSLASH : cp;
  }

  /** Expands `word` (quotes removed, variables substituted). Throws ShellError. */
  processWord(word: string, env: ShellEnv): string {
    return this.process(word, env).result;
  }

  /** Expands `word`, then splits it into words on unquoted whitespace. Throws ShellError. */
  processWords(word: string, env: ShellEnv): string[] {
    return this.process(word, env).words;
  }

  /** Expansion plus the names looked up (found / not set). Throws ShellError. */
  processWordWithMatches(word: string, env: ShellEnv): ProcessWordResult {
    return this.process(word, env);
  }

  private process(word: string, env: ShellEnv): ProcessWordResult {
    this.sc = new Scanner(word);
    this.envs = toEnvMap(env);
    this.curRawEscapes = this.rawEscapes;
    this.depth = 0;
    this.matches = new Set();
    this.nonmatches = new Set();
    try {
      const [result, words] = this.processStopOn(EOF, this.rawEscapes);
      return { result, words, matched: this.matches, unmatched: this.nonmatches };
    } catch (e) {
      if (e instanceof LexError) throw new ShellError(word, e.message);
      throw e;
    } finally {
      // do not keep the word or env alive
      this.sc = undefined as unknown as Scanner;
      this.envs = undefined as unknown as ReadonlyMap<string, string>;
    }
  }

  private processStopOn(stopChar: number, rawEscapes: boolean): [string, string[]] {
    // Go's growable stacks take any nesting; a JS stack does not, so very deep ${…${…}} is an error.
    if (++this.depth > MAX_NESTING) throw new LexError(`syntax error: \${} nested more than ${MAX_NESTING} levels deep`);
    const saved = this.curRawEscapes;
    this.curRawEscapes = rawEscapes;
    try {
      return this.processStopOnInner(stopChar);
    } finally {
      this.curRawEscapes = saved;
      this.depth--;
    }
  }

  private processStopOnInner(stopChar: number): [string, string[]] {
    const sc = this.sc;
    let result = "";
    const words = new Words();
    const quotes = !this.skipProcessQuotes;
    for (;;) {
      const ch = sc.peek();
      if (ch === EOF) break;
      if (stopChar !== EOF && ch === stopChar) {
        sc.next();
        return [result, words.getWords()];
      }
      if (ch === 0x24 /* $ */) {
        const tmp = this.processDollar();
        result += tmp;
        words.addString(tmp);
      } else if (quotes && ch === 0x27 /* ' */) {
        const tmp = this.processSingleQuote();
        result += tmp;
        words.addRawString(tmp);
      } else if (quotes && ch === 0x22 /* " */) {
        const tmp = this.processDoubleQuote();
        result += tmp;
        words.addRawString(tmp);
      } else {
        let c = sc.next();
        if (c === this.escapeToken) {
          if (this.curRawEscapes) {
            words.addRawChar(c);
            result += runeStr(c);
          }
          // the escape token escapes the next character, except at the end of the word
          c = sc.next();
          if (c === EOF) break;
          words.addRawChar(c);
        } else {
          words.addChar(c);
        }
        result += runeStr(c);
      }
    }
    if (stopChar !== EOF) {
      throw new LexError(`unexpected end of statement while looking for matching ${runeStr(stopChar)}`);
    }
    return [result, words.getWords()];
  }

  private processSingleQuote(): string {
    const sc = this.sc;
    let result = "";
    let ch = sc.next();
    if (this.rawQuotes) result += runeStr(ch);
    for (;;) {
      ch = sc.next();
      if (ch === EOF) throw new LexError("unexpected end of statement while looking for matching single-quote");
      if (ch === 0x27) {
        if (this.rawQuotes) result += runeStr(ch);
        return result;
      }
      result += runeStr(ch);
    }
  }

  private processDoubleQuote(): string {
    const sc = this.sc;
    let result = "";
    const open = sc.next();
    if (this.rawQuotes) result += runeStr(open);
    for (;;) {
      const p = sc.peek();
      if (p === EOF) throw new LexError("unexpected end of statement while looking for matching double-quote");
      if (p === 0x22) {
        const ch = sc.next();
        if (this.rawQuotes) result += runeStr(ch);
        return result;
      }
      if (p === 0x24) {
        result += this.processDollar();
        continue;
      }
      let ch = sc.next();
      if (ch === this.escapeToken) {
        if (this.curRawEscapes) result += runeStr(ch);
        const q = sc.peek();
        if (q === EOF) continue; // ignore the escape at the end of the word
        if (q === 0x22 || q === 0x24 || q === this.escapeToken) ch = sc.next();
      }
      result += runeStr(ch);
    }
  }

  private processDollar(): string {
    const sc = this.sc;
    sc.next();

    // $xxx
    if (sc.peek() !== 0x7b /* { */) {
      const name = this.processName();
      if (name === "") return "$";
      const [value, found] = this.getEnv(name);
      if (!found && this.skipUnsetEnv) return "$" + name;
      return value;
    }

    sc.next();
    switch (sc.peek()) {
      case EOF:
        throw new LexError("syntax error: missing '}'");
      case 0x7b: case 0x7d: case 0x3a: // ${{xx}, ${:xx}, ${:}, ${}
        throw new LexError("syntax error: bad substitution");
    }
    const name = this.processName();
    let ch = sc.next();
    let chs = runeStr(ch);
    let nullIsUnset = false;

    switch (ch) {
      case 0x7d: { // ${xx}
        const [value, set] = this.getEnv(name);
        if (!set && this.skipUnsetEnv) return `\${${name}}`;
        return value;
      }
      case 0x3a: // ':' then fall through with the next char as the modifier
      case 0x2b: case 0x2d: case 0x3f: case 0x23: case 0x25: { // + - ? # %
        if (ch === 0x3a) {
          nullIsUnset = true;
          ch = sc.next();
          chs += runeStr(ch);
        }
        const rawEscapes = ch === 0x23 || ch === 0x25;
        let word: string;
        try {
          [word] = this.processStopOn(0x7d, rawEscapes);
        } catch (e) {
          if (e instanceof LexError && sc.peek() === EOF) throw new LexError("syntax error: missing '}'");
          throw e;
        }

        const [value, set] = this.getEnv(name);
        if (this.skipUnsetEnv && !set) return `\${${name}${chs}${word}}`;

        switch (ch) {
          case 0x2d: // -
            if (!set || (nullIsUnset && value === "")) return word;
            return value;
          case 0x2b: // +
            if (!set || (nullIsUnset && value === "")) return "";
            return word;
          case 0x3f: // ?
            if (!set) throw new LexError(`${name}: ${word !== "" ? word : "is not allowed to be unset"}`);
            if (nullIsUnset && value === "") throw new LexError(`${name}: ${word !== "" ? word : "is not allowed to be empty"}`);
            return value;
          case 0x25: case 0x23: { // % # (%% ## greedy)
            let greedy = false;
            if (word.length > 0 && word.charCodeAt(0) === ch) {
              greedy = true;
              word = word.slice(1);
            }
            return ch === 0x25 ? trimSuffix(word, value, greedy) : trimPrefix(word, value, greedy);
          }
          default:
            throw new LexError(`unsupported modifier (${chs}) in substitution`);
        }
      }
      case 0x2f: { // / and //
        const replaceAll = sc.peek() === 0x2f;
        if (replaceAll) sc.next();
        let pattern: string;
        try {
          [pattern] = this.processStopOn(0x2f, true);
        } catch (e) {
          if (e instanceof LexError && sc.peek() === EOF) throw new LexError("syntax error: missing '/' in ${}");
          throw e;
        }
        let replacement: string;
        try {
          [replacement] = this.processStopOn(0x7d, true);
        } catch (e) {
          if (e instanceof LexError && sc.peek() === EOF) throw new LexError("syntax error: missing '}'");
          throw e;
        }
        const [value, set] = this.getEnv(name);
        if (this.skipUnsetEnv && !set) return `\${${name}/${pattern}/${replacement}}`;
        const glob = compileGlob(pattern, true, false);
        return replaceAll ? globReplaceAll(glob, value, replacement) : globReplaceFirst(glob, value, replacement);
      }
      default:
        throw new LexError(`unsupported modifier (${chs}) in substitution`);
    }
  }

  private processName(): string {
    const sc = this.sc;
    let name = "";
    while (sc.peek() !== EOF) {
      const ch = sc.peek();
      if (name.length === 0 && isGoDigit(ch)) {
        while (sc.peek() !== EOF && isGoDigit(sc.peek())) name += runeStr(sc.next());
        return name;
      }
      if (name.length === 0 && isSpecialParam(ch)) return runeStr(sc.next());
      if (!isGoLetter(ch) && !isGoDigit(ch) && ch !== 0x5f) break;
      name += runeStr(sc.next());
    }
    return name;
  }

  private getEnv(name: string): [string, boolean] {
    const v = this.envs.get(name);
    if (v !== undefined || this.envs.has(name)) {
      this.matches.add(name);
      return [v ?? "", true];
    }
    this.nonmatches.add(name);
    return ["", false];
  }
}

// ---------------------------------------------------------------------------------------------
// Shell patterns (convertShellPatternToRegex) and a linear matcher with Go regexp semantics

const AtomKind = { Lit: 0, Any: 1, Star: 2 } as const;
interface Glob {
  kinds: Uint8Array;
  lits: Int32Array;
  greedy: boolean;
  anchored: boolean;
}

function compileGlob(pattern: string, greedy: boolean, anchored: boolean): Glob {
  const sc = new Scanner(pattern);
  const kinds: number[] = [];
  const lits: number[] = [];
  for (let tok = sc.next(); tok !== EOF; tok = sc.next()) {
    if (tok === 0x2a) {
      kinds.push(AtomKind.Star);
      lits.push(0);
      continue;
    }
    if (tok === 0x3f) {
      kinds.push(AtomKind.Any);
      lits.push(0);
      continue;
    }
    if (tok === BACKSLASH) {
      // } and / inside ${} are escaped, but the escape is not part of the pattern
      if (sc.peek() === 0x7d || sc.peek() === 0x2f) continue;
      tok = sc.next();
      if (tok !== 0x2a && tok !== 0x3f && tok !== BACKSLASH) {
        throw new LexError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${runeStr(tok)}'`);
      }
    }
    kinds.push(AtomKind.Lit);
    lits.push(tok);
  }
  return { kinds: Uint8Array.from(kinds), lits: Int32Array.from(lits), greedy, anchored };
}

/**
 * end[p] = end of the leftmost-first (backtracking-priority) match of the glob starting at p,
 * or -1; computed right to left in O(atoms × length).
 */
function matchEnds(g: Glob, v: number[]): Int32Array {
  const n = v.length;
  let next = new Int32Array(n + 1);
  for (let p = 0; p <= n; p++) next[p] = p;
  let cur = new Int32Array(n + 1);
  for (let i = g.kinds.length - 1; i >= 0; i--) {
    const kind = g.kinds[i];
    if (kind === AtomKind.Lit) {
      const c = g.lits[i];
      for (let p = 0; p <= n; p++) cur[p] = p < n && v[p] === c ? next[p + 1] : -1;
    } else if (kind === AtomKind.Any) {
      for (let p = 0; p <= n; p++) cur[p] = p < n && v[p] !== 0x0a ? next[p + 1] : -1;
    } else if (g.greedy) {
      // the largest k in [p, first newline at/after p] where the rest matches
      let best = -1;
      for (let p = n; p >= 0; p--) {
        if (p < n && v[p] === 0x0a) best = -1;
        if (best < 0 && next[p] >= 0) best = p;
        cur[p] = best >= 0 ? next[best] : -1;
      }
    } else {
      // the smallest such k
      let best = -1;
      for (let p = n; p >= 0; p--) {
        if (p < n && v[p] === 0x0a) best = -1;
        if (next[p] >= 0) best = p;
        cur[p] = best >= 0 ? next[best] : -1;
      }
    }
    const t = next;
    next = cur;
    cur = t;
  }
  return next;
}

function runesToString(r: number[], a: number, b: number): string {
  let s = "";
  for (let i = a; i < b; i++) s += String.fromCodePoint(r[i]);
  return s;
}

/** Go's regexp template expansion (ReplaceAllString): $0/${0} is the match, other groups empty, $$ is $. */
function goExpand(template: string, match: string): string {
  let out = "";
  let t = template;
  for (;;) {
    const i = t.indexOf("$");
    if (i < 0) break;
    out += t.slice(0, i);
    t = t.slice(i + 1);
    if (t.startsWith("$")) {
      out += "$";
      t = t.slice(1);
      continue;
    }
    let s = t;
    let brace = false;
    if (s.startsWith("{")) {
      brace = true;
      s = s.slice(1);
    }
    let j = 0;
    const rs = toRunes(s);
    let nameLen = 0; // in UTF-16 units
    for (; j < rs.length; j++) {
      const r = rs[j];
      if (!isGoLetter(r) && !isGoDigit(r) && r !== 0x5f) break;
      nameLen += r > 0xffff ? 2 : 1;
    }
    if (nameLen === 0 || (brace && s[nameLen] !== "}")) {
      out += "$"; // malformed: $ as text
      continue;
    }
    const name = s.slice(0, nameLen);
    t = s.slice(nameLen + (brace ? 1 : 0));
    let num = /^[0-9]+$/.test(name) ? Number(name) : -1;
    if (num >= 1e8 || (name[0] === "0" && name.length > 1)) num = -1;
    if (num === 0) out += match;
  }
  return out + t;
}

function globReplaceFirst(g: Glob, value: string, replacement: string): string {
  const v = toRunes(value);
  const ends = matchEnds(g, v);
  for (let s = 0; s <= v.length; s++) {
    if (ends[s] >= 0) return runesToString(v, 0, s) + replacement + runesToString(v, ends[s], v.length);
  }
  return value;
}

function globReplaceAll(g: Glob, value: string, replacement: string): string {
  const v = toRunes(value);
  const n = v.length;
  const ends = matchEnds(g, v);
  let out = "";
  let lastMatchEnd = 0;
  let searchPos = 0;
  let s = 0;
  while (searchPos <= n) {
    // the first match starting at or after searchPos
    s = Math.max(s, searchPos);
    while (s <= n && ends[s] < 0) s++;
    if (s > n) break;
    const a0 = s;
    const a1 = ends[s];
    out += runesToString(v, lastMatchEnd, a0);
    if (a1 > lastMatchEnd || a0 === 0) out += goExpand(replacement, runesToString(v, a0, a1));
    lastMatchEnd = a1;
    if (searchPos + 1 > a1) searchPos++;
    else searchPos = a1;
  }
  return out + runesToString(v, lastMatchEnd, n);
}

function trimPrefix(word: string, value: string, greedy: boolean): string {
  const g = compileGlob(word, greedy, true);
  const v = toRunes(value);
  const end = matchEnds(g, v)[0];
  return end >= 0 ? runesToString(v, end, v.length) : value;
}

/** Reverses a pattern without reversing escapes: a\*c → c\*a. */
function reversePattern(pattern: string): string {
  const r = Array.from(pattern);
  const out = new Array<string>(r.length);
  const last = r.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = r[i];
    const o = last - i;
    if (tok === "\\" && i !== last) {
      out[o - 1] = tok;
      out[o] = r[i + 1];
      i += 2;
    } else {
      out[o] = tok;
      i++;
    }
  }
  return out.join("");
}

function reverseString(s: string): string {
  return Array.from(s).reverse().join("");
}

function trimSuffix(pattern: string, word: string, greedy: boolean): string {
  // shortest/longest rightmost match = leftmost match on the reversed strings
  return reverseString(trimPrefix(reversePattern(pattern), reverseString(word), greedy));
}
