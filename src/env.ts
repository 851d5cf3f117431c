/**
 * The kiln Worker's environment. Bindings and [vars] are generated from wrangler.toml by `npm run types`
 * (`wrangler types`, into worker-configuration.d.ts as `Cloudflare.Env`; CI checks it is current). The
 * settings below are secrets or optional vars wrangler cannot see; they merge into the same interface,
 * which also types `env` from `cloudflare:test`.
 */
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Cloudflare {
    interface Env {
      /**
       * `1` lets blob GETs (after the /v2 gate and the repository-link check) answer 307 with a presigned
       * URL of the blob's R2 object, so that pulls bypass the Worker (deployed only; needs the four
       * settings below). Unset: the Worker serves the bytes. Enabled but incomplete: bytes served, one warning.
       */
      KILN_R2_PRESIGN?: string;
      /** Cloudflare account id of the R2 S3 endpoint `https://<account>.r2.cloudflarestorage.com`. */
      KILN_R2_ACCOUNT_ID?: string;
      /** Name of the R2 bucket bound as BUCKET (the redirect names `/<bucket>/blobs/<alg>/<hex>`). */
      KILN_R2_BUCKET?: string;
      /** R2 S3-API access key id (secret); a read-only token for the bucket suffices. */
      KILN_R2_ACCESS_KEY_ID?: string;
      /** R2 S3-API secret access key (secret). */
      KILN_R2_SECRET_ACCESS_KEY?: string;
      /** Lifetime in seconds of a presigned blob URL (default 300, at most 3600). */
      KILN_R2_PRESIGN_TTL?: string;
      /** Admin API token (secret). Local default `kiln-dev-token` is set by `npm start` and tests. */
      KILN_ADMIN_TOKEN?: string;
      /** Key for signing registry Bearer tokens (secret); falls back to a key derived from the admin token. */
      KILN_TOKEN_SECRET?: string;
      /**
       * Internal hosts that URLs chosen by users (ADD <url>, webhook archives, FROM <host>/… without an
       * upstream entry) may reach although they are loopback, private or local names: comma-separated
       * `host`, `host:port`, `[v6]:port`, `*.suffix` or CIDR (`10.0.0.0/8`). Everything else internal is
       * refused (see src/http/outbound.ts); kiln's own hosts are refused even when listed.
       */
      KILN_OUTBOUND_ALLOW?: string;
      /**
       * Extra host names kiln answers to (comma-separated `host[:port]`, e.g. `kiln.example.com`): a base
       * named by one of them (`FROM kiln.example.com/team/base:1`) is read from kiln's own registry. The
       * host of the request that started the build always counts.
       */
      KILN_HOSTS?: string;
      /**
       * `1` shares the cache of Worker-computed steps (FROM, COPY, ADD, WORKDIR, ENV/LABEL/… metadata)
       * across namespaces; default: every cache entry stays inside its build's scope (namespace). RUN
       * results never cross scopes, nor does any step after a RUN (its parent key carries the scope).
       */
      KILN_SHARED_WORKER_CACHE?: string;
      /**
       * Deadline in seconds of a step computed in the Worker (FROM, COPY, ADD, WORKDIR, ENV/LABEL/…),
       * default 900: a step that has not finished by then fails the build with a message naming it.
       */
      KILN_STEP_TIMEOUT_SECONDS?: string;
      /**
       * How long in seconds a RUN step waits for a runner of its platform (default 600). When no runner
       * of that platform offered itself meanwhile, the step fails with `no runner for linux/arm64`.
       */
      KILN_RUNNER_WAIT_SECONDS?: string;
      /** Deadline in seconds of a RUN command on its runner (the job's timeoutSeconds; default 3600). */
      KILN_RUN_TIMEOUT_SECONDS?: string;
      /** A job is held this long (ms) for the runner that ran the build's previous step (default 2000). */
      KILN_DISPATCH_PREFER_MS?: string;
      /** A `--network=host` step waits this long (ms) for a runner that allows it (default 30000). */
      KILN_HOST_NETWORK_WAIT_MS?: string;
      /** A job whose lease expired this many times fails (default 3). */
      KILN_JOB_MAX_ATTEMPTS?: string;
      /** Lease length in seconds when a runner asks for none (default 30, at most 600). */
      KILN_RUNNER_LEASE_SECONDS?: string;
      /** A fresh lease lasts only this long (s) until its runner acknowledges it (default 10). */
      KILN_CLAIM_ACK_SECONDS?: string;
      /**
       * Largest build context in bytes (default 2 GiB, set in wrangler.toml): the tar's expanded size,
       * counted while it streams, so a gzip bomb is refused (413 naming this setting) after at most this
       * many decompressed bytes. Multipart parts and webhook archives count the same way.
       */
      KILN_MAX_CONTEXT_BYTES: string;
      /**
       * Most entries (files, directories, links; ignored ones too) a build context may have, default
       * 200,000; more is refused while streaming with a 413 naming this setting. Each entry costs its
       * line in the file index (~200 bytes of JSON) that the build holds in memory.
       */
      KILN_MAX_CONTEXT_ENTRIES?: string;
      /** Grace period of garbage collection in seconds (default 3600): nothing younger is collected. */
      KILN_GC_GRACE_SECONDS?: string;
      /** A build cache entry not hit for this many days is dropped by the next collection (default 30). */
      KILN_CACHE_MAX_AGE_DAYS?: string;
      /** Layer bytes kept per cache scope; beyond it the least recently hit entries are dropped (default: no budget). */
      KILN_CACHE_BUDGET_BYTES?: string;
      /** Pull-through records (upstream links, manifests) unused for this many days expire, so their blobs can be collected (default 30; 0: never). */
      KILN_PULL_THROUGH_MAX_AGE_DAYS?: string;
      /** Seconds of work per slice of a garbage collection (default 10); a longer one continues in the collector's alarm. */
      KILN_GC_SLICE_SECONDS?: string;
      /** Most rows one step of a garbage collection reads or decides at once (default 1000, 10 to 5000). */
      KILN_GC_PAGE_ROWS?: string;
      /**
       * Largest request body in bytes, like a deployed Worker's platform limit (100 MB on the Free and
       * Pro plans): a larger Content-Length is refused with 413 before reading, a chunked body once it
       * passes the limit. Unset: kiln sets none of its own. The e2e suite runs with 100 MB.
       */
      KILN_MAX_REQUEST_BYTES?: string;
    }
  }
}

/** Bindings and settings of the kiln Worker (see wrangler.toml and the settings above). */
export type Env = Cloudflare.Env;
