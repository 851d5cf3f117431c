/** Cache keys (DESIGN.md "Cache keys"): sha256 of the canonical JSON of what a step's result depends on. */
import { canonicalJson } from "../oci/image";
import { sha256Hex } from "../oci/digest";
import type { Instruction } from "../dockerfile/types";

export interface CacheKeyInput {
  /** The previous step's key, or for FROM: "scratch" / the base manifest digest / the source stage's key. */
  parent: string;
  platform: string;
  /** The instruction after expansion, with its flags (locations and original text left out). */
  instruction: unknown;
  /** RUN: the env and build args it can see. */
  env?: string[];
  /** COPY/ADD: sorted (dest, mode, uid, gid, sha256, link target) of every source file. */
  sources?: unknown[];
  /** COPY --from: the source stage's key (or image manifest digest). */
  fromKey?: string;
  /** ARG: the values it resolves to. */
  values?: unknown;
}

/** The instruction as it enters a key: no line numbers, no original text. */
export function keyedInstruction(inst: Instruction): unknown {
  const { location, original, ...rest } = inst as Instruction & { location: unknown; original: unknown };
  void location;
  void original;
  return rest;
}

export async function cacheKeyFor(input: CacheKeyInput): Promise<string> {
  const hex = await sha256Hex(new TextEncoder().encode(canonicalJson({ v: 1, ...input })));
  return `sha256:${hex}`;
}
