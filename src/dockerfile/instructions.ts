/** AST node → typed instruction, with BuildKit's per-instruction checks (instructions/parse.go). */
import type { InstructionNode } from "./ast";
import { DockerfileError } from "./errors";
import { BFlags, parseGoDuration, suggest } from "./flags";
import { chompHeredocContent, mustParseHeredocWord } from "./parser";
import type {
  Instruction,
  KeyValue,
  Location,
  RunMount,
  MountType,
  SourceContent,
} from "./types";

export interface FromInstruction {
  kind: "FROM";
  baseName: string;
  name?: string;
  platform?: string;
  comment?: string;
  location: Location;
  original: string;
}

export const INSTRUCTION_NAMES = [
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
];

const STAGE_NAME_RE = /^[a-z][a-z0-9-_.]*$/;

/** Converts one AST node. Throws DockerfileError located at the node. */
export function parseInstruction(node: InstructionNode): Instruction | FromInstruction {
  try {
    return parseNode(node);
  } catch (e) {
    if (e instanceof DockerfileError) throw e;
    const message = e instanceof Error ? e.message : String(e);
    const opts: { endLine?: number; column?: number } = {};
    if (node.endLine !== node.startLine) opts.endLine = node.endLine;
    const col = e instanceof ColumnError ? e.column : undefined;
    if (col !== undefined) opts.column = col;
    throw new DockerfileError(message, node.startLine, opts);
  }
}

class ColumnError extends Error {
  constructor(message: string, readonly column?: number) {
    super(message);
  }
}

function flagsOf(node: InstructionNode): BFlags {
  return new BFlags(node.flags);
}

