// Real container clients with isolated configuration: umoci (build an OCI layout around busybox-static),
// skopeo (copy/inspect/list-tags) and podman (pull/run with runc, vfs storage, no CNI network).
// Host config under /etc/containers never matters: registries.conf, policy.json, containers.conf and
// storage.conf come from a temp dir through the environment and flags.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, copyFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run, runOk, type RunResult } from "./proc";

export const BUSYBOX = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p)) ?? "/bin/busybox";

/** A temp home for container tools: config files and an env that points every tool at them. */
export interface ContainerSandbox {
  dir: string;
  policy: string;
  env: NodeJS.ProcessEnv;
  /** podman's global flags: runc, vfs storage in the sandbox, cgroupfs, file events. */
  podmanGlobal: string[];
}

export function containerSandbox(insecureHosts: string[] = []): ContainerSandbox {
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-ctr-"));
  const policy = path.join(dir, "policy.json");
  writeFileSync(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  const registries = path.join(dir, "registries.conf");
  writeFileSync(registries, [
    'unqualified-search-registries = []',
    'short-name-mode = "disabled"',
    ...insecureHosts.flatMap((h) => ["[[registry]]", `location = "${h}"`, "insecure = true", ""]),
  ].join("\n"));
  const containersConf = path.join(dir, "containers.conf");
  writeFileSync(containersConf, [
    "[containers]",
    'netns = "none"',
    'cgroupns = "host"',
    "[engine]",
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    'runtime = "runc"',
    "[network]",
    `network_config_dir = "${path.join(dir, "net")}"`,
    "",
  ].join("\n"));
  const storageConf = path.join(dir, "storage.conf");
  writeFileSync(storageConf, ["[storage]", 'driver = "vfs"', `runroot = "${path.join(dir, "runroot")}"`, `graphroot = "${path.join(dir, "root")}"`, ""].join("\n"));
  mkdirSync(path.join(dir, "home"), { recursive: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_REGISTRIES_CONF: registries,
    CONTAINERS_CONF: containersConf,
    CONTAINERS_STORAGE_CONF: storageConf,
    REGISTRY_AUTH_FILE: path.join(dir, "auth.json"),
    XDG_CONFIG_HOME: path.join(dir, "home", ".config"),
    XDG_RUNTIME_DIR: path.join(dir, "xdg-run"),
    TMPDIR: os.tmpdir(),
  };
  mkdirSync(path.join(dir, "xdg-run"), { recursive: true, mode: 0o700 });
  const podmanGlobal = [
    "--runtime", "runc", "--storage-driver", "vfs",
    "--root", path.join(dir, "root"), "--runroot", path.join(dir, "runroot"),
    "--cgroup-manager", "cgroupfs", "--events-backend", "file",
    "--tmpdir", path.join(dir, "libpod-tmp"),
  ];
  return { dir, policy, env, podmanGlobal };
}

export function skopeo(sb: ContainerSandbox, args: string[], timeoutMs = 180_000): Promise<RunResult> {
  return run("skopeo", ["--policy", sb.policy, ...args], { env: sb.env, timeoutMs });
}

export function podman(sb: ContainerSandbox, args: string[], timeoutMs = 180_000, input?: string): Promise<RunResult> {
  return run("podman", [...sb.podmanGlobal, ...args], { env: sb.env, timeoutMs, input });
}

/** Cleans podman's vfs storage (its files are owned by root and mounted read-only sometimes). */
export async function podmanReset(sb: ContainerSandbox): Promise<void> {
  await run("podman", [...sb.podmanGlobal, "system", "reset", "--force"], { env: sb.env, timeoutMs: 60_000 });
}

/**
 * An OCI image layout at `<dir>` tagged `latest`: one layer with busybox-static in /bin plus symlinks
 * (sh, ls, echo, cat, …), cmd `sh`, PATH set. Built with umoci init/new/insert/config, then gc'd.
 */
export async function buildBusyboxLayout(dir: string, tag = "latest"): Promise<{ layout: string; ref: string }> {
  const work = mkdtempSync(path.join(os.tmpdir(), "kiln-umoci-"));
  const layout = dir;
  const ref = `${layout}:${tag}`;
  await runOk("umoci", ["init", "--layout", layout]);
  await runOk("umoci", ["new", "--image", ref]);
  const rootfs = path.join(work, "rootfs");
  mkdirSync(path.join(rootfs, "bin"), { recursive: true });
  copyFileSync(BUSYBOX, path.join(rootfs, "bin", "busybox"));
  for (const applet of ["sh", "ls", "echo", "cat", "env", "true", "uname"]) symlinkSync("busybox", path.join(rootfs, "bin", applet));
  mkdirSync(path.join(rootfs, "tmp"), { mode: 0o1777 });
  await runOk("umoci", ["insert", "--image", ref, rootfs, "/"]);
  await runOk("umoci", ["config", "--image", ref, "--config.cmd", "sh", "--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "--author", "kiln-e2e"]);
  await runOk("umoci", ["gc", "--layout", layout]);
  return { layout, ref };
}

/** Reads an OCI layout: the manifest of `tag` (bytes + digest) and the blobs it references. */
export function readLayout(layout: string, tag = "latest") {
  const index = JSON.parse(readFileSync(path.join(layout, "index.json"), "utf8")) as {
    manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>;
  };
  const desc = index.manifests.find((m) => m.annotations?.["org.opencontainers.image.ref.name"] === tag) ?? index.manifests[0];
  if (!desc) throw new Error(`${layout}: no manifest for ${tag}`);
  const blob = (digest: string) => readFileSync(path.join(layout, "blobs", ...digest.split(":")));
  const manifestBytes = blob(desc.digest);
  const manifest = JSON.parse(manifestBytes.toString("utf8")) as {
    mediaType?: string; config: { digest: string; size: number; mediaType: string }; layers: Array<{ digest: string; size: number; mediaType: string }>;
  };
  return { desc, manifestBytes, manifest, blob };
}
