/** Cache keys of build steps: src/plan's cacheKeyFor (DESIGN.md "Cache keys"), with kiln's step extras folded in. */
import { cacheKeyFor as planCacheKeyFor, SHARED_CACHE_SCOPE, type CacheKeyInput } from "../plan/cachekey";
import type { Instruction } from "../dockerfile/types";
import type { Env } from "../env";

/** The plan's key inputs, plus the step's other inputs folded into the instruction. */
export interface StepKeyInput extends CacheKeyInput {
  /** Other inputs the result depends on (ARG values from --build-arg, RUN's argv/workdir/user). */
  values?: unknown;
}

/** Whether the operator shares the cache of Worker-computed steps across scopes (KILN_SHARED_WORKER_CACHE). */
export function sharesWorkerCache(env: Pick<Env, "KILN_SHARED_WORKER_CACHE">): boolean {
  return /^(1|true|yes|on)$/i.test(env.KILN_SHARED_WORKER_CACHE?.trim() ?? "");
}

/**
 * The scopes that enter a build's keys. `run`: RUN steps, always the build's own scope (their result
 * comes from a runner executing the tenant's command with its secrets and cache mounts, so it is
 * trusted only inside that scope). `worker`: FROM, COPY, ADD, WORKDIR and metadata steps, whose
 * result the Worker computes from the key's inputs alone: the build's scope too, unless the operator
 * shares them. Every key after a RUN still carries the scope through its parent key (or `fromKey`).
 */
export function stepScopes(scope: string, sharedWorkerCache: boolean): { run: string; worker: string } {
  if (!scope) throw new Error("a build has no cache scope");
  return { run: scope, worker: sharedWorkerCache ? SHARED_CACHE_SCOPE : scope };
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
    scope: input.scope,
    parent: input.parent,
    platform: input.platform,
    instruction,
    env: input.env,
    sources: input.sources,
    fromKey: input.fromKey,
  });
  return `sha256:${hex}`;
}