/** Runs BFlags.parse, pointing the error at the offending flag when the instruction is on one line. */
function parseFlags(node: InstructionNode, flags: BFlags): void {
  try {
    flags.parse();
  } catch (e) {
    const message = (e as Error).message;
    let column: number | undefined;
    const m = /flag(?: specified)?: ([^\s(]+)/.exec(message);
    if (m && node.startLine === node.endLine && node.heredocs.length === 0) {
      const at = node.original.indexOf("--" + m[1]);
      if (at >= 0) column = (node.column ?? 1) + at;
    }
    throw new ColumnError(message, column);
  }
}

function loc(node: InstructionNode): Location {
  return { startLine: node.startLine, endLine: node.endLine };
}

function base(node: InstructionNode): { location: Location; original: string } {
  return { location: loc(node), original: node.original };
}

function handleJSONArgs(args: string[], json: boolean): string[] {
  if (json) return args;
  return [args.join(" ")];
}

function parseKvps(args: string[], cmd: string): KeyValue[] {
  if (args.length === 0) throw new Error(`${cmd} requires at least one argument`);
  if (args.length % 3 !== 0) throw new Error(`Bad input to ${cmd}, too many arguments`);
  const out: KeyValue[] = [];
  for (let j = 0; j < args.length; j += 3) {
    if (args[j].length === 0) throw new Error(`${cmd} names can not be blank`);
    out.push({ key: args[j], value: args[j + 1] });
  }
  return out;
}

function parseSourcesAndDest(node: InstructionNode, cmd: string): { sources: string[]; sourceContents: SourceContent[]; dest: string } {
  const args = node.args;
  const srcs = args.slice(0, -1);
  const dest = args[args.length - 1];
  if (mustParseHeredocWord(dest)) throw new Error(`${cmd} cannot accept a heredoc as a destination`);
  const byName = new Map(node.heredocs.map((h) => [h.name, h]));
  const sources: string[] = [];
  const sourceContents: SourceContent[] = [];
  for (const src of srcs) {
    const doc = node.json ? null : mustParseHeredocWord(src);
    if (doc) {
      let data = byName.get(doc.name)?.content ?? "";
      if (doc.chomp) data = chompHeredocContent(data);
      sourceContents.push({ path: doc.name, data, expand: doc.expand });
    } else {
      sources.push(src);
    }
  }
  return { sources, sourceContents, dest };
}

function optional<T>(v: T | undefined | ""): T | undefined {
  return v === undefined || v === "" ? undefined : (v as T);
}

function parseNode(node: InstructionNode): Instruction | FromInstruction {
  const cmd = node.cmd.toLowerCase();
  const args = node.args;
  switch (cmd) {
    case "env": {
      parseFlags(node, flagsOf(node));
      return { kind: "ENV", ...base(node), pairs: parseKvps(args, "ENV") };
    }
    case "label": {
      parseFlags(node, flagsOf(node));
      return { kind: "LABEL", ...base(node), pairs: parseKvps(args, "LABEL") };
    }
    case "maintainer": {
      if (args.length !== 1) throw new Error("MAINTAINER requires exactly one argument");
      parseFlags(node, flagsOf(node));
      return { kind: "MAINTAINER", ...base(node), maintainer: args[0] };
    }
    case "add": {
      if (args.length < 2) throw new Error("ADD requires at least two arguments, but only one was provided. Destination could not be determined");
      const f = flagsOf(node);
      const chown = f.addString("chown");
      const chmod = f.addString("chmod");
      const link = f.addBool("link");
      const keepGitDir = f.addBool("keep-git-dir");
      const checksum = f.addString("checksum");
      const exclude = f.addStrings("exclude");
      parseFlags(node, f);
      const sd = parseSourcesAndDest(node, "ADD");
      const out: Instruction = {
        kind: "ADD",
        ...base(node),
        ...sd,
        link: link.value === "true",
        keepGitDir: keepGitDir.value === "true",
        exclude: exclude.values,
        json: node.json,
      };
      if (optional(chown.value)) out.chown = chown.value;
      if (optional(chmod.value)) out.chmod = chmod.value;
      if (optional(checksum.value)) out.checksum = checksum.value;
      return out;
    }
    case "copy": {
      if (args.length < 2) throw new Error("COPY requires at least two arguments, but only one was provided. Destination could not be determined");
      const f = flagsOf(node);
      const chown = f.addString("chown");
      const from = f.addString("from");
      const chmod = f.addString("chmod");
      const link = f.addBool("link");
      const parents = f.addBool("parents");
      const exclude = f.addStrings("exclude");
      parseFlags(node, f);
      const sd = parseSourcesAndDest(node, "COPY");
      const out: Instruction = {
        kind: "COPY",
        ...base(node),
        ...sd,
        link: link.value === "true",
        parents: parents.value === "true",
        exclude: exclude.values,
        json: node.json,
      };
      if (optional(from.value)) out.from = from.value;
      if (optional(chown.value)) out.chown = chown.value;
      if (optional(chmod.value)) out.chmod = chmod.value;
      return out;
    }
    case "from": {
      let name: string | undefined;
      if (args.length === 3 && args[1].toLowerCase() === "as") {
        name = args[2].toLowerCase();
        if (!STAGE_NAME_RE.test(name)) {
          throw new Error(`invalid name for build stage: ${JSON.stringify(args[2])}, name can't start with a number or contain symbols`);
        }
      } else if (args.length !== 1) {
        throw new Error("FROM requires either one or three arguments");
      }
      const f = flagsOf(node);
      const platform = f.addString("platform");
      parseFlags(node, f);
      const out: FromInstruction = { kind: "FROM", baseName: args[0], location: loc(node), original: node.original.trim() };
      if (name) out.name = name;
      if (optional(platform.value)) out.platform = platform.value;
      const comment = docComment(node.comments, name);
      if (comment) out.comment = comment;
      return out;
    }
    case "onbuild": {
      if (!node.sub) throw new Error("ONBUILD requires at least one argument");
      parseFlags(node, flagsOf(node));
      const trigger = node.sub.cmd.trim().toUpperCase();
      if (trigger === "ONBUILD") throw new Error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (trigger === "MAINTAINER" || trigger === "FROM") throw new Error(`${trigger} isn't allowed as an ONBUILD trigger`);
      // The trigger runs in a later build; check it now so mistakes show up where they are written.
      parseNode({ ...node.sub, startLine: node.startLine, endLine: node.endLine, heredocs: node.heredocs });
      let expression = node.original.replace(/^\s*ONBUILD\s*/i, "");
      for (const h of node.heredocs) expression += "\n" + h.content + h.name;
      return { kind: "ONBUILD", ...base(node), expression };
    }
    case "workdir": {
      if (args.length !== 1) throw new Error("WORKDIR requires exactly one argument");
      parseFlags(node, flagsOf(node));
      return { kind: "WORKDIR", ...base(node), path: args[0] };
    }
    case "run": {
      const f = flagsOf(node);
      const mount = f.addStrings("mount");
      const network = f.addString("network");
      const security = f.addString("security");
      parseFlags(node, f);
      const mounts = mount.values.map((spec) => parseMount(spec));
      const out: Instruction = {
        kind: "RUN",
        ...base(node),
        args: handleJSONArgs(args, node.json),
        prependShell: !node.json,
        heredocs: node.heredocs.map((h) => ({ ...h })),
        mounts,
        mountSpecs: mount.values,
      };
      if (network.value !== undefined) {
        if (network.value !== "default" && network.value !== "none" && network.value !== "host") {
          throw new Error(`unsupported network mode ${JSON.stringify(network.value)}`);
        }
        out.network = network.value;
      }
      if (security.value !== undefined) {
        if (security.value !== "sandbox" && security.value !== "insecure") {
          throw new Error(`security ${JSON.stringify(security.value)} is not valid`);
        }
        out.security = security.value;
      }
      return out;
    }
    case "cmd": {
      parseFlags(node, flagsOf(node));
      return { kind: "CMD", ...base(node), args: handleJSONArgs(args, node.json), prependShell: !node.json };
    }
    case "entrypoint": {
      parseFlags(node, flagsOf(node));
      return { kind: "ENTRYPOINT", ...base(node), args: handleJSONArgs(args, node.json), prependShell: !node.json };
    }
    case "healthcheck":
      return parseHealthcheck(node);
    case "expose": {
      if (args.length === 0) throw new Error("EXPOSE requires at least one argument");
      parseFlags(node, flagsOf(node));
      return { kind: "EXPOSE", ...base(node), ports: [...args].sort() };
    }
    case "user": {
      if (args.length !== 1) throw new Error("USER requires exactly one argument");
      parseFlags(node, flagsOf(node));
      return { kind: "USER", ...base(node), user: args[0] };
    }
    case "volume": {
      if (args.length === 0) throw new Error("VOLUME requires at least one argument");
      parseFlags(node, flagsOf(node));
      const volumes: string[] = [];
      for (const v of args) {
        const t = v.trim();
        if (t === "") throw new Error("VOLUME specified can not be an empty string");
        volumes.push(t);
      }
      return { kind: "VOLUME", ...base(node), volumes };
    }
    case "stopsignal": {
      if (args.length !== 1) throw new Error("STOPSIGNAL requires exactly one argument");
      parseFlags(node, flagsOf(node));
      return { kind: "STOPSIGNAL", ...base(node), signal: args[0] };
    }
    case "arg": {
      if (args.length < 1) throw new Error("ARG requires at least one argument");
      parseFlags(node, flagsOf(node));
      const pairs = args.map((a) => {
        const eq = a.indexOf("=");
        if (eq === 0) throw new Error("ARG names can not be blank");
        const pair: { key: string; value?: string; comment?: string } = eq < 0 ? { key: a } : { key: a.slice(0, eq), value: a.slice(eq + 1) };
        const comment = docComment(node.comments, pair.key);
        if (comment) pair.comment = comment;
        return pair;
      });
      return { kind: "ARG", ...base(node), args: pairs };
    }
    case "shell": {
      parseFlags(node, flagsOf(node));
      const shell = handleJSONArgs(args, node.json);
      if (node.json && shell.length === 0) throw new Error("SHELL requires at least one argument");
      if (!node.json) {
        if (args.length === 0) throw new Error("SHELL requires at least one argument");
        throw new Error(`SHELL requires the arguments to be in JSON form`);
      }
      return { kind: "SHELL", ...base(node), shell };
    }
  }
  const hint = suggest(node.cmd, INSTRUCTION_NAMES);
  throw new ColumnError(`unknown instruction: ${node.cmd}` + (hint ? ` (did you mean ${hint.toLowerCase()}?)` : ""), node.column);
}

/** BuildKit's getComment: the comment line that starts with `name `, without that prefix. */
function docComment(comments: string[], name: string | undefined): string | undefined {
  if (!name) return undefined;
  for (const line of comments) if (line.startsWith(name + " ")) return line.slice(name.length + 1);
  return undefined;
}

const MIN_DURATION_NS = 1e6;

function parseHealthcheck(node: InstructionNode): Instruction {
  if (node.args.length === 0) throw new Error("HEALTHCHECK requires at least one argument");
  const typ = node.args[0].toUpperCase();
  const rest = node.args.slice(1);
  const common = { kind: "HEALTHCHECK" as const, ...base(node), interval: 0, timeout: 0, startPeriod: 0, startInterval: 0, retries: 0 };
  if (typ === "NONE") {
    if (rest.length !== 0) throw new Error("HEALTHCHECK NONE takes no arguments");
    return { ...common, test: ["NONE"] };
  }
  const f = flagsOf(node);
  const interval = f.addString("interval");
  const timeout = f.addString("timeout");
  const startPeriod = f.addString("start-period");
  const startInterval = f.addString("start-interval");
  const retries = f.addString("retries");
  parseFlags(node, f);
  if (typ !== "CMD") throw new Error(`Unknown type ${JSON.stringify(typ)} in HEALTHCHECK (try CMD)`);
  const cmdSlice = handleJSONArgs(rest, node.json);
  if (cmdSlice.length === 0 || (!node.json && cmdSlice[0] === "")) throw new Error("Missing command after HEALTHCHECK CMD");
  const test = [node.json ? "CMD" : "CMD-SHELL", ...cmdSlice];
  const dur = (name: string, v: string | undefined): number => {
    if (v === undefined || v === "") return 0;
    const d = parseGoDuration(v);
    if (d === 0) return 0;
    if (d < MIN_DURATION_NS) throw new Error(`Interval ${JSON.stringify(name)} cannot be less than 1ms`);
    return d;
  };
  let retriesN = 0;
  if (retries.value !== undefined && retries.value !== "") {
    if (!/^[+-]?\d+$/.test(retries.value)) throw new Error(`strconv.ParseInt: parsing ${JSON.stringify(retries.value)}: invalid syntax`);
    retriesN = Number.parseInt(retries.value, 10);
    if (retriesN < 0) throw new Error(`--retries cannot be negative (${retriesN})`);
  }
  return {
    ...common,
    test,
    interval: dur("interval", interval.value),
    timeout: dur("timeout", timeout.value),
    startPeriod: dur("start-period", startPeriod.value),
    startInterval: dur("start-interval", startInterval.value),
    retries: retriesN,
  };
}

// ---------------------------------------------------------------------------------------------------
// RUN --mount

const MOUNT_TYPES: MountType[] = ["bind", "cache", "tmpfs", "secret", "ssh"];
const MOUNT_KEYS = ["type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro", "readwrite", "rw", "required", "id", "sharing", "mode", "uid", "gid", "env", "size"];

/** Go's encoding/csv for one record (no lazy quotes). */
function readCsvRecord(s: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = "";
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) throw new Error(`extraneous or missing " in quoted-field`);
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += s[i++];
      }
      if (i < s.length && s[i] !== ",") throw new Error(`extraneous or missing " in quoted-field`);
    } else {
      while (i < s.length && s[i] !== ",") {
        if (s[i] === '"') throw new Error(`bare " in non-quoted-field`);
        field += s[i++];
      }
    }
    fields.push(field);
    if (i >= s.length) break;
    i++; // comma
  }
  return fields;
}

