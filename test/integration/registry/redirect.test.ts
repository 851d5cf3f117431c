// KILN_R2_PRESIGN: blob GETs answer 307 to a presigned R2 URL, only after the /v2 gate and the
// repository-link check; HEAD and the default (settings off) keep serving from the Worker.
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import worker from "../../../src/index";
import type { Env } from "../../../src/env";
import { presignParts } from "../../../src/storage/sigv4";
import { createToken } from "../auth/helpers";
import { AUTH, BASE, pushBlob, randomBytes } from "./helpers";

const SETTINGS = {
  KILN_R2_PRESIGN: "1",
  KILN_R2_ACCOUNT_ID: "f00dfeedf00dfeedf00dfeedf00dfeed",
  KILN_R2_BUCKET: "kiln-test-bucket",
  KILN_R2_ACCESS_KEY_ID: "AKIDKILNTEST",
  KILN_R2_SECRET_ACCESS_KEY: "kiln/test+secret",
  KILN_R2_PRESIGN_TTL: "120",
};

/** The Worker with extra settings (SELF carries only vitest.config.ts's bindings). */
async function call(path: string, settings: Record<string, string>, init: RequestInit = {}, authorization: string | null = AUTH): Promise<Response> {
  const headers = new Headers(init.headers);
  if (authorization) headers.set("authorization", authorization);
  const ctx = createExecutionContext();
  const res = await worker.fetch(new Request(`${BASE}${path}`, { ...init, headers }), { ...(env as unknown as Env), ...settings } as Env, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** Recomputes the signature of a presigned Location from its own parameters and the test's secret. */
async function expectValidPresign(location: string, digest: string): Promise<URL> {
  const url = new URL(location);
  expect(url.origin).toBe(`https://${SETTINGS.KILN_R2_ACCOUNT_ID}.r2.cloudflarestorage.com`);
  expect(url.pathname).toBe(`/${SETTINGS.KILN_R2_BUCKET}/blobs/sha256/${digest.slice("sha256:".length)}`);
  const q = url.searchParams;
  expect(q.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
  expect(q.get("X-Amz-SignedHeaders")).toBe("host");
  expect(q.get("X-Amz-Expires")).toBe("120");
  const stamp = q.get("X-Amz-Date")!;
  expect(stamp).toMatch(/^\d{8}T\d{6}Z$/);
  const date = new Date(`${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}Z`);
  expect(Math.abs(Date.now() - date.getTime())).toBeLessThan(60_000);
  expect(q.get("X-Amz-Credential")).toBe(`${SETTINGS.KILN_R2_ACCESS_KEY_ID}/${stamp.slice(0, 8)}/auto/s3/aws4_request`);
  const { signature } = await presignParts({
    method: "GET", url: `${url.origin}${url.pathname}`, region: "auto", service: "s3",
    accessKeyId: SETTINGS.KILN_R2_ACCESS_KEY_ID, secretAccessKey: SETTINGS.KILN_R2_SECRET_ACCESS_KEY, date, expiresSeconds: 120,
  });
  expect(q.get("X-Amz-Signature")).toBe(signature);
  const forged = await presignParts({
    method: "GET", url: `${url.origin}${url.pathname}`, region: "auto", service: "s3",
    accessKeyId: SETTINGS.KILN_R2_ACCESS_KEY_ID, secretAccessKey: "another secret", date, expiresSeconds: 120,
  });
  expect(q.get("X-Amz-Signature")).not.toBe(forged.signature);
  return url;
}

afterEach(() => vi.restoreAllMocks());

describe("blob GET redirects to presigned R2 URLs (KILN_R2_PRESIGN)", () => {
  it("answers 307 with a signed Location naming the blob's object, for full and ranged GETs; HEAD stays direct", async () => {
    const data = randomBytes(4096);
    const digest = await pushBlob("redirect/app", data);
    const get = await call(`/v2/redirect/app/blobs/${digest}`, SETTINGS);
    expect(get.status).toBe(307);
    expect(get.headers.get("docker-content-digest")).toBe(digest);
    expect(get.headers.get("cache-control")).toBe("no-store");
    expect(await get.text()).toBe("");
    await expectValidPresign(get.headers.get("location")!, digest);

    const ranged = await call(`/v2/redirect/app/blobs/${digest}`, SETTINGS, { headers: { range: "bytes=10-19" } });
    expect(ranged.status).toBe(307);
    await ranged.arrayBuffer();
    await expectValidPresign(ranged.headers.get("location")!, digest);

    const head = await call(`/v2/redirect/app/blobs/${digest}`, SETTINGS, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("location")).toBeNull();
    expect(head.headers.get("content-length")).toBe("4096");
  });

  it("redirects only after the gate and the repository link: 401 without credentials, 403 without pull, 404 unlinked", async () => {
    const digest = await pushBlob("redirect/private", randomBytes(512));
    const anonymous = await call(`/v2/redirect/private/blobs/${digest}`, SETTINGS, {}, null);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("location")).toBeNull();
    await anonymous.arrayBuffer();

    const { token } = await createToken(["repository:redirect/elsewhere:pull"]);
    const denied = await call(`/v2/redirect/private/blobs/${digest}`, SETTINGS, {}, `Basic ${btoa(`someone:${token}`)}`);
    expect(denied.status).toBe(403);
    expect(denied.headers.get("location")).toBeNull();
    await denied.arrayBuffer();

    const unlinked = await call(`/v2/redirect/elsewhere/blobs/${digest}`, SETTINGS);
    expect(unlinked.status).toBe(404);
    expect(unlinked.headers.get("location")).toBeNull();
    expect(await unlinked.json()).toMatchObject({ errors: [{ code: "BLOB_UNKNOWN" }] });
  });

  it("serves the bytes itself when the settings are off or incomplete (never a broken redirect)", async () => {
    const data = randomBytes(2048);
    const digest = await pushBlob("redirect/direct", data);
    const off = await call(`/v2/redirect/direct/blobs/${digest}`, {});
    expect(off.status).toBe(200);
    expect(new Uint8Array(await off.arrayBuffer())).toEqual(data);

    vi.spyOn(console, "warn").mockImplementation(() => {});
    for (const missing of ["KILN_R2_ACCOUNT_ID", "KILN_R2_BUCKET", "KILN_R2_ACCESS_KEY_ID", "KILN_R2_SECRET_ACCESS_KEY"]) {
      const partial: Record<string, string> = { ...SETTINGS };
      delete partial[missing];
      const res = await call(`/v2/redirect/direct/blobs/${digest}`, partial, { headers: { range: "bytes=0-9" } });
      expect(res.status, missing).toBe(206);
      expect(res.headers.get("location")).toBeNull();
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(data.slice(0, 10));
    }
  });
});
