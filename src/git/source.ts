/**
 * The build context of a push: the provider's archive of the exact commit, its top-level folder
 * stripped and, when the webhook names a context subdirectory, only that subtree — handed to context
 * ingest as tar entries (decoded once, never re-encoded).
 */
import type { ContextEntries } from "../context/ingest";
import { cleanTarPath, isUnsafePath, readTar, type TarReadEntry } from "../oci/tar";
import { gunzipPaced } from "../context/gunzip";

export class SourceError extends Error {}

export function stripArchive(gzipped: ReadableStream<Uint8Array>, subdir: string): ContextEntries {
  const prefix = cleanTarPath(subdir) === "." ? "" : cleanTarPath(subdir).replace(/\/+$/, "") + "/";
  const tar = gunzipPaced(gzipped);
  async function* entries(): AsyncGenerator<TarReadEntry> {
    for await (const { header, body } of readTar(tar)) {
      if (header.type !== "file" && header.type !== "dir" && header.type !== "symlink" && header.type !== "hardlink") {
        await body.cancel();
        continue;
      }
      const path = cleanTarPath(header.path);
      if (isUnsafePath(path)) throw new SourceError(`archive entry escapes the root: ${header.path}`);
      const slash = path.indexOf("/");
      if (slash < 0) { await body.cancel(); continue; } // the top-level folder itself
      let rel = path.slice(slash + 1);
      if (prefix) {
        if (!(rel + "/").startsWith(prefix)) { await body.cancel(); continue; }
        rel = rel.slice(prefix.length);
      }
      if (!rel || rel === ".") { await body.cancel(); continue; }
      let linkname = header.linkname;
      if (header.type === "hardlink") {
        const target = cleanTarPath(linkname);
        const ts = target.indexOf("/");
        linkname = ts < 0 ? target : target.slice(ts + 1);
        if (prefix) {
          if (!linkname.startsWith(prefix)) throw new SourceError(`hardlink ${header.path} points outside the context`);
          linkname = linkname.slice(prefix.length);
        }
      }
      yield { header: { ...header, path: rel, linkname, mtime: Math.floor(header.mtime) }, body };
    }
  }
  return { entries: entries() };
}
