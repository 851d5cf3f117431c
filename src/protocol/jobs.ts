/**
 * The contract between the BuildCoordinator (builds), the Dispatcher (queue) and runners (RUN steps).
 * Shared by src/builder (Worker) and src/runner (Node): keep it free of runtime imports.
 */

/** A layer as a runner needs it to rebuild the rootfs. */
export interface JobLayer {
  digest: string; // sha256:… of the compressed blob, fetched via GET /v2/<repository>/blobs/<digest>
  diffId: string; // sha256:… of the uncompressed tar, verified by the runner after unpacking
  mediaType: string; // application/vnd.oci.image.layer.v1.tar+gzip (or +zstd / uncompressed tar)
  size: number;
}

export interface JobMount {
  type: "cache" | "secret" | "bind" | "tmpfs";
  target: string;
  id?: string; // cache id / secret id
  readonly?: boolean;
  sharing?: "shared" | "private" | "locked";
  /** bind: source inside `fromLayers` (a stage's or image's layers) or the context. */
  source?: string;
  fromLayers?: JobLayer[];
  required?: boolean; // secret
  env?: string; // secret as env var
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number; // tmpfs
}

/** One RUN step handed to a runner. */
export interface RunJob {
  jobId: string;
  buildId: string;
  stepIndex: number;
  platform: { os: string; architecture: string; variant?: string };
  /** The rootfs below this step, bottom first. */
  layers: JobLayer[];
  /** Final argv (shell form already wrapped in the image's SHELL, e.g. ["/bin/sh","-c","make"]). */
  args: string[];
  env: string[]; // "K=V", image env + build args visible to RUN
  workdir: string; // absolute, "/" when unset
  user: string; // as in the image config: "", "name", "uid", "uid:gid", "name:group"
  network: "none" | "host";
  mounts: JobMount[];
  timeoutSeconds: number;
  /**
   * Repository the result layer is uploaded to (POST /v2/<repository>/blobs/uploads/). The job's layers
   * (`layers`, bind-mount `fromLayers`) are linked into it when the job is queued, so the runner reads
   * them through it too (GET /v2/<repository>/blobs/<digest>). Only runner tokens whose scope covers
   * this repository (`runner`, or `runner:<pattern>` matching it) ever receive the job.
   */
  repository: string;
  /**
   * The registry credential of this lease (Bearer for /v2 calls), minted when the job is claimed: it
   * reads and uploads blobs of `repository` and nothing else (no manifests, tags, deletes or other
   * repositories), and only while the lease lives. It dies when the job completes, is cancelled or
   * re-leased, or when the runner token that claimed it is revoked. Empty in what is queued.
   */
  registryToken: string;
  /** SOURCE_DATE_EPOCH for clamping mtimes in the produced layer. */
  sourceDateEpoch: number;
  /**
   * The build's cache scope (its namespace, BuildSpec.scope): a runner keeps `--mount=type=cache`
   * directories by (cacheScope, id), so builds of one namespace never see another's cache mounts.
   */
  cacheScope: string;
  /**
   * Secret values by id, only for the secrets this step mounts. Never logged, never in a layer. Sent
   * only to the current lease holder in the claim response; kiln keeps them apart from the queued job
   * and forgets them when the job ends (done or cancelled). A re-queued job keeps them until then.
   */
  secrets?: Record<string, string>;
}

/** What the BuildCoordinator (or an admin through POST /v1/jobs) queues: a job without a lease credential. */
export type QueuedJob = Omit<RunJob, "registryToken"> & { registryToken?: string };

export type RunResult =
  | {
      ok: true;
      /** The layer the command produced; null when it changed nothing (docker still records history). */
      layer: JobLayer | null;
    }
  | { ok: false; exitCode: number | null; message: string };

/**
 * What POST /v1/runners/claim answers with (204 when no job the runner token may serve came). The
 * Dispatcher records which runner token holds the lease; lease renewals, logs and the completion are
 * accepted only with that lease id from that same token (403 from another token, 410 once the lease is
 * lost).
 */
export interface ClaimedJob {
  /** The job with `registryToken` minted for this lease and, when the step mounts any, its `secrets`. */
  job: RunJob;
  leaseId: string;
  leaseExpiresAt: number; // ms since epoch; renew with POST /v1/jobs/:id/lease before it passes
}

/** Body of POST /v1/runners/claim. */
export interface ClaimRequest {
  /** Stable id of the runner (its warm rootfs cache is keyed by it for step preference). */
  runnerId: string;
  /** Platforms the runner executes, e.g. ["linux/amd64"]. */
  platforms: string[];
  labels?: Record<string, string>;
  /** Whether the runner may run `network: "host"` steps. */
  allowHostNetwork?: boolean;
  /** Long-poll time in seconds (0..25, default 25). */
  waitSeconds?: number;
  /** Requested lease length in seconds (clamped by the server; default 30). Short leases are for tests. */
  leaseSeconds?: number;
}

/** Header carrying the lease id on POST /v1/jobs/:id/logs (also accepted as `?leaseId=`). */
export const LEASE_HEADER = "kiln-lease-id";

/** Body of POST /v1/jobs/:id/lease. Answer: { leaseExpiresAt } or 410 when the lease is lost. */
export interface RenewLeaseRequest {
  leaseId: string;
}

/**
 * Body of POST /v1/jobs/:id/complete, from the lease holder's runner token. A result with a layer is
 * accepted only when that layer was uploaded to the job's repository (linked there) with the stated
 * size; otherwise 400 and the job stays leased (its build does not use the layer).
 */
export interface CompleteJobRequest {
  leaseId: string;
  result: RunResult;
}

/** State of a job in the Dispatcher (GET /v1/jobs/:id, admin). */
export type JobState = "queued" | "leased" | "done" | "cancelled";

export interface JobStatus {
  jobId: string;
  buildId: string;
  stepIndex: number;
  state: JobState;
  /** Repository of the job (decides which runner tokens may claim it). */
  repository: string;
  runnerId: string | null;
  /** Id of the API token holding (or that last held) the lease; "admin" for the admin token. */
  runnerTokenId: string | null;
  leaseId: string | null;
  leaseExpiresAt: number | null;
  attempts: number;
  result: RunResult | null;
  forwarded: boolean;
}
