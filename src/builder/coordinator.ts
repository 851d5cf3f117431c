import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import type { RunResult } from "../protocol/jobs";
import type { LogEvent } from "../protocol/events";
import { BuildStore } from "./build-store";
import { EventLog } from "./event-log";
import { finish, type BuildHost } from "./finish";
import type { BuildSpec, BuildView } from "./model";
import { childProgressLine, ParentBuild } from "./multiplatform";
import { StepScheduler } from "./scheduler";

/**
 * One per build (`idFromName(buildId)`). Steps, their states and every event live in
 * ctx.storage.sql (build-store.ts); alarms drive the build, so it continues from its persisted state
 * after a restart. A single-platform build is driven by the StepScheduler (RUN steps go to the
 * Dispatcher and come back via runStepFinished); a multi-platform parent by ParentBuild. Every way a
 * build ends goes through finish().
 */
export class BuildCoordinator extends DurableObject<Env> {
  private readonly store: BuildStore;
  private readonly events: EventLog;
  private readonly host: BuildHost;
  private readonly scheduler: StepScheduler;
  private readonly parent: ParentBuild;
  private parentQueue: Promise<unknown> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.store = new BuildStore(ctx.storage.sql);
    this.events = new EventLog(this.store, (type, data) => this.forwardToParent(type, data));
    this.host = { env, ctx, store: this.store, events: this.events, coordinatorOf: (id) => this.coordinatorOf(id), toParent: (call) => this.toParent(call) };
    this.scheduler = new StepScheduler(this.host);
    this.parent = new ParentBuild(this.host);
  }

  private coordinatorOf(id: string): DurableObjectStub<BuildCoordinator> {
    return this.env.BUILD_COORDINATOR.get(this.env.BUILD_COORDINATOR.idFromName(id));
  }

  /** Calls to the parent go one after another (logs before the "finished" notification). */
  private toParent(call: () => Promise<unknown>): void {
    this.parentQueue = this.parentQueue.then(call).catch((e) => console.error("calling the parent build failed", e));
    this.ctx.waitUntil(this.parentQueue);
  }

  /** A multi-platform child passes its progress to the parent's event stream (in order). */
  private forwardToParent(type: "step" | "log", data: Parameters<typeof childProgressLine>[1]): void {
    const spec = this.store.maybeSpec();
    if (!spec?.parent) return;
    const text = childProgressLine(type, data);
    if (text === undefined) return;
    const parent = spec.parent;
    this.toParent(() => this.coordinatorOf(parent).childLog(spec.id, text));
  }

  // ------------------------------------------------------------------ RPC

  /** Persists the build and starts driving it. */
  async start(spec: BuildSpec): Promise<BuildView> {
    if (this.store.started()) return this.store.view();
    this.store.setMeta("spec", spec);
    this.store.setMeta("status", "queued");
    if (spec.children) {
      await this.parent.start(spec);
    } else {
      this.scheduler.plan();
      await this.ctx.storage.setAlarm(Date.now());
    }
    return this.store.view();
  }

  async getBuild(): Promise<BuildView | null> {
    return this.store.started() ? this.store.view() : null;
  }

  /**
   * For the dashboard's build page without JavaScript: the Dockerfile, its path, and the last
   * `maxLines` log events so far (the live page replays the event stream instead).
   */
  async getTranscript(maxLines: number): Promise<{ dockerfile: string; dockerfilePath: string; log: LogEvent[]; truncated: boolean } | null> {
    const spec = this.store.maybeSpec();
    if (!spec) return null;
    const { data, total } = this.store.lastLogEvents(maxLines);
    return { dockerfile: spec.dockerfile, dockerfilePath: spec.dockerfilePath, log: data.map((d) => JSON.parse(d) as LogEvent), truncated: total > data.length };
  }

  async isCancelled(): Promise<boolean> {
    return this.store.status() === "cancelled";
  }

  /** DELETE /v1/builds/:id: running steps stop, RUN jobs and child builds are cancelled. */
  async cancel(): Promise<BuildView | null> {
    if (!this.store.started()) return null;
    await finish(this.host, { status: "cancelled" });
    return this.store.view();
  }

  /** Output of a RUN step from its runner (through the Dispatcher). */
  async appendLog(stepIndex: number, text: string): Promise<void> {
    this.events.log(stepIndex, text);
  }

  /** A runner finished the RUN job of `stepIndex`. */
  async runStepFinished(jobId: string, stepIndex: number, result: RunResult): Promise<void> {
    await this.scheduler.runStepFinished(jobId, stepIndex, result);
  }

  override async alarm(): Promise<void> {
    if (this.store.maybeSpec()?.children) return await this.parent.check();
    await this.scheduler.drive();
  }

  /** Progress of a multi-platform child: a log line of the parent's step for its platform. */
  async childLog(childId: string, text: string): Promise<void> {
    this.parent.childLog(childId, text);
  }

  /** A multi-platform child ended (called by the child; the parent then reads its state). */
  async childFinished(childId: string): Promise<void> {
    if (!this.store.maybeSpec()?.children) return;
    this.parent.childNotified(childId);
    await this.parent.check();
  }

  /** GET /v1/builds/:id/events: history (after Last-Event-ID), then live events; ends after `done`. */
  override async fetch(req: Request): Promise<Response> {
    if (!this.store.started()) return new Response(JSON.stringify({ error: { message: "build not found" } }), { status: 404 });
    return this.events.stream(req, this.store.ended());
  }
}
