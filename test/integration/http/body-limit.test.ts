// KILN_MAX_REQUEST_BYTES (issue 14): the Worker refuses bodies over the limit with 413 as a deployed
// Worker's platform does, declared or streamed, on /v2 (OCI error naming `kiln push`) and /v1.
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import worker from "../../../src/index";

const BASE = "http://kiln.test";
const ADMIN = "Bearer kiln-test-admin";
const LIMIT = 64 * 1024;

async function call(req: Request, limit: number | null = LIMIT): Promise<Response> {
  const ctx = createExecutionContext();
  const e = { ...env, KILN_MAX_REQUEST_BYTES: limit === null ? undefined : String(limit) } as typeof env;
  const res = await worker.fetch(req as Request<unknown, IncomingRequestCfProperties>, e, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

/** A body of `n` bytes sent in 8 KiB chunks, with no length known ahead (chunked). */
function streamed(n: number, seen: { bytes: number }): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent >= n) return c.close();
      const k = Math.min(8192, n - sent);
      sent += k;
      seen.bytes = sent;
      c.enqueue(new Uint8Array(k).fill(7));
    },
  });
}

async function startUpload(repo: string): Promise<string> {
  const res = await call(new Request(`${BASE}/v2/${repo}/blobs/uploads/`, { method: "POST", headers: { authorization: ADMIN } }));
  expect(res.status).toBe(202);
  return res.headers.get("location")!;
}

describe("request body limit", () => {
  it("refuses a declared monolithic blob PUT over the limit with an OCI 413 naming kiln push, before reading", async () => {
    const location = await startUpload("limits/declared");
    const res = await call(new Request(`${BASE}${location}?digest=sha256:${"0".repeat(64)}`, {
      method: "PUT",
      headers: { authorization: ADMIN, "content-length": String(LIMIT + 1), "content-type": "application/octet-stream" },
      body: new Uint8Array(LIMIT + 1),
    }));
    expect(res.status).toBe(413);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0].code).toBe("SIZE_INVALID");
    expect(body.errors[0].message).toMatch(/KILN_MAX_REQUEST_BYTES/);
    expect(body.errors[0].message).toMatch(/kiln push/);
  });

  it("cuts a streamed PATCH once it passes the limit and stores nothing of it", async () => {
    const location = await startUpload("limits/streamed");
    const seen = { bytes: 0 };
    const res = await call(new Request(`${BASE}${location}`, {
      method: "PATCH",
      headers: { authorization: ADMIN, "content-type": "application/octet-stream" },
      body: streamed(4 * LIMIT, seen),
      duplex: "half",
    } as RequestInit));
    expect(res.status).toBe(413);
    const body = (await res.json()) as { errors: { message: string }[] };
    expect(body.errors[0].message).toMatch(/kiln push/);
    // not read to its end
    expect(seen.bytes).toBeLessThan(4 * LIMIT);
    // the session holds none of the refused chunk
    const status = await call(new Request(`${BASE}${location}`, { headers: { authorization: ADMIN } }));
    if (status.status === 204) expect(status.headers.get("range")).toBe("0-0");
  });

  it("answers /v1 with {error:{message}} and lets bodies at the limit through", async () => {
    const res = await call(new Request(`${BASE}/v1/builds?tag=limits/app:1`, {
      method: "POST",
      headers: { authorization: ADMIN, "content-type": "application/x-tar", "content-length": String(LIMIT + 1) },
      body: new Uint8Array(LIMIT + 1),
    }));
    expect(res.status).toBe(413);
    const { error } = (await res.json()) as { error: { message: string } };
    expect(error.message).toMatch(/larger than the limit of 65536 bytes \(KILN_MAX_REQUEST_BYTES/);

    // a chunk of exactly the limit is accepted
    const location = await startUpload("limits/exact");
    const ok = await call(new Request(`${BASE}${location}`, {
      method: "PATCH",
      headers: { authorization: ADMIN, "content-type": "application/octet-stream", "content-length": String(LIMIT), "content-range": `0-${LIMIT - 1}` },
      body: new Uint8Array(LIMIT),
    }));
    expect(ok.status).toBe(202);
    expect(ok.headers.get("range")).toBe(`0-${LIMIT - 1}`);
    const chunked = await call(new Request(`${BASE}${ok.headers.get("location")}`, {
      method: "PATCH",
      headers: { authorization: ADMIN, "content-type": "application/octet-stream" },
      body: streamed(LIMIT, { bytes: 0 }),
      duplex: "half",
    } as RequestInit));
    expect(chunked.status).toBe(202);
    expect(chunked.headers.get("range")).toBe(`0-${2 * LIMIT - 1}`);
  });

  it("sets no limit of its own when unset", async () => {
    const location = await startUpload("limits/unset");
    const res = await call(new Request(`${BASE}${location}`, {
      method: "PATCH",
      headers: { authorization: ADMIN, "content-type": "application/octet-stream", "content-length": String(LIMIT + 1) },
      body: new Uint8Array(LIMIT + 1),
    }), null);
    expect(res.status, await res.clone().text()).toBe(202);
  });
});
