/**
 * The one planner: Dockerfile text → the build graph a build runs and `/v1/dockerfile/check` shows.
 * Reachable stages in dependency order (planBuild), one step per FROM and per instruction, the base
 * image's ONBUILD triggers (parsed by the frontend's parseOnbuildTriggers) right after their FROM,
 * each step with the steps it waits for. Pure: the base images' triggers come in through a callback.
 * The graph is JSON (it is persisted with the build), so a build plans its Dockerfile once.
 */
import { DockerfileError } from "../dockerfile/errors";
import { parseOnbuildTriggers } from "../dockerfile/onbuild";
import { parseDockerfile } from "../dockerfile/stages";
import type { Instruction, ParsedDockerfile, StageBase } from "../dockerfile/types";
import { planBuild, type BuildPlan } from "./plan";

export type StepKind = "from" | "metadata" | "workdir" | "copy" | "add" | "run";

export interface PlannedStep {
  /** 1-based, in execution order of the plan (stages in dependency order). */
  index: number;
  stage: number;
  stageName: string;
  kind: StepKind;
  /** As docker prints it: `FROM scratch`, `COPY a /b`. */
  instruction: string;
  line: number;
  inst?: Instruction;
  /** Steps that must be finished first (the previous step of the stage, source stages). */
  deps: number[];
}

export interface GraphStage {
  index: number;
  name: string;
  base: StageBase;
  baseName: string;
  steps: number[];
}

export interface BuildGraph {
  steps: PlannedStep[];
  stages: GraphStage[];
  /** Stage index of the target (the image that is pushed). */
  target: number;
  /** Global args (platform args, ARGs before the first FROM, build-arg overrides). */
  metaArgs: Record<string, string>;
  /** Every stage of the Dockerfile by position (for resolving `--from` names and indexes). */
  allStages: { name?: string }[];
  escapeToken: string;
}

export interface GraphOptions {
  buildArgs: Record<string, string>;
  target?: string;
  /** `os/arch[/variant]`. */
  platform: string;
  /** The ONBUILD triggers of an image base (its config's OnBuild); none when absent. */
  triggersOf?: (stage: number, ref: string) => Promise<readonly string[]>;
}

export interface PlannedDockerfile {
  parsed: ParsedDockerfile;
  plan: BuildPlan;
  graph: BuildGraph;
}

export { formatPlatform as platformString } from "../oci/platform";

export function stepKind(inst: Instruction): StepKind {
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

/** Stages a trigger reads (COPY --from=<stage>, RUN --mount from=<stage>). */
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

/**
 * Plans a Dockerfile: parse, reachable stages, steps (with the image bases' ONBUILD triggers).
 * Throws DockerfileError with the line to fix.
 */
export async function planDockerfile(text: string, opts: GraphOptions): Promise<PlannedDockerfile> {
  const parsed = parseDockerfile(text, { buildArgs: opts.buildArgs, target: opts.target, platform: opts.platform });
  const plan = planBuild(parsed, { target: opts.target, buildArgs: opts.buildArgs, platform: opts.platform });
  const allStages = parsed.stages.map((s) => ({ name: s.name?.toLowerCase() }));

  const steps: PlannedStep[] = [];
  const stages: GraphStage[] = [];
  const lastStepOf = new Map<number, number>();
  for (const ps of plan.stages) {
    const i = ps.index;
    const st = parsed.stages[i];
    const stageName = st.name?.toLowerCase() ?? `stage-${i}`;
    let base = ps.base;
    // `FROM 0` names an image called 0, never a stage
    if (base.kind === "stage" && /^\d+$/.test(ps.baseName)) base = { kind: "image", ref: ps.baseName };
    const out: GraphStage = { index: i, name: stageName, base, baseName: ps.baseName, steps: [] };
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
    const expressions = base.kind === "image" && opts.triggersOf ? await opts.triggersOf(i, base.ref) : [];
    const triggers = expressions.length ? parseOnbuildTriggers(expressions, st.location) : [];
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
        kind: stepKind(inst),
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
    stages.push(out);
  }
  const graph: BuildGraph = { steps, stages, target: plan.target, metaArgs: Object.fromEntries(plan.metaArgs), allStages, escapeToken: parsed.escapeToken };
  return { parsed, plan, graph };
}
