/**
 * A stage's environment while it is built, with BuildKit's rules (dispatchEnv / dispatchArg /
 * dispatchRun): the image config's Env changes only with ENV; the env words expand with and RUN runs
 * with is that plus the ARG values declared so far, in the order they were set (an ARG set after an ENV
 * of the same name wins there, the config keeps the ENV).
 */
import { argValueInStage } from "./stages";
import type { ArgInstruction, EnvInstruction, WordExpander } from "./types";

/** system.DefaultPathEnv for Linux: set in the config when the base image has no PATH. */
export const DEFAULT_PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface StageEnvOptions {
  buildArgs: Record<string, string>;
  /** Global args (ResolvedBases.metaArgs): what `ARG NAME` without a default inherits. */
  metaArgs: ReadonlyMap<string, string>;
  /** Target OS; PATH is defaulted only for non-Windows. */
  os?: string;
}

/**
 * What a StageEnv knows beyond the image config, as JSON: a build persists it after every step and
 * restores it for the next (an ARG declared without a value stays without one: never `null`).
 */
export interface StageEnvSnapshot {
  /** The expansion / RUN env, in the order names were first set. */
  env: [string, string][];
  /** ARGs declared so far; `value` absent when declared without one. */
  args: { key: string; value?: string }[];
}

function splitKv(e: string): [string, string] {
  const i = e.indexOf("=");
  return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)];
}

export class StageEnv {
  private readonly config: string[];
  private readonly state = new Map<string, string>();
  private readonly args: { key: string; value?: string }[] = [];

  /** `baseEnv`: the base image's config Env (or the base stage's, for `FROM <stage>`). */
  constructor(
    baseEnv: readonly string[],
    private readonly opts: StageEnvOptions,
  ) {
    this.config = [...baseEnv];
    if ((opts.os ?? "linux") !== "windows" && !this.config.some((e) => splitKv(e)[0] === "PATH")) {
      this.config.push("PATH=" + DEFAULT_PATH_ENV);
    }
    for (const e of this.config) {
      const [k, v] = splitKv(e);
      this.state.set(k, v);
    }
  }

  /** A StageEnv as it was after `snapshot()`, with `configEnv` the image config's Env at that point. */
  static restore(configEnv: readonly string[], snapshot: StageEnvSnapshot, opts: StageEnvOptions): StageEnv {
    // the config already had PATH defaulted when the stage began (same os: same outcome again)
    const s = new StageEnv(configEnv, opts);
    s.state.clear();
    for (const [k, v] of snapshot.env) s.state.set(k, v);
    for (const a of snapshot.args) s.args.push(typeof a.value === "string" ? { key: a.key, value: a.value } : { key: a.key });
    return s;
  }

  /** The state beyond the config, as JSON. */
  snapshot(): StageEnvSnapshot {
    return { env: [...this.state], args: this.args.map((a) => (a.value === undefined ? { key: a.key } : { key: a.key, value: a.value })) };
  }

  /** What the next instruction's words expand with. */
  get env(): ReadonlyMap<string, string> {
    return this.state;
  }

  /** The image config's Env ("K=V"). */
  get configEnv(): string[] {
    return [...this.config];
  }

  /** ARGs declared in this stage so far, with their values (undefined: declared without one). */
  get buildArgs(): readonly { key: string; value?: string }[] {
    return this.args;
  }

  /** The env of a RUN step ("K=V"), proxy args appended when not set otherwise. */
  runEnv(proxy: ReadonlyMap<string, string> = new Map()): string[] {
    const out = [...this.state].map(([k, v]) => `${k}=${v}`);
    for (const [k, v] of proxy) if (!this.state.has(k)) out.push(`${k}=${v}`);
    return out;
  }

  /** Applies an ENV whose words were expanded (expandInstruction). */
  applyEnv(inst: EnvInstruction): void {
    for (const { key, value } of inst.pairs) {
      this.state.set(key, value);
      const i = this.config.findIndex((e) => splitKv(e)[0] === key);
      if (i >= 0) this.config[i] = `${key}=${value}`;
      else this.config.push(`${key}=${value}`);
    }
  }

  /**
   * Applies an ARG as written (NOT expanded): each name gets its --build-arg, else its default expanded
   * with the env at this point, else the global arg's value. Returns the ARG with the values used.
   */
  applyArg(inst: ArgInstruction, shell: WordExpander): ArgInstruction {
    const args = inst.args.map((pair) => {
      const value = argValueInStage(pair, this.opts.buildArgs, this.opts.metaArgs, (w) => shell.processWord(w, this.state));
      if (value !== undefined) this.state.set(pair.key, value);
      this.args.push(value === undefined ? { key: pair.key } : { key: pair.key, value });
      return value === undefined ? { key: pair.key } : { key: pair.key, value };
    });
    return { ...inst, args };
  }

  /** BuildKit's history text for RUN: `|N K=V … cmd` with the build args in scope. */
  runCommandString(args: readonly string[]): string {
    const seen = new Map<string, number>();
    const tmp: string[] = [];
    for (const a of this.args) {
      const v = this.state.get(a.key) ?? a.value ?? "";
      const at = seen.get(a.key);
      if (at !== undefined) tmp[at] = `${a.key}=${v}`;
      else {
        seen.set(a.key, tmp.length);
        tmp.push(`${a.key}=${v}`);
      }
    }
    return [...(tmp.length ? [`|${tmp.length}`, ...tmp] : []), ...args].join(" ");
  }
}
