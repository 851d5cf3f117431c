/**
 * FROM: the stage starts from scratch, an earlier stage or an image (read as the build's principal).
 * The new stage's env is the frontend's StageEnv over the base's config Env (PATH defaulted when the
 * base has none, as BuildKit does). An image base's ONBUILD triggers were planned as the next steps;
 * the new image does not inherit them.
 */
import { StageEnv } from "../../dockerfile/env";
import type { ImageConfig } from "../../oci/image";
import { putCacheEntry } from "../../storage/cache";
import { cacheKeyFor } from "../cachekey";
import { loadImage, scratchConfig } from "../image";
import type { BaseImage, ImageState, LayerRef } from "../model";
import { lookup, type Executor, type StepContext, type StepInput, type StepOutcome } from "./executor";

function startState(ctx: StepContext, config: ImageConfig, layers: LayerRef[], key: string): ImageState {
  const env = new StageEnv(config.config?.Env ?? [], { buildArgs: ctx.spec.buildArgs, metaArgs: new Map(Object.entries(ctx.graph.metaArgs)), os: ctx.spec.platform.os });
  const withEnv: ImageConfig = { ...config, config: { ...(config.config ?? {}), Env: env.configEnv } };
  return { config: withEnv, layers, key, env: env.snapshot(), cmdSet: false };
}

export const fromExecutor: Executor = {
  kind: "from",
  async execute(ctx: StepContext, { step, platform, scope }: StepInput): Promise<StepOutcome> {
    const stage = ctx.graph.stages.find((s) => s.index === step.stage)!;
    let state: ImageState;
    let base: BaseImage | undefined;
    if (stage.base.kind === "stage") {
      const from = ctx.stateOf(step.deps[0]);
      const key = await cacheKeyFor({ scope, parent: from.key, platform, instruction: { kind: "FROM", stage: true } });
      state = startState(ctx, structuredClone(from.config), from.layers, key);
    } else if (stage.base.kind === "scratch") {
      const key = await cacheKeyFor({ scope, parent: "scratch", platform, instruction: { kind: "FROM" } });
      state = startState(ctx, scratchConfig(ctx.spec.platform), [], key);
    } else {
      const pulls: string[] = [];
      const img = await loadImage(ctx.env, stage.base.ref, ctx.spec, ctx.spec.platform, (line) => pulls.push(line));
      for (const line of pulls) await ctx.log(`${line}\n`);
      const via = img.resolvedDigest && img.resolvedDigest !== img.manifestDigest ? ` (index ${img.resolvedDigest})` : "";
      const where = img.source === "kiln" ? `kiln's registry (${img.repository})` : img.repository;
      await ctx.log(`resolved ${stage.base.ref} to ${where}@${img.manifestDigest}${via}\n`);
      const key = await cacheKeyFor({ scope, parent: img.manifestDigest, platform, instruction: { kind: "FROM" } });
      const config = { ...img.config, config: { ...img.config.config } };
      delete config.config.OnBuild;
      state = startState(ctx, config, img.layers, key);
      base = { stage: stage.index, ref: stage.base.ref, source: img.source, repository: img.repository, digest: img.manifestDigest, ...(via ? { resolvedDigest: img.resolvedDigest } : {}) };
    }
    const hit = await lookup(ctx, state.key);
    if (!hit) await putCacheEntry(ctx.env, state.key, { version: 1, layer: null, config: state.config.config as Record<string, unknown>, history: null }, ctx.spec.scope);
    return { status: hit ? "cached" : "done", state, base };
  },
};
