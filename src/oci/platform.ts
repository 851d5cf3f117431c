/**
 * Platforms (`linux/arm64/v8`): parse and normalize as containerd does, format, match a job to a
 * runner, and pick a manifest from an index or manifest list.
 */

/** An image's platform (the image index's `platform` object). */
export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
  features?: string[];
}

const ARCH_ALIASES: Record<string, string> = {
  x86_64: "amd64",
  "x86-64": "amd64",
  aarch64: "arm64",
  armhf: "arm",
  armel: "arm",
  i386: "386",
  i686: "386",
};

/** containerd's normalization: x86_64 → amd64, aarch64 → arm64, arm64 variant v8 is the default, arm defaults to v7. */
export function normalizePlatform(p: { os: string; architecture: string; variant?: string }): Platform {
  let architecture = ARCH_ALIASES[p.architecture] ?? p.architecture;
  let variant = p.variant || undefined;
  if (p.architecture === "armhf") variant ??= "v7";
  if (p.architecture === "armel") variant ??= "v6";
  if (architecture === "arm64" && (variant === "v8" || variant === "8")) variant = undefined;
  if (architecture === "arm" && variant === undefined) variant = "v7";
  if (architecture === "arm" && variant && /^\d+$/.test(variant)) variant = `v${variant}`;
  if (architecture === "amd64" && variant === "v1") variant = undefined;
  return variant ? { os: p.os, architecture, variant } : { os: p.os, architecture };
}

/** containerd's platforms.Parse + Normalize for the common cases: `linux/arm64/v8` → linux/arm64. */
export function parsePlatform(spec: string): Platform {
  const parts = spec.trim().toLowerCase().split("/");
  if (parts.length < 1 || parts.length > 3 || parts.some((p) => p === "")) {
    throw new Error(`invalid platform ${JSON.stringify(spec)}: expected os/arch[/variant]`);
  }
  if (parts.length === 1) parts.push(parts[0] === "windows" || parts[0] === "linux" ? "amd64" : parts[0]);
  return normalizePlatform({ os: parts[0], architecture: parts[1], variant: parts[2] });
}

/**
 * `os/arch[/variant]` split as written, without validating or normalizing (a build's platforms are
 * kept as the user named them); a missing part is "".
 */
export function splitPlatform(s: string): Platform {
  const [os = "", architecture = "", variant] = s.split("/");
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** `os/arch[/variant]`. */
export function formatPlatform(p: { os: string; architecture: string; variant?: string }): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/** Whether a runner platform ("linux/amd64", "linux/arm64/v8") can run a job platform. */
export function platformMatches(jobPlatform: string, runnerPlatforms: string[]): boolean {
  const [jos, jarch, jvar] = jobPlatform.split("/");
  return runnerPlatforms.some((rp) => {
    const [ros, rarch, rvar] = rp.split("/");
    if (ros !== jos || rarch !== jarch) return false;
    return !jvar || !rvar || jvar === rvar;
  });
}

/** An index entry as selectManifest reads it. */
export interface IndexEntry {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

/** Picks the entry for `want` from an index; attestation manifests (unknown/unknown) are skipped. */
export function selectManifest<E extends IndexEntry>(entries: E[], want: { os: string; architecture: string; variant?: string }): E | undefined {
  const target = normalizePlatform(want);
  const candidates = entries.filter((e) => {
    if (!e.platform) return false;
    if (e.annotations?.["vnd.docker.reference.type"] === "attestation-manifest") return false;
    if (e.platform.os === "unknown" || e.platform.architecture === "unknown") return false;
    const p = normalizePlatform(e.platform);
    return p.os === target.os && p.architecture === target.architecture;
  });
  const exact = candidates.find((e) => normalizePlatform(e.platform!).variant === target.variant);
  if (exact) return exact;
  // An arm/v7 request may use a v6 or v5 image; any variant of other architectures.
  if (target.architecture === "arm" && target.variant) {
    const want = Number(target.variant.slice(1));
    const lower = candidates
      .map((e) => ({ e, v: Number((normalizePlatform(e.platform!).variant ?? "v0").slice(1)) }))
      .filter((x) => x.v <= want)
      .sort((a, b) => b.v - a.v);
    return lower[0]?.e;
  }
  return candidates.find((e) => !normalizePlatform(e.platform!).variant) ?? candidates[0];
}
