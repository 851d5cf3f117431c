/**
 * Deterministic test data shared by the workerd tests and the Node check (pure, no runtime imports).
 */
import type { TarEntry } from "./tar";

/** `n` bytes of compressible pseudo-random text, the same on every runtime. */
export function pseudoText(n: number, seed = 1): Uint8Array {
  const words = ["kiln", "layer", "tar", "gzip", "digest", "sha256", "build", "image", "\n", "registry", "0123456789"];
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  let o = 0;
  while (o < n) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const w = words[x % words.length];
    for (let i = 0; i < w.length && o < n; i++) out[o++] = w.charCodeAt(i);
    if (o < n) out[o++] = 0x20 + ((x >>> 24) & 0x3f);
  }
  return out;
}

/** A small, sorted set of layer entries exercising every writer feature. */
export function sampleEntries(): TarEntry[] {
  const long = `a/${"b".repeat(120)}/${"c".repeat(150)}.txt`; // > 255 chars: needs PAX
  const prefixed = `p/${"q".repeat(80)}/${"r".repeat(90)}`; // > 100 chars but fits ustar prefix
  return [
    { path: "a/", type: "dir", mode: 0o755, uid: 0, gid: 0, mtime: 0 },
    { path: `a/${"b".repeat(120)}`, type: "dir", mode: 0o755, uid: 0, gid: 0, mtime: 0 },
    { path: long, type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: pseudoText(3000, 7) },
    { path: "empty", type: "file", mode: 0o600, uid: 1000, gid: 1000, mtime: 1700000000 },
    { path: "big-ids", type: "file", mode: 0o644, uid: 3000000, gid: 4000000, mtime: 0, body: new Uint8Array([1, 2, 3]) },
    { path: "héllo wörld ☃.txt", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, body: new TextEncoder().encode("ünï") },
    { path: "link", type: "symlink", linkname: "héllo wörld ☃.txt", mode: 0o777, uid: 0, gid: 0, mtime: 0 },
    { path: "longlink", type: "symlink", linkname: "/" + long, mode: 0o777, uid: 0, gid: 0, mtime: 0 },
    { path: "hard", type: "hardlink", linkname: "empty", mode: 0o600, uid: 1000, gid: 1000, mtime: 1700000000 },
    { path: prefixed, type: "file", mode: 0o4755, uid: 0, gid: 0, mtime: 0, body: pseudoText(70000, 3) },
    { path: "./x/.wh..wh..opq", type: "file", mode: 0, uid: 0, gid: 0, mtime: 0 },
    { path: "/xattr", type: "file", mode: 0o644, uid: 0, gid: 0, mtime: 0, xattrs: { "security.capability": new Uint8Array([1, 0, 0, 2, 0x20, 0xff, 0x80, 0]), "user.note": "héllo" }, body: new Uint8Array(1) },
  ];
}

/** A stream of `total` bytes of pseudoText delivered in chunks of `chunk` bytes (views of one buffer). */
export function chunkedStream(data: Uint8Array, chunk: number): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (o >= data.length) {
        c.close();
        return;
      }
      c.enqueue(data.subarray(o, Math.min(o + chunk, data.length)));
      o += chunk;
    },
  });
}

/** Byte equality (vitest's deep equality is very slow on large arrays). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Pinned results, identical in workerd and Node 20 (checked by layer.test.ts and node-check.ts). */
export const PINNED = {
  /** writeLayer(sampleEntries()) */
  sampleLayer: {
    digest: "sha256:3195e5ce9068f24add60a60139558acf685cbaf1d9b7977bd3a2b824354451a3",
    diffId: "sha256:27f557c0718e5d1532629d5a749613c3611d136100e3bda766389f9b2fdd9c80",
    size: 24365,
    uncompressedSize: 89088,
  },
  /** CompressionStream("gzip") over pseudoText(1 MiB, 42); equals `zlib.gzipSync` (level 6) in Node. */
  gzipPseudo1MiB: { sha256: "b4ea5fd9f39dc74481a0ba028a1d9f4648d7f662a934a1df8161b64172eabab3", size: 328129 },
} as const;
