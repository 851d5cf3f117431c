import type { BuildCoordinator } from "./builder/coordinator";
import type { Dispatcher } from "./builder/dispatcher";

/** Bindings and vars of the kiln Worker (see wrangler.toml). */
export interface Env {
  BUCKET: R2Bucket;
  DB: D1Database;
  BUILD_COORDINATOR: DurableObjectNamespace<BuildCoordinator>;
  DISPATCHER: DurableObjectNamespace<Dispatcher>;
  /** Admin API token (secret). Local default `kiln-dev-token` is set by `npm start` and tests. */
  KILN_ADMIN_TOKEN?: string;
  /** Key for signing registry Bearer tokens (secret); falls back to a key derived from the admin token. */
  KILN_TOKEN_SECRET?: string;
  KILN_MAX_CONTEXT_BYTES?: string;
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
}

type KilnEnv = Env;
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Cloudflare {
    interface Env extends KilnEnv {}
  }
}
