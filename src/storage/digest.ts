import { OciError } from "../errors";

/** A parsed content digest: `sha256:<64 hex>` or `sha512:<128 hex>`, lowercase. */
export interface Digest {
  algorithm: "sha256" | "sha512";
  hex: string;
  /** Name of the algorithm for crypto.subtle / DigestStream / R2 checksums. */
  webAlgorithm: "SHA-256" | "SHA-512";
  string: string;
}

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function parseDigest(s: string): Digest | null {
  if (!DIGEST_RE.test(s)) return null;
  const [algorithm, hex] = s.split(":") as ["sha256" | "sha512", string];
  return { algorithm, hex, webAlgorithm: algorithm === "sha256" ? "SHA-256" : "SHA-512", string: s };
}

/** parseDigest, or throw OciError DIGEST_INVALID. */
export function requireDigest(s: string): Digest {
  const d = parseDigest(s);
  if (!d) throw new OciError("DIGEST_INVALID", "invalid digest (want sha256:<64 lowercase hex> or sha512:<128 lowercase hex>)", { detail: { digest: s } });
  return d;
}

/** R2 key of a blob's bytes (manifests included). */
export function blobKey(d: Digest): string {
  return `blobs/${d.algorithm}/${d.hex}`;
}

export function toHex(buf: ArrayBuffer | Uint8Array): string {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  let s = "";
  for (let i = 0; i < b.length; i++) s += b[i].toString(16).padStart(2, "0");
  return s;
}

export async function digestBytes(bytes: Uint8Array, algorithm: "sha256" | "sha512" = "sha256"): Promise<string> {
  const hash = await crypto.subtle.digest(algorithm === "sha256" ? "SHA-256" : "SHA-512", bytes);
  return `${algorithm}:${toHex(hash)}`;
}
