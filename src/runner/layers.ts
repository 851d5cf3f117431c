// The runner's layer cache: every layer unpacked once, by diffID, in overlayfs lowerdir format under
// <work-dir>/layers/<hex>. Blobs are fetched from kiln's registry with the job's token; the compressed
// digest and the diffID are both verified while streaming, and a layer becomes visible (renamed into
// place) only after both matched.
import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import type { JobLayer } from "../protocol/jobs";
import { extractLayer } from "./extract";

export class LayerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LayerError";
  }
}

async function* hashed(source: AsyncIterable<Buffer | Uint8Array>, hash: ReturnType<typeof createHash>, count?: { n: number }): AsyncGenerator<Buffer> {
  for await (const c of source) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
    hash.update(b);
    if (count) count.n += b.length;
    yield b;
  }
}

function decompress(mediaType: string, source: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  if (/\+zstd$|zstd$/.test(mediaType)) {
    const p = spawn("zstd", ["-dc"], { stdio: ["pipe", "pipe", "inherit"] });
    Readable.from(source).pipe(p.stdin);
    p.stdin.on("error", () => {});
    return p.stdout;
  }
  if (/gzip$/.test(mediaType)) return Readable.from(source).pipe(zlib.createGunzip());
  return source;
}

export interface FetchOptions {
  server: string;
  repository: string;
  registryToken: string;
}

export class LayerStore {
  readonly dir: string;
  private pending = new Map<string, Promise<string>>();

  constructor(workDir: string) {
    this.dir = path.join(workDir, "layers");
  }

  static hexOf(diffId: string): string {
    const m = /^sha256:([a-f0-9]{64})$/.exec(diffId);
    if (!m) throw new LayerError(`invalid diffID ${diffId}`);
    return m[1];
  }

  pathOf(diffId: string): string {
    return path.join(this.dir, LayerStore.hexOf(diffId));
  }

  async has(diffId: string): Promise<boolean> {
    try {
      await fs.access(this.pathOf(diffId));
      return true;
    } catch {
      return false;
    }
  }

  /** The unpacked directory of a layer, fetching and unpacking it when it is not cached. */
  async ensure(layer: JobLayer, opts: FetchOptions): Promise<string> {
    const dest = this.pathOf(layer.diffId);
    if (await this.has(layer.diffId)) {
      await this.markUsed(layer.diffId);
      return dest;
    }
    let p = this.pending.get(layer.diffId);
    if (!p) {
      p = this.fetchAndUnpack(layer, opts, dest).finally(() => this.pending.delete(layer.diffId));
      this.pending.set(layer.diffId, p);
    }
    return await p;
  }

  /** Unpacks a layer from a stream (verified against its digest and diffID). */
  async unpack(layer: JobLayer, body: AsyncIterable<Buffer | Uint8Array>, dest = this.pathOf(layer.diffId)): Promise<string> {
    await fs.mkdir(this.dir, { recursive: true });
    const tmp = path.join(this.dir, `.tmp-${LayerStore.hexOf(layer.diffId)}-${process.pid}-${Math.random().toString(36).slice(2)}`);
    await fs.mkdir(tmp, { mode: 0o755 });
    try {
      const gzHash = createHash("sha256");
      const tarHash = createHash("sha256");
      const count = { n: 0 };
      const compressed = hashed(body, gzHash, count);
      await extractLayer(hashed(decompress(layer.mediaType, compressed), tarHash), tmp);
      const digest = `sha256:${gzHash.digest("hex")}`;
      const diffId = `sha256:${tarHash.digest("hex")}`;
      if (digest !== layer.digest) throw new LayerError(`layer ${layer.digest}: content has digest ${digest}`);
      if (diffId !== layer.diffId) throw new LayerError(`layer ${layer.digest}: uncompressed content has diffID ${diffId}, expected ${layer.diffId}`);
      try {
        await fs.rename(tmp, dest);
        await this.markUsed(layer.diffId);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
        await fs.rm(tmp, { recursive: true, force: true }); // someone else won the race
      }
      return dest;
    } catch (e) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  private async fetchAndUnpack(layer: JobLayer, opts: FetchOptions, dest: string): Promise<string> {
    const url = `${opts.server.replace(/\/$/, "")}/v2/${opts.repository}/blobs/${layer.digest}`;
    const res = await fetch(url, { headers: { authorization: `Bearer ${opts.registryToken}` } });
    if (!res.ok || !res.body) {
      throw new LayerError(`fetching layer ${layer.digest} from ${opts.repository}: HTTP ${res.status} ${(await res.text().catch(() => "")).slice(0, 300)}`);
    }
    return await this.unpack(layer, res.body as unknown as AsyncIterable<Uint8Array>, dest);
  }

  /** Adopts a directory (an upperdir that produced `diffId`) as the unpacked form of that layer. */
  async adopt(diffId: string, dir: string): Promise<boolean> {
    await fs.mkdir(this.dir, { recursive: true });
    if (await this.has(diffId)) return false;
    try {
      await fs.rename(dir, this.pathOf(diffId));
      await this.markUsed(diffId);
      return true;
    } catch {
      return false;
    }
  }

  private usedDir(): string {
    return path.join(this.dir, ".used");
  }

  /** Notes that a layer was used now (least recently used layers go first in gc). */
  async markUsed(diffId: string): Promise<void> {
    await fs.mkdir(this.usedDir(), { recursive: true });
    const f = path.join(this.usedDir(), LayerStore.hexOf(diffId));
    const now = new Date();
    await fs.utimes(f, now, now).catch(async () => { await fs.writeFile(f, ""); });
  }

  /**
   * Removes least recently used layers until the store holds at most `maxBytes`, never one in `keep`
   * (the diffIDs running jobs use). Returns the diffIDs removed.
   */
  async gc(maxBytes: number, keep: Set<string>): Promise<string[]> {
    const names = (await fs.readdir(this.dir).catch(() => [] as string[])).filter((n) => /^[a-f0-9]{64}$/.test(n));
    const layers: { hex: string; used: number; size: number }[] = [];
    for (const hex of names) {
      const used = (await fs.stat(path.join(this.usedDir(), hex)).catch(() => null))?.mtimeMs ?? 0;
      layers.push({ hex, used, size: await duBytes(path.join(this.dir, hex)) });
    }
    let total = layers.reduce((n, l) => n + l.size, 0);
    const removed: string[] = [];
    for (const l of layers.sort((a, b) => a.used - b.used)) {
      if (total <= maxBytes) break;
      const diffId = `sha256:${l.hex}`;
      if (keep.has(diffId) || this.pending.has(diffId)) continue;
      // Rename first so a concurrent job never sees a half-deleted layer.
      const trash = path.join(this.dir, `.tmp-gc-${l.hex}-${process.pid}`);
      try {
        await fs.rename(path.join(this.dir, l.hex), trash);
      } catch {
        continue;
      }
      await fs.rm(trash, { recursive: true, force: true });
      await fs.rm(path.join(this.usedDir(), l.hex), { force: true });
      total -= l.size;
      removed.push(diffId);
    }
    return removed;
  }
}

/** Disk usage of a directory tree in bytes (`du -sb`). */
async function duBytes(dir: string): Promise<number> {
  return await new Promise((resolve) => {
    const p = spawn("du", ["-sb", dir], { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    p.stdout.on("data", (d) => { out += d; });
    p.on("close", () => resolve(Number(out.split(/\s/)[0]) || 0));
    p.on("error", () => resolve(0));
  });
}
