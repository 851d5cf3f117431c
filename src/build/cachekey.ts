/** Cache keys of build steps: src/plan's cacheKeyFor (DESIGN.md "Cache keys"), with kiln's step extras folded in. */
import { cacheKeyFor as planCacheKeyFor, type CacheSource } from "../plan/cachekey";
import type { Instruction } from "../dockerfile/types";

export interface StepKeyInput {
  /** The previous step's key, or for FROM: "scratch" / the base manifest digest / the source stage's key. */
  parent: string;
  platform: string;
  /** The instruction after expansion, with its flags (locations and original text left out). */
  instruction: unknown;
  /** RUN: the env and build args it can see. */
  env?: string[];
  /** COPY/ADD: every source file (mtimes never count). */
  sources?: CacheSource[];
  /** COPY --from: the source stage's key (or image manifest digest). */
  fromKey?: string;
  /** Other inputs the result depends on (ARG values from --build-arg, RUN's argv/workdir/user). */
  values?: unknown;
}

/** The instruction as it enters a key: no line numbers, no original text. */
export function keyedInstruction(inst: Instruction): Record<string, unknown> {
  const { location, original, ...rest } = inst as Instruction & { location: unknown; original: unknown };
  void location;
  void original;
  return rest;
}

/** `sha256:<hex>` of the step's inputs. */
export async function cacheKeyFor(input: StepKeyInput): Promise<string> {
  const instruction = input.values === undefined ? input.instruction : { instruction: input.instruction, values: input.values };
  const hex = await planCacheKeyFor({
    parent: input.parent,
    platform: input.platform,
    instruction,
    env: input.env,
    sources: input.sources,
    fromKey: input.fromKey,
  });
  return `sha256:${hex}`;
}
