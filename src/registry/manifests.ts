/** PUT/GET/HEAD/DELETE /v2/<name>/manifests/<reference>. */
import { authorizeRegistry } from "../auth/registry";
import { OciError } from "../errors";
import { requireDigest } from "../storage/blobs";
import {
  MAX_MANIFEST_SIZE, deleteManifest, deleteTag, getManifest, isTag, putManifest, statManifest,
} from "../storage/manifests";
import { empty, readLimited, requestBody, unsupportedMethod, type Ctx } from "./http";

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
    await authorizeRegistry(c, name, "pull");
    checkReference(reference);
    if (method === "HEAD") {
      const info = await statManifest(c.env, name, reference);
      if (!info) throw manifestUnknown(reference);
      return empty(200, {
        "Content-Type": info.mediaType,
        "Content-Length": String(info.size),
        "Docker-Content-Digest": info.digest,
        ETag: `"${info.digest}"`,
      });
    }
    const m = await getManifest(c.env, name, reference);
    if (!m) throw manifestUnknown(reference);
    return new Response(m.bytes, {
      status: 200,
      headers: {
        "Content-Type": m.mediaType,
        "Content-Length": String(m.bytes.byteLength),
        "Docker-Content-Digest": m.digest,
        ETag: `"${m.digest}"`,
      },
    });
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
