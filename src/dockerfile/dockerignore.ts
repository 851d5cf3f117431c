// .dockerignore with Docker's semantics: docker/cli's ReadAll (comments, blank lines, leading `/`
// and `./` cleaned) and moby/patternmatcher (`**`, `*` and `?` never crossing `/`, `[a-c]` classes,
// `\` escapes, `!` exceptions applied in order, a pattern matching a parent directory excludes its
// children), evaluated the way BuildKit's context walker does (MatchesUsingParentResults).
// Pure: no Workers or Node imports.

export class DockerignoreError extends Error {
  override name = "DockerignoreError";
  /** 1-based line of .dockerignore the error is about, when known. */
  line?: number;
  constructor(message: string, line?: number) {
    super(line !== undefined ? `.dockerignore line ${line}: ${message}` : message);
    if (line !== undefined) this.line = line;
  }
}

export type MatchType = "exact" | "prefix" | "suffix" | "regexp";

/** One compiled pattern of a .dockerignore. */
export interface Pattern {
  /** The cleaned pattern without its leading `!`. */
  readonly pattern: string;
  /** `!pattern`: re-includes what earlier patterns excluded. */
  readonly exclusion: boolean;
  readonly matchType: MatchType;
  /** 1-based line in the .dockerignore text (0 when built from a list). */
  readonly line: number;
  /** Whether the (slash-separated, cleaned, relative) path matches this pattern by itself. */
  match(path: string): boolean;
}

// ---------------------------------------------------------------------------------------------
// Go helpers: path.Clean, strings.TrimSpace (unicode.IsSpace)

function isGoSpace(cp: number): boolean {
  switch (cp) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20: case 0x85: case 0xa0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
      return true;
  }
  return cp >= 0x2000 && cp <= 0x200a;
}

function goTrimSpace(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isGoSpace(s.charCodeAt(a))) a++;
  while (b > a && isGoSpace(s.charCodeAt(b - 1))) b--;
  return s.slice(a, b);
}

/** Go's path.Clean. */
export function cleanPath(p: string): string {
  if (p === "") return ".";
  const rooted = p[0] === "/";
  const out: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(seg);
  }
  const body = out.join("/");
  if (rooted) return "/" + body;
  return body === "" ? "." : body;
}

function dirname(p: string): string {
  const i = p.lastIndexOf("/");
  if (i < 0) return ".";
  return cleanPath(p.slice(0, i + 1));
}

/** A context path as the walker sees it: slash-separated, cleaned, relative ("" → "."). */
export function normalizeContextPath(p: string): string {
  let c = cleanPath(p);
  while (c.startsWith("/")) c = c.slice(1);
  return c === "" ? "." : c;
}

// ---------------------------------------------------------------------------------------------
// docker/cli ReadAll (moby/patternmatcher/ignorefile)

export interface IgnoreLine {
  /** As docker/cli's ReadAll returns it: cleaned, leading "/" removed, "!" kept. */
  text: string;
  line: number;
}

/** The pattern lines of a .dockerignore, exactly as docker's ReadAll returns them. */
export function readDockerignore(text: string): IgnoreLine[] {
  const out: IgnoreLine[] = [];
  // bufio.ScanLines: split on \n, drop one trailing \r; no final empty token.
  const lines = text.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  for (let i = 0; i < lines.length; i++) {
    let pattern = lines[i];
    if (pattern.endsWith("\r")) pattern = pattern.slice(0, -1);
    if (i === 0 && pattern.startsWith("\uFEFF")) pattern = pattern.slice(1);
    if (pattern.startsWith("#")) continue;
    pattern = goTrimSpace(pattern);
    if (pattern === "") continue;
    const invert = pattern[0] === "!";
    if (invert) pattern = goTrimSpace(pattern.slice(1));
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern[0] === "/") pattern = pattern.slice(1);
    }
    if (invert) pattern = "!" + pattern;
    out.push({ text: pattern, line: i + 1 });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// filepath.Match syntax check (Go ≥ 1.16 validates the whole pattern)

