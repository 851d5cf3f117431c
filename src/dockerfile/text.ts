/** Small helpers that reproduce Go's string semantics where BuildKit's behaviour depends on them. */

/** Go's unicode.IsSpace. */
export function isSpace(ch: string): boolean {
  switch (ch) {
    case " ":
    case "\t":
    case "\n":
    case "\v":
    case "\f":
    case "\r":
    case "\u0085":
    case "\u00a0":
    case "\u1680":
    case "\u2028":
    case "\u2029":
    case "\u202f":
    case "\u205f":
    case "\u3000":
      return true;
  }
  return ch >= "\u2000" && ch <= "\u200a";
}

/** Go's strings.TrimLeftFunc(s, unicode.IsSpace). */
export function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return i === 0 ? s : s.slice(i);
}

/** Go's strings.TrimSpace. */
export function trimSpace(s: string): string {
  let end = s.length;
  while (end > 0 && isSpace(s[end - 1])) end--;
  let start = 0;
  while (start < end && isSpace(s[start])) start++;
  return s.slice(start, end);
}

/** BuildKit's reWhitespace: `[\t\v\f\r ]+`. */
export const WHITESPACE_RUN = /[\t\v\f\r ]+/;

/** Go's regexp.Split(s, n) for reWhitespace with n = -1 (all) or n = 2. */
export function splitWhitespace(s: string, limit = -1): string[] {
  const out: string[] = [];
  const re = /[\t\v\f\r ]+/g;
  let last = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    if (limit > 0 && out.length === limit - 1) break;
    out.push(s.slice(last, m.index));
    last = m.index + m[0].length;
  }
  out.push(s.slice(last));
  return out;
}

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

/** Go's strconv.Quote: double-quoted, with Go escapes for non-printable characters. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") {
      out += "\\" + ch;
      continue;
    }
    if (cp < 0x80) {
      if (cp >= 0x20 && cp < 0x7f) {
        out += ch;
        continue;
      }
    } else if (cp < 0xd800 || cp > 0xdfff) {
      if (PRINTABLE.test(ch)) {
        out += ch;
        continue;
      }
    }
    switch (cp) {
      case 0x07: out += "\\a"; continue;
      case 0x08: out += "\\b"; continue;
      case 0x0c: out += "\\f"; continue;
      case 0x0a: out += "\\n"; continue;
      case 0x0d: out += "\\r"; continue;
      case 0x09: out += "\\t"; continue;
      case 0x0b: out += "\\v"; continue;
    }
    if (cp < 0x20 || cp === 0x7f) out += "\\x" + cp.toString(16).padStart(2, "0");
    else if (cp >= 0xd800 && cp <= 0xdfff) out += "\ufffd";
    else if (cp < 0x10000) out += "\\u" + cp.toString(16).padStart(4, "0");
    else out += "\\U" + cp.toString(16).padStart(8, "0");
  }
  return out + '"';
}
