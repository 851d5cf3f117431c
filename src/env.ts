import type { BuildCoordinator } from "./build/coordinator";
import type { Dispatcher } from "./build/dispatcher";

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
}

type KilnEnv = Env;
declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Cloudflare {
    interface Env extends KilnEnv {}
  }
}
