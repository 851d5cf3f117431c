/**
 * Dockerfile text → the build graph the coordinator runs: reachable stages in dependency order, one
 * step per FROM and per instruction, each with the steps it waits for.
 */
import { parse } from "../dockerfile/parser";
import { parseInstruction, type FromInstruction } from "../dockerfile/instructions";
import { DockerfileError } from "../dockerfile/errors";
import type { Instruction, StageBase } from "../dockerfile/types";
import { parseDockerfile } from "../dockerfile/stages";
import { planBuild } from "../plan/plan";
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

export function platformString(p: { os: string; architecture: string; variant?: string }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
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
  const platform = platformString(opts.platform);
  const parsed = parseDockerfile(text, { buildArgs: opts.buildArgs, target: opts.target, platform });
  const plan = planBuild(parsed, { target: opts.target, buildArgs: opts.buildArgs, platform });
  const allStages = parsed.stages.map((s) => ({ name: s.name?.toLowerCase() }));

  const steps: PlannedStep[] = [];
  const planned: PlannedStage[] = [];
  const lastStepOf = new Map<number, number>();
  for (const ps of plan.stages) {
    const i = ps.index;
    const st = parsed.stages[i];
    const stageName = st.name?.toLowerCase() ?? `stage-${i}`;
    let base = ps.base;
    if (base.kind === "stage" && /^\d+$/.test(ps.baseName)) base = { kind: "image", ref: ps.baseName };
    const out: PlannedStage = { index: i, name: stageName, base, baseName: ps.baseName, steps: [] };
    const fromStep: PlannedStep = {
      index: steps.length + 1,
      stage: i,
      stageName,
      kind: "from",
      instruction: `FROM ${ps.baseName}${st.name ? ` AS ${st.name}` : ""}`,
      line: st.location.startLine,
      deps: base.kind === "stage" ? [lastStepOf.get(base.index)!] : [],
    };
    steps.push(fromStep);
    out.steps.push(fromStep.index);
    let prev = fromStep.index;
    const triggers = opts.onbuild?.[i]?.length ? parseTriggers(opts.onbuild[i], st.location.startLine) : [];
    const readsStages = new Map<number, number[]>();
    for (const d of ps.dependencyDetails) {
      if (d.kind === "base") continue;
      readsStages.set(d.instruction, [...(readsStages.get(d.instruction) ?? []), d.stage]);
    }
    const list: { inst: Instruction; sources: number[] }[] = [
      ...triggers.map((inst) => ({ inst, sources: triggerSources(inst, allStages, i) })),
      ...ps.instructions.map((pi) => ({ inst: pi.instruction, sources: readsStages.get(pi.index) ?? [] })),
    ];
    for (const { inst, sources } of list) {
      const deps = [prev];
      for (const src of sources) {
        const last = lastStepOf.get(src);
        if (last === undefined) throw new DockerfileError(`stage ${src} is not built before stage ${stageName}`, inst.location.startLine);
        deps.push(last);
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
      out.steps.push(step.index);
      prev = step.index;
    }
    lastStepOf.set(i, prev);
    planned.push(out);
  }
  return { steps, stages: planned, target: plan.target, metaArgs: plan.metaArgs, allStages, escapeToken: parsed.escapeToken };
}

/** Stages an ONBUILD trigger reads (COPY --from=<stage>), which must already be planned. */
function triggerSources(inst: Instruction, stages: { name?: string }[], before: number): number[] {
  const froms: string[] = [];
  if (inst.kind === "COPY" && inst.from) froms.push(inst.from);
  if (inst.kind === "RUN") for (const m of inst.mounts) if (m.from) froms.push(m.from);
  const out: number[] = [];
  for (const f of froms) {
    const b = resolveFrom(f, stages, before);
    if (b.kind === "stage") out.push(b.index);
  }
  return out;
}