function checkMatchSyntax(pattern: string): boolean {
  const cps = Array.from(pattern);
  let i = 0;
  const n = cps.length;
  // getEsc: one class character (maybe escaped); the class must go on after it.
  const getEsc = (): boolean => {
    if (i >= n || cps[i] === "-" || cps[i] === "]") return false;
    if (cps[i] === "\\") {
      i++;
      if (i >= n) return false;
    }
    i++;
    return i < n;
  };
  while (i < n) {
    const c = cps[i];
    if (c === "*") {
      i++;
    } else if (c === "[") {
      i++;
      if (i < n && cps[i] === "^") i++;
      let nrange = 0;
      for (;;) {
        if (i < n && cps[i] === "]" && nrange > 0) {
          i++;
          break;
        }
        if (!getEsc()) return false;
        if (cps[i] === "-") {
          i++;
          if (!getEsc()) return false;
        }
        nrange++;
      }
    } else if (c === "\\") {
      i++;
      if (i >= n) return false;
      i++;
    } else {
      i++;
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// patternmatcher compile
//
// patternmatcher turns a pattern into a Go regular expression (RE2: linear time). Here the same
// expression is kept as a list of atoms and matched by a Thompson NFA simulation, O(path × pattern),
// so no .dockerignore can make matching backtrack exponentially.

/** One code point: literal, class, or "anything but /". */
type CharTest = (cp: number) => boolean;

type Atom =
  | { k: "char"; test: CharTest } // one character
  | { k: "star"; test: CharTest } // zero or more characters (`*` → [^/]*, `**` at the end → .*)
  | { k: "dirs" }; // `**/` → (.*/)?  any run of characters ending in "/", or nothing

const NOT_SLASH: CharTest = (c) => c !== 0x2f;
const NOT_NEWLINE: CharTest = (c) => c !== 0x0a; // Go's `.`

function nfaMatch(atoms: readonly Atom[], path: string): boolean {
  const m = atoms.length;
  let at = new Uint8Array(m + 1); // "before atom i"
  let inside = new Uint8Array(m); // inside a `dirs` atom
  let nextAt = new Uint8Array(m + 1);
  let nextInside = new Uint8Array(m);
  const close = () => {
    for (let i = 0; i < m; i++) {
      if (!at[i]) continue;
      const a = atoms[i];
      if (a.k === "star") at[i + 1] = 1;
      else if (a.k === "dirs") {
        at[i + 1] = 1;
        inside[i] = 1;
      }
    }
  };
  at[0] = 1;
  close();
  for (const ch of path) {
    const c = ch.codePointAt(0)!;
    nextAt.fill(0);
    nextInside.fill(0);
    let alive = false;
    for (let i = 0; i < m; i++) {
      const a = atoms[i];
      if (at[i]) {
        if (a.k === "char" && a.test(c)) (nextAt[i + 1] = 1), (alive = true);
        else if (a.k === "star" && a.test(c)) (nextAt[i] = 1), (alive = true);
      }
      if (inside[i] && c !== 0x0a) {
        nextInside[i] = 1;
        alive = true;
        if (c === 0x2f) nextAt[i + 1] = 1;
      }
    }
    if (!alive) return false;
    [at, nextAt] = [nextAt, at];
    [inside, nextInside] = [nextInside, inside];
    close();
  }
  return at[m] === 1;
}

const SHOULD_ESCAPE = new Set([".", "+", "(", ")", "|", "{", "}", "$"]);

class CompiledPattern implements Pattern {
  readonly pattern: string;
  readonly exclusion: boolean;
  readonly line: number;
  matchType: MatchType = "exact";
  private atoms: Atom[] = [];

  constructor(pattern: string, exclusion: boolean, line: number) {
    this.pattern = pattern;
    this.exclusion = exclusion;
    this.line = line;
    this.compile();
  }

  // patternmatcher's Pattern.compile (with "/" as the separator)
  private compile(): void {
    const atoms: Atom[] = [];
    const lit = (ch: string) => {
      const cp = ch.codePointAt(0)!;
      atoms.push({ k: "char", test: (c) => c === cp });
    };
    let type: MatchType = "exact";
    const cps = Array.from(this.pattern);
    let k = 0;
    const peek = () => (k < cps.length ? cps[k] : undefined);
    for (let i = 0; k < cps.length; i++) {
      const ch = cps[k++];
      if (ch === "*") {
        if (peek() === "*") {
          k++;
          if (peek() === "/") k++; // treat **/ as **
          if (peek() === undefined) {
            // "**" at the end: everything (like .gitignore)
            if (type === "exact") type = "prefix";
            else {
              atoms.push({ k: "star", test: NOT_NEWLINE });
              type = "regexp";
            }
          } else {
            atoms.push({ k: "dirs" });
            type = "regexp";
          }
          if (i === 0) type = "suffix";
        } else {
          atoms.push({ k: "star", test: NOT_SLASH });
          type = "regexp";
        }
      } else if (ch === "?") {
        atoms.push({ k: "char", test: NOT_SLASH });
        type = "regexp";
      } else if (SHOULD_ESCAPE.has(ch)) {
        lit(ch);
      } else if (ch === "\\") {
        // escapes the next character (filepath.Match rejects a trailing backslash)
        if (peek() !== undefined) {
          lit(cps[k++]);
          type = "regexp";
        } else {
          lit("\\");
        }
      } else if (ch === "[") {
        // a character class, validated by checkMatchSyntax: [^]? then (c | c-c)+ then ]
        let negated = false;
        if (peek() === "^") {
          negated = true;
          k++;
        }
        const ranges: [number, number][] = [];
        while (!(peek() === "]" && ranges.length > 0)) {
          let lo = cps[k++];
          if (lo === "\\") lo = cps[k++];
          let hi = lo;
          if (peek() === "-") {
            k++;
            hi = cps[k++];
            if (hi === "\\") hi = cps[k++];
          }
          const a = lo.codePointAt(0)!;
          const b = hi.codePointAt(0)!;
          if (a > b) {
            // Go's regexp rejects an inverted range: filepath.ErrBadPattern when matching
            throw new DockerignoreError(`syntax error in pattern ${JSON.stringify(this.pattern)}: invalid character class range ${lo}-${hi}`, this.line || undefined);
          }
          ranges.push([a, b]);
        }
        k++; // ]
        atoms.push({
          k: "char",
          test: (c) => {
            let inClass = false;
            for (const [a, b] of ranges) if (c >= a && c <= b) inClass = true;
            return inClass !== negated;
          },
        });
        type = "regexp";
      } else if (ch === "]") {
        lit(ch);
        type = "regexp";
      } else {
        lit(ch);
      }
    }
    this.matchType = type;
    this.atoms = atoms;
  }

  match(path: string): boolean {
    const p = this.pattern;
    switch (this.matchType) {
      case "exact":
        return path === p;
      case "prefix":
        return path.startsWith(p.slice(0, -2));
      case "suffix": {
        const suffix = p.slice(2);
        if (path.endsWith(suffix)) return true;
        return suffix[0] === "/" && path === suffix.slice(1);
      }
      case "regexp":
        return nfaMatch(this.atoms, path);
    }
  }
}

function compilePatterns(lines: readonly IgnoreLine[]): CompiledPattern[] {
  const out: CompiledPattern[] = [];
  for (const { text, line } of lines) {
    let p = goTrimSpace(text);
    if (p === "") continue;
    p = cleanPath(p);
    let exclusion = false;
    if (p[0] === "!") {
      if (p.length === 1) throw new DockerignoreError('illegal exclusion pattern: "!"', line || undefined);
      exclusion = true;
      p = p.slice(1);
    }
    if (!checkMatchSyntax(p)) {
      throw new DockerignoreError(`syntax error in pattern ${JSON.stringify(p)}`, line || undefined);
    }
    out.push(new CompiledPattern(p, exclusion, line));
  }
  return out;
}

/**
 * Parses and compiles a .dockerignore. Throws DockerignoreError (with the line) where docker
 * build would fail: a lone `!`, or a malformed pattern such as `[` or a trailing `\`.
 */
export function parseDockerignore(text: string): Pattern[] {
  return compilePatterns(readDockerignore(text));
}

// ---------------------------------------------------------------------------------------------
// Matcher

export interface KeepOptions {
  /** Path of the Dockerfile inside the context (default "Dockerfile"); never excluded. */
  dockerfilePath?: string;
}

const WILDCARD = /[*?[\\]/;

export class DockerIgnore {
  readonly patterns: readonly Pattern[];
  /** Whether any `!` exception exists. */
  readonly exclusions: boolean;
  private readonly compiled: CompiledPattern[];
  private readonly onlyPrefixExceptions: boolean;
  private readonly dirCache = new Map<string, boolean[]>();

  /** `text` is the .dockerignore content; a string[] is taken as already-read pattern lines. */
  constructor(text: string | readonly string[] = "") {
    this.compiled =
      typeof text === "string" ? compilePatterns(readDockerignore(text)) : compilePatterns(text.map((t) => ({ text: t, line: 0 })));
    this.patterns = this.compiled;
    this.exclusions = this.compiled.some((p) => p.exclusion);
    this.onlyPrefixExceptions = this.compiled.every((p) => !p.exclusion || !WILDCARD.test(p.pattern));
  }

  /** true = the path is excluded from the build context. Paths are relative to the context root. */
  matches(path: string): boolean {
    const p = normalizeContextPath(path);
    if (p === "." || this.compiled.length === 0) return false;
    const parent = dirname(p);
    const parentInfo = parent === "." ? undefined : this.dirInfo(parent);
    return this.evaluate(p, parentInfo).matched;
  }

  /** Like matches(), but the Dockerfile and .dockerignore themselves are always kept. */
  isExcluded(path: string, options: KeepOptions = {}): boolean {
    const p = normalizeContextPath(path);
    if (p === ".dockerignore" || p === normalizeContextPath(options.dockerfilePath ?? "Dockerfile")) return false;
    return this.matches(p);
  }

  /**
   * true when `dir` is excluded and no exception could re-include anything below it, so a walker
   * need not descend (BuildKit's fsutil optimisation; conservative when exceptions use wildcards).
   */
  canSkipDir(dir: string, options: KeepOptions = {}): boolean {
    const d = normalizeContextPath(dir);
    if (d === ".") return false;
    if (!this.matches(d)) return false;
    const dirSlash = d + "/";
    const keep = normalizeContextPath(options.dockerfilePath ?? "Dockerfile");
    if (keep.startsWith(dirSlash)) return false;
    if (!this.exclusions) return true;
    if (!this.onlyPrefixExceptions) return false;
    for (const pat of this.compiled) {
      if (pat.exclusion && (pat.pattern + "/").startsWith(dirSlash)) return false;
    }
    return true;
  }

  private dirInfo(dir: string): boolean[] {
    const cached = this.dirCache.get(dir);
    if (cached) return cached;
    const parent = dirname(dir);
    const parentInfo = parent === "." ? undefined : this.dirInfo(parent);
    const info = this.evaluate(dir, parentInfo).parentMatched;
    if (this.dirCache.size > 100_000) this.dirCache.clear();
    this.dirCache.set(dir, info);
    return info;
  }

  // patternmatcher.MatchesUsingParentResults
  private evaluate(file: string, parentMatched: boolean[] | undefined): { matched: boolean; parentMatched: boolean[] } {
    let matched = false;
    const info = new Array<boolean>(this.compiled.length).fill(false);
    for (let i = 0; i < this.compiled.length; i++) {
      const pattern = this.compiled[i];
      let match = parentMatched ? parentMatched[i] : false;
      if (!match) {
        if (pattern.exclusion !== matched) continue;
        match = pattern.match(file);
        if (!match && !parentMatched) {
          const parentPath = dirname(file);
          if (parentPath !== ".") {
            const dirs = parentPath.split("/");
            for (let j = 0; j < dirs.length && !match; j++) match = pattern.match(dirs.slice(0, j + 1).join("/"));
          }
        }
      }
      info[i] = match;
      if (match) matched = !pattern.exclusion;
    }
    return { matched, parentMatched: info };
  }
}

/** Standalone form of DockerIgnore.isExcluded. */
export function isExcluded(ignore: DockerIgnore, path: string, options: KeepOptions = {}): boolean {
  return ignore.isExcluded(path, options);
}

/**
 * The paths that survive the .dockerignore (order kept). The Dockerfile and .dockerignore are
 * always kept.
 */
export function filterPaths(paths: Iterable<string>, ignore: DockerIgnore | string, options: KeepOptions = {}): string[] {
  const di = typeof ignore === "string" ? new DockerIgnore(ignore) : ignore;
  const out: string[] = [];
  for (const p of paths) if (!di.isExcluded(p, options)) out.push(p);
  return out;
}
