/**
 * Typed instructions grouped into stages, global ARGs, FROM resolution and the stage graph
 * (BuildKit's instructions.Parse plus the stage handling of dockerfile2llb's toDispatchState).
 */
import { formatPlatform, parsePlatform } from "../oci/platform";
import type { InstructionNode } from "./ast";
import { DockerfileError } from "./errors";
import { parseInstruction } from "./instructions";
import { parse } from "./parser";
import { ShellError, ShellLex } from "./shell";
import type {
  ArgInstruction,
  ParseDockerfileOptions,
  ParsedDockerfile,
  ResolvedBases,
  ResolvedStage,
  Stage,
  StageBase,
} from "./types";

/** Parses a Dockerfile into global ARGs and stages. Throws DockerfileError with the line. */
export function parseDockerfile(text: string, options: ParseDockerfileOptions = {}): ParsedDockerfile {
  const { ast, directives, warnings } = parse(text);
  const globalArgs: ArgInstruction[] = [];
  const stages: Stage[] = [];
  const outWarnings = warnings.map((w) => ({ message: w.message, line: w.line }));

  for (const node of ast.children) {
    const inst = parseInstruction(node);
    if (inst.kind === "FROM") {
      const stage: Stage = {
        index: stages.length,
        baseName: inst.baseName,
        instructions: [],
        location: inst.location,
        original: inst.original,
      };
      if (inst.name !== undefined) stage.name = inst.name;
      if (inst.comment !== undefined) stage.comment = inst.comment;
      if (inst.platform !== undefined) stage.platform = inst.platform;
      stages.push(stage);
      continue;
    }
    if (stages.length === 0) {
      if (inst.kind === "ARG") {
        globalArgs.push(inst);
        continue;
      }
      throw locatedAt(node, "no build stage in current context");
    }
    stages[stages.length - 1].instructions.push(inst);
  }
  if (stages.length === 0) {
    const last = ast.children[ast.children.length - 1];
    throw new DockerfileError("no build stage in current context: the Dockerfile has no FROM", last.startLine);
  }

  const parsed: ParsedDockerfile = { directives, escapeToken: ast.escapeToken, globalArgs, stages, warnings: outWarnings };

  // Structural checks that need FROM and --from resolved: stage indexes, cycles, --target.
  const platform = options.platform ?? "linux/amd64";
  const resolved = resolveStageBases(parsed, options.buildArgs ?? {}, platformArgs(platform, options.buildPlatform ?? platform));
  stageDependencies(parsed, resolved);
  if (options.target !== undefined) findTargetStage(parsed, options.target);
  return parsed;
}

function locatedAt(node: InstructionNode, message: string): DockerfileError {
  return new DockerfileError(message, node.startLine, node.endLine !== node.startLine ? { endLine: node.endLine } : {});
}

function errorAt(loc: { startLine: number; endLine: number }, message: string): DockerfileError {
  return new DockerfileError(message, loc.startLine, loc.endLine !== loc.startLine ? { endLine: loc.endLine } : {});
}

// ---------------------------------------------------------------------------------------------------
// platform and proxy args


/** BuildKit's predefined platform args for a target and a build platform. */
export function platformArgs(target = "linux/amd64", build: string = target): Record<string, string> {
  const t = parsePlatform(target);
  const b = parsePlatform(build);
  return {
    BUILDPLATFORM: formatPlatform(b),
    BUILDOS: b.os,
    BUILDARCH: b.architecture,
    BUILDVARIANT: b.variant ?? "",
    TARGETPLATFORM: formatPlatform(t),
    TARGETOS: t.os,
    TARGETARCH: t.architecture,
    TARGETVARIANT: t.variant ?? "",
  };
}

/**
 * Proxy build args: usable in RUN without an ARG declaration, never written to the image and left out
 * of cache keys (BuildKit passes them as the proxy environment).
 */
export const PROXY_ARGS = [
  "HTTP_PROXY",
  "http_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "FTP_PROXY",
  "ftp_proxy",
  "NO_PROXY",
  "no_proxy",
  "ALL_PROXY",
  "all_proxy",
] as const;

