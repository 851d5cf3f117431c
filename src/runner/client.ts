// HTTP client for the runner side of kiln's protocol: claim, lease, logs, complete, blob upload.
import { createReadStream } from "node:fs";
import http from "node:http";
import https from "node:https";
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
    const head = await fetch(`${this.server}/v2/${repository}/blobs/${digest}`, { method: "HEAD", headers: auth });
    if (head.ok) return;
    const start = await fetch(`${this.server}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: { ...auth, "content-length": "0" } });
    if (start.status !== 202) throw new Error(`starting blob upload to ${repository}: HTTP ${start.status}: ${await errorText(start)}`);
    let location = start.headers.get("location");
    if (!location) throw new Error("blob upload: no Location header");
    let offset = 0;
    if (size > chunkSize) {
      while (offset < size) {
        const end = Math.min(size, offset + chunkSize);
        const res = await sendFile(new URL(location, this.server), "PATCH", auth, file, offset, end, {
          "content-range": `${offset}-${end - 1}`,
        });
        if (res.status !== 202) throw new Error(`uploading ${digest} to ${repository} (bytes ${offset}-${end - 1}): HTTP ${res.status}: ${res.body.slice(0, 500)}`);
        location = res.location ?? location;
        offset = end;
      }
    }
    const url = new URL(location, this.server);
    url.searchParams.set("digest", digest);
    const res = await sendFile(url, "PUT", auth, file, offset, size, {});
    if (res.status !== 201) throw new Error(`uploading ${digest} to ${repository}: HTTP ${res.status}: ${res.body.slice(0, 500)}`);
  }
}

/** Chunk size of blob uploads (below the ~100 MB request body limit of Workers). */
export const UPLOAD_CHUNK = 64 * 1024 * 1024;

/** Sends bytes [start, end) of a file as the body of a request with a known length. */
function sendFile(url: URL, method: string, headers: Record<string, string>, file: string, start: number, end: number, extra: Record<string, string>): Promise<{ status: number; body: string; location?: string }> {
  return new Promise((resolve, reject) => {
    const lib = url.protocol === "https:" ? https : http;
    const req = lib.request(url, {
      method,
      headers: { ...headers, ...extra, "content-type": "application/octet-stream", "content-length": String(end - start) },
    }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (end > start) createReadStream(file, { start, end: end - 1 }).on("error", reject).pipe(req);
    else req.end();
  });
}
