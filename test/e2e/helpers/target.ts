// The registry under test: kiln (`wrangler dev`, default) or, with E2E_REGISTRY=peer, Debian's
// docker-registry — the same e2e tests run against both, which proves the harness independently of kiln.
import { startKiln, type KilnServer } from "../server";
import { registryCreds } from "./auth";
import type { Credentials } from "./distribution";
import { startPeerRegistry, type PeerRegistry } from "./peer";
import { startTlsGuard } from "./tlsguard";

export type TargetKind = "kiln" | "peer";
export const TARGET: TargetKind = process.env.E2E_REGISTRY === "peer" ? "peer" : "kiln";

export interface RegistryTarget {
  kind: TargetKind;
  url: string;
  /**
   * `127.0.0.1:<port>` for image references given to skopeo/podman (for kiln: a TLS guard in front of
   * `wrangler dev`, see tlsguard.ts; HTTP requests from the tests go to `url` directly).
   */
  host: string;
  /** Whether the target enforces credentials (kiln does; the peer runs without auth). */
  authenticates: boolean;
  /** Credentials with `scopes` (e.g. `repository:e2e/*:pull,push`); dummy ones for the peer. */
  creds(scopes: string[]): Promise<Credentials>;
  /** Credentials of a token with the `admin` scope (created through POST /v1/tokens). */
  adminCreds(): Promise<Credentials>;
  /** Stops and starts the server again on the same port with the same state. */
  restart(): Promise<void>;
  stop(wipe?: boolean): Promise<void>;
}

export async function startTarget(kind: TargetKind = TARGET): Promise<RegistryTarget> {
  if (kind === "peer") {
    let peer: PeerRegistry = await startPeerRegistry();
    const t: RegistryTarget = {
      kind, url: peer.url, host: peer.host, authenticates: false,
      creds: async () => ({ username: "nobody", password: "unused" }),
      adminCreds: async () => ({ username: "nobody", password: "unused" }),
      async restart() { await peer.stop(); peer = await startPeerRegistry({ dataDir: peer.dataDir, port: peer.port }); },
      async stop(wipe = true) { await peer.stop(wipe); },
    };
    return t;
  }
  let kiln: KilnServer = await startKiln();
  const guard = process.env.E2E_NO_TLS_GUARD ? undefined : await startTlsGuard(kiln.port);
  return {
    kind, url: kiln.url, host: guard?.host ?? `127.0.0.1:${kiln.port}`, authenticates: true,
    creds: (scopes) => registryCreds(kiln.url, scopes),
    adminCreds: () => registryCreds(kiln.url, ["admin"], "e2e-admin"),
    async restart() { await kiln.stop(); kiln = await startKiln({ stateDir: kiln.stateDir, port: kiln.port }); },
    async stop(wipe = true) { await guard?.close(); await kiln.stop(wipe); },
  };
}
