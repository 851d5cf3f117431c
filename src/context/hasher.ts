import { writableHasher, type HasherFactory } from "../oci/digest";

/** Incremental SHA-256 on the Workers runtime (crypto.DigestStream, native speed). */
export const workerHasher: HasherFactory = writableHasher(() => new crypto.DigestStream("SHA-256"));
