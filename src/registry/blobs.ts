/** GET/HEAD/DELETE /v2/<name>/blobs/<digest>. */
import { authorizeRegistry } from "../auth/registry";
import { OciError } from "../errors";
import { openBlob, statRepoBlob, unlinkBlob } from "../storage/blobs";
import { requireDigest } from "../storage/blobs";
import { presignedBlobUrl } from "../storage/presign";
import { IMMUTABLE_CACHE_CONTROL, empty, etagOf, noneMatch, unsupportedMethod, type Ctx } from "./http";

type ByteRange = { offset: number; length: number };

/**
 * A single `bytes=` range against `size`: the range, "full" (no/ignored header) or "invalid"
 * (unsatisfiable or malformed → 416).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | "full" | "invalid" {
  if (!header) return "full";
  const h = header.trim();
  if (!h.startsWith("bytes=")) return "invalid";
  const spec = h.slice(6).trim();
  if (spec.includes(",")) return "full"; // multiple ranges: serve the whole blob
  const m = spec.match(/^(\d*)-(\d*)$/);
  if (!m || (m[1] === "" && m[2] === "")) return "invalid";
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return "invalid";
    const length = Math.min(suffix, size);
    return { offset: size - length, length };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || (m[2] !== "" && Number(m[2]) < start)) return "invalid";
  return { offset: start, length: end - start + 1 };
}

export async function handleBlob(c: Ctx, name: string, digest: string): Promise<Response> {
  const method = c.req.method;
  if (method === "GET" || method === "HEAD") {
    await authorizeRegistry(c, name, "pull");
    requireDigest(digest);
    const stat = await statRepoBlob(c.env, name, digest);
    if (!stat) throw new OciError("BLOB_UNKNOWN", "blob unknown to repository", { detail: { digest } });
    const headers: Record<string, string> = {
      "Content-Type": "application/octet-stream",
      "Docker-Content-Digest": digest,
      "Accept-Ranges": "bytes",
      ETag: etagOf(digest),
      "Cache-Control": IMMUTABLE_CACHE_CONTROL,
    };
    // Checked after the gate and the repository's link: a 304 says no more than a 200 would.
    if (noneMatch(c.req.header("if-none-match"), digest)) return empty(304, headers);
    if (method === "HEAD") return empty(200, { ...headers, "Content-Length": String(stat.size) });
    // Deployed with KILN_R2_PRESIGN: the client fetches the bytes (and re-sends any Range) from R2 itself.
    const redirect = await presignedBlobUrl(c.env, stat);
    if (redirect) return empty(307, { Location: redirect, "Docker-Content-Digest": digest, "Cache-Control": "no-store" });
    const range = parseRange(c.req.header("range"), stat.size);
    if (range === "invalid") {
      throw new OciError("RANGE_INVALID", "requested range not satisfiable", { headers: { "Content-Range": `bytes */${stat.size}` } });
    }
    const obj = await openBlob(c.env, stat, range === "full" || stat.size === 0 ? undefined : range);
    if (!obj) throw new OciError("BLOB_UNKNOWN", "blob unknown to registry", { detail: { digest } });
    if (range === "full") {
      return new Response(stat.size === 0 ? null : obj.body, { status: 200, headers: { ...headers, "Content-Length": String(stat.size) } });
    }
    return new Response(obj.body, {
      status: 206,
      headers: {
        ...headers,
        "Content-Length": String(range.length),
        "Content-Range": `bytes ${range.offset}-${range.offset + range.length - 1}/${stat.size}`,
      },
    });
  }
  if (method === "DELETE") {
    await authorizeRegistry(c, name, "delete");
    requireDigest(digest);
    await unlinkBlob(c.env, name, digest);
    return empty(202, { "Docker-Content-Digest": digest });
  }
  return unsupportedMethod(c);
}
