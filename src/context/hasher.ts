import { createSha256, writableHasher, type Hasher, type HasherFactory } from "../oci/digest";

/** Incremental SHA-256 on the Workers runtime (crypto.DigestStream, native speed). */
export const workerHasher: HasherFactory = writableHasher(() => new crypto.DigestStream("SHA-256"));

/** Entries up to this size are hashed by the JS SHA-256: a DigestStream each cost more than hashing a few bytes. */
const SMALL_ENTRY_BYTES = 16 * 1024;

/** A hasher for one context file of `size` bytes: JS for small files, native for the rest. */
export function entryHasher(size: number): Hasher {
  return size <= SMALL_ENTRY_BYTES ? createSha256() : workerHasher();
}
