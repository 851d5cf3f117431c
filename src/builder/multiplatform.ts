/**
 * Multi-platform builds (`platform=linux/amd64,linux/arm64`): one child build per platform, each a
 * normal BuildCoordinator that stores its image manifest by digest (no tags) in the repository of
 * the first tag; the parent (a BuildCoordinator whose spec has `children`) waits for them and pushes
 * an OCI image index over their manifests under every requested tag.
 */
import type { Env } from "../env";
import { ApiError } from "../errors";
import { buildIndex, encodeJson, parseManifest, type Descriptor } from "../oci/image";
import { MediaType } from "../oci/mediatypes";
import { digestOf } from "../oci/digest";
import { splitPlatform } from "../oci/platform";
import { linkBlob } from "../storage/blobs";
import { getManifest, putManifest, statManifest } from "../storage/manifests";
import { storedSizes, withQuota } from "../storage/usage";
import type { BuildSpec, BuildStatus, BuildView, ChildView, ImageState, StepStatus, StepView } from "./model";
import type { LogEvent } from "../protocol/events";
import { prepareImage, storeImage } from "./image";
import { TERMINAL } from "./build-store";
import { finish, imageOf, markRunning, type BuildHost } from "./finish";

const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/;
const MAX_PLATFORMS = 16;

/**
 * `linux/amd64,linux/arm64` → the platforms in the given order (duplicates dropped). Throws
 * ApiError 400 for an empty item or one that is not `os/arch[/variant]`.
 */
export function parsePlatformList(p: string): string[] {
  const out: string[] = [];
  for (const raw of p.split(",")) {
    const item = raw.trim().toLowerCase();
    if (!item) throw new ApiError(400, `invalid platform list ${JSON.stringify(p)}: empty item`);
    if (!PLATFORM_RE.test(item)) throw new ApiError(400, `invalid platform ${JSON.stringify(raw.trim())}: expected os/arch[/variant]`);
    if (!out.includes(item)) out.push(item);
  }
  if (out.length > MAX_PLATFORMS) throw new ApiError(400, `too many platforms (at most ${MAX_PLATFORMS})`);
  return out;
}

export { splitPlatform as platformObject };

/** The id of the child of `parentId` for `platform`: `<parent>-linux-arm64-v8`. */
export function childBuildId(parentId: string, platform: string): string {
  return `${parentId}-${platform.replace(/\//g, "-")}`;
}

/** A child's final status as the status of the parent's step for its platform. */
export function childStepStatus(status: BuildStatus, allCached: boolean): StepStatus {
  switch (status) {
    case "succeeded":
      return allCached ? "cached" : "done";
    case "failed":
      return "failed";
    case "cancelled":
      return "skipped";
    default:
      return "running";
  }
}

/**
 * Stores a child's image (same bytes as pushImage would make) in `repository` by digest only.
 * Returns the manifest digest and size.
 */
export async function pushChildImage(env: Env, state: ImageState, repository: string, sourceDateEpoch: number): Promise<{ digest: string; size: number }> {
  const image = await prepareImage(env, state, sourceDateEpoch);
  await storeImage(env, repository, image, image.digest);
  return { digest: image.digest, size: image.bytes.byteLength };
}

/** A child's manifest as stored in the home repository, and the blobs it uses. */
interface ChildManifest { digest: string; bytes: Uint8Array; mediaType: string; blobs: string[] }

async function readChild(env: Env, home: string, digest: string): Promise<ChildManifest> {
  const m = await getManifest(env, home, digest);
  if (!m) throw new Error(`manifest ${digest} is missing from ${home}`);
  const doc = parseManifest(m.bytes, m.mediaType);
  return { digest, bytes: m.bytes, mediaType: m.mediaType, blobs: "config" in doc ? [doc.config.digest, ...doc.layers.map((l) => l.digest)] : [] };
}

/** Makes the child manifest (and the blobs it uses) part of `to` as well (its quota reserved by the caller). */
async function copyManifest(env: Env, to: string, child: ChildManifest): Promise<void> {
  if (await statManifest(env, to, child.digest)) return;
  for (const b of child.blobs) await linkBlob(env, to, b);
  await putManifest(env, to, child.digest, child.bytes, child.mediaType, [], { quotaHeld: true });
}

