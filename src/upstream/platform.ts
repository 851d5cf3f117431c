/** Platforms (`linux/arm64/v8`) and picking a manifest from an index or manifest list. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatform(s: string): Platform {
  const parts = s.trim().toLowerCase().split("/");
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) {
    throw new Error(`invalid platform "${s}": expected os/arch[/variant], e.g. linux/amd64`);
  }
  return normalizePlatform({ os: parts[0], architecture: parts[1], variant: parts[2] });
}

/** containerd's normalization: x86_64 → amd64, aarch64 → arm64, arm64 variant v8 is the default. */
export function normalizePlatform(p: Platform): Platform {
  let arch = p.architecture;
  let variant = p.variant || undefined;
  if (arch === "x86_64" || arch === "x86-64") arch = "amd64";
  if (arch === "aarch64") arch = "arm64";
  if (arch === "arm64" && (variant === "v8" || variant === "8")) variant = undefined;
  if (arch === "armhf") { arch = "arm"; variant = "v7"; }
  if (arch === "armel") { arch = "arm"; variant = "v6"; }
  if (arch === "arm" && !variant) variant = "v7";
  if (arch === "arm" && variant && /^\d+$/.test(variant)) variant = `v${variant}`;
  return { os: p.os, architecture: arch, ...(variant ? { variant } : {}) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

export interface IndexEntry {
  mediaType?: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

/** Picks the entry for `want` from an index; attestation manifests (unknown/unknown) are skipped. */
export function selectManifest(entries: IndexEntry[], want: Platform): IndexEntry | undefined {
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