function parseBool(v: string): boolean {
  if (["1", "t", "T", "TRUE", "true", "True"].includes(v)) return true;
  if (["0", "f", "F", "FALSE", "false", "False"].includes(v)) return false;
  throw new Error(`strconv.ParseBool: parsing ${JSON.stringify(v)}: invalid syntax`);
}

function parseUint(v: string, radix: 8 | 10, what: string): number {
  const re = radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(v)) throw new Error(`invalid value ${v} for ${what}`);
  return Number.parseInt(v, radix);
}

/**
 * One `--mount` value (BuildKit's parseMount). `expand`, when given, is applied to every value
 * (at build time, with the stage's env). Without it (parse time), values with variables are left for
 * later and the checks that depend on them are skipped; `from` never takes variables (BuildKit).
 */
export function parseMount(spec: string, expand?: (word: string) => string): RunMount {
  const m: RunMount = { type: "bind", readOnly: false };
  let roAuto = true;
  let deferred = false;
  for (const field of readCsvRecord(spec)) {
    const eq = field.indexOf("=");
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case "readonly":
        case "ro":
          m.readOnly = true;
          roAuto = false;
          continue;
        case "readwrite":
        case "rw":
          m.readOnly = false;
          roAuto = false;
          continue;
        case "required":
          if (m.type === "secret" || m.type === "ssh") {
            m.required = true;
            continue;
          }
          throw new Error(`unexpected key '${key}' for mount type '${m.type}'`);
        default:
          throw new Error(`invalid field '${field}' must be a key=value pair`);
      }
    }
    let value = field.slice(eq + 1);
    if (key === "from") {
      const dollar = value.indexOf("$");
      if (dollar >= 0 && dollar !== value.length - 1) throw new Error("'from' doesn't support variable expansion, define alias stage instead");
    } else if (expand) {
      value = expand(value);
    } else if (value.includes("$")) {
      deferred = true;
      continue;
    }
    switch (key) {
      case "type": {
        const t = value.toLowerCase() as MountType;
        if (!MOUNT_TYPES.includes(t)) {
          const hint = suggest(value, MOUNT_TYPES);
          throw new Error(`unsupported mount type ${JSON.stringify(value)}` + (hint ? ` (did you mean ${hint}?)` : ""));
        }
        m.type = t;
        break;
      }
      case "from":
        m.from = value;
        break;
      case "source":
      case "src":
        m.source = value;
        break;
      case "target":
      case "dst":
      case "destination":
        m.target = value;
        break;
      case "readonly":
      case "ro":
        m.readOnly = parseBool(value);
        roAuto = false;
        break;
      case "readwrite":
      case "rw":
        m.readOnly = !parseBool(value);
        roAuto = false;
        break;
      case "required":
        if (m.type !== "secret" && m.type !== "ssh") throw new Error(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = parseBool(value);
        break;
      case "id":
        m.id = value;
        break;
      case "sharing": {
        if (value !== "" && m.type !== "cache") throw new Error(`invalid cache sharing set for ${m.type} mount`);
        const s = value.toLowerCase();
        if (s !== "shared" && s !== "private" && s !== "locked") throw new Error(`unsupported sharing value ${JSON.stringify(value)}`);
        m.sharing = s;
        break;
      }
      case "mode":
        m.mode = parseUint(value, 8, "mode");
        break;
      case "uid":
        m.uid = parseUint(value, 10, "uid");
        break;
      case "gid":
        m.gid = parseUint(value, 10, "gid");
        break;
      case "env":
        m.env = value;
        break;
      case "size": {
        if (m.type !== "tmpfs") throw new Error(`unexpected key 'size' for mount type '${m.type}'`);
        m.size = parseSize(value);
        break;
      }
      default: {
        const hint = suggest(key, MOUNT_KEYS);
        throw new Error(`unexpected key '${key}' in '${field}'` + (hint ? ` (did you mean ${hint}?)` : ""));
      }
    }
  }
  if (deferred) return m;
  const fileInfoAllowed = m.type === "secret" || m.type === "ssh" || m.type === "cache";
  if (!fileInfoAllowed) {
    if (m.mode !== undefined) throw new Error(`mode not allowed for ${JSON.stringify(m.type)} type mounts`);
    if (m.uid !== undefined) throw new Error(`uid not allowed for ${JSON.stringify(m.type)} type mounts`);
    if (m.gid !== undefined) throw new Error(`gid not allowed for ${JSON.stringify(m.type)} type mounts`);
  }
  if (roAuto) m.readOnly = !(m.type === "cache" || m.type === "tmpfs");
  if (m.type === "secret") {
    if (m.from !== undefined) throw new Error("secret mount should not have a from");
    if (!m.source && !m.target && !m.id) throw new Error("invalid secret mount. one of source, target required");
    if (m.source && m.id) throw new Error("both source and id can't be set");
  }
  if ((m.type === "bind" || m.type === "cache" || m.type === "tmpfs") && !m.target) {
    throw new Error(`mount type ${m.type} requires a target`);
  }
  return m;
}

