import type { Hasher, HasherFactory } from "../oci/digest";

/** Incremental SHA-256 on the Workers runtime (crypto.DigestStream, native speed). */
export const workerHasher: HasherFactory = (): Hasher => {
  const ds = new crypto.DigestStream("SHA-256");
  const writer = ds.getWriter();
  let failed: unknown;
  return {
    update(chunk: Uint8Array) {
      writer.write(chunk).catch((e) => {
        failed = e;
      });
    },
    async digest() {
      await writer.close();
      if (failed) throw failed;
      const buf = new Uint8Array(await ds.digest);
      let hex = "";
      for (const b of buf) hex += b.toString(16).padStart(2, "0");
      return `sha256:${hex}`;
    },
  };
};
