// Debian's docker-registry (CNCF distribution 2.x) as a reference registry: filesystem storage in a temp
// dir, listening on 127.0.0.1. Used to prove the e2e harness and as the peer in benchmarks.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { freePort, have, stopProcessGroup, waitForHttp } from "../server";

export interface PeerRegistry {
  name: string;
  url: string;
  port: number;
  /** `127.0.0.1:<port>`, for image references. */
  host: string;
  dataDir: string;
  process: ChildProcess;
  stop(wipe?: boolean): Promise<void>;
}

export const DOCKER_REGISTRY = "/usr/bin/docker-registry";
export const haveDockerRegistry = () => have("docker-registry");

export async function startPeerRegistry(opts: { dataDir?: string; port?: number } = {}): Promise<PeerRegistry> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), "kiln-peer-"));
  const port = opts.port ?? (await freePort());
  const config = path.join(dataDir, "config.yml");
  writeFileSync(config, [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${path.join(dataDir, "storage")}`,
    "  delete:",
    "    enabled: true",
    "  cache:",
    "    blobdescriptor: inmemory",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    // a fixed secret: upload state tokens stay valid across a restart
    "  secret: kiln-e2e-peer-secret",
    "",
  ].join("\n"));
  const child = spawn("docker-registry", ["serve", config], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let output = "";
  child.stdout!.on("data", (d) => { output += d; });
  child.stderr!.on("data", (d) => { output += d; });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/v2/`, child, () => output, {
    timeoutMs: 20_000, intervalMs: 100, what: "docker-registry", ready: (res) => res.status === 200 || res.status === 401,
  });
  return {
    name: "docker-registry", url, port, host: `127.0.0.1:${port}`, dataDir, process: child,
    async stop(wipe = false) {
      await stopProcessGroup(child);
      if (wipe) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
