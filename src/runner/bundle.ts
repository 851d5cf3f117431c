import { readFileSync } from "node:fs";

// The OCI runtime bundle config (config.json) for one RUN step, shaped like docker's defaults.

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

/** docker's default capability set. */
export const DEFAULT_CAPABILITIES = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface BundleOptions {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  hostNetwork: boolean;
  hostname: string;
  /** Extra mounts after the standard ones (resolv.conf, hosts, user mounts). */
  mounts: OciMount[];
}

/** The standard mounts of a container (/proc, /dev, /sys …). */
export function standardMounts(hostNetwork: boolean): OciMount[] {
  return [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    hostNetwork
      ? { destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] }
      : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
  ];
}

/** The open-files limit for containers: docker's 1048576, or the runner's own hard limit when lower. */
export function nofileLimit(): number {
  try {
    const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m && m[1] !== "unlimited") return Math.min(1048576, Number(m[1]));
  } catch { /* not Linux */ }
  return 1048576;
}

/** CLONE_NEW* flags: creating namespaces is refused inside a step, as docker's profile does without CAP_SYS_ADMIN. */
const CLONE_NS_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080];

/**
 * A seccomp profile in the spirit of docker's default: everything allowed except the syscalls that
 * widen the kernel attack surface or need capabilities a step does not have (user namespaces, keyrings,
 * bpf, module loading, mounts, …). clone3 answers ENOSYS so libc falls back to clone, whose flags are
 * checked.
 */
export function seccompProfile(): Record<string, unknown> {
  const denied = [
    "acct", "add_key", "bpf", "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "init_module", "iopl", "ioperm", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
    "pivot_root", "quotactl", "reboot", "request_key", "setns", "swapoff", "swapon", "umount2", "unshare",
    "userfaultfd", "vm86", "vm86old",
  ];
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    syscalls: [
      { names: denied, action: "SCMP_ACT_ERRNO", errnoRet: 1 },
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
      ...CLONE_NS_FLAGS.map((flag) => ({
        names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: 1,
        args: [{ index: 0, value: flag, valueTwo: flag, op: "SCMP_CMP_MASKED_EQ" }],
      })),
    ],
  };
}

export function bundleConfig(o: BundleOptions): Record<string, unknown> {
  const namespaces = [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }];
  if (!o.hostNetwork) namespaces.push({ type: "network" });
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: o.uid, gid: o.gid, additionalGids: o.additionalGids },
      args: o.args,
      env: o.env,
      cwd: o.cwd,
      capabilities: {
        bounding: DEFAULT_CAPABILITIES,
        effective: o.uid === 0 ? DEFAULT_CAPABILITIES : [],
        permitted: o.uid === 0 ? DEFAULT_CAPABILITIES : [],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: nofileLimit(), soft: nofileLimit() }],
      noNewPrivileges: true,
    },
    root: { path: o.rootfs, readonly: false },
    hostname: o.hostname,
    mounts: [...standardMounts(o.hostNetwork), ...o.mounts],
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      namespaces,
      maskedPaths: [
        "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
      seccomp: seccompProfile(),
    },
  };
}

/** Adds PATH and HOME when the image does not set them (as docker does). */
export function completeEnv(env: string[], home: string): string[] {
  const out = [...env];
  const has = (k: string) => out.some((e) => e.startsWith(`${k}=`));
  if (!has("PATH")) out.unshift(`PATH=${DEFAULT_PATH}`);
  if (!has("HOME")) out.push(`HOME=${home}`);
  return out;
}
