import { afterEach, describe, expect, it, vi } from "vitest";
import type { Env } from "../env";
import { presignConfig, presignedBlobUrl } from "./presign";
import { presignParts } from "./sigv4";

const HEX = "a".repeat(64);
const DIGEST = `sha256:${HEX}`;
const ON = {
  KILN_R2_PRESIGN: "1",
  KILN_R2_ACCOUNT_ID: "0123456789abcdef0123456789abcdef",
  KILN_R2_BUCKET: "kiln-blobs",
  KILN_R2_ACCESS_KEY_ID: "AKIDEXAMPLE",
  KILN_R2_SECRET_ACCESS_KEY: "secret/EXAMPLE+key",
};
const envOf = (vars: Record<string, string | undefined>) => vars as unknown as Env;

afterEach(() => vi.restoreAllMocks());

describe("presigned blob URLs", () => {
  // First in the file: the warning is logged once per isolate.
  it("is off when unset and, when enabled but incomplete, off with exactly one warning naming what is missing", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    expect(await presignedBlobUrl(envOf({}), DIGEST)).toBeNull();
    expect(await presignedBlobUrl(envOf({ ...ON, KILN_R2_PRESIGN: "0" }), DIGEST)).toBeNull();
    expect(warn).not.toHaveBeenCalled();
    expect(await presignedBlobUrl(envOf({ ...ON, KILN_R2_SECRET_ACCESS_KEY: undefined }), DIGEST)).toBeNull();
    expect(await presignedBlobUrl(envOf({ ...ON, KILN_R2_BUCKET: " " }), DIGEST)).toBeNull();
    expect(await presignedBlobUrl(envOf({ ...ON, KILN_R2_PRESIGN_TTL: "7200" }), DIGEST)).toBeNull();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toMatch(/KILN_R2_SECRET_ACCESS_KEY not set.*served by the Worker/);
  });

  it("signs a path-style R2 URL of the blob's key, region auto, service s3, for the configured TTL", async () => {
    const now = new Date("2026-12-05T20:00:00Z");
    const url = new URL((await presignedBlobUrl(envOf(ON), DIGEST, undefined, now))!);
    expect(url.origin).toBe(`https://${ON.KILN_R2_ACCOUNT_ID}.r2.cloudflarestorage.com`);
    expect(url.pathname).toBe(`/kiln-blobs/blobs/sha256/${HEX}`);
    expect(url.searchParams.get("X-Amz-Credential")).toBe("AKIDEXAMPLE/20261205/auto/s3/aws4_request");
    expect(url.searchParams.get("X-Amz-Expires")).toBe("300");
    expect(url.searchParams.get("X-Amz-Date")).toBe("20261205T200000Z");
    const expected = await presignParts({
      method: "GET", url: `${url.origin}${url.pathname}`, region: "auto", service: "s3",
      accessKeyId: ON.KILN_R2_ACCESS_KEY_ID, secretAccessKey: ON.KILN_R2_SECRET_ACCESS_KEY, date: now, expiresSeconds: 300,
    });
    expect(url.searchParams.get("X-Amz-Signature")).toBe(expected.signature);
    const ttl = new URL((await presignedBlobUrl(envOf({ ...ON, KILN_R2_PRESIGN_TTL: "60" }), DIGEST))!);
    expect(ttl.searchParams.get("X-Amz-Expires")).toBe("60");
    const capped = new URL((await presignedBlobUrl(envOf(ON), DIGEST, 86400))!);
    expect(capped.searchParams.get("X-Amz-Expires")).toBe("3600");
    expect(presignConfig(envOf({ ...ON, KILN_R2_PRESIGN_TTL: "3600" }))?.ttlSeconds).toBe(3600);
    expect(await presignedBlobUrl(envOf(ON), "sha256:../../etc")).toBeNull();
  });
});
