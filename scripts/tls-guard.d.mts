// Types for tls-guard.mjs (imported by test/e2e/helpers/tlsguard.ts).
export interface TlsGuardServer {
  /** The bound port (the chosen one when listenPort is 0). */
  port: number;
  close(): Promise<void>;
}
export function startTlsGuard(opts: { listenPort: number | string; targetPort: number | string | (() => number | undefined); host?: string }): Promise<TlsGuardServer>;
export function freePort(host?: string): Promise<number>;
