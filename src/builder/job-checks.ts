/**
 * The Dispatcher's checks and types that need no state: who claims, lease outcomes, platform
 * matching and the validation of a runner's result.
 */
import type { JobLayer, RunJob, RunResult } from "../protocol/jobs";

/** Who claims: the runner token (its id, or "admin") and the repositories it serves. */
export interface ClaimHolder {
  tokenId: string;
  /** "all" (scope `runner`, admin) or the patterns of its `runner:<pattern>` scopes. */
  serves: "all" | string[];
  /** Origin of the claim request (the audience of the job's registry token). */
  origin: string;
}

/** What the Dispatcher calls on the BuildCoordinator (implemented by the builds engineer). */
export interface RunStepSink {
  runStepFinished(jobId: string, stepIndex: number, result: RunResult): Promise<unknown>;
  appendLog(stepIndex: number, text: string): Promise<unknown>;
}

export interface RunnerInfo {
  runnerId: string;
  platforms: string[];
  labels: Record<string, string>;
  lastSeen: number;
  /** Seen within the last minute (a claim long-polls up to 25 s), or holding a lease. */
  online: boolean;
  /** The job it holds a lease on, if any. */
  currentJob: { jobId: string; buildId: string; step: number } | null;
}

/** Outcome of a lease renewal, log append or completion. `gone` means 410: stop and kill the step. */
export type LeaseOutcome =
  | { ok: true; leaseExpiresAt: number }
  | { ok: false; status: 400 | 403 | 404 | 409 | 410; message: string };

/** A runner id as announced by one runner token. */
export function leavingKey(tokenId: string, runnerId: string): string {
  return `${tokenId}\n${runnerId}`;
}

import { isDigest } from "../oci/digest";

export { formatPlatform as platformString, platformMatches } from "../oci/platform";

/** Runner layers are sha256 (the blob API's default): src/oci's digest grammar, that algorithm only. */
const isSha256 = (d: unknown): boolean => isDigest(d) && d.startsWith("sha256:");

/** Validates a RunResult sent by a runner; returns a message when it is malformed. */
export function validateRunResult(r: unknown): string | null {
  if (!r || typeof r !== "object") return "result must be an object";
  const o = r as Record<string, unknown>;
  if (o.ok === true) {
    if (o.layer === null) return null;
    const l = o.layer as Record<string, unknown> | undefined;
    if (!l || typeof l !== "object") return "result.layer must be a layer descriptor or null";
    if (!isSha256(l.digest)) return "result.layer.digest must be sha256:<64 hex>";
    if (!isSha256(l.diffId)) return "result.layer.diffId must be sha256:<64 hex>";
    if (typeof l.mediaType !== "string" || !l.mediaType) return "result.layer.mediaType must be a string";
    if (typeof l.size !== "number" || !Number.isSafeInteger(l.size) || l.size < 0) return "result.layer.size must be a non-negative integer";
    return null;
  }
  if (o.ok === false) {
    if (!(o.exitCode === null || (typeof o.exitCode === "number" && Number.isInteger(o.exitCode)))) return "result.exitCode must be an integer or null";
    if (typeof o.message !== "string") return "result.message must be a string";
    return null;
  }
  return "result.ok must be true or false";
}

export function normalizeResult(r: RunResult): RunResult {
  if (r.ok) {
    if (!r.layer) return { ok: true, layer: null };
    const l: JobLayer = { digest: r.layer.digest, diffId: r.layer.diffId, mediaType: r.layer.mediaType, size: r.layer.size };
    return { ok: true, layer: l };
  }
  const message = r.message.length > 65536 ? r.message.slice(-65536) : r.message;
  return { ok: false, exitCode: r.exitCode, message };
}

