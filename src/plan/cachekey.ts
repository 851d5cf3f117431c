/**
 * Cache keys (DESIGN.md "Cache keys"): sha256 of the canonical JSON of everything a step's result
 * depends on, the cache scope first of all. Modification times never count; the order sources were listed in does not matter.
 */
import { sha256Hex } from "../oci/digest";
import { canonicalJson } from "../oci/image";

export interface CacheSource {
  dest: string;
  mode: number;
  uid: number;
  gid: number;
  sha256: string;
  linkTarget?: string;
}

export interface CacheKeyInput {
  /**
   * The cache scope (DESIGN.md "Tenancy and trust"): the namespace the build pushes into, so a key
   * of one namespace never finds another's entry. SHARED_CACHE_SCOPE only for steps whose result
   * the Worker computes from the other inputs alone (never RUN), when the operator shares them.
   */
  scope: string;
  /** Parent step's key, the base image's manifest digest, or "scratch". */
  parent: string;
  platform: string;
  /** The instruction after expansion, with its flags. */
  instruction: unknown;
  /** Env and build args the step can see (RUN), "K=V". */
  env?: string[];
  /** Every source file of COPY/ADD. */
  sources?: CacheSource[];
  /** The source stage's key (COPY --from). */
  fromKey?: string;
}

/**
 * The scope of keys shared across namespaces: no namespace (nor `_untagged`) can be named `*`. Only
 * for Worker-computed steps (FROM, COPY, ADD, WORKDIR, metadata) and only when the operator asks.
 */
export const SHARED_CACHE_SCOPE = "*";

/**
 * Bumped when the key derivation changes, so old entries are never reused by mistake. 2: the cache
 * scope entered every key (entries of version 1 were global).
 */
const KEY_VERSION = 2;

export { canonicalJson };

function normalizeSource(s: CacheSource): CacheSource {
  const out: CacheSource = { dest: s.dest, mode: s.mode, uid: s.uid, gid: s.gid, sha256: s.sha256 };
  if (s.linkTarget !== undefined) out.linkTarget = s.linkTarget;
  return out;
}

/** The cache key of a step: lower-case sha256 hex. */
export async function cacheKeyFor(input: CacheKeyInput): Promise<string> {
  if (typeof input.scope !== "string" || input.scope === "") throw new Error("cache key: no cache scope");
  const doc: Record<string, unknown> = {
    v: KEY_VERSION,
    scope: input.scope,
    parent: input.parent,
    platform: input.platform,
    instruction: input.instruction,
  };
  if (input.env !== undefined) doc.env = input.env;
  if (input.sources !== undefined) {
    doc.sources = input.sources
      .map((s) => canonicalJson(normalizeSource(s)))
      .sort()
      .map((t) => JSON.parse(t) as unknown);
  }
  if (input.fromKey !== undefined) doc.fromKey = input.fromKey;
  const bytes = new TextEncoder().encode(canonicalJson(doc));
  return sha256Hex(bytes);
}
