/** Small crypto helpers for tokens: hashing, constant-time comparison, base64url, HS256 JWTs. */

import { toHex } from "../oci/digest";

const encoder = new TextEncoder();

export async function sha256(data: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(data)));
}

export { toHex };

export async function sha256Hex(data: string): Promise<string> {
  return toHex(await sha256(data));
}

/** Constant-time equality of two byte strings (length is not secret: callers compare digests). */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Compares two secrets in constant time by hashing both first. */
export async function secretsEqual(a: string, b: string): Promise<boolean> {
  const [ha, hb] = await Promise.all([sha256(a), sha256(b)]);
  return timingSafeEqual(ha, hb);
}

export function base64url(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  try {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}

export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** HMAC-SHA256 key from raw secret bytes. */
export async function hmacKey(secret: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
}

/** HKDF-SHA256 → HMAC-SHA256 key, for deriving the signing key from another secret. */
export async function hkdfHmacKey(ikm: string, salt: string, info: string): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", encoder.encode(ikm), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: encoder.encode(salt), info: encoder.encode(info) },
    base,
    { name: "HMAC", hash: "SHA-256", length: 256 },
    false,
    ["sign", "verify"],
  );
}

const JWT_HEADER = base64url(encoder.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));

export async function signJwt(key: CryptoKey, claims: object): Promise<string> {
  const input = `${JWT_HEADER}.${base64url(encoder.encode(JSON.stringify(claims)))}`;
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(input)));
  return `${input}.${base64url(sig)}`;
}

/** Verifies an HS256 JWT's signature (constant time, via subtle.verify); returns its claims or null. */
export async function verifyJwt(key: CryptoKey, jwt: string): Promise<Record<string, unknown> | null> {
  const parts = jwt.split(".");
  if (parts.length !== 3) return null;
  const [h, p, s] = parts;
  const sig = fromBase64url(s);
  const headerBytes = fromBase64url(h);
  const payloadBytes = fromBase64url(p);
  if (!sig || !headerBytes || !payloadBytes) return null;
  const ok = await crypto.subtle.verify("HMAC", key, sig, encoder.encode(`${h}.${p}`));
  if (!ok) return null;
  try {
    const header = JSON.parse(new TextDecoder().decode(headerBytes)) as { alg?: unknown };
    if (header.alg !== "HS256") return null;
    const claims = JSON.parse(new TextDecoder().decode(payloadBytes)) as unknown;
    return claims && typeof claims === "object" && !Array.isArray(claims) ? (claims as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
