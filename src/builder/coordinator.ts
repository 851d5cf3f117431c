import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { DockerfileError } from "../dockerfile/errors";
import type { ContextIndex } from "../context/ingest";
import { getContextIndexBytes } from "../storage/contexts";
import { updateBuildStatus } from "../storage/builds";
import type { QueuedJob, RunResult } from "../protocol/jobs";
import { planDockerfile } from "./frontend";
import { pushImage } from "./image";
import { executeStep, finishRun, type StepContext } from "./steps";
import { reportBuildFinished } from "../git/status";
import { childStepStatus, pushChildImage, pushIndex } from "./multiplatform";
import {
  StepError,
  type BuildGraph,
  type BuildSpec,
  type BuildStatus,
  type BuildView,
  type ImageState,
  type StepStatus,
  type StepView,
  type BaseImage,
  type ChildView,
} from "./model";

type StepRow = {
  idx: number;
  stage: number;
  stage_name: string;
  kind: string;
  instruction: string;
  line: number;
  deps: string;
  status: StepStatus;
  cache_key: string | null;
  layer: string | null;
  started_at: number | null;
  duration_ms: number | null;
  state: string | null;
  job_id: string | null;
  run_key: string | null;
  created_by: string | null;
};

const TERMINAL = new Set<BuildStatus>(["succeeded", "failed", "cancelled"]);
const FINISHED = new Set<StepStatus>(["done", "cached"]);
const WATCHDOG_MS = 10_000;
/** A multi-platform parent checks its children this often (they also notify it when they end). */
const CHILD_POLL_MS = 5_000;
/** A child that has not started by then (its start call failed) fails the parent. */
const CHILD_START_MS = 60_000;
const enc = new TextEncoder();

/**
 * One per build (`idFromName(buildId)`): the step state machine. Steps, their states and every event
 * (step changes, logs, done) live in ctx.storage.sql; alarms drive the build, so it continues from its
 * persisted state after a restart. RUN steps go to the Dispatcher and come back via runStepFinished.
 */
