// `wrangler dev` (workerd) never answers a TLS ClientHello on its plain-HTTP port: the connection just
// hangs. skopeo/podman with --tls-verify=false try HTTPS first and fall back to HTTP only after Go's
// 10 s TLS handshake timeout — on every command. The TCP front of scripts/tls-guard.mjs (the one
// `npm start` uses) closes TLS attempts at once (so the clients fall back immediately, as with
// docker-registry, which answers 400) and pipes everything else unchanged to the server.
// E2E_NO_TLS_GUARD=1 points the clients at the server directly.
import { startTlsGuard as startGuard } from "../../../scripts/tls-guard.mjs";

export interface TlsGuard { port: number; host: string; close(): Promise<void> }

/** A guard on a free 127.0.0.1 port in front of 127.0.0.1:`targetPort`. */
export async function startTlsGuard(targetPort: number): Promise<TlsGuard> {
  const guard = await startGuard({ listenPort: 0, targetPort });
  return { port: guard.port, host: `127.0.0.1:${guard.port}`, close: guard.close };
}
