/**
 * The one way a build ends — succeeded, failed or cancelled — for single-platform builds, children
 * and multi-platform parents alike: steps that were still pending or running are skipped, the result
 * is stored, the builds row updated, secrets dropped, RUN jobs and child builds cancelled, the commit
 * status reported (webhook builds), the parent told (children), `done` sent and the alarm removed.
 */
import type { Env } from "../env";
import { reportBuildFinished } from "../git/status";
import { updateBuildStatus } from "../storage/builds";
import type { BuildCoordinator } from "./coordinator";
import type { BuildStore } from "./build-store";
import type { EventLog } from "./event-log";
import type { BuildSpec, BuildStatus, BuildView, ChildView } from "./model";

/** What the parts of a BuildCoordinator share (the DO itself provides it). */
export interface BuildHost {
  env: Env;
  ctx: DurableObjectState;
  store: BuildStore;
  events: EventLog;
  coordinatorOf(id: string): DurableObjectStub<BuildCoordinator>;
  /** Calls to the parent build, one after another (logs before the "finished" notification). */
  toParent(call: () => Promise<unknown>): void;
}

export type BuildOutcome =
  | { status: "succeeded"; image?: NonNullable<BuildView["image"]> }
  | { status: "failed"; message: string; step?: number; line?: number }
  | { status: "cancelled" };

/** Moves the build to a running state (the builds row follows). */
export function markRunning(host: BuildHost): void {
  if (host.store.status() !== "queued") return;
  setStatus(host, "running");
}

function setStatus(host: BuildHost, status: BuildStatus, extra: { imageDigest?: string; error?: string; steps?: { total: number; cached: number } } = {}): void {
  host.store.setMeta("status", status);
  host.ctx.waitUntil(updateBuildStatus(host.env, host.store.spec().id, status, extra).catch((e) => console.error("builds row update failed", e)));
}

/** Ends the build once (later calls do nothing). */
export async function finish(host: BuildHost, outcome: BuildOutcome): Promise<void> {
  const { store } = host;
  if (!store.started() || store.ended()) return;
  const now = Date.now();
  if (outcome.status !== "succeeded") {
    for (const r of store.rows()) {
      if (r.status !== "pending" && r.status !== "running") continue;
      const view = store.updateStep(r.idx, { status: "skipped", duration_ms: r.started_at ? now - r.started_at : null });
      if (view) host.events.step(store.stepView(view));
    }
  }
  let extra: { imageDigest?: string; error?: string; steps?: { total: number; cached: number } } = {};
  if (outcome.status === "succeeded") {
    if (outcome.image) store.setMeta("image", outcome.image);
    if (outcome.image) extra = { imageDigest: outcome.image.digest };
  } else {
    const message = outcome.status === "cancelled" ? "build cancelled" : outcome.message;
    const error: NonNullable<BuildView["error"]> = { message };
    if (outcome.status === "failed" && outcome.step !== undefined) error.step = outcome.step;
    if (outcome.status === "failed" && outcome.line) error.line = outcome.line;
    store.setMeta("error", error);
    extra = { error: message };
  }
  store.setMeta("finishedAt", now);
  // the builds row keeps the step counts: a list of builds needs no coordinator
  const steps = store.view().steps;
  setStatus(host, outcome.status, { ...extra, steps: { total: steps.length, cached: steps.filter((s) => s.status === "cached").length } });
  store.dropSecrets();
  const spec = store.spec();
  // Builds from git pushes report their result on the commit.
  host.ctx.waitUntil(reportBuildFinished(host.env, spec.id, outcome.status, spec.origin, extra.error).catch((e) => console.error("commit status report failed", e)));
  // A multi-platform child tells its parent at once (the parent also polls).
  if (spec.parent) {
    const parent = spec.parent;
    host.toParent(() => host.coordinatorOf(parent).childFinished(spec.id));
  }
  if (outcome.status !== "succeeded") await cancelJobs(host);
  host.events.emit("done", store.view());
  await host.ctx.storage.deleteAlarm();
  if (outcome.status !== "succeeded") await cancelChildren(host);
}

function dispatcherOf(env: Env) {
  return env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
}

async function cancelJobs(host: BuildHost): Promise<void> {
  if (!host.store.rows().some((r) => r.job_id)) return;
  try {
    await dispatcherOf(host.env).cancelBuild(host.store.spec().id);
  } catch (e) {
    console.error("cancelBuild failed", e);
  }
}

/** Cancels the children that are still going (a cancelled or failed multi-platform parent). */
async function cancelChildren(host: BuildHost): Promise<void> {
  const children = host.store.getMeta<ChildView[]>("children");
  if (!children) return;
  for (const c of children) {
    if (c.status === "succeeded" || c.status === "failed" || c.status === "cancelled") continue;
    try {
      const v = await host.coordinatorOf(c.id).cancel();
      if (v) c.status = v.status;
    } catch (e) {
      console.error(`cancelling ${c.id} failed`, e);
    }
  }
  host.store.setMeta("children", children);
}

/** The build result: the first tag's repository with its tags. */
export function imageOf(spec: BuildSpec, digest: string): NonNullable<BuildView["image"]> {
  const repository = spec.tags[0].repository;
  return { repository, tags: spec.tags.filter((t) => t.repository === repository).map((t) => t.tag), digest };
}
