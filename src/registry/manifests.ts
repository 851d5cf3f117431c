/** PUT/GET/HEAD/DELETE /v2/<name>/manifests/<reference>. */
import { authorizeRegistry } from "../auth/registry";
import { OciError } from "../errors";
import { requireDigest } from "../storage/blobs";
import {
  MAX_MANIFEST_SIZE, deleteManifest, deleteTag, findManifest, isTag, manifestBytes, putManifest,
} from "../storage/manifests";
import {
  IMMUTABLE_CACHE_CONTROL, TAG_CACHE_CONTROL, empty, etagOf, noneMatch, readLimited, requestBody, unsupportedMethod, type Ctx,
} from "./http";

function manifestUnknown(reference: string): OciError {
  return new OciError("MANIFEST_UNKNOWN", "manifest unknown", { detail: { reference } });
}

/** Validates a reference for reading: digests must be well formed (400), unknown tag syntax is just unknown (404). */
function checkReference(reference: string): void {
  if (reference.includes(":")) requireDigest(reference);
  else if (!isTag(reference)) throw manifestUnknown(reference);
}

export async function handleManifest(c: Ctx, name: string, reference: string): Promise<Response> {
  const method = c.req.method;
  if (method === "GET" || method === "HEAD") {
    // At most one D1 query for the gate (none when the credential's decision is cached, auth/cache.ts),
    // one for the manifest row, and one R2 read only for a manifest too large to live in its row.
    await authorizeRegistry(c, name, "pull");
    checkReference(reference);
    const m = await findManifest(c.env, name, reference, method === "GET");
    if (!m) throw manifestUnknown(reference);
    const headers: Record<string, string> = {
      "Content-Type": m.mediaType,
      "Docker-Content-Digest": m.digest,
      ETag: etagOf(m.digest),
      "Cache-Control": reference.includes(":") ? IMMUTABLE_CACHE_CONTROL : TAG_CACHE_CONTROL,
    };
    if (noneMatch(c.req.header("if-none-match"), m.digest)) return empty(304, headers);
    if (method === "HEAD") return empty(200, { ...headers, "Content-Length": String(m.size) });
    const bytes = m.bytes ?? (await manifestBytes(c.env, m.digest));
    if (!bytes) throw manifestUnknown(reference);
    return new Response(bytes, { status: 200, headers: { ...headers, "Content-Length": String(bytes.byteLength) } });
  }
  if (method === "PUT") {
    await authorizeRegistry(c, name, "push");
    const { body } = requestBody(c);
    const bytes = await readLimited(body, MAX_MANIFEST_SIZE, () =>
      new OciError("MANIFEST_INVALID", `manifest larger than ${MAX_MANIFEST_SIZE} bytes`, { status: 413 }));
    const extraTags = c.req.queries("tag") ?? [];
    const { digest, subject } = await putManifest(c.env, name, reference, bytes, c.req.header("content-type") ?? "", extraTags);
    const headers: Record<string, string> = {
      Location: `/v2/${name}/manifests/${digest}`,
      "Docker-Content-Digest": digest,
    };
    if (subject) headers["OCI-Subject"] = subject;
    return empty(201, headers);
  }
  if (method === "DELETE") {
    await authorizeRegistry(c, name, "delete");
    if (reference.includes(":")) {
      requireDigest(reference);
      if (!(await deleteManifest(c.env, name, reference))) throw manifestUnknown(reference);
    } else {
      if (!isTag(reference) || !(await deleteTag(c.env, name, reference))) throw manifestUnknown(reference);
    }
    return empty(202, {});
  }
  return unsupportedMethod(c);
}
