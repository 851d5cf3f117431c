/**
 * Build planning: the stages reachable from the target, in dependency order, each instruction
 * classified as metadata-only or layer-producing. Pure; the builder executes the plan.
 */
import { DockerfileError } from "../dockerfile/errors";
import {
  findStageByName,
  findTargetStage,
  platformArgs,
  resolveStageBases,
  stageDependencies,
  type ExternalSource,
  type StageDependency,
} from "../dockerfile/stages";
import type { Instruction, ParsedDockerfile, StageBase } from "../dockerfile/types";

/**
 * `layer`: makes a filesystem layer (RUN, COPY, ADD). `workdir`: metadata, but the directory is created
 * when missing (BuildKit's WORKDIR makes a layer only then). `metadata`: image config only.
 */
export type Classification = "metadata" | "workdir" | "layer";

export function classify(inst: Instruction): Classification {
  switch (inst.kind) {
    case "RUN":
    case "COPY":
    case "ADD":
      return "layer";
    case "WORKDIR":
      return "workdir";
    default:
      return "metadata";
  }
}

export interface PlannedInstruction {
  /** Position in the stage's instruction list. */
  index: number;
  instruction: Instruction;
  classification: Classification;
  /** For COPY --from: the stage (index) or image it reads, after expansion. */
  from?: { stage: number } | { image: string };
}

export interface PlannedStage {
  index: number;
  name?: string;
  /** FROM after global ARG expansion. */
  baseName: string;
  base: StageBase;
  /** FROM --platform after expansion, normalized. */
  platform?: string;
  /** Stage indexes this stage needs built first (base, COPY --from, RUN --mount from=), ascending. */
  dependencies: number[];
  /** The same with the reason and line of each edge. */
  dependencyDetails: StageDependency[];
  /** Images read by COPY --from / RUN --mount from= (not stages). */
  externalSources: ExternalSource[];
  instructions: PlannedInstruction[];
}

export interface BuildPlan {
  /** Reachable stages only, every stage after the stages it depends on. */
  stages: PlannedStage[];
  /** Index of the target stage (the last planned one). */
  target: number;
  /** Global args (platform args, ARGs before the first FROM, build-arg overrides). */
  metaArgs: Map<string, string>;
  /** Target platform, `os/arch[/variant]`. */
  platform: string;
}

export interface PlanOptions {
  /** Stage name; default: the last stage. */
  target?: string;
  buildArgs?: Record<string, string>;
  /** Target platform (default linux/amd64). */
  platform?: string;
  buildPlatform?: string;
}

function stageLabel(parsed: ParsedDockerfile, i: number): string {
  return parsed.stages[i].name ?? `stage-${i}`;
}

/** Plans a build of `target`. Throws DockerfileError for an unknown target or a broken stage graph. */
export function planBuild(parsed: ParsedDockerfile, options: PlanOptions = {}): BuildPlan {
  const platform = options.platform ?? "linux/amd64";
  const buildArgs = options.buildArgs ?? {};
  const resolved = resolveStageBases(parsed, buildArgs, platformArgs(platform, options.buildPlatform ?? platform));
  const graph = stageDependencies(parsed, resolved);
  const target = findTargetStage(parsed, options.target);

  // Post-order DFS from the target, dependencies in ascending index order; iterative because a
  // Dockerfile may chain thousands of stages.
  const order: number[] = [];
  const seen = new Set<number>([target.index]);
  const depsOf = (i: number): number[] => [...new Set(graph[i].dependencies.map((d) => d.stage))].sort((a, b) => a - b);
  const stack: [number, number[], number][] = [[target.index, depsOf(target.index), 0]];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top[2] >= top[1].length) {
      order.push(top[0]);
      stack.pop();
      continue;
    }
    const d = top[1][top[2]++];
    if (seen.has(d)) continue;
    seen.add(d);
    stack.push([d, depsOf(d), 0]);
  }

  // BuildKit dispatches stages in file order: a stage can read (COPY --from, RUN --mount from=) only
  // stages defined before it.
  for (const i of [...order].sort((a, b) => a - b)) {
    for (const d of graph[i].dependencies) {
      if (d.kind === "base" || d.stage < i) continue;
      const inst = parsed.stages[i].instructions[d.instruction];
      const from = inst.kind === "COPY" ? inst.from : inst.kind === "RUN" ? inst.mounts.find((m) => m.from && findStageByName(parsed, m.from)?.index === d.stage)?.from : undefined;
      const message =
        d.kind === "copy-from"
          ? `cannot copy from stage ${JSON.stringify(from)}, it needs to be defined before current stage ${JSON.stringify(stageLabel(parsed, i))}`
          : `cannot mount from stage ${JSON.stringify(from)} to ${JSON.stringify(stageLabel(parsed, i))}, stage needs to be defined before current command`;
      throw new DockerfileError(message, d.line);
    }
  }

  const stages = order.map((i): PlannedStage => {
    const st = parsed.stages[i];
    const r = resolved.stages[i];
    const g = graph[i];
    const ps: PlannedStage = {
      index: i,
      baseName: r.baseName,
      base: r.base,
      dependencies: [...new Set(g.dependencies.map((d) => d.stage))].sort((a, b) => a - b),
      dependencyDetails: g.dependencies,
      externalSources: g.externalSources,
      instructions: st.instructions.map((inst, j) => {
        const pi: PlannedInstruction = { index: j, instruction: inst, classification: classify(inst) };
        const from = g.copyFrom.get(j);
        if (from?.stage !== undefined) pi.from = { stage: from.stage };
        else if (from?.image !== undefined) pi.from = { image: from.image };
        return pi;
      }),
    };
    if (st.name !== undefined) ps.name = st.name;
    if (r.platform !== undefined) ps.platform = r.platform;
    return ps;
  });
  if (stages.length === 0) throw new DockerfileError("nothing to build", 1);
  return { stages, target: target.index, metaArgs: resolved.metaArgs, platform: platformArgs(platform).TARGETPLATFORM };
}
