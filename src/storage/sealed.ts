import type { Env } from "../env";

/**
 * Secrets kiln must be able to read back (upstream passwords, webhook secrets, git tokens) are sealed
 * with AES-GCM under a key derived from KILN_TOKEN_SECRET (or the admin token) before they reach D1.
 * The dashboard's session cookie is sealed the same way under a key of its own (`ui-session`), so a
 * value sealed for one purpose never opens as the other.
 */
export type SealPurpose = "sealed-secrets" | "ui-session";

async function sealingKey(env: Env, purpose: SealPurpose): Promise<CryptoKey> {
  const secret = env.KILN_TOKEN_SECRET ?? env.KILN_ADMIN_TOKEN;
  if (!secret) throw new Error("storing secrets needs KILN_TOKEN_SECRET or KILN_ADMIN_TOKEN");
  const base = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new TextEncoder().encode("kiln"), info: new TextEncoder().encode(purpose) },
    base, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"],
  );
}

const b64 = (u: Uint8Array) => { let s = ""; for (const b of u) s += String.fromCharCode(b); return btoa(s); };
const unb64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

export async function seal(env: Env, plain: string, purpose: SealPurpose = "sealed-secrets"): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv }, await sealingKey(env, purpose), new TextEncoder().encode(plain)));
  return `${b64(iv)}.${b64(ct)}`;
}

export async function unseal(env: Env, sealed: string, purpose: SealPurpose = "sealed-secrets"): Promise<string> {
  const [iv, ct] = sealed.split(".");
  const pt = await crypto.subtle.decrypt({ name: "AES-GCM", iv: unb64(iv) }, await sealingKey(env, purpose), unb64(ct));
  return new TextDecoder().decode(pt);
}