/** docker/go-units RAMInBytes: `64m`, `1g`, `512k`, plain bytes. */
function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$/i.exec(v.trim());
  if (!m) throw new Error(`invalid size: '${v}'`);
  const mult: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };
  return Math.floor(Number(m[1]) * mult[m[2].toLowerCase()]);
}

const SIGNALS = new Set(
  "ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR QUIT SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX".split(" "),
);
for (let i = 1; i <= 15; i++) {
  SIGNALS.add(`RTMIN+${i}`);
  SIGNALS.add(`RTMAX-${i}`);
}

/** moby/sys/signal ParseSignal: a positive number or a Linux signal name, with or without SIG. */
export function checkSignal(raw: string): void {
  if (/^[+-]?\d+$/.test(raw)) {
    if (Number.parseInt(raw, 10) <= 0) throw new Error(`Invalid signal: ${raw}`);
    return;
  }
  const name = raw.toUpperCase().replace(/^SIG/, "");
  if (!SIGNALS.has(name)) throw new Error(`Invalid signal: ${raw}`);
}

/** docker/go-connections nat.ParsePortSpec's checks for `[ip:[hostPort]:]containerPort[-end][/proto]`. */
export function checkPortSpec(spec: string): void {
  const slash = spec.lastIndexOf("/");
  const proto = slash >= 0 ? spec.slice(slash + 1) : "tcp";
  const rest = slash >= 0 ? spec.slice(0, slash) : spec;
  if (!["tcp", "udp", "sctp"].includes(proto.toLowerCase())) throw new Error(`invalid proto: ${proto}`);
  const container = rest.slice(rest.lastIndexOf(":") + 1);
  const m = /^(\d+)(?:-(\d+))?$/.exec(container);
  if (!m) throw new Error(`invalid containerPort: ${container}`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535 || hi < lo) throw new Error(`invalid range specified for container port: ${container}`);
}

/**
 * Errors BuildKit only finds while building (STOPSIGNAL's signal, EXPOSE's ports), found early for
 * values without variables. Throws DockerfileError at the instruction.
 */
export function checkLiteralValues(inst: Instruction): void {
  try {
    if (inst.kind === "STOPSIGNAL" && !inst.signal.includes("$")) checkSignal(inst.signal);
    if (inst.kind === "EXPOSE") for (const p of inst.ports) if (!p.includes("$")) for (const w of p.split(/\s+/)) checkPortSpec(w);
  } catch (e) {
    const loc = inst.location;
    throw new DockerfileError((e as Error).message, loc.startLine, loc.endLine !== loc.startLine ? { endLine: loc.endLine } : {});
  }
}
