/**
 * The registry credential of one RUN job lease (finding 6 of issue 17).
 *
 * Minted by the Dispatcher when a runner claims a job: a registry JWT whose subject is
 * `job:<jobId>:<leaseId>:<runnerTokenId>` and whose access is pull,push on the job's repository. The
 * /v2 gate (authorizeRegistry) accepts it only
 * - on blob routes (GET/HEAD /v2/<repo>/blobs/<digest>, the upload routes /v2/<repo>/blobs/uploads/…):
 *   never manifests, tags, referrers, the catalog or deletes;
 * - for the job's repository only;
 * - while the lease lives (the Dispatcher still has the job leased under that lease id, to that runner
 *   token, not expired) and the runner token that claimed it is not revoked.
 * So it dies when the job completes, is cancelled or re-leased, or its runner token is revoked.
 */
import type { Env } from "../env";
import { signRegistryToken } from "./registry-token";
import { findLiveTokenById } from "../storage/tokens";

/** The runner token id recorded for a lease claimed with the admin token itself. */
export const ADMIN_HOLDER = "admin";

export interface JobSubject {
  jobId: string;
  leaseId: string;
  /** Id of the API token that claimed the lease, or "admin". */
  runnerTokenId: string;
}

const PREFIX = "job:";

export function jobTokenSubject(s: JobSubject): string {
  return `${PREFIX}${s.jobId}:${s.leaseId}:${s.runnerTokenId}`;
}

/** Whether a registry token subject names a job lease (such tokens are checked by checkJobToken). */
export function isJobSubject(sub: string): boolean {
  return sub.startsWith(PREFIX);
}

/** Parses `job:<jobId>:<leaseId>:<runnerTokenId>` (job ids may contain `:`; lease and token ids do not). */
export function parseJobSubject(sub: string): JobSubject | null {
  if (!isJobSubject(sub)) return null;
  const parts = sub.slice(PREFIX.length).split(":");
  if (parts.length < 3) return null;
  const runnerTokenId = parts.pop()!;
  const leaseId = parts.pop()!;
  const jobId = parts.join(":");
  if (!jobId || !leaseId || !runnerTokenId) return null;
  return { jobId, leaseId, runnerTokenId };
}

/** Registry routes a job token may use: reading and uploading blobs. */
export const JOB_TOKEN_ROUTES: ReadonlySet<string> = new Set(["blob", "upload"]);

/**
 * A registry token for one lease: pull,push on `repository`, subject naming the lease. Its expiry is
 * only a backstop (the gate checks the lease on every call).
 */
export async function mintJobToken(
  env: Env,
  origin: string,
  repository: string,
  subject: JobSubject,
  ttlSeconds: number,
): Promise<string> {
  let aud = "kiln";
  try {
    aud = new URL(origin).host || aud;
  } catch {
    // no usable origin: the audience is informational only
  }
  const { token } = await signRegistryToken(env, {
    sub: jobTokenSubject(subject),
    aud,
    access: [{ type: "repository", name: repository, actions: ["pull", "push"] }],
    ttlSeconds,
  });
  return token;
}

/**
 * Whether a job token's lease is alive: its runner token is not revoked (the admin token counts while
 * it is configured) and the Dispatcher still holds the job leased under that lease to that token.
 * Returns the reason when it is not.
 */
export async function checkJobToken(env: Env, subject: JobSubject): Promise<string | null> {
  if (subject.runnerTokenId === ADMIN_HOLDER) {
    if (!env.KILN_ADMIN_TOKEN) return "runner token revoked";
  } else if (!(await findLiveTokenById(env, subject.runnerTokenId))) {
    return "runner token revoked";
  }
  const dispatcher = env.DISPATCHER.get(env.DISPATCHER.idFromName("default"));
  const live = await dispatcher.leaseLive(subject.jobId, subject.leaseId, subject.runnerTokenId);
  return live ? null : "job lease ended";
}
