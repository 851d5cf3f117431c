// HTTP client for the runner side of kiln's protocol: claim, lease, logs, complete, blob upload.
import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import type { ClaimedJob, ClaimRequest, RunResult } from "../protocol/jobs";
import { LEASE_HEADER } from "../protocol/jobs";

export class Gone extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Gone";
  }
}

async function errorText(res: Response): Promise<string> {
  const t = await res.text().catch(() => "");
  try {
    const j = JSON.parse(t) as { error?: { message?: string }; errors?: { message?: string }[] };
    return j.error?.message ?? j.errors?.[0]?.message ?? t;
  } catch {
    return t.slice(0, 500);
  }
}

/** Answers that mean the lease is not (or no longer) this runner's: stop working on the job. */
function lost(status: number): boolean {
  return status === 410 || status === 404 || status === 403;
}

export class KilnClient {
  constructor(readonly server: string, private token: string) {
    this.server = server.replace(/\/$/, "");
  }

  private async post(path: string, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    return await fetch(`${this.server}${path}`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${this.token}`,
        "content-type": typeof body === "string" ? "text/plain; charset=utf-8" : "application/json",
        ...headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
      signal,
    });
  }

  /** Long-polls for a job; null when none came. Throws on auth and server errors. */
  async claim(req: ClaimRequest, signal?: AbortSignal): Promise<ClaimedJob | null> {
    const res = await this.post("/v1/runners/claim", req, {}, signal);
    if (res.status === 204) return null;
    if (!res.ok) throw new Error(`claim: HTTP ${res.status}: ${await errorText(res)}`);
    return (await res.json()) as ClaimedJob;
  }

  /** Tells the server this runner is going away (its pending long-polls end without a job). */
  async leave(runnerId: string): Promise<void> {
    const res = await this.post("/v1/runners/leave", { runnerId }, {}, AbortSignal.timeout(5000));
    if (!res.ok) throw new Error(`leave: HTTP ${res.status}: ${await errorText(res)}`);
  }

  /**
   * Renews a lease; throws Gone on 410 (cancelled, requeued), 404, or 403 (the lease is held by another
   * runner token: only the token that claimed a job may renew, log or complete it).
   */
  async renew(jobId: string, leaseId: string, leaseSeconds?: number): Promise<number> {
    const res = await this.post(`/v1/jobs/${encodeURIComponent(jobId)}/lease`, { leaseId, leaseSeconds });
    if (lost(res.status)) throw new Gone(await errorText(res));
    if (!res.ok) throw new Error(`lease: HTTP ${res.status}: ${await errorText(res)}`);
    return ((await res.json()) as { leaseExpiresAt: number }).leaseExpiresAt;
  }

  async logs(jobId: string, leaseId: string, text: string): Promise<void> {
    const res = await this.post(`/v1/jobs/${encodeURIComponent(jobId)}/logs`, text, { [LEASE_HEADER]: leaseId });
    if (lost(res.status)) throw new Gone(await errorText(res));
    if (!res.ok) throw new Error(`logs: HTTP ${res.status}: ${await errorText(res)}`);
  }

  /**
   * Reports the result. A layer must have been uploaded to the job's repository first (with the job's
   * registry token): the server refuses (400) a layer it does not find there with that size.
   */
  async complete(jobId: string, leaseId: string, result: RunResult): Promise<void> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const res = await this.post(`/v1/jobs/${encodeURIComponent(jobId)}/complete`, { leaseId, result });
        if (lost(res.status)) throw new Gone(await errorText(res));
        if (res.ok) return;
        lastErr = new Error(`complete: HTTP ${res.status}: ${await errorText(res)}`);
        if (res.status < 500) break;
      } catch (e) {
        if (e instanceof Gone) throw e;
        lastErr = e;
      }
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
    throw lastErr;
  }

  /**
   * Uploads a blob file to /v2/<repository> with the job's registry token (which is valid only for the
   * blobs of the job's repository and only while the lease lives), skipped when the repository has it
   * already: one PUT when it
   * fits in a chunk, else PATCH chunks (a Worker request body is limited to ~100 MB) and a closing PUT.
   */
  async uploadBlob(repository: string, registryToken: string, file: string, digest: string, size: number, chunkSize = UPLOAD_CHUNK): Promise<void> {
    const auth = { authorization: `Bearer ${registryToken}` };
    await pushBlob(this.server, repository, auth, digest, size, () => createReadStream(file), chunkSize);
  }
}

/**
 * Uploads a blob to /v2/<repository> of `server` unless the repository has it: one PUT when it fits in
 * a chunk, else PATCH chunks with Content-Range (each a request under the Worker's body limit, 100 MB
 * on the Free and Pro plans) and a closing PUT with the rest. `open` gives the blob's bytes from the
 * start, read once in order (a file or a response from another registry).
 */
export async function pushBlob(
  server: string,
  repository: string,
  auth: Record<string, string>,
  digest: string,
  size: number,
  open: () => Readable | Promise<Readable>,
  chunkSize = UPLOAD_CHUNK,
): Promise<"exists" | "uploaded"> {
  const head = await fetch(`${server}/v2/${repository}/blobs/${digest}`, { method: "HEAD", headers: auth });
  if (head.ok) return "exists";
  const start = await fetch(`${server}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: { ...auth, "content-length": "0" } });
  if (start.status !== 202) throw new Error(`starting blob upload to ${repository}: HTTP ${start.status}: ${await errorText(start)}`);
  let location = start.headers.get("location");
  if (!location) throw new Error("blob upload: no Location header");
  const source = new Slicer(await open());
  try {
    let offset = 0;
    while (size - offset > chunkSize) {
      const end = offset + chunkSize;
      const res = await sendBody(new URL(location, server), "PATCH", auth, source, end - offset, { "content-range": `${offset}-${end - 1}` });
      if (res.status !== 202) throw new Error(`uploading ${digest} to ${repository} (bytes ${offset}-${end - 1}): HTTP ${res.status}: ${bodyMessage(res.body)}`);
      location = res.location ?? location;
      offset = end;
    }
    const url = new URL(location, server);
    url.searchParams.set("digest", digest);
    const res = await sendBody(url, "PUT", auth, source, size - offset, {});
    if (res.status !== 201) throw new Error(`uploading ${digest} to ${repository}: HTTP ${res.status}: ${bodyMessage(res.body)}`);
    return "uploaded";
  } finally {
    source.close();
  }
}

