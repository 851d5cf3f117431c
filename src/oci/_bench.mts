import { writeLayer } from "./layer.ts";
import { createSha256, type Hasher } from "./digest.ts";
import type { TarEntry } from "./tar.ts";
import { createHash } from "node:crypto";
import { createReadStream, readdirSync, statSync } from "node:fs";
import { Readable } from "node:stream";
const root = "/tmp/ctx256";
const nodeHasher = (): Hasher => { const h = createHash("sha256"); return { update: (c) => { h.update(c); }, digest: async () => `sha256:${h.digest("hex")}` }; };
function* entries(): Generator<TarEntry> {
  for (const d of readdirSync(root).sort()) {
    yield { path: d, type: "dir", mode: 0o755, uid: 0, gid: 0, mtime: 0 };
    for (const f of readdirSync(`${root}/${d}`).sort()) {
      const p = `${root}/${d}/${f}`;
      yield { path: `${d}/${f}`, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, size: statSync(p).size,
        body: Readable.toWeb(createReadStream(p, { highWaterMark: 1 << 20 })) as unknown as ReadableStream<Uint8Array> };
    }
  }
}
const which = process.argv[2] ?? "node";
const t0 = performance.now(); const c0 = process.cpuUsage();
const { stream, result } = writeLayer(entries(), { hasher: which === "pure" ? createSha256 : nodeHasher });
const r = stream.getReader(); let chunks = 0;
for (;;) { const { done } = await r.read(); if (done) break; chunks++; }
const res = await result; const dt = (performance.now() - t0) / 1000; const cpu = process.cpuUsage(c0);
console.log(which, res, `chunks=${chunks}`, `wall=${dt.toFixed(1)}s`, `cpu=${((cpu.user + cpu.system) / 1e6).toFixed(1)}s`, `${(res.uncompressedSize / 1048576 / dt).toFixed(1)} MiB/s`);
