/** Builder flags (`--name=value`) with BuildKit's BFlags rules and messages. */

type FlagType = "bool" | "string" | "strings";

interface Flag {
  type: FlagType;
  value?: string;
  values: string[];
}

export class BFlags {
  private readonly flags = new Map<string, Flag>();
  private readonly used = new Set<string>();

  constructor(private readonly args: string[]) {}

  private add(name: string, type: FlagType): Flag {
    const f: Flag = { type, values: [] };
    this.flags.set(name, f);
    return f;
  }
  addBool(name: string): Flag {
    return this.add(name, "bool");
  }
  addString(name: string): Flag {
    return this.add(name, "string");
  }
  addStrings(name: string): Flag {
    return this.add(name, "strings");
  }

  /** Checks every given flag against the declared ones; throws with BuildKit's message. */
  parse(): void {
    for (let arg of this.args) {
      if (!arg.startsWith("--")) throw new Error(`arg should start with -- : ${arg}`);
      if (arg === "--") return;
      arg = arg.slice(2);
      let value = "";
      const index = arg.indexOf("=");
      if (index >= 0) {
        value = arg.slice(index + 1);
        arg = arg.slice(0, index);
      }
      const flag = this.flags.get(arg);
      if (!flag) {
        const known = [...this.flags.keys()].map((k) => "--" + k);
        const hint = suggest(arg, [...this.flags.keys()]);
        throw new Error(
          `unknown flag: ${arg}` + (hint ? ` (did you mean ${hint}?)` : known.length ? "" : " (this instruction takes no flags)"),
        );
      }
      if (this.used.has(arg) && flag.type !== "strings") throw new Error(`duplicate flag specified: ${arg}`);
      this.used.add(arg);
      switch (flag.type) {
        case "bool": {
          if (index >= 0 && value === "") throw new Error(`missing a value on flag: ${arg}`);
          const lower = value.toLowerCase();
          if (lower === "") flag.value = "true";
          else if (lower === "true" || lower === "false") flag.value = lower;
          else throw new Error(`expecting boolean value for flag ${arg}, not: ${value}`);
          break;
        }
        case "string":
          if (index < 0) throw new Error(`missing a value on flag: ${arg}`);
          flag.value = value;
          break;
        case "strings":
          if (index < 0) throw new Error(`missing a value on flag: ${arg}`);
          flag.values.push(value);
          break;
      }
    }
  }

  isUsed(name: string): boolean {
    return this.used.has(name);
  }
}

/** The closest known name within a small edit distance ("did you mean"). */
export function suggest(word: string, options: string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  const w = word.toLowerCase();
  for (const o of options) {
    const d = editDistance(w, o.toLowerCase());
    if (d < bestDist) {
      bestDist = d;
      best = o;
    }
  }
  if (best === undefined) return undefined;
  return bestDist <= Math.max(1, Math.floor(w.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length];
}

const UNIT_NS: Record<string, number> = {
  ns: 1,
  us: 1e3,
  "µs": 1e3,
  "μs": 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's time.ParseDuration → nanoseconds. */
export function parseGoDuration(s: string): number {
  const orig = s;
  let neg = false;
  if (s[0] === "-" || s[0] === "+") {
    neg = s[0] === "-";
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw new Error(`time: invalid duration "${orig}"`);
  let total = 0;
  while (s !== "") {
    const m = /^([0-9]*)(\.[0-9]*)?/.exec(s)!;
    if (m[0] === "" || m[0] === ".") throw new Error(`time: invalid duration "${orig}"`);
    s = s.slice(m[0].length);
    const u = /^[^0-9.]+/.exec(s);
    if (!u) throw new Error(`time: missing unit in duration "${orig}"`);
    const unit = UNIT_NS[u[0]];
    if (unit === undefined) throw new Error(`time: unknown unit "${u[0]}" in duration "${orig}"`);
    s = s.slice(u[0].length);
    total += Number(m[0].startsWith(".") ? "0" + m[0] : m[0]) * unit;
  }
  total = Math.round(total);
  return neg ? -total : total;
}
