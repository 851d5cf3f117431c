/**
 * Runs the oci building blocks under plain Node 20 (the runner's runtime) and checks that they give the
 * same bytes as in workerd: `node --import tsx src/oci/node-check.ts` (exits non-zero on a mismatch).
 * Uses Web APIs only, like the modules it checks.
 */
import { createSha256, sha256Hex } from "./digest";
import { readLayer, writeLayer } from "./layer";
import { MediaType } from "./mediatypes";
import { collect, tarStream } from "./tar";
import { chunkedStream, PINNED, pseudoText, sampleEntries } from "./testing";

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`node-check failed: ${what}`);
  console.log(`ok  ${what}`);
}

const { stream, result } = writeLayer(sampleEntries(), { hasher: createSha256 });
const gz = await collect(stream);
const r = await result;
check(JSON.stringify(r) === JSON.stringify(PINNED.sampleLayer), `writeLayer(sampleEntries()) = ${r.digest} (pinned, same as workerd)`);
check(r.digest === `sha256:${await sha256Hex(gz)}`, "layer digest = sha256 of the compressed bytes");
check(r.diffId === `sha256:${await sha256Hex(await collect(tarStream(sampleEntries())))}`, "diffID = sha256 of the tar");

const data = pseudoText(1 << 20, 42);
const cs = await collect(chunkedStream(data, 4099).pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>));
check((await sha256Hex(cs)) === PINNED.gzipPseudo1MiB.sha256 && cs.length === PINNED.gzipPseudo1MiB.size, "CompressionStream gzip bytes = workerd's");

let n = 0;
for await (const e of readLayer(chunkedStream(gz, 1000), MediaType.OciLayerGzip)) {
  await collect(e.body);
  n++;
}
check(n === sampleEntries().length, "readLayer reads every entry back");

for (const size of [0, 1, 55, 56, 63, 64, 65, (1 << 20) + 3]) {
  const bytes = pseudoText(size, size + 1);
  const h = createSha256();
  h.update(bytes);
  if ((await h.digest()) !== `sha256:${await sha256Hex(bytes)}`) check(false, `pure SHA-256 of ${size} bytes`);
}
check(true, "pure SHA-256 = crypto.subtle");
