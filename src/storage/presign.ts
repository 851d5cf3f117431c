/**
 * Pulls without the Worker in the byte path (deployed): with `KILN_R2_PRESIGN=1` and R2 S3-API
 * credentials set, a blob GET answers 307 to a short-lived presigned URL of the blob's R2 object, as
 * Docker Hub and distribution's S3 driver redirect to storage. Path-style R2 endpoint,
 * `https://<account>.r2.cloudflarestorage.com/<bucket>/<key>`, region `auto`, service `s3`.
 */
import type { Env } from "../env";
import { isDigest } from "../oci/digest";
import { blobKey, blobObjectKey, type BlobLocation } from "./blobs";
import { awsUriEncode, presignUrl } from "./sigv4";

/** Default and ceiling of `KILN_R2_PRESIGN_TTL` (seconds). */
export const PRESIGN_TTL_DEFAULT = 300;
export const PRESIGN_TTL_MAX = 3600;

type PresignConfig = { accountId: string; bucket: string; accessKeyId: string; secretAccessKey: string; ttlSeconds: number };

const REQUIRED = ["KILN_R2_ACCOUNT_ID", "KILN_R2_BUCKET", "KILN_R2_ACCESS_KEY_ID", "KILN_R2_SECRET_ACCESS_KEY"] as const;
let warned = false;

/** The redirect settings, or null when redirects are off or incomplete (then one warning per isolate names what is missing). */
export function presignConfig(env: Env): PresignConfig | null {
  if ((env.KILN_R2_PRESIGN ?? "").trim() !== "1") return null;
  const missing = REQUIRED.filter((k) => !(env[k] ?? "").trim());
  const ttlText = (env.KILN_R2_PRESIGN_TTL ?? "").trim();
  const ttl = ttlText === "" ? PRESIGN_TTL_DEFAULT : Number(ttlText);
  const badTtl = !Number.isInteger(ttl) || ttl < 1 || ttl > PRESIGN_TTL_MAX;
  if (missing.length || badTtl) {
    if (!warned) {
      warned = true;
      const why = [missing.length ? `${missing.join(", ")} not set` : "", badTtl ? `KILN_R2_PRESIGN_TTL=${ttlText} is not an integer from 1 to ${PRESIGN_TTL_MAX}` : ""].filter(Boolean).join("; ");
      console.warn(`kiln: KILN_R2_PRESIGN=1 but ${why}: blobs are served by the Worker, without redirects`);
    }
    return null;
  }
  return {
    accountId: env.KILN_R2_ACCOUNT_ID!.trim(),
    bucket: env.KILN_R2_BUCKET!.trim(),
    accessKeyId: env.KILN_R2_ACCESS_KEY_ID!.trim(),
    secretAccessKey: env.KILN_R2_SECRET_ACCESS_KEY!.trim(),
    ttlSeconds: ttl,
  };
}

/**
 * A URL valid for `ttlSeconds` (at most 3600; default the setting) for a GET of the blob's R2 object,
 * or null when redirects are off or misconfigured. Callers check access and the repository link first.
 */
export async function presignedBlobUrl(env: Env, blob: string | BlobLocation, ttlSeconds?: number, now = new Date()): Promise<string | null> {
  const config = presignConfig(env);
  if (!config) return null;
  // A digest names its content address; a location found by statBlob names the object its bytes are in
  // (none for a blob kept in several segments: the Worker serves those).
  const key = typeof blob === "string" ? (isDigest(blob) ? blobKey(blob) : null) : blobObjectKey(blob);
  if (key === null) return null;
  const ttl = Math.min(PRESIGN_TTL_MAX, Math.max(1, Math.floor(ttlSeconds ?? config.ttlSeconds)));
  return presignUrl({
    method: "GET",
    url: `https://${config.accountId}.r2.cloudflarestorage.com/${awsUriEncode(config.bucket)}/${awsUriEncode(key, true)}`,
    region: "auto",
    service: "s3",
    accessKeyId: config.accessKeyId,
    secretAccessKey: config.secretAccessKey,
    date: now,
    expiresSeconds: ttl,
  });
}
