/**
 * The request body limit of a deployed Worker (100 MB on the Free and Pro plans), enforced by kiln
 * itself when `KILN_MAX_REQUEST_BYTES` is set, so that what would fail in production fails locally too.
 *
 * A declared Content-Length over the limit is refused before a byte is read. A body of unknown
 * length (chunked) is counted as the route reads it; the read that passes the limit errors the
 * stream, and whatever the route made of that error, the answer is the 413. /v2 answers with an OCI
 * error body, everything else with `{error:{message}}`; both name the clients that stay under it.
 */
import type { MiddlewareHandler } from "hono";
import type { Env } from "../env";
import { ApiError, OciError } from "../errors";

/** The limit in bytes, or undefined when kiln sets none of its own (the platform's still applies). */
export function maxRequestBytes(env: Env): number | undefined {
  const n = Number(env.KILN_MAX_REQUEST_BYTES);
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : undefined;
}

/** The refusal for a body over `max` bytes on `path`. */
export function requestTooLarge(path: string, max: number): Response {
  const limit = `request body larger than the limit of ${max} bytes (KILN_MAX_REQUEST_BYTES; a deployed Worker refuses bodies over 100 MB on the Free and Pro plans)`;
  const headers = { connection: "close" };
  if (path === "/v2" || path.startsWith("/v2/")) {
    return new OciError(
      "SIZE_INVALID",
      `${limit}: docker and podman push each layer in one request; push large images with \`kiln push <source> <repository:tag>\`, which uploads in chunks`,
      { status: 413, detail: { limit: max }, headers },
    ).toResponse();
  }
  return new ApiError(
    413,
    `${limit}: \`kiln build\` uploads a context in batches under it and \`kiln push <source> <repository:tag>\` pushes images in chunks`,
    { limit: max },
    headers,
  ).toResponse();
}

/** Passes at most `max` bytes; the chunk past it errors the stream and calls `exceeded`. */
function counted(body: ReadableStream<Uint8Array>, max: number, exceeded: () => void): ReadableStream<Uint8Array> {
  let total = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        total += chunk.byteLength;
        if (total > max) {
          exceeded();
          throw new ApiError(413, `request body larger than ${max} bytes`);
        }
        controller.enqueue(chunk);
      },
    }),
  );
}

/** The middleware, in front of every route. */
export function requestBodyLimit(): MiddlewareHandler<{ Bindings: Env }> {
  return async function requestBodyLimit(c, next) {
    const max = maxRequestBytes(c.env);
    const raw = c.req.raw;
    if (max === undefined || !raw.body) return next();
    const declared = raw.headers.get("content-length");
    if (declared !== null && /^\d+$/.test(declared.trim())) {
      if (Number(declared) <= max) return next(); // the runtime holds the body to its declared length
      raw.body.cancel().catch(() => {});
      return requestTooLarge(c.req.path, max);
    }
    let over = false;
    const body = counted(raw.body, max, () => (over = true));
    c.req.raw = new Request(raw.url, { method: raw.method, headers: raw.headers, body, signal: raw.signal, duplex: "half" } as RequestInit);
    await next();
    // however the route reacted to the failed read (a storage error, a 400 for a truncated tar), the answer is the 413
    if (over) c.res = requestTooLarge(c.req.path, max);
  };
}
