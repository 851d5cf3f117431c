/**
 * AWS Signature Version 4 presigned URLs (query-string authentication), as S3 and R2's S3 API accept
 * them: https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html. Pure (only
 * crypto.subtle): the signer knows no bucket binding and no settings; src/storage/presign.ts feeds it.
 */

export type PresignInput = {
  method: "GET" | "HEAD";
  /** `https://host/path`: the path is used as given (already a valid URI path), only the host header is signed. */
  url: string;
  region: string;
  service: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** When the signature was made; the URL is valid from then for `expiresSeconds`. */
  date: Date;
  /** 1 to 604800 (S3's own limit; callers choose shorter). */
  expiresSeconds: number;
};

const ALGORITHM = "AWS4-HMAC-SHA256";
const encoder = new TextEncoder();

/** RFC 3986 percent-encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~ (and `/` in paths when `keepSlash`). */
export function awsUriEncode(s: string, keepSlash = false): string {
  let out = "";
  for (const byte of encoder.encode(s)) {
    const ch = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(ch) || (keepSlash && ch === "/")) out += ch;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function hex(buf: ArrayBuffer): string {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256Hex(s: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(s)));
}

async function hmac(key: ArrayBuffer | Uint8Array, data: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return crypto.subtle.sign("HMAC", k, encoder.encode(data));
}

/** `20130524T000000Z` */
export function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** The parts of a presigned URL, exposed so that tests can check each against AWS's documented example. */
export async function presignParts(input: PresignInput): Promise<{ canonicalRequest: string; stringToSign: string; signature: string; url: string }> {
  if (!Number.isInteger(input.expiresSeconds) || input.expiresSeconds < 1 || input.expiresSeconds > 604_800) {
    throw new RangeError(`X-Amz-Expires must be an integer from 1 to 604800, not ${input.expiresSeconds}`);
  }
  const url = new URL(input.url);
  if (url.search || url.hash) throw new TypeError("the URL to presign carries no query or fragment of its own");
  const stamp = amzDate(input.date);
  const day = stamp.slice(0, 8);
  const scope = `${day}/${input.region}/${input.service}/aws4_request`;
  const params: [string, string][] = [
    ["X-Amz-Algorithm", ALGORITHM],
    ["X-Amz-Credential", `${input.accessKeyId}/${scope}`],
    ["X-Amz-Date", stamp],
    ["X-Amz-Expires", String(input.expiresSeconds)],
    ["X-Amz-SignedHeaders", "host"],
  ];
  const query = params
    .map(([k, v]) => [awsUriEncode(k), awsUriEncode(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
  const path = url.pathname || "/";
  const canonicalRequest = [input.method, path, query, `host:${url.host}`, "", "host", "UNSIGNED-PAYLOAD"].join("\n");
  const stringToSign = [ALGORITHM, stamp, scope, await sha256Hex(canonicalRequest)].join("\n");
  let key = await hmac(encoder.encode(`AWS4${input.secretAccessKey}`), day);
  key = await hmac(key, input.region);
  key = await hmac(key, input.service);
  key = await hmac(key, "aws4_request");
  const signature = hex(await hmac(key, stringToSign));
  return { canonicalRequest, stringToSign, signature, url: `${url.origin}${path}?${query}&X-Amz-Signature=${signature}` };
}

/** A presigned URL for `input.method` of `input.url`, signing only the host header (payload unsigned). */
export async function presignUrl(input: PresignInput): Promise<string> {
  return (await presignParts(input)).url;
}
