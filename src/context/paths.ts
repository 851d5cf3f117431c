/** Path rules for build contexts: what a tar may contain, and symlink resolution that never leaves the root. */

export class UnsafePathError extends Error {}

/**
 * Normalizes a path from a context tar: strips `./` and trailing `/`, collapses `//`.
 * Refuses absolute paths and `..` components. Returns "" for the root itself.
 */
export function normalizeContextPath(raw: string): string {
  if (raw.startsWith("/")) throw new UnsafePathError(`absolute path in build context: ${raw}`);
  if (raw.includes("\0")) throw new UnsafePathError(`NUL byte in path in build context`);
  const parts: string[] = [];
  for (const p of raw.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") throw new UnsafePathError(`path with '..' in build context: ${raw}`);
    parts.push(p);
  }
  return parts.join("/");
}

/** Lexically cleans an absolute or relative path (like Go's path.Clean); `..` never climbs above the root. */
export function cleanPath(p: string): string {
  const abs = p.startsWith("/");
  const out: string[] = [];
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length) out.pop();
      continue;
    }
    out.push(seg);
  }
  return (abs ? "/" : "") + out.join("/") || (abs ? "/" : ".");
}

/** Joins segments then cleans, relative to a root: result has no leading slash ("" = root). */
export function rootRelative(p: string): string {
  const c = cleanPath("/" + p);
  return c === "/" ? "" : c.slice(1);
}

export interface LinkLookup {
  /** The symlink target of `path` (root-relative), or undefined when it is not a symlink. */
  linkTarget(path: string): string | undefined;
}

/**
 * Resolves `path` (root-relative) following symlinks in every component, like docker's
 * FollowSymlinkInScope: absolute link targets are taken relative to the root and `..` stops at the
 * root, so resolution never escapes. `followLast` = whether the final component is followed too.
 */
export function resolveInRoot(fs: LinkLookup, path: string, followLast = true): string {
  let pending = rootRelative(path).split("/").filter(Boolean);
  const done: string[] = [];
  let hops = 0;
  while (pending.length) {
    const seg = pending.shift()!;
    if (seg === "..") {
      done.pop();
      continue;
    }
    const candidate = [...done, seg].join("/");
    const target = followLast || pending.length ? fs.linkTarget(candidate) : undefined;
    if (target === undefined) {
      done.push(seg);
      continue;
    }
    if (++hops > 255) throw new UnsafePathError(`too many levels of symbolic links: ${path}`);
    if (target.startsWith("/")) done.length = 0;
    pending = [...target.split("/").filter((s) => s && s !== "."), ...pending];
  }
  return done.join("/");
}