/**
 * Pushes an OCI image index over the children's manifests (stored in `tags[0].repository`) under
 * every tag; returns the index digest. Every namespace it tags must have room for the index (and, in
 * a repository other than the first, for the children's manifests and blobs), or nothing is linked
 * and no tag moves (DENIED naming usage and quota).
 */
export async function pushIndex(env: Env, tags: { repository: string; tag: string }[], children: { platform: string; digest: string }[]): Promise<string> {
  const home = tags[0].repository;
  const descriptors: Descriptor[] = [];
  for (const c of children) {
    const info = await statManifest(env, home, c.digest);
    if (!info) throw new Error(`the ${c.platform} image ${c.digest} is missing from ${home}`);
    descriptors.push({ mediaType: info.mediaType, digest: info.digest, size: info.size, platform: splitPlatform(c.platform) });
  }
  const bytes = encodeJson(buildIndex(descriptors));
  const digest = await digestOf(bytes);
  const byRepo = new Map<string, string[]>();
  for (const t of tags) byRepo.set(t.repository, [...(byRepo.get(t.repository) ?? []), t.tag]);
  const copies = [...byRepo.keys()].some((r) => r !== home) ? await Promise.all(children.map((c) => readChild(env, home, c.digest))) : [];
  const copied = [
    ...descriptors.map((d) => ({ digest: d.digest, size: d.size })),
    ...(await storedSizes(env, copies.flatMap((c) => c.blobs))),
  ];
  const writes = [...byRepo.keys()].map((repo) => ({ repo, content: [{ digest, size: bytes.byteLength }, ...(repo !== home ? copied : [])] }));
  await withQuota(env, writes, async () => {
    for (const [repo, repoTags] of byRepo) {
      if (repo !== home) for (const c of copies) await copyManifest(env, repo, c);
      const [first, ...rest] = repoTags;
      await putManifest(env, repo, first, bytes, MediaType.OciIndex, rest, { quotaHeld: true });
    }
  });
  return digest;
}

/** A multi-platform parent checks its children this often (they also notify it when they end). */
const CHILD_POLL_MS = 5_000;
/** A child that has not started by then (its start call failed) fails the parent. */
const CHILD_START_MS = 60_000;
/**
 * A child's progress lines and then its "finished" notification reach the parent in order; a poll
 * that sees a child ended before its notification arrived waits this long for it (so the child's last
 * lines are in the parent's stream before the parent ends), then goes on without it.
 */
const CHILD_NOTIFY_GRACE_MS = 30_000;

/**
 * The parent of a multi-platform build: it runs no steps, one row per platform mirrors its child
 * build, the children's progress arrives as log lines of those rows, and when every child succeeded
 * the parent pushes the index (the first failed or cancelled child fails it).
 */
