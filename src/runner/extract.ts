// Unpacks one OCI layer tar into its own directory in overlayfs's format, so the directory can be used as
// a lowerdir: `.wh.<name>` becomes a 0/0 character device, `.wh..wh..opq` the opaque xattr on its
// directory. Paths that climb out of the root, or go through a symlink, are refused.
import { spawnSync } from "node:child_process";
import { createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { confinedTarPath, OPAQUE_WHITEOUT, readTar, TarError, WHITEOUT_PREFIX, type TarHeader } from "../oci/tar";
import { OPAQUE_XATTR, setXattrs } from "./xattr";

export class UnsafeLayerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UnsafeLayerError";
  }
}

function mknod(p: string, kind: "c" | "b" | "p", major = 0, minor = 0): void {
  const args = kind === "p" ? [p, "p"] : [p, kind, String(major), String(minor)];
  const r = spawnSync("mknod", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mknod ${args.join(" ")}: ${r.stderr || r.error}`);
}

async function lstatOrNull(p: string) {
  try {
    return await fs.lstat(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/** Unpacks a tar stream into `dest` (which must exist and be empty). */
export async function extractLayer(source: AsyncIterable<Buffer | Uint8Array>, dest: string): Promise<void> {
  const knownDirs = new Set<string>([""]);
  const dirMeta: { full: string; h: TarHeader }[] = [];
  const xattrs: { path: string; name: string; value: Buffer; required?: boolean }[] = [];

  /** Makes sure every parent of rel is a real directory inside dest (never a symlink). */
  const ensureParents = async (rel: string) => {
    const parts = rel.split("/").slice(0, -1);
    let cur = "";
    for (const part of parts) {
      cur = cur ? `${cur}/${part}` : part;
      if (knownDirs.has(cur)) continue;
      const full = path.join(dest, cur);
      const st = await lstatOrNull(full);
      if (!st) await fs.mkdir(full, { mode: 0o755 });
      else if (st.isSymbolicLink()) throw new UnsafeLayerError(`layer entry ${rel} goes through the symlink ${cur}`);
      else if (!st.isDirectory()) throw new UnsafeLayerError(`layer entry ${rel} is below the non-directory ${cur}`);
      knownDirs.add(cur);
    }
  };

  const removeExisting = async (full: string, keepDir: boolean) => {
    const st = await lstatOrNull(full);
    if (!st) return;
    if (keepDir && st.isDirectory()) return;
    await fs.rm(full, { recursive: true, force: true });
  };

  const tar = Readable.toWeb(Readable.from(source)) as unknown as ReadableStream<Uint8Array>;
  for await (const entry of readTar(tar)) {
    const h = { ...entry.header, mode: entry.header.mode & 0o7777, mtime: Math.floor(entry.header.mtime) };
    if (h.type === "other") continue; // entry kinds a layer cannot carry into a rootfs (e.g. GNU sparse)
    const rel = confinedTarPath(h.path);
    if (rel === null) throw new UnsafeLayerError(`layer entry ${JSON.stringify(h.path)} escapes the root`);
    if (rel === "") continue; // the root directory itself
    const base = path.posix.basename(rel);
    const parent = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
    await ensureParents(rel);
    if (base === OPAQUE_WHITEOUT) {
      // The parent directory hides everything below it in lower layers.
      xattrs.push({ path: parent ? path.join(dest, parent) : dest, name: OPAQUE_XATTR, value: Buffer.from("y") });
      continue;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      const name = base.slice(WHITEOUT_PREFIX.length);
      if (!name || name === "." || name === "..") throw new UnsafeLayerError(`invalid whiteout ${rel}`);
      const full = path.join(dest, parent, name);
      await removeExisting(full, false);
      knownDirs.delete(parent ? `${parent}/${name}` : name);
      mknod(full, "c", 0, 0);
      continue;
    }
    const full = path.join(dest, rel);
    switch (h.type) {
      case "dir": {
        await removeExisting(full, true);
        if (!(await lstatOrNull(full))) await fs.mkdir(full, { mode: 0o700 });
        knownDirs.add(rel);
        await fs.lchown(full, h.uid, h.gid);
        await fs.chmod(full, h.mode);
        dirMeta.push({ full, h });
        break;
      }
      case "file": {
        await removeExisting(full, false);
        knownDirs.delete(rel);
        await pipeline(Readable.fromWeb(entry.body as import("node:stream/web").ReadableStream<Uint8Array>), createWriteStream(full, { mode: 0o600 }));
        await fs.lchown(full, h.uid, h.gid);
        await fs.chmod(full, h.mode);
        await fs.lutimes(full, h.mtime, h.mtime);
        break;
      }
      case "symlink": {
        await removeExisting(full, false);
        knownDirs.delete(rel);
        await fs.symlink(h.linkname, full);
        await fs.lchown(full, h.uid, h.gid);
        await fs.lutimes(full, h.mtime, h.mtime);
        break;
      }
      case "hardlink": {
        const target = confinedTarPath(h.linkname);
        if (!target) throw new UnsafeLayerError(`hardlink ${rel} points outside the root (${JSON.stringify(h.linkname)})`);
        await ensureParents(target);
        const tfull = path.join(dest, target);
        const tst = await lstatOrNull(tfull);
        if (!tst || tst.isDirectory()) throw new TarError(`hardlink ${rel} points to ${target}, which is not an earlier file of this layer`);
        await removeExisting(full, false);
        await fs.link(tfull, full);
        break;
      }
      case "char":
      case "block":
      case "fifo": {
        await removeExisting(full, false);
        mknod(full, h.type === "char" ? "c" : h.type === "block" ? "b" : "p", h.devmajor, h.devminor);
        await fs.lchown(full, h.uid, h.gid);
        await fs.chmod(full, h.mode);
        await fs.lutimes(full, h.mtime, h.mtime);
        break;
      }
    }
    for (const [name, value] of Object.entries(h.xattrs ?? {})) {
      if (name.startsWith("trusted.overlay.")) continue; // never let a layer forge overlay metadata
      xattrs.push({ path: full, name, value: Buffer.from(value.buffer, value.byteOffset, value.byteLength), required: false });
    }
  }
  if (xattrs.length) await setXattrs(xattrs);
  // Directory mtimes last: creating their children changed them.
  for (const { full, h } of dirMeta.reverse()) await fs.lutimes(full, h.mtime, h.mtime);
}
