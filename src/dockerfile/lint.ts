/**
 * Build checks in the spirit of `docker build --check` (BuildKit's linter rules): things that parse and
 * build but are probably mistakes. Rules can be skipped with the `# check=skip=Rule1,Rule2` directive
 * (or `skip=all`). Only rules that need no base image are here.
 */
import type { DockerfileAst, InstructionNode } from "./ast";
import type { ParsedDockerfile } from "./types";

export interface LintWarning {
  /** BuildKit's rule name (StageNameCasing, JSONArgsRecommended, …). */
  rule: string;
  message: string;
  line: number;
  url: string;
}

const URL_BASE = "https://docs.docker.com/go/dockerfile/rule/";

function ruleUrl(rule: string): string {
  return URL_BASE + rule.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase() + "/";
}

/** Names in ARG/ENV keys that suggest a secret (BuildKit's SecretsUsedInArgOrEnv). */
const SECRET_TOKENS = new Set(["apikey", "auth", "credential", "credentials", "key", "password", "passwd", "pword", "secret", "token"]);
const NOT_SECRET_TOKENS = new Set(["public", "file", "path", "dir", "url", "name", "id", "type", "version", "length", "size", "count", "format", "algorithm", "region"]);

function looksSecret(key: string): boolean {
  const tokens = key
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
  if (tokens.some((t) => NOT_SECRET_TOKENS.has(t))) return false;
  return tokens.some((t) => SECRET_TOKENS.has(t));
}

function isUpper(s: string): boolean {
  return s === s.toUpperCase();
}
function isLower(s: string): boolean {
  return s === s.toLowerCase();
}

/** The rules a `check` directive skips; "all" skips everything. */
function skippedRules(directive: string | undefined): Set<string> {
  const out = new Set<string>();
  if (!directive) return out;
  for (const part of directive.split(";")) {
    const [k, v] = part.split("=", 2).map((x) => x.trim());
    if (k?.toLowerCase() === "skip" && v) for (const r of v.split(",")) out.add(r.trim().toLowerCase());
  }
  return out;
}