/** The proxy args among the build args. */
export function proxyEnv(buildArgs: Record<string, string>): Map<string, string> {
  const out = new Map<string, string>();
  for (const k of PROXY_ARGS) if (Object.hasOwn(buildArgs, k)) out.set(k, buildArgs[k]);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// FROM resolution

/**
 * Expands every FROM (and FROM --platform) with the global args: predefined platform args, then the
 * ARGs before the first FROM (defaults expanded in order), each overridden by a --build-arg of the same
 * name. A FROM naming an earlier stage (case-insensitive) builds on it; `scratch` is empty.
 */
export function resolveStageBases(
  parsed: ParsedDockerfile,
  buildArgs: Record<string, string> = {},
  platform: Record<string, string> = platformArgs(),
): ResolvedBases {
  const shell = new ShellLex(parsed.escapeToken);
  // Declared-but-unset global args expand to "" in FROM (BuildKit's metaArgsToMap).
  const fromEnv = new Map<string, string>();
  const metaArgs = new Map<string, string>();
  for (const [k, v] of Object.entries(platform)) {
    const val = Object.hasOwn(buildArgs, k) ? buildArgs[k] : v;
    fromEnv.set(k, val);
    metaArgs.set(k, val);
  }
  for (const arg of parsed.globalArgs) {
    for (const pair of arg.args) {
      let value = pair.value;
      if (value !== undefined) value = expandWord(shell, value, fromEnv, arg.location);
      if (Object.hasOwn(buildArgs, pair.key)) value = buildArgs[pair.key];
      fromEnv.set(pair.key, value ?? "");
      if (value !== undefined) metaArgs.set(pair.key, value);
      else metaArgs.delete(pair.key);
    }
  }

  const stages: ResolvedStage[] = [];
  const byName = new Map<string, number>();
  for (const st of parsed.stages) {
    const baseName = expandWord(shell, st.baseName, fromEnv, st.location);
    if (baseName === "") throw errorAt(st.location, `base name (${st.baseName}) should not be blank`);
    let base: StageBase;
    const earlier = byName.get(baseName.toLowerCase());
    if (earlier !== undefined) base = { kind: "stage", index: earlier };
    else if (baseName === "scratch") base = { kind: "scratch" };
    else base = { kind: "image", ref: baseName };
    const r: ResolvedStage = { index: st.index, baseName, base };
    if (st.name !== undefined) r.name = st.name;
    if (st.platform !== undefined) {
      const p = expandWord(shell, st.platform, fromEnv, st.location);
      try {
        r.platform = formatPlatform(parsePlatform(p));
      } catch (e) {
        throw errorAt(st.location, `failed to parse platform ${p}: ${(e as Error).message}`);
      }
    }
    stages.push(r);
    if (st.name !== undefined) byName.set(st.name, st.index);
  }
  return { stages, metaArgs };
}

function expandWord(shell: ShellLex, word: string, env: ReadonlyMap<string, string>, loc: { startLine: number; endLine: number }): string {
  try {
    return shell.processWord(word, env);
  } catch (e) {
    if (e instanceof ShellError) throw errorAt(loc, e.message);
    throw e;
  }
}

/** The stage `--target` names (case-insensitive; the last stage of that name), or the last stage. */
export function findTargetStage(parsed: ParsedDockerfile, target?: string): Stage {
  if (target === undefined || target === "") return parsed.stages[parsed.stages.length - 1];
  const lower = target.toLowerCase();
  for (let i = parsed.stages.length - 1; i >= 0; i--) if (parsed.stages[i].name === lower) return parsed.stages[i];
  const names = parsed.stages.filter((s) => s.name).map((s) => s.name!);
  throw new DockerfileError(
    `target stage ${JSON.stringify(target)} could not be found` + (names.length ? ` (stages: ${names.join(", ")})` : " (the Dockerfile has no named stages)"),
    parsed.stages[parsed.stages.length - 1].location.startLine,
  );
}

/** Looks a stage up by name like BuildKit's findStateByName: the last stage with that name. */
export function findStageByName(parsed: ParsedDockerfile, name: string): Stage | undefined {
  const lower = name.toLowerCase();
  for (let i = parsed.stages.length - 1; i >= 0; i--) if (parsed.stages[i].name === lower) return parsed.stages[i];
  return undefined;
}

// ---------------------------------------------------------------------------------------------------
// stage graph

/** Where a stage's content comes from. */
export type StageDependency =
  | { kind: "base"; stage: number }
  | { kind: "copy-from"; stage: number; instruction: number; line: number }
  | { kind: "mount-from"; stage: number; instruction: number; line: number };

/** An image (not a stage) that `COPY --from` or `RUN --mount=from=` reads. */
export interface ExternalSource {
  ref: string;
  instruction: number;
  line: number;
}

export interface StageGraphNode {
  index: number;
  dependencies: StageDependency[];
  /** Images used through COPY --from / RUN --mount from=, by reference. */
  externalSources: ExternalSource[];
  /** `--from` values after expansion, by instruction index (COPY only). */
  copyFrom: Map<number, { stage?: number; image?: string }>;
}

/**
 * The stage graph: for every stage its base stage, the stages its COPY --from and RUN --mount from=
 * read (by name, or by index for COPY), and the images it reads. Like BuildKit, `--from` is taken as
 * written (no variable expansion); a name that is no stage is an image. Throws DockerfileError for a
 * stage index out of range and for circular references (checked over all stages, as BuildKit does).
 */
export function stageDependencies(parsed: ParsedDockerfile, resolved: ResolvedBases): StageGraphNode[] {
  const byName = new Map<string, number>();
  for (const st of parsed.stages) if (st.name !== undefined) byName.set(st.name, st.index);
  const nodes: StageGraphNode[] = [];
  for (const st of parsed.stages) {
    const r = resolved.stages[st.index];
    const node: StageGraphNode = { index: st.index, dependencies: [], externalSources: [], copyFrom: new Map() };
    if (r.base.kind === "stage") node.dependencies.push({ kind: "base", stage: r.base.index });
    st.instructions.forEach((inst, i) => {
      if (inst.kind === "COPY" && inst.from !== undefined) {
        const target = resolveFromReference(parsed, byName, inst.from, inst.location, true);
        if (target.stage !== undefined) {
          node.dependencies.push({ kind: "copy-from", stage: target.stage, instruction: i, line: inst.location.startLine });
          node.copyFrom.set(i, { stage: target.stage });
        } else {
          node.externalSources.push({ ref: inst.from, instruction: i, line: inst.location.startLine });
          node.copyFrom.set(i, { image: inst.from });
        }
      } else if (inst.kind === "RUN") {
        for (const m of inst.mounts) {
          if (m.from === undefined || m.from === "") continue;
          const target = resolveFromReference(parsed, byName, m.from, inst.location, false);
          if (target.stage !== undefined) node.dependencies.push({ kind: "mount-from", stage: target.stage, instruction: i, line: inst.location.startLine });
          else node.externalSources.push({ ref: m.from, instruction: i, line: inst.location.startLine });
        }
      }
    });
    nodes.push(node);
  }
  detectCycles(parsed, nodes);
  return nodes;
}

/**
 * The value an `ARG key[=default]` inside a stage gets: the --build-arg, else its own default, else the
 * global arg's value of the same name (platform args included). undefined: declared without a value.
 */
export function argValueInStage(
  pair: { key: string; value?: string },
  buildArgs: Record<string, string>,
  metaArgs: ReadonlyMap<string, string>,
  expandDefault: (word: string) => string = (w) => w,
): string | undefined {
  if (Object.hasOwn(buildArgs, pair.key)) return buildArgs[pair.key];
  if (pair.value !== undefined) return expandDefault(pair.value);
  return metaArgs.get(pair.key);
}

/** `--from` value → a stage (by index for COPY, else by name) or an image reference. */
function resolveFromReference(
  parsed: ParsedDockerfile,
  byName: ReadonlyMap<string, number>,
  from: string, loc: { startLine: number; endLine: number }, allowIndex: boolean): { stage?: number } {
  if (allowIndex && /^[+-]?\d+$/.test(from)) {
    const index = Number.parseInt(from, 10);
    if (index < 0 || index >= parsed.stages.length) {
      throw errorAt(loc, `invalid stage index ${index}: the Dockerfile has ${parsed.stages.length} stage${parsed.stages.length === 1 ? "" : "s"} (0-${parsed.stages.length - 1})`);
    }
    return { stage: index };
  }
  const index = byName.get(from.toLowerCase());
  return index !== undefined ? { stage: index } : {};
}

function detectCycles(parsed: ParsedDockerfile, nodes: StageGraphNode[]): void {
  // Iterative DFS (a Dockerfile may chain thousands of stages): 0 new, 1 on the path, 2 done.
  const state = new Uint8Array(nodes.length);
  for (let root = 0; root < nodes.length; root++) {
    if (state[root] !== 0) continue;
    const stack: [number, number][] = [[root, 0]];
    state[root] = 1;
    while (stack.length > 0) {
      const top = stack[stack.length - 1];
      const [i, next] = top;
      const deps = nodes[i].dependencies;
      if (next >= deps.length) {
        state[i] = 2;
        stack.pop();
        continue;
      }
      top[1]++;
      const d = deps[next];
      if (state[d.stage] === 1) {
        const st = parsed.stages[d.stage];
        const line = d.kind === "base" ? parsed.stages[i].location.startLine : d.line;
        throw new DockerfileError(`circular dependency detected on stage: ${st.name ?? `stage-${st.index}`}`, line);
      }
      if (state[d.stage] === 0) {
        state[d.stage] = 1;
        stack.push([d.stage, 0]);
      }
    }
  }
}
