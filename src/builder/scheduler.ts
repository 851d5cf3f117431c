/**
 * The step scheduler of a single-platform build: starts every step whose dependencies are finished
 * (Worker steps run here, RUN steps go to the Dispatcher and come back through runStepFinished), gives
 * every step a deadline, stops the build at the first failure (the steps after it are skipped) and
 * pushes the image when all steps are finished.
 */
import type { ContextIndex } from "../context/ingest";
import { DockerfileError } from "../dockerfile/errors";
import type { QueuedJob, RunResult } from "../protocol/jobs";
import { getContextIndexBytes } from "../storage/contexts";
import { FINISHED, type StepRow } from "./build-store";
import { finish, imageOf, markRunning, type BuildHost } from "./finish";
import { pushImage } from "./image";
import { StepError, type BaseImage, type BuildGraph, type BuildView, type ImageState } from "./model";
import { pushChildImage } from "./multiplatform";
import { platformString } from "./job-checks";
import { builderSettings, DeadlineError, type SettingsEnv, secondsText, withDeadline } from "./settings";
import { executeStep, finishRun, type StepContext } from "./steps";

/** The alarm re-checks a driving build this often (it continues after a restart, deadlines pass). */
const WATCHDOG_MS = 10_000;
/** A RUN step is failed by the coordinator itself when its job outlives every deadline by this much. */
const RUN_GRACE_MS = 5 * 60_000;

/** Steps that can start now: pending (or running Worker steps to resume) whose dependencies are finished. */
export function readySteps(rows: StepRow[], inflight: ReadonlySet<number>): StepRow[] {
  const byIdx = new Map(rows.map((r) => [r.idx, r]));
  return rows.filter((r) => {
    if (inflight.has(r.idx)) return false;
    const resumable = r.status === "running" && (r.kind !== "run" || !r.job_id);
    if (r.status !== "pending" && !resumable) return false;
    return (JSON.parse(r.deps) as number[]).every((d) => FINISHED.has(byIdx.get(d)!.status));
  });
}

export class StepScheduler {
  private driving?: Promise<void>;
  private again = false;
  private inflight = new Map<number, Promise<void>>();
  private graphCache?: BuildGraph;
  private indexCache?: Promise<ContextIndex>;
  private wake?: () => void;

  constructor(private readonly host: BuildHost) {}

  private get store() {
    return this.host.store;
  }

  graph(): BuildGraph {
    // Planned once, when the build started (src/builder/start.ts).
    return (this.graphCache ??= this.store.spec().plan);
  }

  /** Records the planned steps (all pending). */
  plan(): void {
    for (const s of this.graph().steps) {
      this.store.insertStep({ idx: s.index, stage: s.stage, stage_name: s.stageName, kind: s.kind, instruction: s.instruction, line: s.line, deps: JSON.stringify(s.deps), status: "pending" });
    }
    for (const r of this.store.rows()) this.host.events.step(this.store.stepView(r));
  }

  private setStep(idx: number, fields: Partial<Omit<StepRow, "idx">>): void {
    const r = this.store.updateStep(idx, fields);
    if (r && ("status" in fields || "layer" in fields)) this.host.events.step(this.store.stepView(r));
  }

  private stateOf(idx: number): ImageState {
    const r = this.store.row(idx);
    if (!r?.state) throw new Error(`step ${idx} has no result`);
    return JSON.parse(r.state) as ImageState;
  }

  private stepContext(idx: number): StepContext {
    return {
      env: this.host.env,
      spec: this.store.spec(),
      graph: this.graph(),
      stateOf: (i) => this.stateOf(i),
      contextIndex: () => (this.indexCache ??= this.loadIndex()),
      log: async (text) => this.host.events.log(idx, text),
    };
  }

  private async loadIndex(): Promise<ContextIndex> {
    const spec = this.store.spec();
    const bytes = await getContextIndexBytes(this.host.env, spec.context.pack, spec.context.index);
    if (!bytes) throw new Error(`build context ${spec.context.pack} is gone`);
    return JSON.parse(new TextDecoder().decode(bytes)) as ContextIndex;
  }

