import { describe, expect, it } from "vitest";
import { amzDate, awsUriEncode, presignParts, presignUrl } from "./sigv4";

// The example of https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
// ("An example"): GET of test.txt in examplebucket, 24 hours, with AWS's documented example keys.
const AWS_EXAMPLE = {
  method: "GET" as const,
  url: "https://examplebucket.s3.amazonaws.com/test.txt",
  region: "us-east-1",
  service: "s3",
  accessKeyId: "AKIAIOSFODNN7EXAMPLE",
  secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
  date: new Date("2013-05-24T00:00:00Z"),
  expiresSeconds: 86400,
};

describe("SigV4 presigned URLs", () => {
  it("reproduces AWS's documented example: canonical request, string to sign, signature, URL", async () => {
    const parts = await presignParts(AWS_EXAMPLE);
    expect(parts.canonicalRequest).toBe([
      "GET",
      "/test.txt",
      "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host",
      "host:examplebucket.s3.amazonaws.com",
      "",
      "host",
      "UNSIGNED-PAYLOAD",
    ].join("\n"));
    expect(parts.stringToSign).toBe([
      "AWS4-HMAC-SHA256",
      "20130524T000000Z",
      "20130524/us-east-1/s3/aws4_request",
      "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04",
    ].join("\n"));
    expect(parts.signature).toBe("aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    expect(await presignUrl(AWS_EXAMPLE)).toBe(
      "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256" +
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request" +
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host" +
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    );
  });

  it("signs every input: a different secret, time, expiry, host or path changes the signature", async () => {
    const base = (await presignParts(AWS_EXAMPLE)).signature;
    const variants = [
      { secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ" },
      { date: new Date("2013-05-24T00:00:01Z") },
      { expiresSeconds: 86399 },
      { url: "https://otherbucket.s3.amazonaws.com/test.txt" },
      { url: "https://examplebucket.s3.amazonaws.com/test.txu" },
      { region: "auto" },
      { method: "HEAD" as const },
    ];
    const seen = new Set([base]);
    for (const v of variants) {
      const sig = (await presignParts({ ...AWS_EXAMPLE, ...v })).signature;
      expect(sig, JSON.stringify(v)).toMatch(/^[0-9a-f]{64}$/);
      seen.add(sig);
    }
    expect(seen.size).toBe(variants.length + 1);
  });

  it("encodes as SigV4 wants and refuses expiries S3 would refuse", async () => {
    expect(awsUriEncode("a b/c~d_e.f-g+h=é")).toBe("a%20b%2Fc~d_e.f-g%2Bh%3D%C3%A9");
    expect(awsUriEncode("blobs/sha256/ab", true)).toBe("blobs/sha256/ab");
    expect(amzDate(new Date("2026-12-05T20:01:16.789Z"))).toBe("20261205T200116Z");
    for (const expiresSeconds of [0, -1, 1.5, 604_801]) {
      await expect(presignParts({ ...AWS_EXAMPLE, expiresSeconds })).rejects.toThrow(RangeError);
    }
    await expect(presignParts({ ...AWS_EXAMPLE, url: "https://h.example/k?x=1" })).rejects.toThrow(TypeError);
  });
});
