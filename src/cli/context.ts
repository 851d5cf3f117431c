// Walks a build context directory honouring .dockerignore and streams it as a tar (gzip).
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, type Stats } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { DockerIgnore } from "../dockerfile/dockerignore";
import { tarStream, type TarEntry } from "../oci/tar";

export interface ContextFile {
  rel: string;
  abs: string;
  stat: Stats;
}

/** The files of `dir` that survive .dockerignore, sorted, directories before their children. */
export function listContext(dir: string, dockerfile = "Dockerfile"): ContextFile[] {
  let ignoreText = "";
  try {
    ignoreText = readFileSync(path.join(dir, ".dockerignore"), "utf8");
  } catch {}
  const ignore = new DockerIgnore(ignoreText);
  const keep = { dockerfilePath: dockerfile.split(path.sep).join("/") };
  const out: ContextFile[] = [];
  const walk = (relDir: string) => {
    const absDir = path.join(dir, relDir);
    for (const name of readdirSync(absDir).sort()) {
      const rel = relDir ? `${relDir}/${name}` : name;
      const abs = path.join(absDir, name);
      const stat = lstatSync(abs);
      const excluded = ignore.isExcluded(rel, keep);
      if (stat.isDirectory()) {
        if (!excluded) out.push({ rel, abs, stat });
        // An exception pattern may re-include something below an excluded directory.
        if (!ignore.canSkipDir(rel, keep)) walk(rel);
      } else if (!excluded && (stat.isFile() || stat.isSymbolicLink())) {
        out.push({ rel, abs, stat });
      }
    }
  };
  walk("");
  return out;
}

function toEntry(f: ContextFile): TarEntry {
  const base = { path: f.rel, mode: f.stat.mode & 0o7777, uid: 0, gid: 0, mtime: Math.floor(f.stat.mtimeMs / 1000) };
  if (f.stat.isDirectory()) return { ...base, type: "dir" };
  if (f.stat.isSymbolicLink()) return { ...base, type: "symlink", linkname: readlinkSync(f.abs) };
  return {
    ...base,
    type: "file",
    size: f.stat.size,
    body: Readable.toWeb(createReadStream(f.abs)) as unknown as ReadableStream<Uint8Array>,
  };
}

/** A gzip-compressed tar stream of the context. */
export function contextStream(dir: string, dockerfile?: string): { stream: ReadableStream<Uint8Array>; files: number } {
  const files = listContext(dir, dockerfile);
  const tar = tarStream((function* () { for (const f of files) yield toEntry(f); })());
  return { stream: tar.pipeThrough(new CompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>), files: files.length };
}