  /** Drives the build until nothing more can start now (one drive at a time; a second call runs it again). */
  async drive(): Promise<void> {
    if (this.driving) {
      this.again = true;
      return await this.driving;
    }
    this.driving = (async () => {
      try {
        do {
          this.again = false;
          await this.checkRunDeadlines();
          await this.advance();
        } while (this.again);
      } catch (e) {
        console.error("build coordinator failed", e);
        await finish(this.host, { status: "failed", message: `internal error: ${(e as Error).message}` });
      } finally {
        this.driving = undefined;
      }
    })();
    await this.driving;
  }

  private async advance(): Promise<void> {
    if (!this.store.started()) return;
    for (;;) {
      if (this.store.ended()) return;
      const rows = this.store.rows();
      if (rows.every((r) => FINISHED.has(r.status))) {
        await this.pushResult();
        return;
      }
      for (const r of readySteps(rows, new Set(this.inflight.keys()))) {
        const p = this.runStep(r).finally(() => this.inflight.delete(r.idx));
        this.inflight.set(r.idx, p);
      }
      // Waiting for runners: the watchdog alarm checks the RUN steps' deadlines.
      await this.host.ctx.storage.setAlarm(Date.now() + WATCHDOG_MS);
      if (this.inflight.size === 0) return;
      // wake on the first finished Worker step, or when a runner reports a RUN step
      await Promise.race([...this.inflight.values(), new Promise<void>((r) => (this.wake = r))]);
      this.wake = undefined;
    }
  }

  private async runStep(r: StepRow): Promise<void> {
    const started = r.started_at ?? Date.now();
    markRunning(this.host);
    this.setStep(r.idx, { status: "running", started_at: started });
    const step = this.graph().steps.find((s) => s.index === r.idx)!;
    const settings = builderSettings(this.host.env as SettingsEnv);
    try {
      // A resumed step keeps the deadline of its first start.
      const left = started + settings.stepTimeoutMs - Date.now();
      const why = `${step.instruction}: did not finish within ${secondsText(settings.stepTimeoutMs)} (KILN_STEP_TIMEOUT_SECONDS)`;
      const out = await withDeadline(executeStep(this.stepContext(r.idx), step), left, why);
      if (this.store.ended()) return;
      if (out.status === "run") {
        await this.enqueueRun(r.idx, { ...out.job, timeoutSeconds: settings.runTimeoutSeconds }, out.key, out.createdBy);
        return;
      }
      this.setStep(r.idx, {
        status: out.status,
        state: JSON.stringify(out.state),
        cache_key: out.state.key,
        layer: out.layer?.digest ?? null,
        duration_ms: Date.now() - started,
      });
      if (out.base) {
        const bases = (this.store.getMeta<BaseImage[]>("bases") ?? []).filter((b) => b.stage !== out.base!.stage);
        this.store.setMeta("bases", [...bases, out.base].sort((a, b) => a.stage - b.stage));
      }
    } catch (e) {
      if (this.store.ended()) return;
      const message = e instanceof Error ? e.message : String(e);
      if (!(e instanceof StepError || e instanceof DockerfileError || e instanceof DeadlineError)) console.error(`step ${r.idx} failed`, e);
      const output = e instanceof StepError ? e.output : undefined;
      if (output) this.host.events.log(r.idx, output);
      await this.failStep(r.idx, message);
    }
  }

