/**
 * Dockerfile text → the build graph the coordinator runs: reachable stages in dependency order, one
 * step per FROM and per instruction, each with the steps it waits for.
 */
import { parse } from "../dockerfile/parser";
import { parseInstruction, type FromInstruction } from "../dockerfile/instructions";
import { DockerfileError } from "../dockerfile/errors";
import { ShellLex } from "../dockerfile/shell";
import type { ArgInstruction, Instruction, StageBase } from "../dockerfile/types";
import type { BuildGraph, PlannedStage, PlannedStep, StepKind } from "./model";

export interface PlanOptions {
  buildArgs: Record<string, string>;
  target?: string;
  platform: { os: string; architecture: string; variant?: string };
  /** ONBUILD triggers of image bases, by stage index: run right after that stage's FROM. */
  onbuild?: Record<number, string[]>;
}

/** Parses ONBUILD trigger expressions (`RUN echo hi`) into instructions located at the FROM line. */
function parseTriggers(triggers: string[], line: number): Instruction[] {
  const out: Instruction[] = [];
  for (const t of triggers) {
    const ast = parse(t + "\n").ast;
    for (const node of ast.children) {
      const inst = parseInstruction(node);
      if (inst.kind === "FROM" || inst.kind === "ONBUILD" || inst.kind === "MAINTAINER") {
        throw new DockerfileError(`${inst.kind} isn't allowed as an ONBUILD trigger`, line);
      }
      out.push({ ...inst, location: { startLine: line, endLine: line } } as Instruction);
    }
  }
  return out;
}

interface RawStage {
  from: FromInstruction;
  instructions: Instruction[];
}