/** Runs the checks over a Dockerfile that parsed. */
export function lintDockerfile(ast: DockerfileAst, parsed: ParsedDockerfile): LintWarning[] {
  const warnings: LintWarning[] = [];
  const skip = skippedRules(parsed.directives.check);
  const warn = (rule: string, message: string, line: number) => {
    if (skip.has("all") || skip.has(rule.toLowerCase())) return;
    warnings.push({ rule, message, line, url: ruleUrl(rule) });
  };

  // ConsistentInstructionCasing: every keyword in the casing most of them use.
  const nodes: InstructionNode[] = [];
  for (const n of ast.children) {
    nodes.push(n);
    if (n.sub) nodes.push({ ...n.sub, startLine: n.startLine, endLine: n.endLine });
  }
  let upper = 0;
  let lower = 0;
  for (const n of nodes) {
    if (isUpper(n.cmd)) upper++;
    else if (isLower(n.cmd)) lower++;
  }
  const majorityUpper = upper >= lower;
  for (const n of nodes) {
    const ok = majorityUpper ? isUpper(n.cmd) : isLower(n.cmd);
    if (!ok) warn("ConsistentInstructionCasing", `Command '${n.cmd}' should match the case of the command majority (${majorityUpper ? "uppercase" : "lowercase"})`, n.startLine);
  }

  // Per FROM line: FromAsCasing, StageNameCasing, ReservedStageName, DuplicateStageName.
  const seen = new Map<string, number>();
  for (const n of ast.children) {
    if (n.cmd.toLowerCase() !== "from") continue;
    if (n.args.length === 3) {
      const as = n.args[1];
      if ((isUpper(n.cmd) && !isUpper(as)) || (isLower(n.cmd) && !isLower(as))) {
        warn("FromAsCasing", `'${as}' and '${n.cmd}' keywords' casing do not match`, n.startLine);
      }
      const name = n.args[2];
      if (!isLower(name)) warn("StageNameCasing", `Stage name '${name}' should be lowercase`, n.startLine);
      const lowerName = name.toLowerCase();
      if (lowerName === "scratch" || lowerName === "context") {
        warn("ReservedStageName", `Stage name should not use the same name as reserved stage "${lowerName}"`, n.startLine);
      }
      if (seen.has(lowerName)) warn("DuplicateStageName", `Duplicate stage name "${lowerName}", stage names should be unique`, n.startLine);
      else seen.set(lowerName, n.startLine);
    }
    for (const f of n.flags) {
      const m = /^--platform=(.*)$/.exec(f);
      if (m && m[1] !== "" && !m[1].includes("$")) {
        warn("FromPlatformFlagConstDisallowed", `FROM --platform flag should not use constant value "${m[1]}"`, n.startLine);
      }
    }
  }

  // LegacyKeyValueFormat: `ENV key value` / `LABEL key value`.
  for (const n of ast.children) {
    const cmd = n.cmd.toLowerCase();
    if ((cmd === "env" || cmd === "label") && n.args.length === 3 && n.args[2] === "") {
      const K = cmd.toUpperCase();
      warn("LegacyKeyValueFormat", `"${K} key=value" should be used instead of legacy "${K} key value" format`, n.startLine);
    }
  }

  // UndefinedArgInFrom: a FROM using a variable that is neither a global ARG nor predefined.
  const declared = new Set(parsed.globalArgs.flatMap((a) => a.args.map((p) => p.key)));
  const predefined = ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"];
  for (const p of predefined) declared.add(p);
  for (const st of parsed.stages) {
    const words = [st.baseName, st.platform ?? ""].join(" ");
    for (const m of words.matchAll(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))/g)) {
      const name = m[1] ?? m[2];
      if (!declared.has(name)) warn("UndefinedArgInFrom", `FROM argument '${name}' is not declared`, st.location.startLine);
    }
  }

  for (const st of parsed.stages) {
    const counts = new Map<string, number[]>();
    let absoluteWorkdir = false;
    for (const inst of st.instructions) {
      const line = inst.location.startLine;
      switch (inst.kind) {
        case "CMD":
        case "ENTRYPOINT":
          if (inst.prependShell) warn("JSONArgsRecommended", `JSON arguments recommended for ${inst.kind} to prevent unintended behavior related to OS signals`, line);
          counts.set(inst.kind, [...(counts.get(inst.kind) ?? []), line]);
          break;
        case "HEALTHCHECK":
          counts.set(inst.kind, [...(counts.get(inst.kind) ?? []), line]);
          break;
        case "MAINTAINER":
          warn("MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label", line);
          break;
        case "WORKDIR":
          if (inst.path.startsWith("/") || inst.path.startsWith("$")) absoluteWorkdir = true;
          else if (!absoluteWorkdir) warn("WorkdirRelativePath", `Relative workdir "${inst.path}" can have unexpected results if the base image changes`, line);
          break;
        case "ARG":
          for (const a of inst.args) if (looksSecret(a.key)) warn("SecretsUsedInArgOrEnv", `Do not use ARG or ENV instructions for sensitive data (ARG "${a.key}")`, line);
          break;
        case "ENV":
          for (const p of inst.pairs) if (looksSecret(p.key)) warn("SecretsUsedInArgOrEnv", `Do not use ARG or ENV instructions for sensitive data (ENV "${p.key}")`, line);
          break;
        case "EXPOSE":
          for (const port of inst.ports) {
            const proto = port.split("/")[1];
            if (proto && proto !== proto.toLowerCase()) warn("ExposeProtoCasing", `Defined protocol '${port}' in EXPOSE instruction should be lowercase`, line);
          }
          break;
      }
    }
    for (const [kind, lines] of counts) {
      if (lines.length < 2) continue;
      for (const line of lines.slice(0, -1)) {
        warn("MultipleInstructionsDisallowed", `Multiple ${kind} instructions should not be used in the same stage because only the last one will be used`, line);
      }
    }
  }
  for (const a of parsed.globalArgs) {
    for (const p of a.args) if (looksSecret(p.key)) warn("SecretsUsedInArgOrEnv", `Do not use ARG or ENV instructions for sensitive data (ARG "${p.key}")`, a.location.startLine);
  }

  return warnings.sort((x, y) => x.line - y.line);
}
