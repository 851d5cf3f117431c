/** Metadata steps: the instruction changes only the image config (and history, with empty_layer). */
import type { ContainerConfig } from "../../oci/image";
import type { ArgInstruction, EnvInstruction, Instruction } from "../../dockerfile/types";
import type { CacheEntry } from "../../storage/cache";
import { cacheKeyFor, keyedInstruction } from "../cachekey";
import type { ImageState } from "../model";
import { StepError } from "../model";
import { cached, commit, expandStep, history, lookup, shellLex, stageEnvOf, type Executor, type StepContext, type StepInput, type StepOutcome } from "./executor";

/** Go's %q of a []string, as BuildKit writes CMD/ENTRYPOINT history: ["a" "b"]. */
export function goQuoteList(list: string[]): string {
  return `[${list.map((s) => JSON.stringify(s)).join(" ")}]`;
}

/** Go's %v of a []string: [a b]. */
const goList = (list: string[]) => `[${list.join(" ")}]`;

export function shellOf(c: ContainerConfig): string[] {
  return c.Shell && c.Shell.length ? c.Shell : ["/bin/sh", "-c"];
}

/** Normalizes an EXPOSE port ("80" → "80/tcp", "53/UDP" → "53/udp"), expanding ranges like docker. */
function ports(spec: string): string[] {
  const m = /^(?:(.*):)?(\d+)(?:-(\d+))?(?:\/(\w+))?$/.exec(spec);
  if (!m) throw new StepError(`invalid containerPort: ${spec}`);
  const proto = (m[4] ?? "tcp").toLowerCase();
  const lo = Number(m[2]);
  const hi = m[3] ? Number(m[3]) : lo;
  if (hi < lo || hi > 65535) throw new StepError(`invalid range specified for container port: ${spec}`);
  const out: string[] = [];
  for (let p = lo; p <= hi; p++) out.push(`${p}/${proto}`);
  return out;
}

const DURATION_UNITS: [number, string][] = [
  [3600e9, "h"],
  [60e9, "m"],
  [1e9, "s"],
  [1e6, "ms"],
  [1e3, "µs"],
  [1, "ns"],
];
/** Go's time.Duration String() for whole units (good enough for healthcheck history). */
function goDuration(ns: number): string {
  if (ns === 0) return "0s";
  let s = "";
  let rest = ns;
  for (const [u, name] of DURATION_UNITS.slice(0, 3)) {
    if (rest >= u) {
      const n = Math.floor(rest / u);
      rest -= n * u;
      s += `${n}${name}`;
    } else if (s) s += name === "s" ? "0s" : `0${name}`;
  }
  return s || `${ns}ns`;
}

export interface MetadataResult {
  state: Omit<ImageState, "key">;
  createdBy: string;
}

/**
 * Applies an expanded config instruction (LABEL, EXPOSE, CMD, …; ENV and ARG go through the stage's
 * StageEnv in the executor below).
 */
