/**
 * What a step does: one dispatch over the executors (one file per kind in ./executors). Pure of DO
 * state: the coordinator persists what these return.
 */
import { platformString } from "../plan/graph";
import { sharesWorkerCache, stepScopes } from "./cachekey";
import { addExecutor } from "./executors/add";
import { copyExecutor } from "./executors/copy";
import { commit, history, type Executor, type StepContext, type StepOutcome } from "./executors/executor";
import { fromExecutor } from "./executors/from";
import { metadataExecutor } from "./executors/metadata";
import { runExecutor } from "./executors/run";
import { workdirExecutor } from "./executors/workdir";
import type { ImageState, LayerRef, PlannedStep, StepKind } from "./model";

export { applyEntry, HISTORY_COMMENT } from "./executors/executor";
export type { Executor, StepContext, StepInput, StepOutcome } from "./executors/executor";

const EXECUTORS: Record<StepKind, Executor> = {
  from: fromExecutor,
  metadata: metadataExecutor,
  workdir: workdirExecutor,
  copy: copyExecutor,
  add: addExecutor,
  run: runExecutor,
};

export async function executeStep(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const executor = EXECUTORS[step.kind];
  if (!executor) throw new Error(`unknown step kind ${step.kind}`);
  // every key carries the build's cache scope (Worker steps: a shared one when the operator asks)
  const scopes = stepScopes(ctx.spec.scope, sharesWorkerCache(ctx.env));
  return await executor.execute(ctx, { step, platform: platformString(ctx.spec.platform), scope: step.kind === "run" ? scopes.run : scopes.worker });
}

/** The state after a RUN step's job finished (and its cache entry written). */
export async function finishRun(ctx: StepContext, parent: ImageState, key: string, createdBy: string, layer: LayerRef | null): Promise<ImageState> {
  return await commit(ctx, parent, key, {
    version: 1,
    layer,
    config: (parent.config.config ?? {}) as Record<string, unknown>,
    history: history(ctx, createdBy, layer === null) as Record<string, unknown>,
  });
}