export class ParentBuild {
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly host: BuildHost) {}

  async start(spec: BuildSpec): Promise<void> {
    const { store } = this.host;
    const now = Date.now();
    for (const [i, c] of spec.children!.entries()) {
      store.insertStep({ idx: i + 1, stage: i, stage_name: c.platform, kind: "build", instruction: `build ${c.id}`, line: 0, deps: "[]", status: "running", started_at: now });
    }
    store.setMeta("children", spec.children!.map((c) => ({ ...c, status: "queued" })));
    markRunning(this.host);
    for (const r of store.rows()) this.host.events.step(store.stepView(r));
    await this.host.ctx.storage.setAlarm(Date.now() + CHILD_POLL_MS);
  }

  /** Progress of a child: a log line of the parent's step for its platform. */
  childLog(childId: string, text: string): void {
    const i = this.host.store.maybeSpec()?.children?.findIndex((c) => c.id === childId) ?? -1;
    if (i < 0 || this.host.store.ended()) return;
    this.host.events.log(i + 1, text);
  }

  /** A child said it ended: every progress line it sent before is already in the parent's stream. */
  childNotified(childId: string): void {
    const notified = this.host.store.getMeta<string[]>("notified") ?? [];
    if (!notified.includes(childId)) this.host.store.setMeta("notified", [...notified, childId]);
  }

  /** Reads the children's states (one check at a time); fails on the first failed child, pushes the index when all succeeded. */
  check(): Promise<void> {
    const run = this.chain.then(() => this.checkOnce());
    this.chain = run.catch(() => {});
    return run.catch(async (e) => {
      console.error("multi-platform build check failed", e);
      await finish(this.host, { status: "failed", message: `internal error: ${(e as Error).message}` });
    });
  }

  private setStep(idx: number, status: StepStatus, durationMs: number | null): void {
    const r = this.host.store.updateStep(idx, { status, duration_ms: durationMs });
    if (r) this.host.events.step(this.host.store.stepView(r));
  }

  private async checkOnce(): Promise<void> {
    const { store } = this.host;
    if (store.ended()) return;
    const children = store.getMeta<ChildView[]>("children") ?? [];
    for (const [i, c] of children.entries()) {
      if (TERMINAL.has(c.status)) continue;
      const v = await this.host.coordinatorOf(c.id).getBuild();
      if (store.ended()) return;
      const row = store.row(i + 1)!;
      const now = Date.now();
      if (!v && now - store.spec().createdAt > CHILD_START_MS) {
        this.setStep(i + 1, "failed", now - (row.started_at ?? now));
        await finish(this.host, { status: "failed", message: `${c.platform}: the build ${c.id} did not start`, step: i + 1 });
        return;
      }
      if (!v || v.status === c.status) continue;
      const notified = store.getMeta<string[]>("notified") ?? [];
      if (TERMINAL.has(v.status) && !notified.includes(c.id) && now - (v.finishedAt ?? 0) < CHILD_NOTIFY_GRACE_MS) continue;
      c.status = v.status;
      if (v.image?.digest) c.digest = v.image.digest;
      store.setMeta("children", children);
      const allCached = v.steps.length > 0 && v.steps.every((s) => s.status === "cached");
      const stepStatus = childStepStatus(v.status, allCached);
      if (stepStatus !== row.status || TERMINAL.has(v.status)) this.setStep(i + 1, stepStatus, TERMINAL.has(v.status) ? now - (row.started_at ?? now) : null);
      if (v.status === "failed" || v.status === "cancelled") {
        const why = v.status === "failed" ? (v.error?.message ?? "failed") : "cancelled";
        await finish(this.host, { status: "failed", message: `${c.platform}: ${why}`, step: i + 1, line: v.error?.line });
        return;
      }
    }
    if (children.every((c) => c.status === "succeeded")) {
      await this.pushResult(children);
      return;
    }
    await this.host.ctx.storage.setAlarm(Date.now() + CHILD_POLL_MS);
  }

  private async pushResult(children: ChildView[]): Promise<void> {
    const spec = this.host.store.spec();
    let image: NonNullable<BuildView["image"]> | undefined;
    try {
      if (spec.tags.length) {
        const missing = children.find((c) => !c.digest);
        if (missing) throw new Error(`the ${missing.platform} build has no image`);
        const digest = await pushIndex(this.host.env, spec.tags, children.map((c) => ({ platform: c.platform, digest: c.digest! })));
        image = imageOf(spec, digest);
      }
    } catch (e) {
      console.error("pushing the image index failed", e);
      await finish(this.host, { status: "failed", message: `pushing the image index failed: ${(e as Error).message}` });
      return;
    }
    await finish(this.host, { status: "succeeded", image });
  }
}

/** A child's step or log event as one log line of its parent (`#3 RUN make`, `#3 DONE 1.2s`). */
export function childProgressLine(type: "step" | "log", data: StepView | LogEvent): string | undefined {
  if (type === "log") {
    const d = data as LogEvent;
    return d.text.replace(/^(?=.)/gm, `#${d.step} `);
  }
  const s = data as StepView;
  if (s.status === "pending") return undefined;
  const what = s.status === "running" ? s.instruction : s.status === "done" ? `DONE${s.durationMs != null ? ` ${(s.durationMs / 1000).toFixed(1)}s` : ""}` : s.status.toUpperCase();
  return `#${s.index} ${what}\n`;
}
