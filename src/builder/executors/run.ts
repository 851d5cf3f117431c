/**
 * RUN: the frontend's runCommand builds the argv (shell or exec form; heredocs, a `#!` heredoc run as
 * a file mounted at /dev/pipes/ as BuildKit does), the stage's StageEnv gives its env (ARGs without a
 * value stay unset). The step becomes a job for a runner unless its key is cached. Every input of the
 * result enters the key: env, argv, workdir, user, and what each bind mount `from=` mounts.
 */
import { runCommand } from "../../dockerfile/run";
import type { RunInstruction } from "../../dockerfile/types";
import type { JobMount } from "../../protocol/jobs";
import { resolveFrom } from "../../plan/graph";
import { cacheKeyFor, keyedInstruction } from "../cachekey";
import { loadImage } from "../image";
import { storeLayer } from "../layers";
import { StepError, type PlannedStep } from "../model";
import { shellOf } from "./metadata";
import { cached, lookup, prepare, type Executor, type StepContext, type StepInput, type StepOutcome } from "./executor";

/** Where BuildKit mounts a heredoc script that runs as a file. */
export const PIPES_DIR = "/dev/pipes/";

/** The job's mounts (secrets resolved, bind `from=` sources as layers) and what those sources are. */
async function jobMounts(ctx: StepContext, step: PlannedStep, inst: RunInstruction): Promise<{ mounts: JobMount[]; mountSources: string[]; secrets: Record<string, string> }> {
  const mounts: JobMount[] = [];
  /** What each `--mount=type=bind,from=` mounts (the stage's key, the image's digest): part of the key. */
  const mountSources: string[] = [];
  const secrets: Record<string, string> = {};
  for (const m of inst.mounts) {
    if (m.type === "ssh") throw new StepError("RUN --mount=type=ssh is not supported");
    const jm: JobMount = { type: m.type, target: m.target ?? "" };
    if (m.id) jm.id = m.id;
    if (m.readOnly) jm.readonly = true;
    if (m.sharing) jm.sharing = m.sharing;
    if (m.mode !== undefined) jm.mode = m.mode;
    if (m.uid !== undefined) jm.uid = m.uid;
    if (m.gid !== undefined) jm.gid = m.gid;
    if (m.size !== undefined) jm.size = m.size;
    if (m.source) jm.source = m.source;
    if (m.type === "secret") {
      const id = m.id ?? (m.target ? m.target.split("/").pop()! : "");
      jm.id = id;
      if (m.required) jm.required = true;
      if (m.env) jm.env = m.env;
      const v = ctx.spec.secrets?.[id];
      if (v === undefined && m.required) throw new StepError(`secret ${id} not found`);
      if (v !== undefined) secrets[id] = v;
    }
    if (m.type === "bind" && m.from) {
      const b = resolveFrom(m.from, ctx.graph.allStages, step.stage);
      if (b.kind === "stage") {
        const st = ctx.graph.stages.find((s) => s.index === b.index)!;
        const src = ctx.stateOf(st.steps[st.steps.length - 1]);
        jm.fromLayers = src.layers;
        mountSources.push(src.key);
      } else if (b.kind === "image") {
        const img = await loadImage(ctx.env, b.ref, ctx.spec, ctx.spec.platform);
        jm.fromLayers = img.layers;
        mountSources.push(img.manifestDigest);
      }
    }
    mounts.push(jm);
  }
  return { mounts, mountSources, secrets };
}

export const runExecutor: Executor = {
  kind: "run",
  async execute(ctx: StepContext, { step, platform, scope }: StepInput): Promise<StepOutcome> {
    const { parent, stageEnv, inst } = prepare<RunInstruction>(ctx, step);
    const c = parent.config.config ?? {};
    const command = runCommand(inst, shellOf(c), ctx.spec.platform.os);
    const args = command.args;
    const env = stageEnv.runEnv();
    const { mounts, mountSources, secrets } = await jobMounts(ctx, step, inst);
    const key = await cacheKeyFor({
      scope,
      parent: parent.key,
      platform,
      instruction: keyedInstruction({ ...inst, mounts: inst.mounts.map((m) => ({ ...m })) } as RunInstruction),
      env,
      values: { args, workdir: c.WorkingDir || "/", user: c.User ?? "", ...(mountSources.length ? { mountSources } : {}) },
    });
    const createdBy = `RUN ${stageEnv.runCommandString(args)} # buildkit`;
    const hit = await lookup(ctx, key);
    if (hit) return cached(parent, key, hit);
    // a `#!` heredoc: its script as a one-file layer, mounted read-only at /dev/pipes/ (the key has its text)
    for (const f of command.files) {
      if (!f.path.startsWith(PIPES_DIR)) throw new Error(`run file outside ${PIPES_DIR}: ${f.path}`);
      const layer = await storeLayer(ctx.env, [
        { path: f.path.slice(PIPES_DIR.length), type: "file", mode: f.mode, uid: 0, gid: 0, mtime: ctx.spec.sourceDateEpoch, body: new TextEncoder().encode(f.data) },
      ]);
      mounts.push({ type: "bind", target: PIPES_DIR, source: "/", readonly: true, fromLayers: [layer] });
    }
    return {
      status: "run",
      key,
      createdBy,
      job: {
        buildId: ctx.spec.id,
        stepIndex: step.index,
        platform: ctx.spec.platform,
        layers: parent.layers,
        args,
        env,
        workdir: c.WorkingDir || "/",
        user: c.User ?? "",
        network: inst.network === "host" ? "host" : "none",
        mounts,
        timeoutSeconds: 3600,
        repository: ctx.spec.tags[0]?.repository ?? ctx.spec.manifestRepository ?? "kiln/build-cache",
        sourceDateEpoch: ctx.spec.sourceDateEpoch,
        cacheScope: scope,
        ...(Object.keys(secrets).length ? { secrets } : {}),
      },
    };
  },
};