export function platformString(p: { os: string; architecture: string; variant?: string }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

/** TARGETPLATFORM & co., as BuildKit predefines them for every build. */
export function platformArgs(p: { os: string; architecture: string; variant?: string }): Map<string, string> {
  const s = platformString(p);
  return new Map([
    ["TARGETPLATFORM", s],
    ["TARGETOS", p.os],
    ["TARGETARCH", p.architecture],
    ["TARGETVARIANT", p.variant ?? ""],
    ["BUILDPLATFORM", s],
    ["BUILDOS", p.os],
    ["BUILDARCH", p.architecture],
    ["BUILDVARIANT", p.variant ?? ""],
  ]);
}

function kindOf(inst: Instruction): StepKind {
  switch (inst.kind) {
    case "RUN":
      return "run";
    case "COPY":
      return "copy";
    case "ADD":
      return "add";
    case "WORKDIR":
      return "workdir";
    default:
      return "metadata";
  }
}

/** Resolves a `--from` value: a stage index, a stage name, or an image reference. */
export function resolveFrom(value: string, stages: { name?: string }[], before: number): StageBase {
  if (/^\d+$/.test(value)) {
    const n = Number(value);
    if (n >= before) throw new Error(`invalid stage index ${value}: a stage can only refer to earlier stages`);
    return { kind: "stage", index: n };
  }
  const lower = value.toLowerCase();
  for (let i = 0; i < before; i++) if (stages[i].name === lower) return { kind: "stage", index: i };
  if (lower === "scratch") return { kind: "scratch" };
  return { kind: "image", ref: value };
}

export function planDockerfile(text: string, opts: PlanOptions): BuildGraph {
  const ast = parse(text).ast;
  const globalArgs: ArgInstruction[] = [];
  const raw: RawStage[] = [];
  for (const node of ast.children) {
    const inst = parseInstruction(node);
    if (inst.kind === "FROM") {
      raw.push({ from: inst, instructions: [] });
    } else if (raw.length === 0) {
      if (inst.kind !== "ARG") throw new DockerfileError(`no build stage in current context: ${inst.kind} before FROM`, inst.location.startLine);
      globalArgs.push(inst);
    } else {
      raw[raw.length - 1].instructions.push(inst);
    }
  }
  if (raw.length === 0) throw new DockerfileError("the Dockerfile has no FROM instruction", 1);

  const lex = new ShellLex(ast.escapeToken);
  const metaArgs = platformArgs(opts.platform);
  for (const a of globalArgs) {
    for (const { key, value } of a.args) {
      let v = opts.buildArgs[key];
      if (v === undefined && value !== undefined) {
        try {
          v = lex.processWord(value, metaArgs);
        } catch (e) {
          throw new DockerfileError((e as Error).message, a.location.startLine);
        }
      }
      if (v !== undefined) metaArgs.set(key, v);
      else if (!metaArgs.has(key)) metaArgs.set(key, "");
    }
  }

  const stages: { name?: string; base: StageBase; baseName: string; from: FromInstruction; instructions: Instruction[] }[] = [];
  for (const [i, s] of raw.entries()) {
    let baseName: string;
    try {
      baseName = lex.processWord(s.from.baseName, metaArgs);
    } catch (e) {
      throw new DockerfileError((e as Error).message, s.from.location.startLine);
    }
    if (!baseName) throw new DockerfileError("base name (FROM) should not be blank", s.from.location.startLine);
    const name = s.from.name?.toLowerCase();
    if (name && stages.some((x) => x.name === name)) throw new DockerfileError(`duplicate stage name "${name}"`, s.from.location.startLine);
    let base: StageBase;
    try {
      base = resolveFrom(baseName, stages, i);
    } catch (e) {
      throw new DockerfileError((e as Error).message, s.from.location.startLine);
    }
    if (base.kind === "stage" && /^\d+$/.test(baseName)) base = { kind: "image", ref: baseName };
    stages.push({ name, base, baseName, from: s.from, instructions: s.instructions });
  }

  let target = stages.length - 1;
  if (opts.target) {
    const t = stages.findIndex((s) => s.name === opts.target!.toLowerCase());
    if (t < 0) throw new DockerfileError(`target stage "${opts.target}" could not be found`, 1);
    target = t;
  }

  // Which stages each stage needs (its base, COPY --from, RUN --mount from=).
  const fromValue = (v: string, line: number) => {
    try {
      return lex.processWord(v, metaArgs);
    } catch (e) {
      throw new DockerfileError((e as Error).message, line);
    }
  };
  const needs = stages.map((s, i) => {
    const out = new Set<number>();
    if (s.base.kind === "stage") out.add(s.base.index);
    for (const inst of s.instructions) {
      const froms: string[] = [];
      if (inst.kind === "COPY" && inst.from) froms.push(inst.from);
      if (inst.kind === "RUN") for (const m of inst.mounts) if (m.from) froms.push(m.from);
      for (const f of froms) {
        let b: StageBase;
        try {
          b = resolveFrom(fromValue(f, inst.location.startLine), stages, i);
        } catch (e) {
          throw new DockerfileError((e as Error).message, inst.location.startLine);
        }
        if (b.kind === "stage") out.add(b.index);
      }
    }
    return out;
  });
  const reachable = new Set<number>();
  const visit = (i: number) => {
    if (reachable.has(i)) return;
    reachable.add(i);
    for (const d of needs[i]) visit(d);
  };
  visit(target);

  const steps: PlannedStep[] = [];
  const planned: PlannedStage[] = [];
  const lastStepOf = new Map<number, number>();
  for (const i of [...reachable].sort((a, b) => a - b)) {
    const s = stages[i];
    const stageName = s.name ?? `stage-${i}`;
    const ps: PlannedStage = { index: i, name: stageName, base: s.base, baseName: s.baseName, steps: [] };
    const fromDeps = s.base.kind === "stage" ? [lastStepOf.get(s.base.index)!] : [];
    const fromStep: PlannedStep = {
      index: steps.length + 1,
      stage: i,
      stageName,
      kind: "from",
      instruction: `FROM ${s.baseName}${s.name ? ` AS ${s.name}` : ""}`,
      line: s.from.location.startLine,
      deps: fromDeps,
    };
    steps.push(fromStep);
    ps.steps.push(fromStep.index);
    let prev = fromStep.index;
    const triggers = opts.onbuild?.[i]?.length ? parseTriggers(opts.onbuild[i], s.from.location.startLine) : [];
    for (const inst of [...triggers, ...s.instructions]) {
      const deps = [prev];
      const froms: string[] = [];
      if (inst.kind === "COPY" && inst.from) froms.push(inst.from);
      if (inst.kind === "RUN") for (const m of inst.mounts) if (m.from) froms.push(m.from);
      for (const f of froms) {
        const b = resolveFrom(fromValue(f, inst.location.startLine), stages, i);
        if (b.kind === "stage") deps.push(lastStepOf.get(b.index)!);
      }
      const step: PlannedStep = {
        index: steps.length + 1,
        stage: i,
        stageName,
        kind: kindOf(inst),
        instruction: inst.original.trim(),
        line: inst.location.startLine,
        inst,
        deps,
      };
      steps.push(step);
      ps.steps.push(step.index);
      prev = step.index;
    }
    lastStepOf.set(i, prev);
    planned.push(ps);
  }
  return { steps, stages: planned, target, metaArgs, allStages: stages.map((s) => ({ name: s.name })), escapeToken: ast.escapeToken };
}
