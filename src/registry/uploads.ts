/**
 * Blob uploads: POST /v2/<name>/blobs/uploads/ (session, monolithic `?digest=`, cross-repo `?mount=`),
 * PATCH/PUT/GET/DELETE /v2/<name>/blobs/uploads/<id>.
 */
import { authorizeRegistry } from "../auth/registry";
import { OciError } from "../errors";
import { StorageError } from "../storage/errors";
import { isDigest } from "../oci/digest";
import { linkBlob, putBlobVerified, repoHasBlob, requireDigest, statBlob, unlinkBlob } from "../storage/blobs";
import { assertWithinQuota, cappedToRoom, quotaOf, releaseQuota, reserveQuota, withQuota, type Reservation } from "../storage/usage";
import {
  appendUpload, cancelUpload, createUpload, finishUpload, getUpload, type UploadSession,
} from "../storage/uploads";
import { empty, requestBody, unsupportedMethod, uploadHeaders, type Ctx } from "./http";
import { isRepositoryName } from "../oci/names";

function created(name: string, digest: string): Response {
  return empty(201, { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest });
}

/** Whether the caller may pull from `from` and `from` has the blob (mount source check). */
async function mountable(c: Ctx, from: string, digest: string): Promise<boolean> {
  if (!isRepositoryName(from)) return false;
  try {
    await authorizeRegistry(c, from, "pull");
  } catch {
    return false;
  }
  return repoHasBlob(c.env, from, digest);
}

async function startUpload(c: Ctx, name: string): Promise<Response> {
  await authorizeRegistry(c, name, "push");
  const mount = c.req.query("mount");
  if (mount !== undefined) {
    const from = c.req.query("from");
    if (isDigest(mount)) {
      if (from !== undefined ? await mountable(c, from, mount) : await repoHasBlob(c.env, name, mount)) {
        const stored = await statBlob(c.env, mount);
        try {
          // the mount's bytes are reserved in the namespace's quota before they are linked
          await withQuota(c.env, [{ repo: name, content: stored ? [{ digest: mount, size: stored.size }] : [] }], () => linkBlob(c.env, name, mount));
          return created(name, mount);
        } catch (err) {
          // Deleted meanwhile: the client uploads it instead (never a 404 for a valid push).
          if (!(err instanceof StorageError && err.code === "BLOB_UNKNOWN")) throw err;
        }
      }
    }
    // Fall back to a normal upload session (the spec's 202).
    c.req.raw.body?.cancel().catch(() => {});
    return empty(202, uploadHeaders(await createUpload(c.env, name)));
  }
  const digest = c.req.query("digest");
  if (digest !== undefined) {
    requireDigest(digest);
    const { body, length } = requestBody(c);
    const size = body ? length : 0;
    // a known length is reserved in the namespace's quota before the body is read; an unknown one
    // is cut off past the namespace's room, and checked again once stored (its link taken back past
    // the quota)
    const stored = await withQuota(c.env, [{ repo: name, content: [{ digest, size: size ?? 0 }] }], async (fresh) => {
      const content = body && fresh && size === undefined ? await cappedToRoom(c.env, name, body) : body;
      const stored = await putBlobVerified(c.env, content ?? emptyStream(), digest, size, name);
      if (fresh && size === undefined) await undoPastQuota(c, name, stored);
      return stored;
    });
    return created(name, stored.digest);
  }
  c.req.raw.body?.cancel().catch(() => {});
  return empty(202, uploadHeaders(await createUpload(c.env, name)));
}

/** `Content-Range: <start>-<end>` (also `bytes <start>-<end>/<total>`). */
function parseContentRange(v: string | undefined): { start: number; end: number } | undefined | "invalid" {
  if (v === undefined) return undefined;
  const m = v.trim().match(/^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/);
  if (!m) return "invalid";
  const start = Number(m[1]);
  const end = Number(m[2]);
  return end < start ? "invalid" : { start, end };
}

async function session(c: Ctx, name: string, id: string): Promise<UploadSession> {
  const s = await getUpload(c.env, name, id);
  if (!s) throw new OciError("BLOB_UPLOAD_UNKNOWN", "upload unknown (never started, finished or cancelled)", { detail: { id } });
  return s;
}

