/** Variable expansion of an instruction's fields, exactly those BuildKit expands, with the env a step sees. */
import { ShellLex } from "../dockerfile/shell";
import type { Instruction } from "../dockerfile/types";
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

export function expandInstruction<T extends Instruction>(inst: T, env: Map<string, string>, lex: ShellLex): T {
  const w = (s: string) => lex.processWord(s, env);
  const ws = (s: string) => lex.processWords(s, env);
  const opt = (s: string | undefined) => (s === undefined ? undefined : w(s));
  switch (inst.kind) {
    case "ENV":
    case "LABEL":
      return { ...inst, pairs: inst.pairs.map((p) => ({ key: w(p.key), value: w(p.value) })) };
    case "ARG":
      return { ...inst, args: inst.args.map((a) => ({ key: w(a.key), value: a.value === undefined ? undefined : w(a.value) })) };
    case "EXPOSE":
      return { ...inst, ports: inst.ports.flatMap(ws) };
    case "VOLUME":
      return { ...inst, volumes: inst.volumes.map(w).filter((v) => v !== "") };
    case "USER":
      return { ...inst, user: w(inst.user) };
    case "WORKDIR":
      return { ...inst, path: w(inst.path) };
    case "STOPSIGNAL":
      return { ...inst, signal: w(inst.signal) };
    case "COPY":
      return { ...inst, sources: inst.sources.map(w), dest: w(inst.dest), chown: opt(inst.chown), chmod: opt(inst.chmod), from: opt(inst.from) };
    case "ADD":
      return { ...inst, sources: inst.sources.map(w), dest: w(inst.dest), chown: opt(inst.chown), chmod: opt(inst.chmod), checksum: opt(inst.checksum) };
    default:
      return inst;
  }
}
