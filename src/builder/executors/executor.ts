/**
 * The Executor type every step kind implements (from, metadata, workdir, copy, add, run), and what
 * they share: the step's context, its outcome, the stage env (the frontend's StageEnv), expansion,
 * cache lookups and commits.
 */
import type { Env } from "../../env";
import { DockerfileError } from "../../dockerfile/errors";
import { StageEnv } from "../../dockerfile/env";
import { expandInstruction } from "../../dockerfile/expand";
import { ShellError, ShellLex } from "../../dockerfile/shell";
import type { Instruction } from "../../dockerfile/types";
import type { ContextIndex } from "../../context/ingest";
import { appendLayer, rfc3339, type HistoryEntry, type ImageConfig } from "../../oci/image";
import type { RunJob } from "../../protocol/jobs";
import { getCacheEntry, putCacheEntry, type CacheEntry } from "../../storage/cache";
import type { BaseImage, BuildGraph, BuildSpec, ImageState, LayerRef, PlannedStep, StepKind } from "../model";

export const HISTORY_COMMENT = "buildkit.dockerfile.v0";

export interface StepContext {
  env: Env;
  spec: BuildSpec;
  graph: BuildGraph;
  /** The state after a finished step. */
  stateOf(index: number): ImageState;
  contextIndex(): Promise<ContextIndex>;
  log(text: string): Promise<void>;
}

export type StepOutcome =
  | { status: "done" | "cached"; state: ImageState; layer?: LayerRef | null; base?: BaseImage }
  | { status: "run"; key: string; job: Omit<RunJob, "jobId" | "registryToken">; createdBy: string };

/** What an executor is handed besides the context: the step, its platform and the scopes of its key. */
export interface StepInput {
  step: PlannedStep;
  platform: string;
  /** The cache scope its key carries (stepScopes: RUN always the build's, Worker steps maybe shared). */
  scope: string;
}

/** One step kind. Every executor runs the frontend's tested code (StageEnv, runCommand, triggers). */
export interface Executor {
  kind: StepKind;
  execute(ctx: StepContext, input: StepInput): Promise<StepOutcome>;
}

/** The frontend's StageEnv of a state (its config Env plus the snapshot kept beside it). */
export function stageEnvOf(ctx: StepContext, state: ImageState): StageEnv {
  return StageEnv.restore(state.config.config?.Env ?? [], state.env, {
    buildArgs: ctx.spec.buildArgs,
    metaArgs: new Map(Object.entries(ctx.graph.metaArgs)),
    os: ctx.spec.platform.os,
  });
}

export const shellLex = (graph: BuildGraph): ShellLex => new ShellLex(graph.escapeToken);

/** The instruction with its words expanded in the stage's env; errors at the step's line. */
export function expandStep<T extends Instruction>(ctx: StepContext, step: PlannedStep, inst: T, env: StageEnv): T {
  try {
    return expandInstruction(inst, env.env, shellLex(ctx.graph));
  } catch (e) {
    if (e instanceof ShellError) throw new DockerfileError(e.message, step.line);
    if (e instanceof DockerfileError && e.line !== step.line) throw new DockerfileError(e.message, step.line);
    throw e;
  }
}

/** The parent state of a non-FROM step and its instruction expanded. */
export function prepare<T extends Instruction>(ctx: StepContext, step: PlannedStep): { parent: ImageState; stageEnv: StageEnv; inst: T } {
  const parent = ctx.stateOf(step.deps[0]);
  const stageEnv = stageEnvOf(ctx, parent);
  return { parent, stageEnv, inst: expandStep(ctx, step, step.inst as T, stageEnv) };
}

export function history(ctx: StepContext, createdBy: string, emptyLayer: boolean): HistoryEntry {
  const h: HistoryEntry = { created: rfc3339(ctx.spec.sourceDateEpoch), created_by: createdBy, comment: HISTORY_COMMENT };
  if (emptyLayer) h.empty_layer = true;
  return h;
}

/** Applies a cache entry (or a fresh result) to the parent state. */
export function applyEntry(parent: ImageState, key: string, entry: CacheEntry, extra: Partial<ImageState> = {}): ImageState {
  let config: ImageConfig = { ...parent.config, config: entry.config as ImageConfig["config"] };
  if (entry.author !== undefined) config.author = entry.author;
  if (entry.layer) {
    config = appendLayer(config, { diffId: entry.layer.diffId, history: (entry.history ?? {}) as HistoryEntry });
  } else if (entry.history) {
    config = { ...config, history: [...(config.history ?? []), entry.history as HistoryEntry] };
  }
  return {
    ...parent,
    ...extra,
    config,
    layers: entry.layer ? [...parent.layers, entry.layer] : parent.layers,
    key,
  };
}

export async function lookup(ctx: StepContext, key: string): Promise<CacheEntry | null> {
  if (ctx.spec.noCache) return null;
  return await getCacheEntry(ctx.env, key, ctx.spec.scope);
}

/** Writes the step's cache entry and returns the state after it. */
export async function commit(ctx: StepContext, parent: ImageState, key: string, entry: CacheEntry, extra: Partial<ImageState> = {}): Promise<ImageState> {
  await putCacheEntry(ctx.env, key, entry, ctx.spec.scope);
  return applyEntry(parent, key, entry, extra);
}

/** A cache hit as an outcome. */
export function cached(parent: ImageState, key: string, hit: CacheEntry, extra: Partial<ImageState> = {}): StepOutcome {
  return { status: "cached", state: applyEntry(parent, key, hit, extra), layer: hit.layer };
}