export async function handleUpload(c: Ctx, name: string, id: string): Promise<Response> {
  const method = c.req.method;
  if (id === "") {
    if (method === "POST") return startUpload(c, name);
    return unsupportedMethod(c);
  }
  await authorizeRegistry(c, name, "push");
  switch (method) {
    case "GET": {
      const s = await session(c, name, id);
      return empty(204, uploadHeaders(s));
    }
    case "PATCH": {
      let s = await session(c, name, id);
      const { body, length } = requestBody(c);
      const range = parseContentRange(c.req.header("content-range"));
      if (range === "invalid") {
        throw new OciError("RANGE_INVALID", "malformed Content-Range (want <start>-<end>)", { headers: uploadHeaders(s) });
      }
      let chunkLength = length;
      if (range) {
        const rangeLength = range.end - range.start + 1;
        if (length !== undefined && length !== rangeLength) {
          throw new OciError("RANGE_INVALID", `Content-Range covers ${rangeLength} bytes but Content-Length is ${length}`, { headers: uploadHeaders(s) });
        }
        chunkLength = rangeLength;
        // Refused here, like PUT below, so that the unread body is drained (not cancelled) and the
        // connection stays usable; storage checks again against concurrent appends.
        if (range.start !== s.size) {
          throw new OciError("RANGE_INVALID", `chunk starts at ${range.start}, but ${s.size} bytes were received so far`, { headers: uploadHeaders(s) });
        }
      }
      // Staged bytes count against the namespace's quota: a chunk of known length is reserved before
      // its body is read, one of unknown length is kept only if it fits once staged (appendUpload).
      // A refused chunk ends its session, with the bytes it staged before.
      const quota = await quotaOf(c.env, name);
      let reservation: Reservation | null = null;
      try {
        if (quota && chunkLength) reservation = await reserveQuota(c.env, quota, chunkLength);
        s = await appendUpload(c.env, s, body, { start: range?.start, length: chunkLength, quota, reservation });
      } catch (err) {
        if (isDenied(err)) await cancelUpload(c.env, s).catch(() => {});
        throw err;
      } finally {
        await releaseQuota(c.env, reservation);
      }
      return empty(202, uploadHeaders(s));
    }
    case "PUT": {
      const s = await session(c, name, id);
      const digest = c.req.query("digest");
      if (!digest) throw new OciError("DIGEST_INVALID", "PUT completing an upload needs ?digest=");
      requireDigest(digest);
      const { body, length } = requestBody(c);
      const range = parseContentRange(c.req.header("content-range"));
      if (range && range !== "invalid" && range.start !== s.size) {
        throw new OciError("RANGE_INVALID", `chunk starts at ${range.start}, but ${s.size} bytes were received so far`, { headers: uploadHeaders(s) });
      }
      const stored = await completeUpload(c, name, s, digest, body, length).catch(async (err) => {
        // refused by the quota: the session goes with its staged bytes (they would hold the room)
        if (isDenied(err)) await cancelUpload(c.env, s).catch(() => {});
        throw err;
      });
      return created(name, stored.digest);
    }
    case "DELETE": {
      const s = await session(c, name, id);
      await cancelUpload(c.env, s);
      return empty(204, {});
    }
    default:
      return unsupportedMethod(c);
  }
}

/**
 * Completes session `s` within the namespace's quota: with staged chunks, a final body of known
 * length is reserved before it is read (one of unknown length is kept only if it fits) and the staged
 * bytes count until the blob is linked; with none, the body is the blob (as a monolithic push).
 */
async function completeUpload(
  c: Ctx, name: string, s: UploadSession, digest: string, body: ReadableStream<Uint8Array> | null, length: number | undefined,
): Promise<{ digest: string; size: number }> {
  if (s.chunks === 0) {
    const size = body ? length : 0;
    return withQuota(c.env, [{ repo: name, content: [{ digest, size: size ?? 0 }] }], async (fresh) => {
      const content = body && fresh && size === undefined ? await cappedToRoom(c.env, name, body) : body;
      const stored = await finishUpload(c.env, s, digest, content, length);
      if (fresh && size === undefined) await undoPastQuota(c, name, stored);
      return stored;
    });
  }
  const quota = await quotaOf(c.env, name);
  let reservation: Reservation | null = null;
  try {
    if (quota && body && length) reservation = await reserveQuota(c.env, quota, length);
    return await finishUpload(c.env, s, digest, body, length, { quota, reservation });
  } finally {
    await releaseQuota(c.env, reservation);
  }
}

const isDenied = (err: unknown) => err instanceof StorageError && err.code === "DENIED";

/**
 * A blob new to the namespace whose length was unknown until it was stored (cut off past the room the
 * namespace had when it started: cappedToRoom), once linked: when it took the namespace past its
 * quota (writers racing for that room), its link is removed again (the bytes go with it unless another
 * repository uses them) and the push refused.
 */
async function undoPastQuota(c: Ctx, name: string, stored: { digest: string; size: number }): Promise<void> {
  try {
    await assertWithinQuota(c.env, name);
  } catch (err) {
    await unlinkBlob(c.env, name, stored.digest).catch(() => {});
    throw err;
  }
}

function emptyStream(): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({ start: (ctl) => ctl.close() });
}
