/** Tar paths (clean, unsafe, whiteouts), the block size and the one tar error, shared by the reader and the writer. */

export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarError";
  }
}

/** Tar's block size: headers are one block, bodies are padded to whole blocks. */
export const BLOCK = 512;

/** `n` rounded up to whole blocks. */
export function roundUp(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

/** POSIX-clean a path (like Go's path.Clean) and strip a leading "./". Keeps a leading "/" and
 *  leading ".." components of relative paths; "" and "." become ".". */
export function cleanTarPath(p: string): string {
  if (p === "") return ".";
  const rooted = p.startsWith("/");
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(part);
  }
  const s = out.join("/");
  if (rooted) return "/" + s;
  return s === "" ? "." : s;
}

/** True for absolute paths and paths with any ".." component (before cleaning). */
export function isUnsafePath(p: string): boolean {
  if (p.startsWith("/")) return true;
  for (const part of p.split("/")) if (part === "..") return true;
  return false;
}

/** The whiteout that deletes `path` in a lower layer: `dir/.wh.name`. */
export function whiteoutPath(path: string): string {
  const c = cleanTarPath(path).replace(/^\/+/, "");
  const i = c.lastIndexOf("/");
  return i < 0 ? `.wh.${c}` : `${c.slice(0, i)}/.wh.${c.slice(i + 1)}`;
}

/** The opaque-directory marker that hides everything below `dir` in lower layers. */
export function opaqueWhiteout(dir: string): string {
  const c = cleanTarPath(dir).replace(/^\/+/, "");
  return c === "." || c === "" ? ".wh..wh..opq" : `${c}/.wh..wh..opq`;
}

/**
 * Resolves a path from an archive inside its root: relative ("a/b"), "" for the root itself, null when
 * it climbs above the root. A leading "/" or "./" is dropped; ".." that stays inside is applied.
 */
export function confinedTarPath(p: string): string | null {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (!out.length) return null;
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out.join("/");
}

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** The archive path for an entry: relative, clean, no "./"; refuses ".." and empty paths. */
export function archivePath(p: string, what: string): string {
  let s = p.replace(/^\/+/, "");
  if (isUnsafePath(s)) throw new TarError(`unsafe ${what} ${JSON.stringify(p)}: ".." component`);
  s = cleanTarPath(s);
  if (s === ".") throw new TarError(`empty ${what} ${JSON.stringify(p)}`);
  return s;
}