  /** Hands a RUN step to the Dispatcher; says at once when no runner of its platform is connected. */
  private async enqueueRun(idx: number, job: Omit<QueuedJob, "jobId">, key: string, createdBy: string): Promise<void> {
    const jobId = `${this.store.spec().id}-${idx}-${crypto.randomUUID().slice(0, 8)}`;
    this.setStep(idx, { job_id: jobId, cache_key: key, run_key: key, created_by: createdBy });
    this.host.events.step(this.store.stepView(this.store.row(idx)!));
    // No credential here: the Dispatcher mints one per lease when a runner claims the job.
    const { runnerConnected, waitMs, refused } = await this.host.env.DISPATCHER.get(this.host.env.DISPATCHER.idFromName("default")).enqueue({ ...job, jobId });
    if (refused) throw new StepError(refused);
    const platform = platformString(job.platform);
    this.host.events.log(idx, runnerConnected ? "waiting for a runner\n" : `no runner for ${platform} is connected; waiting up to ${secondsText(waitMs)}\n`, true);
  }

  /** A runner finished the RUN job of `stepIndex` (or the Dispatcher gave up on it). */
  async runStepFinished(jobId: string, stepIndex: number, result: RunResult): Promise<void> {
    const r = this.store.row(stepIndex);
    if (!r || r.job_id !== jobId || r.status !== "running" || this.store.ended()) return;
    const now = Date.now();
    if (!result.ok) {
      await this.failStep(stepIndex, result.message || `process did not complete successfully: exit code: ${result.exitCode}`);
      return;
    }
    try {
      const deps = JSON.parse(r.deps) as number[];
      const state = await finishRun(this.stepContext(stepIndex), this.stateOf(deps[0]), r.run_key!, r.created_by!, result.layer);
      this.setStep(stepIndex, { status: "done", state: JSON.stringify(state), layer: result.layer?.digest ?? null, duration_ms: now - (r.started_at ?? now) });
    } catch (e) {
      await this.failStep(stepIndex, (e as Error).message);
      return;
    }
    if (this.wake) this.wake();
    else await this.host.ctx.storage.setAlarm(Date.now());
  }

  /**
   * The coordinator's own backstop for RUN steps: the Dispatcher fails a job that waited too long for
   * a runner or ran past its timeout; should its answer never come, the step fails here.
   */
  private async checkRunDeadlines(): Promise<void> {
    if (!this.store.started() || this.store.ended()) return;
    const s = builderSettings(this.host.env as SettingsEnv);
    const limit = s.runnerWaitMs + s.runTimeoutSeconds * 1000 + RUN_GRACE_MS;
    for (const r of this.store.rows()) {
      if (r.kind !== "run" || r.status !== "running" || !r.job_id || !r.started_at) continue;
      if (Date.now() - r.started_at < limit) continue;
      await this.failStep(r.idx, `${r.instruction}: no result from the runner within ${secondsText(limit)}`);
      return;
    }
  }

  private async failStep(idx: number, message: string): Promise<void> {
    if (this.store.ended()) return;
    const now = Date.now();
    const r = this.store.row(idx)!;
    this.setStep(idx, { status: "failed", duration_ms: now - (r.started_at ?? now) });
    this.host.events.log(idx, `ERROR: ${message}\n`, true);
    await finish(this.host, { status: "failed", message, step: idx, line: r.line });
  }

  /** All steps finished: push the target stage's image (a child stores it by digest for its parent). */
  private async pushResult(): Promise<void> {
    const spec = this.store.spec();
    const graph = this.graph();
    const target = graph.stages.find((s) => s.index === graph.target)!;
    const state = this.stateOf(target.steps[target.steps.length - 1]);
    let image: NonNullable<BuildView["image"]> | undefined;
    try {
      if (!spec.tags.length && spec.manifestRepository) {
        const { digest } = await pushChildImage(this.host.env, state, spec.manifestRepository, spec.sourceDateEpoch);
        image = { repository: spec.manifestRepository, tags: [], digest };
      } else if (spec.tags.length) {
        const { digest } = await pushImage(this.host.env, state, spec.tags, spec.sourceDateEpoch);
        image = imageOf(spec, digest);
      }
    } catch (e) {
      console.error("pushing the image failed", e);
      await finish(this.host, { status: "failed", message: `pushing the image failed: ${(e as Error).message}` });
      return;
    }
    await finish(this.host, { status: "succeeded", image });
  }
}
