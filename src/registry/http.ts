/** Small helpers shared by the /v2 handlers. */
import type { Context } from "hono";
import type { Env } from "../env";
import { OciError } from "../errors";

export type Ctx = Context<{ Bindings: Env }>;

/** The request body with its announced length; `body` null when there is none (or Content-Length: 0). */
export function requestBody(c: Ctx): { body: ReadableStream<Uint8Array> | null; length?: number } {
  const cl = c.req.header("content-length");
  const length = cl !== undefined && /^\d+$/.test(cl.trim()) ? Number(cl) : undefined;
  if (length === 0) return { body: null, length: 0 };
  return { body: c.req.raw.body, length };
}

/** Reads a body completely, refusing more than `max` bytes (for manifests). */
export { readLimited } from "../http/body";

/** A non-negative integer query parameter, or undefined; anything else is a 400. */
export function intParam(c: Ctx, name: string): number | undefined {
  const v = c.req.query(name);
  if (v === undefined || v === "") return undefined;
  if (!/^\d+$/.test(v)) throw new OciError("UNSUPPORTED", `query parameter ${name} must be a non-negative integer`, { status: 400 });
  return Number(v);
}

export function unsupportedMethod(c: Ctx): never {
  throw new OciError("UNSUPPORTED", `method ${c.req.method} not supported here`, { status: 405 });
}

/** Response without a body (HEAD responses pass their Content-Length in `headers`). */
export function empty(status: number, headers: Record<string, string>): Response {
  return new Response(null, { status, headers });
}

/** `Range` header value for `size` bytes received, as distribution sends it (`0-0` when empty). */
function rangeHeader(size: number): string {
  return `0-${size > 0 ? size - 1 : 0}`;
}

/** Where an upload session stands: its URL, the bytes received so far, its id. */
export function uploadHeaders(s: { repo: string; id: string; size: number }): Record<string, string> {
  return {
    Location: `/v2/${s.repo}/blobs/uploads/${s.id}`,
    Range: rangeHeader(s.size),
    "Docker-Upload-UUID": s.id,
  };
}

/**
 * Content named by its digest never changes: a year, immutable. `private` because whether a caller
 * may read it is decided per credential (a shared cache must not answer another caller).
 *
 * The Worker does not use the Cache API for these: every read must still pass the gate and find the
 * repository's D1 row (a deleted manifest or an unlinked blob must stop being served everywhere, and
 * the Cache API is per data centre with no global purge), and that one query already returns a small
 * manifest's bytes; large blobs leave the Worker's byte path through presigned R2 URLs instead.
 */
export const IMMUTABLE_CACHE_CONTROL = "private, max-age=31536000, immutable";
/** A tag may move at any time: a cache must ask again (it may send If-None-Match and get a 304). */
export const TAG_CACHE_CONTROL = "no-cache";

/** The entity tag of digest-addressed content: the quoted digest. */
export function etagOf(digest: string): string {
  return `"${digest}"`;
}

/**
 * Whether an If-None-Match header (`*` or a list of entity tags, weak ones included: RFC 9110's
 * weak comparison) matches the content with `digest`; a match answers 304 to GET and HEAD.
 */
export function noneMatch(header: string | undefined, digest: string): boolean {
  if (!header) return false;
  const want = etagOf(digest);
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag === want || tag === `W/${want}`;
  });
}
