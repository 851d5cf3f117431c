/** The env a step's words expand with (the expansion itself is src/dockerfile/expand.ts). */
import type { ImageState } from "./model";

/** The env a step's words expand with: image Env, then declared ARGs not overridden by ENV. */
export function expansionEnv(state: ImageState): Map<string, string> {
  const env = new Map<string, string>();
  for (const kv of state.config.config?.Env ?? []) {
    const eq = kv.indexOf("=");
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  for (const [k, v] of state.args) if (v !== undefined && !env.has(k)) env.set(k, v);
  return env;
}
