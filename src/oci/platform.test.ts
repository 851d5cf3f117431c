import { describe, expect, it } from "vitest";
import { formatPlatform, normalizePlatform, parsePlatform, platformMatches, selectManifest, splitPlatform } from "./platform";

describe("platforms", () => {
  it("normalizes like containerd", () => {
    expect(parsePlatform("linux/x86_64")).toEqual({ os: "linux", architecture: "amd64" });
    expect(parsePlatform("linux/arm64/v8")).toEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatform("linux/arm")).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(normalizePlatform({ os: "linux", architecture: "aarch64" })).toEqual({ os: "linux", architecture: "arm64" });
    expect(parsePlatform("linux/i386")).toEqual({ os: "linux", architecture: "386" });
    expect(parsePlatform("linux/armhf")).toEqual({ os: "linux", architecture: "arm", variant: "v7" });
    expect(parsePlatform("linux/arm/6")).toEqual({ os: "linux", architecture: "arm", variant: "v6" });
    expect(parsePlatform("linux/amd64/v1")).toEqual({ os: "linux", architecture: "amd64" });
    expect(parsePlatform("linux")).toEqual({ os: "linux", architecture: "amd64" });
    for (const bad of ["", "linux//v7", "linux/amd64/v2/x"]) expect(() => parsePlatform(bad), bad).toThrow(/os\/arch/);
  });

  it("splits os/arch[/variant] as written", () => {
    expect(splitPlatform("linux/arm64/v8")).toEqual({ os: "linux", architecture: "arm64", variant: "v8" });
    expect(splitPlatform("linux/x86_64")).toEqual({ os: "linux", architecture: "x86_64" });
    expect(splitPlatform("linux")).toEqual({ os: "linux", architecture: "" });
  });

  it("formats os/arch[/variant]", () => {
    expect(formatPlatform({ os: "linux", architecture: "arm64" })).toBe("linux/arm64");
    expect(formatPlatform({ os: "linux", architecture: "arm", variant: "v7" })).toBe("linux/arm/v7");
  });

  it("matches a job platform to a runner's platforms, a missing variant matching any", () => {
    expect(platformMatches("linux/amd64", ["linux/arm64", "linux/amd64"])).toBe(true);
    expect(platformMatches("linux/arm64/v8", ["linux/arm64"])).toBe(true);
    expect(platformMatches("linux/arm/v7", ["linux/arm/v6"])).toBe(false);
    expect(platformMatches("linux/arm64", ["darwin/arm64"])).toBe(false);
  });

  const d = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
  const index = [
    { digest: d(1), size: 1, platform: { os: "linux", architecture: "amd64" } },
    { digest: d(2), size: 1, platform: { os: "linux", architecture: "arm64", variant: "v8" } },
    { digest: d(3), size: 1, platform: { os: "linux", architecture: "arm", variant: "v6" } },
    { digest: d(4), size: 1, platform: { os: "unknown", architecture: "unknown" }, annotations: { "vnd.docker.reference.type": "attestation-manifest" } },
  ];
  it("picks the manifest of the build's platform and skips attestations", () => {
    expect(selectManifest(index, { os: "linux", architecture: "amd64" })?.digest).toBe(d(1));
    expect(selectManifest(index, { os: "linux", architecture: "arm64" })?.digest).toBe(d(2));
    expect(selectManifest(index, { os: "linux", architecture: "arm", variant: "v7" })?.digest).toBe(d(3));
    expect(selectManifest(index, { os: "linux", architecture: "s390x" })).toBeUndefined();
    expect(selectManifest(index, { os: "unknown", architecture: "unknown" })).toBeUndefined();
  });
});