function bodyMessage(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: { message?: string }; errors?: { message?: string }[] };
    return j.error?.message ?? j.errors?.[0]?.message ?? text.slice(0, 500);
  } catch {
    return text.slice(0, 500);
  }
}

/** Hands out a stream's bytes in consecutive slices of given lengths. */
class Slicer {
  private it: AsyncIterator<Buffer>;
  private rest?: Buffer;

  constructor(private stream: Readable) {
    this.it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  /** The next `n` bytes, in pieces; throws when the stream ends before. */
  async *take(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      let chunk = this.rest;
      this.rest = undefined;
      if (!chunk) {
        const r = await this.it.next();
        if (r.done) throw new Error(`the blob ended ${n} bytes early`);
        chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      }
      if (chunk.byteLength > n) {
        this.rest = chunk.subarray(n);
        chunk = chunk.subarray(0, n);
      }
      n -= chunk.byteLength;
      yield chunk;
    }
  }

  close(): void {
    this.stream.destroy();
  }
}

/** Chunk size of blob uploads (below the ~100 MB request body limit of Workers). */
export const UPLOAD_CHUNK = 64 * 1024 * 1024;

/** Sends the next `length` bytes of `source` as the body of a request with a known length. */
function sendBody(url: URL, method: string, headers: Record<string, string>, source: Slicer, length: number, extra: Record<string, string>): Promise<{ status: number; body: string; location?: string }> {
  return new Promise((resolve, reject) => {
    const lib = url.protocol === "https:" ? https : http;
    const req = lib.request(url, {
      method,
      // A connection of its own per chunk: the stream cannot be sent again, so it must not go out on a
      // kept-alive socket the server may be closing at that moment ("socket hang up").
      agent: false,
      headers: { ...headers, ...extra, "content-type": "application/octet-stream", "content-length": String(length) },
    }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (length === 0) return void req.end();
    Readable.from(source.take(length)).on("error", (e) => { req.destroy(e); reject(e); }).pipe(req);
  });
}