export class BuildCoordinator extends DurableObject<Env> {
  private sql: SqlStorage;
  private subscribers = new Set<WritableStreamDefaultWriter<Uint8Array>>();
  private driving?: Promise<void>;
  private again = false;
  private inflight = new Map<number, Promise<void>>();
  private graphCache?: BuildGraph;
  private indexCache?: Promise<ContextIndex>;
  private wake?: () => void;
  private parentChain: Promise<void> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`
      CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS steps (
        idx INTEGER PRIMARY KEY, stage INTEGER NOT NULL, stage_name TEXT NOT NULL, kind TEXT NOT NULL,
        instruction TEXT NOT NULL, line INTEGER NOT NULL, deps TEXT NOT NULL, status TEXT NOT NULL,
        cache_key TEXT, layer TEXT, started_at INTEGER, duration_ms INTEGER, state TEXT, job_id TEXT,
        run_key TEXT, created_by TEXT
      );
      CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL);
    `);
  }

  // ------------------------------------------------------------------ persisted state

  private getMeta<T>(k: string): T | undefined {
    const r = this.sql.exec<{ v: string }>("SELECT v FROM meta WHERE k = ?", k).toArray()[0];
    return r ? (JSON.parse(r.v) as T) : undefined;
  }

  private setMeta(k: string, v: unknown): void {
    this.sql.exec("INSERT INTO meta (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", k, JSON.stringify(v));
  }

  private spec(): BuildSpec {
    const s = this.getMeta<BuildSpec>("spec");
    if (!s) throw new Error("build not started");
    return s;
  }

  private status(): BuildStatus {
    return this.getMeta<BuildStatus>("status") ?? "queued";
  }

  private rows(): StepRow[] {
    return this.sql.exec<StepRow>("SELECT * FROM steps ORDER BY idx").toArray();
  }

  private row(idx: number): StepRow | undefined {
    return this.sql.exec<StepRow>("SELECT * FROM steps WHERE idx = ?", idx).toArray()[0];
  }

  private graph(): BuildGraph {
    if (!this.graphCache) {
      const s = this.spec();
      this.graphCache = planDockerfile(s.dockerfile, { buildArgs: s.buildArgs, target: s.target, platform: s.platform, onbuild: s.onbuild });
    }
    return this.graphCache;
  }

  private stepView(r: StepRow): StepView {
    const v: StepView = {
      index: r.idx,
      stage: r.stage_name,
      instruction: r.instruction,
      status: r.status,
      cacheKey: r.cache_key,
      durationMs: r.duration_ms,
      line: r.line,
    };
    if (r.layer) v.layer = r.layer;
    return v;
  }

  private view(): BuildView {
    const spec = this.spec();
    const v: BuildView = { id: spec.id, status: this.status(), steps: this.rows().map((r) => this.stepView(r)), createdAt: spec.createdAt };
    const image = this.getMeta<BuildView["image"]>("image");
    if (image) v.image = image;
    const bases = this.getMeta<BaseImage[]>("bases");
    if (bases?.length) v.bases = bases;
    const error = this.getMeta<BuildView["error"]>("error");
    if (error) v.error = error;
    const fin = this.getMeta<number>("finishedAt");
    if (fin) v.finishedAt = fin;
    if (spec.children) v.children = this.getMeta<ChildView[]>("children") ?? spec.children.map((c) => ({ ...c, status: "queued" as BuildStatus }));
    if (spec.parent) v.parent = spec.parent;
    return v;
  }

  // ------------------------------------------------------------------ events

  private emit(type: "step" | "log" | "done", data: unknown): void {
    const json = JSON.stringify(data);
    this.sql.exec("INSERT INTO events (type, data) VALUES (?, ?)", type, json);
    const frame = enc.encode(`event: ${type}\ndata: ${json}\n\n`);
    for (const w of this.subscribers) {
      w.write(frame).catch(() => this.subscribers.delete(w));
      if (type === "done") {
        w.close().catch(() => {});
      }
    }
    if (type === "done") this.subscribers.clear();
    if (type !== "done") this.forwardToParent(type, data);
  }

  /** A multi-platform child passes its progress to the parent's event stream (in order). */
  private forwardToParent(type: "step" | "log", data: unknown): void {
    const parent = this.getMeta<BuildSpec>("spec")?.parent;
    if (!parent) return;
    let text: string;
    if (type === "log") {
      const d = data as { step: number; text: string };
      text = d.text.replace(/^(?=.)/gm, `#${d.step} `);
    } else {
      const s = data as StepView;
      if (s.status === "pending") return;
      const what = s.status === "running" ? s.instruction : s.status === "done" ? `DONE${s.durationMs != null ? ` ${(s.durationMs / 1000).toFixed(1)}s` : ""}` : s.status.toUpperCase();
      text = `#${s.index} ${what}\n`;
    }
    this.toParent(() => this.coordinatorOf(parent).childLog(this.spec().id, text));
  }

  private parentQueue: Promise<unknown> = Promise.resolve();

  /** Calls to the parent go one after another (logs before the "finished" notification). */
  private toParent(call: () => Promise<unknown>): void {
    this.parentQueue = this.parentQueue.then(call).catch((e) => console.error("calling the parent build failed", e));
    this.ctx.waitUntil(this.parentQueue);
  }

  private setStep(idx: number, fields: Partial<Omit<StepRow, "idx">>): void {
    const keys = Object.keys(fields);
    if (!keys.length) return;
    this.sql.exec(`UPDATE steps SET ${keys.map((k) => `${k} = ?`).join(", ")} WHERE idx = ?`, ...keys.map((k) => (fields as Record<string, unknown>)[k] as string | number | null), idx);
    const r = this.row(idx);
    if (r && ("status" in fields || "layer" in fields)) this.emit("step", this.stepView(r));
  }

  private async log(idx: number, text: string): Promise<void> {
    this.emit("log", { step: idx, text });
  }

  private setStatus(status: BuildStatus, extra: { imageDigest?: string; error?: string } = {}): void {
    this.setMeta("status", status);
    this.ctx.waitUntil(updateBuildStatus(this.env, this.spec().id, status, extra).catch((e) => console.error("builds row update failed", e)));
    if (TERMINAL.has(status)) {
      // No step runs any more: the build's secret values leave kiln's state (issue 17).
      const stored = this.spec();
      if (stored.secrets) {
        const { secrets: _dropped, ...rest } = stored;
        void _dropped;
        this.setMeta("spec", rest);
      }
      // Builds from git pushes report their result on the commit.
      this.ctx.waitUntil(reportBuildFinished(this.env, this.spec().id, status, this.spec().origin, extra.error).catch((e) => console.error("commit status report failed", e)));
      // A multi-platform child tells its parent at once (the parent also polls).
      const parent = this.spec().parent;
      if (parent) {
        const id = this.spec().id;
        this.toParent(() => this.coordinatorOf(parent).childFinished(id));
      }
    }
  }

  // ------------------------------------------------------------------ RPC

  /** Persists the build and starts driving it. */
  async start(spec: BuildSpec): Promise<BuildView> {
    if (this.getMeta("spec")) return this.view();
    this.setMeta("spec", spec);
    this.setMeta("status", "queued");
    if (spec.children) return await this.startParent(spec);
    const graph = this.graph();
    for (const s of graph.steps) {
      this.sql.exec(
        "INSERT INTO steps (idx, stage, stage_name, kind, instruction, line, deps, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
        s.index, s.stage, s.stageName, s.kind, s.instruction, s.line, JSON.stringify(s.deps),
      );
    }
    for (const r of this.rows()) this.emit("step", this.stepView(r));
    await this.ctx.storage.setAlarm(Date.now());
    return this.view();
  }

  async getBuild(): Promise<BuildView | null> {
    return this.getMeta("spec") ? this.view() : null;
  }

  async isCancelled(): Promise<boolean> {
    return this.status() === "cancelled";
  }

  /** DELETE /v1/builds/:id: running steps stop, RUN jobs are cancelled. */
  async cancel(): Promise<BuildView | null> {
    if (!this.getMeta("spec")) return null;
    if (TERMINAL.has(this.status())) return this.view();
    const now = Date.now();
    for (const r of this.rows()) {
      if (r.status === "pending" || r.status === "running") {
        this.setStep(r.idx, { status: "skipped", duration_ms: r.started_at ? now - r.started_at : null });
      }
    }
    this.setMeta("error", { message: "build cancelled" });
    this.setMeta("finishedAt", now);
    this.setStatus("cancelled", { error: "build cancelled" });
    await this.cancelJobs();
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
    await this.cancelChildren();
    return this.view();
  }

  async appendLog(stepIndex: number, text: string): Promise<void> {
    await this.log(stepIndex, text);
  }

  /** A runner finished the RUN job of `stepIndex`. */
  async runStepFinished(jobId: string, stepIndex: number, result: RunResult): Promise<void> {
    const r = this.row(stepIndex);
    if (!r || r.job_id !== jobId || r.status !== "running" || TERMINAL.has(this.status())) return;
    const now = Date.now();
    if (!result.ok) {
      await this.failStep(stepIndex, result.message || `process did not complete successfully: exit code: ${result.exitCode}`);
      return;
    }
    try {
      const deps = JSON.parse(r.deps) as number[];
      const parent = this.stateOf(deps[0]);
      const state = await finishRun(this.stepContext(stepIndex), parent, r.run_key!, r.created_by!, result.layer);
      this.setStep(stepIndex, {
        status: "done",
        state: JSON.stringify(state),
        layer: result.layer?.digest ?? null,
        duration_ms: now - (r.started_at ?? now),
      });
    } catch (e) {
      await this.failStep(stepIndex, (e as Error).message);
      return;
    }
    if (this.wake) this.wake();
    else await this.ctx.storage.setAlarm(Date.now());
  }

  override async alarm(): Promise<void> {
    if (this.getMeta<BuildSpec>("spec")?.children) return await this.checkChildren();
    await this.drive();
  }

  /** Progress of a multi-platform child: a log line of the parent's step for its platform. */
  async childLog(childId: string, text: string): Promise<void> {
    const spec = this.getMeta<BuildSpec>("spec");
    const i = spec?.children?.findIndex((c) => c.id === childId) ?? -1;
    if (i < 0 || TERMINAL.has(this.status())) return;
    await this.log(i + 1, text);
  }

  /** A multi-platform child ended (called by the child; the parent then reads its state). */
  async childFinished(childId: string): Promise<void> {
    void childId;
    if (!this.getMeta<BuildSpec>("spec")?.children) return;
    await this.checkChildren();
  }

  // ------------------------------------------------------------------ multi-platform parent

  private coordinatorOf(id: string) {
    return this.env.BUILD_COORDINATOR.get(this.env.BUILD_COORDINATOR.idFromName(id));
  }

  /** The parent runs no steps: one row per platform mirrors its child build. */
  private async startParent(spec: BuildSpec): Promise<BuildView> {
    const now = Date.now();
    for (const [i, c] of spec.children!.entries()) {
      this.sql.exec(
        "INSERT INTO steps (idx, stage, stage_name, kind, instruction, line, deps, status, started_at) VALUES (?, ?, ?, 'build', ?, 0, '[]', 'running', ?)",
        i + 1, i, c.platform, `build ${c.id}`, now,
      );
    }
    this.setMeta("children", spec.children!.map((c) => ({ ...c, status: "queued" })));
    this.setStatus("running");
    for (const r of this.rows()) this.emit("step", this.stepView(r));
    await this.ctx.storage.setAlarm(Date.now() + CHILD_POLL_MS);
    return this.view();
  }

  /** Reads the children's states (one check at a time); fails on the first failed child, pushes the index when all succeeded. */
  private checkChildren(): Promise<void> {
    const run = this.parentChain.then(() => this.checkChildrenOnce());
    this.parentChain = run.catch(() => {});
    return run.catch(async (e) => {
      console.error("multi-platform build check failed", e);
      if (!TERMINAL.has(this.status())) await this.failParent(`internal error: ${(e as Error).message}`);
    });
  }

  private async checkChildrenOnce(): Promise<void> {
    if (TERMINAL.has(this.status())) return;
    const children = this.getMeta<ChildView[]>("children") ?? [];
    for (const [i, c] of children.entries()) {
      if (TERMINAL.has(c.status)) continue;
      const v = await this.coordinatorOf(c.id).getBuild();
      if (TERMINAL.has(this.status())) return;
      if (!v && Date.now() - this.spec().createdAt > CHILD_START_MS) {
        this.setStep(i + 1, { status: "failed", duration_ms: Date.now() - (this.row(i + 1)?.started_at ?? Date.now()) });
        await this.failParent(`${c.platform}: the build ${c.id} did not start`, i + 1);
        return;
      }
      if (!v || v.status === c.status) continue;
      c.status = v.status;
      if (v.image?.digest) c.digest = v.image.digest;
      this.setMeta("children", children);
      const now = Date.now();
      const row = this.row(i + 1)!;
      const allCached = v.steps.length > 0 && v.steps.every((s) => s.status === "cached");
      const stepStatus = childStepStatus(v.status, allCached);
      if (stepStatus !== row.status || TERMINAL.has(v.status)) {
        this.setStep(i + 1, { status: stepStatus, duration_ms: TERMINAL.has(v.status) ? now - (row.started_at ?? now) : null });
      }
      if (v.status === "failed" || v.status === "cancelled") {
        const why = v.status === "failed" ? (v.error?.message ?? "failed") : "cancelled";
        await this.failParent(`${c.platform}: ${why}`, i + 1, v.error?.line);
        return;
      }
    }
    if (children.every((c) => c.status === "succeeded")) {
      await this.finishParent(children);
      return;
    }
    await this.ctx.storage.setAlarm(Date.now() + CHILD_POLL_MS);
  }

  private async finishParent(children: ChildView[]): Promise<void> {
    const spec = this.spec();
    try {
      if (spec.tags.length) {
        const missing = children.find((c) => !c.digest);
        if (missing) throw new Error(`the ${missing.platform} build has no image`);
        const digest = await pushIndex(this.env, spec.tags, children.map((c) => ({ platform: c.platform, digest: c.digest! })));
        if (TERMINAL.has(this.status())) return;
        this.succeed(this.imageOf(spec, digest));
      } else {
        this.succeed();
      }
    } catch (e) {
      console.error("pushing the image index failed", e);
      await this.failParent(`pushing the image index failed: ${(e as Error).message}`);
      return;
    }
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
  }

  private async failParent(message: string, step?: number, line?: number): Promise<void> {
    if (TERMINAL.has(this.status())) return;
    const now = Date.now();
    for (const o of this.rows()) if (o.status === "pending" || o.status === "running") this.setStep(o.idx, { status: "skipped", duration_ms: now - (o.started_at ?? now) });
    const error: BuildView["error"] = { message };
    if (step !== undefined) error.step = step;
    if (line) error.line = line;
    this.setMeta("error", error);
    this.setMeta("finishedAt", now);
    this.setStatus("failed", { error: message });
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
    await this.cancelChildren();
  }

  /** Cancels the children that are still going (a cancelled or failed parent). */
  private async cancelChildren(): Promise<void> {
    const children = this.getMeta<ChildView[]>("children");
    if (!children) return;
    for (const c of children) {
      if (TERMINAL.has(c.status)) continue;
      try {
        const v = await this.coordinatorOf(c.id).cancel();
        if (v) c.status = v.status;
      } catch (e) {
        console.error(`cancelling ${c.id} failed`, e);
      }
    }
    this.setMeta("children", children);
  }

  /** GET /v1/builds/:id/events: history first, then live events; ends after `done`. */
  override async fetch(_req: Request): Promise<Response> {
    if (!this.getMeta("spec")) return new Response(JSON.stringify({ error: { message: "build not found" } }), { status: 404 });
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const w = writable.getWriter();
    const events = this.sql.exec<{ type: string; data: string }>("SELECT type, data FROM events ORDER BY seq").toArray();
    for (const e of events) w.write(enc.encode(`event: ${e.type}\ndata: ${e.data}\n\n`)).catch(() => {});
    if (TERMINAL.has(this.status())) w.close().catch(() => {});
    else this.subscribers.add(w);
    return new Response(readable, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
  }

  // ------------------------------------------------------------------ driving

  private stateOf(idx: number): ImageState {
    const r = this.row(idx);
    if (!r?.state) throw new Error(`step ${idx} has no result`);
    return JSON.parse(r.state) as ImageState;
  }

  private stepContext(idx: number): StepContext {
    return {
      env: this.env,
      spec: this.spec(),
      graph: this.graph(),
      stateOf: (i) => this.stateOf(i),
      contextIndex: () => (this.indexCache ??= this.loadIndex()),
      log: (text) => this.log(idx, text),
    };
  }

  private async loadIndex(): Promise<ContextIndex> {
    const spec = this.spec();
    const bytes = await getContextIndexBytes(this.env, spec.context.pack, spec.context.index);
    if (!bytes) throw new Error(`build context ${spec.context.pack} is gone`);
    return JSON.parse(new TextDecoder().decode(bytes)) as ContextIndex;
  }

  private async drive(): Promise<void> {
    if (this.driving) {
      this.again = true;
      return await this.driving;
    }
    this.driving = (async () => {
      try {
        do {
          this.again = false;
          await this.advance();
        } while (this.again);
      } catch (e) {
        console.error("build coordinator failed", e);
        if (!TERMINAL.has(this.status())) await this.failBuild(`internal error: ${(e as Error).message}`);
      } finally {
        this.driving = undefined;
      }
    })();
    await this.driving;
  }

  /** Starts every step whose dependencies are finished; returns when nothing more can start now. */
  private async advance(): Promise<void> {
    if (!this.getMeta("spec")) return;
    for (;;) {
      if (TERMINAL.has(this.status())) return;
      const rows = this.rows();
      if (rows.every((r) => FINISHED.has(r.status))) {
        await this.finish();
        return;
      }
      const byIdx = new Map(rows.map((r) => [r.idx, r]));
      const ready = rows.filter((r) => {
        if (this.inflight.has(r.idx)) return false;
        const resumable = r.status === "running" && (r.kind !== "run" || !r.job_id);
        if (r.status !== "pending" && !resumable) return false;
        return (JSON.parse(r.deps) as number[]).every((d) => FINISHED.has(byIdx.get(d)!.status));
      });
      for (const r of ready) {
        const p = this.runStep(r).finally(() => this.inflight.delete(r.idx));
        this.inflight.set(r.idx, p);
      }
      if (this.inflight.size === 0) return; // waiting for runners
      await this.ctx.storage.setAlarm(Date.now() + WATCHDOG_MS);
      // wake on the first finished Worker step, or when a runner reports a RUN step
      await Promise.race([...this.inflight.values(), new Promise<void>((r) => (this.wake = r))]);
      this.wake = undefined;
    }
  }

  private async runStep(r: StepRow): Promise<void> {
    const started = r.started_at ?? Date.now();
    if (this.status() === "queued") this.setStatus("running");
    this.setStep(r.idx, { status: "running", started_at: started });
    const step = this.graph().steps.find((s) => s.index === r.idx)!;
    try {
      const out = await executeStep(this.stepContext(r.idx), step);
      if (TERMINAL.has(this.status())) return;
      if (out.status === "run") {
        const jobId = `${this.spec().id}-${r.idx}-${crypto.randomUUID().slice(0, 8)}`;
        this.setStep(r.idx, { job_id: jobId, cache_key: out.key, run_key: out.key, created_by: out.createdBy });
        this.emit("step", this.stepView(this.row(r.idx)!));
        // No credential here: the Dispatcher mints one per lease when a runner claims the job.
        const job: QueuedJob = { ...out.job, jobId };
        await this.log(r.idx, "waiting for a runner\n");
        await this.dispatcher().enqueue(job);
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
        const bases = (this.getMeta<BaseImage[]>("bases") ?? []).filter((b) => b.stage !== out.base!.stage);
        this.setMeta("bases", [...bases, out.base].sort((a, b) => a.stage - b.stage));
      }
    } catch (e) {
      if (TERMINAL.has(this.status())) return;
      const message = e instanceof Error ? e.message : String(e);
      if (!(e instanceof StepError || e instanceof DockerfileError)) console.error(`step ${r.idx} failed`, e);
      const output = e instanceof StepError ? e.output : undefined;
      if (output) await this.log(r.idx, output);
      await this.failStep(r.idx, message);
    }
  }

  private dispatcher() {
    return this.env.DISPATCHER.get(this.env.DISPATCHER.idFromName("default"));
  }

  private async cancelJobs(): Promise<void> {
    if (!this.rows().some((r) => r.job_id)) return;
    try {
      await this.dispatcher().cancelBuild(this.spec().id);
    } catch (e) {
      console.error("cancelBuild failed", e);
    }
  }

  private async failStep(idx: number, message: string): Promise<void> {
    if (TERMINAL.has(this.status())) return;
    const now = Date.now();
    const r = this.row(idx)!;
    this.setStep(idx, { status: "failed", duration_ms: now - (r.started_at ?? now) });
    await this.log(idx, `ERROR: ${message}\n`);
    for (const o of this.rows()) if (o.status === "pending" || o.status === "running") this.setStep(o.idx, { status: "skipped" });
    this.setMeta("error", { message, step: idx, line: r.line });
    this.setMeta("finishedAt", now);
    this.setStatus("failed", { error: message });
    await this.cancelJobs();
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
  }

  private async failBuild(message: string): Promise<void> {
    const now = Date.now();
    for (const o of this.rows()) if (o.status === "pending" || o.status === "running") this.setStep(o.idx, { status: "skipped" });
    this.setMeta("error", { message });
    this.setMeta("finishedAt", now);
    this.setStatus("failed", { error: message });
    await this.cancelJobs();
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
  }

  /** The build result: the first tag's repository with its tags. */
  private imageOf(spec: BuildSpec, digest: string): NonNullable<BuildView["image"]> {
    const repository = spec.tags[0].repository;
    return { repository, tags: spec.tags.filter((t) => t.repository === repository).map((t) => t.tag), digest };
  }

  private succeed(image?: NonNullable<BuildView["image"]>): void {
    if (image) this.setMeta("image", image);
    this.setMeta("finishedAt", Date.now());
    this.setStatus("succeeded", image ? { imageDigest: image.digest } : {});
  }

  private async finish(): Promise<void> {
    const spec = this.spec();
    const graph = this.graph();
    const target = graph.stages.find((s) => s.index === graph.target)!;
    const state = this.stateOf(target.steps[target.steps.length - 1]);
    try {
      if (!spec.tags.length && spec.manifestRepository) {
        // a multi-platform child: its manifest is stored by digest; the parent pushes the index
        const { digest } = await pushChildImage(this.env, state, spec.manifestRepository, spec.sourceDateEpoch);
        this.succeed({ repository: spec.manifestRepository, tags: [], digest });
      } else if (spec.tags.length) {
        const { digest } = await pushImage(this.env, state, spec.tags, spec.sourceDateEpoch);
        this.succeed(this.imageOf(spec, digest));
      } else {
        this.succeed();
      }
    } catch (e) {
      console.error("pushing the image failed", e);
      await this.failBuild(`pushing the image failed: ${(e as Error).message}`);
      return;
    }
    this.emit("done", this.view());
    await this.ctx.storage.deleteAlarm();
  }
}
