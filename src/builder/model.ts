import type { ImageConfig } from "../oci/image";
import type { StageEnvSnapshot } from "../dockerfile/env";
import type { BuildPrincipal } from "../auth/build-principal";

/** A layer of an image being built. */
export interface LayerRef {
  digest: string;
  diffId: string;
  size: number;
  mediaType: string;
}

/** The image of a stage after a step: base + layers + config change (never edited in place). */
export interface ImageState {
  config: ImageConfig;
  layers: LayerRef[];
  /** Cache key of the step that produced this state (the parent of the next step's key). */
  key: string;
  /** The stage's env beyond the config (the frontend's StageEnv): expansion/RUN env and declared ARGs. */
  env: StageEnvSnapshot;
  /** Whether CMD was set in this stage (ENTRYPOINT resets an inherited CMD otherwise). */
  cmdSet?: boolean;
}

export type { StepKind, PlannedStep, BuildGraph } from "../plan/graph";
export type { GraphStage as PlannedStage } from "../plan/graph";
import type { BuildGraph } from "../plan/graph";
export type StepStatus = "pending" | "running" | "cached" | "done" | "failed" | "skipped";
export type BuildStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** What a build was asked to do (persisted in the coordinator). */
export interface BuildSpec {
  id: string;
  origin: string;
  dockerfile: string;
  dockerfilePath: string;
  context: { pack: string; index: string };
  tags: { repository: string; tag: string }[];
  buildArgs: Record<string, string>;
  target?: string;
  noCache: boolean;
  platform: { os: string; architecture: string; variant?: string };
  sourceDateEpoch: number;
  secrets?: Record<string, string>;
  /** Who the build acts as: every image it reads is a pull authorized for this principal. */
  principal: BuildPrincipal;
  /**
   * The cache scope: the namespace of the repository the build pushes to (`acme` of `acme/app`), or
   * UNTAGGED_SCOPE for an untagged build. Cache entries, cached RUN layers and cache mounts are
   * visible only inside it.
   */
  scope: string;
  /** The build graph, planned once when the build started (with the image bases' ONBUILD triggers). */
  plan: BuildGraph;
  createdAt: number;
  /** Multi-platform parent: one child build per platform; the parent runs no steps itself. */
  children?: ChildRef[];
  /** Multi-platform child: the parent build's id (notified when this build ends). */
  parent?: string;
  /** Multi-platform child: the repository its manifest is stored in by digest (no tags). */
  manifestRepository?: string;
}

/** The cache scope of builds that push nowhere (admin only); `_` never starts a namespace. */
export const UNTAGGED_SCOPE = "_untagged";

/** A child build of a multi-platform build. */
export interface ChildRef {
  /** `os/arch[/variant]` */
  platform: string;
  id: string;
}

export interface ChildView extends ChildRef {
  status: BuildStatus;
  /** The child's image manifest digest once it succeeded. */
  digest?: string;
}

export interface StepView {
  index: number;
  stage: string;
  instruction: string;
  status: StepStatus;
  cacheKey: string | null;
  layer?: string;
  durationMs: number | null;
  line: number;
}

export interface BaseImage {
  stage: number;
  ref: string;
  /** Where the base came from: `kiln` (this registry) or the upstream registry host (`docker.io`). */
  source: string;
  /** The repository inside that registry (`library/alpine`, `team/base`). */
  repository: string;
  /** The platform-specific image manifest the stage starts from. */
  digest: string;
  /** What the reference resolved to when it is an index (multi-platform image). */
  resolvedDigest?: string;
}

export interface BuildView {
  id: string;
  status: BuildStatus;
  steps: StepView[];
  image?: { repository: string; tags: string[]; digest: string };
  /** The base images the build used, with the digests their references resolved to. */
  bases?: BaseImage[];
  error?: { message: string; step?: number; line?: number };
  createdAt: number;
  finishedAt?: number;
  /** Multi-platform build: one child build per platform. */
  children?: ChildView[];
  /** Multi-platform child: the parent build's id. */
  parent?: string;
}

/** A step failure with what the user needs to fix it. */
export class StepError extends Error {
  constructor(message: string, readonly output?: string) {
    super(message);
    this.name = "StepError";
  }
}