export function applyMetadata(state: ImageState, inst: Instruction): MetadataResult {
  const cfg = structuredClone(state.config);
  const c: ContainerConfig = (cfg.config ??= {});
  let cmdSet = state.cmdSet;
  let createdBy: string;
  switch (inst.kind) {
    case "LABEL": {
      c.Labels = { ...(c.Labels ?? {}) };
      for (const { key, value } of inst.pairs) c.Labels[key] = value;
      createdBy = `LABEL ${inst.pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`;
      break;
    }
    case "MAINTAINER":
      cfg.author = inst.maintainer;
      createdBy = `MAINTAINER ${inst.maintainer}`;
      break;
    case "EXPOSE": {
      c.ExposedPorts = { ...(c.ExposedPorts ?? {}) };
      const added: string[] = [];
      for (const spec of inst.ports) for (const p of ports(spec)) {
        c.ExposedPorts[p] = {};
        if (!added.includes(p)) added.push(p);
      }
      added.sort();
      createdBy = `EXPOSE map[${added.map((p) => `${p}:{}`).join(" ")}]`;
      break;
    }
    case "VOLUME":
      c.Volumes = { ...(c.Volumes ?? {}) };
      for (const v of inst.volumes) {
        if (!v) throw new StepError("VOLUME specified can not be an empty string");
        c.Volumes[v] = {};
      }
      createdBy = `VOLUME ${goList(inst.volumes)}`;
      break;
    case "USER":
      c.User = inst.user;
      createdBy = `USER ${inst.user}`;
      break;
    case "CMD": {
      const cmd = inst.prependShell ? [...shellOf(c), ...inst.args] : [...inst.args];
      c.Cmd = cmd;
      c.ArgsEscaped = true; // as BuildKit sets it (Docker image spec compatibility)
      cmdSet = true;
      createdBy = `CMD ${goQuoteList(cmd)}`;
      break;
    }
    case "ENTRYPOINT": {
      const ep = inst.prependShell ? [...shellOf(c), ...inst.args] : [...inst.args];
      c.Entrypoint = ep.length ? ep : null;
      if (!cmdSet) c.Cmd = null;
      createdBy = `ENTRYPOINT ${goQuoteList(ep)}`;
      break;
    }
    case "SHELL":
      c.Shell = [...inst.shell];
      createdBy = `SHELL ${goList(inst.shell)}`;
      break;
    case "STOPSIGNAL":
      c.StopSignal = inst.signal;
      createdBy = `STOPSIGNAL ${inst.signal}`;
      break;
    case "HEALTHCHECK": {
      if (inst.test.length === 1 && inst.test[0] === "NONE") c.Healthcheck = { Test: ["NONE"] };
      else {
        const h: NonNullable<ContainerConfig["Healthcheck"]> = { Test: [...inst.test] };
        if (inst.interval) h.Interval = inst.interval;
        if (inst.timeout) h.Timeout = inst.timeout;
        if (inst.startPeriod) h.StartPeriod = inst.startPeriod;
        if (inst.startInterval) h.StartInterval = inst.startInterval;
        if (inst.retries) h.Retries = inst.retries;
        c.Healthcheck = h;
      }
      createdBy =
        `HEALTHCHECK &{${goQuoteList(inst.test)} ${JSON.stringify(goDuration(inst.interval))} ${JSON.stringify(goDuration(inst.timeout))} ` +
        `${JSON.stringify(goDuration(inst.startPeriod))} ${JSON.stringify(goDuration(inst.startInterval))} '\\x${inst.retries.toString(16).padStart(2, "0")}'}`;
      break;
    }
    case "ONBUILD":
      c.OnBuild = [...(c.OnBuild ?? []), inst.expression];
      createdBy = ""; // BuildKit records no history entry for ONBUILD
      break;
    default:
      throw new Error(`not a metadata instruction: ${inst.kind}`);
  }
  return { state: { config: cfg, layers: state.layers, env: state.env, cmdSet }, createdBy };
}

/**
 * ENV, ARG and the other config instructions. ENV and ARG go through the frontend's StageEnv: an ARG
 * gets its --build-arg, else its default expanded at that point, else the global value, else nothing
 * (it stays unset in RUN's env, as in BuildKit).
 */
export const metadataExecutor: Executor = {
  kind: "metadata",
  async execute(ctx: StepContext, { step, platform, scope }: StepInput): Promise<StepOutcome> {
    const parent = ctx.stateOf(step.deps[0]);
    const stageEnv = stageEnvOf(ctx, parent);
    let inst: Instruction;
    let next: Omit<ImageState, "key">;
    let createdBy: string;
    let values: unknown;
    if (step.inst!.kind === "ARG") {
      const arg = stageEnv.applyArg(step.inst as ArgInstruction, shellLex(ctx.graph));
      inst = arg;
      // the value it resolves to (default, global or --build-arg) is what later steps see
      values = arg.args.map((a) => [a.key, a.value ?? null]);
      next = { ...parent, env: stageEnv.snapshot() };
      createdBy = `ARG ${arg.args.map((a) => (a.value === undefined ? a.key : `${a.key}=${a.value}`)).join(" ")}`;
    } else if (step.inst!.kind === "ENV") {
      const env = expandStep(ctx, step, step.inst as EnvInstruction, stageEnv);
      stageEnv.applyEnv(env);
      inst = env;
      next = { ...parent, config: { ...parent.config, config: { ...(parent.config.config ?? {}), Env: stageEnv.configEnv } }, env: stageEnv.snapshot() };
      createdBy = `ENV ${env.pairs.map((p) => `${p.key}=${p.value}`).join(" ")}`;
    } else {
      inst = expandStep(ctx, step, step.inst!, stageEnv);
      ({ state: next, createdBy } = applyMetadata(parent, inst));
    }
    const key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: keyedInstruction(inst), values });
    const extra = { env: next.env, cmdSet: next.cmdSet };
    const hit = await lookup(ctx, key);
    if (hit) return cached(parent, key, hit, extra);
    const entry: CacheEntry = {
      version: 1,
      layer: null,
      config: next.config.config as Record<string, unknown>,
      history: createdBy ? (history(ctx, createdBy, true) as Record<string, unknown>) : null,
    };
    if (inst.kind === "MAINTAINER") entry.author = inst.maintainer;
    return { status: "done", state: await commit(ctx, parent, key, entry, extra) };
  },
};
