/**
 * The files of COPY and ADD: resolve sources (context, another stage, an image) with docker's rules,
 * then write one deterministic layer with the copied files.
 */
import type { Env } from "../../env";
import type { ContextIndex, ContextFile } from "../../context/ingest";
import { deleteScratch, putScratch, readScratch } from "../../storage/scratch";
import { resolveInRoot, rootRelative, cleanPath } from "../../context/paths";
import type { TarEntry } from "../../oci/tar";
import type { CacheSource } from "../../plan/cachekey";
import { DockerIgnore } from "../../dockerfile/dockerignore";
import { loadTree, readLayerFiles, readSmallFile, storeLayer, type FsNode, type FsTree } from "../layers";
import { StepError, type LayerRef } from "../model";
import { PackReader, type PackSpan } from "./pack-reader";

/** A node of a copy source (root-relative path; "" is the root). */
export interface SourceNode {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  linkname?: string;
  /** Where the bytes are: context pack offset (in `pack` when not the source's) or a layer node. */
  offset?: number;
  pack?: string;
  parts?: { pack: string; offset: number; size: number }[];
  fs?: FsNode;
  /** Inline contents (heredoc sources, downloaded URLs staged in memory). */
  data?: Uint8Array;
  /** A staged object in R2 (downloaded URL, extracted from a layer). */
  r2Key?: string;
}

export interface CopySource {
  kind: "context" | "layers";
  nodes: Map<string, SourceNode>;
  /** Stage/image sources keep their owners; the context's become 0:0. */
  keepOwner: boolean;
  /** For layer sources: where to read bodies. */
  layers?: LayerRef[];
  pack?: string;
}

export function contextSource(index: ContextIndex): CopySource {
  const nodes = new Map<string, SourceNode>();
  nodes.set("", { path: "", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0 });
  for (const f of index.files as ContextFile[]) {
    nodes.set(f.path, { path: f.path, type: f.type, mode: f.mode, uid: f.uid, gid: f.gid, size: f.size, sha256: f.sha256, linkname: f.linkTarget, offset: f.offset, pack: f.pack, parts: f.parts });
  }
  return { kind: "context", nodes, keepOwner: false, pack: index.pack };
}

export function treeSource(tree: FsTree, layers: LayerRef[]): CopySource {
  const nodes = new Map<string, SourceNode>();
  nodes.set("", { path: "", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0 });
  for (const n of tree.values()) {
    if (n.type === "other" || n.type === "hardlink") continue;
    nodes.set(n.path, { path: n.path, type: n.type, mode: n.mode, uid: n.uid, gid: n.gid, size: n.size, linkname: n.linkname, fs: n });
  }
  return { kind: "layers", nodes, keepOwner: true, layers };
}

const linkLookup = (nodes: Map<string, { type: string; linkname?: string }>) => ({
  linkTarget: (p: string) => {
    const n = nodes.get(p);
    return n && n.type === "symlink" ? n.linkname : undefined;
  },
});

const WILDCARD = /[*?[]/;

/** filepath.Match of one pattern against a whole path (separators never matched by wildcards). */
export function globToRegExp(pattern: string): RegExp {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i];
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else if (ch === "\\" && i + 1 < pattern.length) re += "\\" + pattern[++i];
    else if (ch === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end < 0) throw new StepError(`syntax error in pattern: ${pattern}`);
      let cls = pattern.slice(i + 1, end);
      if (cls.startsWith("^") || cls.startsWith("!")) cls = "^" + cls.slice(1);
      re += `[${cls.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else re += ch.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(re + "$");
}

export interface SelectedSource {
  arg: string;
  /** COPY --parents: the part of the path kept under the destination (after a `/./` pivot). */
  parentPath?: string;
  node: SourceNode;
  /** For directories: every node below it. */
  below: SourceNode[];
}

/** Resolves COPY source arguments against a source fs (wildcards, symlinks kept inside the root). */
export function selectSources(src: CopySource, args: string[], exclude: string[] = []): SelectedSource[] {
  const out: SelectedSource[] = [];
  const ex = exclude.length ? new DockerIgnore(exclude) : undefined;
  const excluded = (p: string, base: string) => !!ex && (ex.matches(p) || (base !== "" && p.startsWith(base + "/") && ex.matches(p.slice(base.length + 1))));
  const links = linkLookup(src.nodes);
  const below = (dir: string) => {
    const prefix = dir ? dir + "/" : "";
    const list: SourceNode[] = [];
    for (const [p, n] of src.nodes) if (p !== dir && p.startsWith(prefix)) list.push(n);
    return list;
  };
  for (const arg of args) {
    const rel = rootRelative(arg);
    const pivotAt = arg.indexOf("/./");
    const pivot = pivotAt >= 0 ? rootRelative(arg.slice(0, pivotAt)) : "";
    let matches: string[];
    if (WILDCARD.test(rel)) {
      const re = globToRegExp(rel);
      matches = [...src.nodes.keys()].filter((p) => p !== "" && re.test(p)).sort();
      if (!matches.length) throw new StepError(`failed to compute cache key: failed to calculate checksum: "/${rel}": not found`);
    } else {
      matches = [rel];
    }
    for (const m of matches) {
      const resolved = resolveInRoot(links, m, true);
      const node = src.nodes.get(resolved);
      if (!node) throw new StepError(`failed to compute cache key: failed to calculate checksum: "/${rel}": not found`);
      if (matches.length > 1 && excluded(m, "")) continue;
      const parentPath = pivot && m.startsWith(pivot + "/") ? m.slice(pivot.length + 1) : m;
      out.push({ arg: m, parentPath, node, below: node.type === "dir" ? below(resolved).filter((n) => !excluded(n.path, resolved)) : [] });
    }
  }
  return out;
}

/** What a COPY's cache key sees of its sources: (dest, mode, uid, gid, sha256, link) per file; mtimes never count. */
export function sourceDigestList(sel: SelectedSource[], keepOwner = true): CacheSource[] {
  const list: CacheSource[] = [];
  for (const [i, s] of sel.entries()) {
    const base = s.node.path;
    const add = (n: SourceNode) => {
      const rel = base === "" ? n.path : n.path === base ? "" : n.path.slice(base.length + 1);
      const src: CacheSource = {
        dest: `${i}:${s.arg}:${rel}`,
        mode: n.mode,
        // context files become 0:0 (or --chown): the uploader's ids must not split the cache
        uid: keepOwner ? n.uid : 0,
        gid: keepOwner ? n.gid : 0,
        sha256: n.type === "file" ? (n.sha256 ?? `size:${n.size}`) : n.type,
      };
      if (n.linkname !== undefined) src.linkTarget = n.linkname;
      list.push(src);
    };
    add(s.node);
    for (const n of s.below) add(n);
  }
  return list;
}

export interface Owner {
  uid: number;
  gid: number;
}

function parsePasswd(text: string): Map<string, [number, number]> {
  const m = new Map<string, [number, number]>();
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length >= 4 && f[0] && !line.startsWith("#")) m.set(f[0], [Number(f[2]), Number(f[3])]);
  }
  return m;
}

/** --chown user[:group] → numeric ids; names from /etc/passwd and /etc/group of the image below. */
export async function resolveChown(env: Env, spec: string, layers: LayerRef[], tree: () => Promise<FsTree>): Promise<Owner> {
  const [user, group] = spec.split(":", 2);
  const numeric = (s: string) => /^\d+$/.test(s);
  let passwd: Map<string, [number, number]> | undefined;
  let groups: Map<string, [number, number]> | undefined;
  const loadPasswd = async () => {
    if (!passwd) passwd = parsePasswd((await readSmallFile(env, layers, await tree(), "etc/passwd")) ?? "");
    return passwd;
  };
  const loadGroups = async () => {
    if (!groups) groups = parsePasswd(((await readSmallFile(env, layers, await tree(), "etc/group")) ?? "").replace(/^([^:]*):([^:]*):(\d+):?/gm, "$1:$2:$3:$3:"));
    return groups;
  };
  let uid: number;
  let gid: number;
  if (numeric(user)) {
    uid = Number(user);
    gid = uid;
  } else {
    const u = (await loadPasswd()).get(user);
    if (!u) throw new StepError(`unable to convert uid/gid chown string to host mapping: can't find uid for user ${user}: no such user: ${user}`);
    [uid, gid] = u;
  }
  if (group !== undefined && group !== "") {
    if (numeric(group)) gid = Number(group);
    else {
      const g = (await loadGroups()).get(group);
      if (!g) throw new StepError(`unable to convert uid/gid chown string to host mapping: can't find gid for group ${group}: no such group: ${group}`);
      gid = g[0];
    }
  }
  return { uid, gid };
}

export function parseChmod(spec: string): number {
  if (!/^[0-7]{1,5}$/.test(spec) || parseInt(spec, 8) > 0o7777) throw new StepError(`invalid chmod parameter: '${spec}'. it should be octal string and between 0 and 07777`);
  return parseInt(spec, 8);
}

export interface LayerFile {
  path: string; // root-relative destination
  type: "file" | "dir" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname?: string;
  src?: SourceNode;
}

export interface CopyOptions {
  dest: string;
  workdir: string;
  owner?: Owner;
  chmod?: number;
  keepOwner: boolean;
  /** The merged tree of the image below (for existing dirs and symlinks on the destination path). */
  destTree: FsTree;
  /** True when the instruction had more than one source argument. */
  multipleArgs: boolean;
  /** COPY --parents: sources keep their path (from the pivot) under the destination directory. */
  parents?: boolean;
}

/** Maps selected sources onto destination paths with docker's directory and trailing-slash rules. */
export function mapCopy(sel: SelectedSource[], opts: CopyOptions): LayerFile[] {
  const destAbs = cleanPath(opts.dest.startsWith("/") ? opts.dest : `${opts.workdir || "/"}/${opts.dest}`);
  const trailing = opts.dest.endsWith("/") || opts.dest === "." || opts.dest.endsWith("/.");
  const links = linkLookup(opts.destTree);
  let dest = rootRelative(destAbs);
  // follow symlinks on the destination's parents inside the image (never outside its root)
  if (dest) {
    const slash = dest.lastIndexOf("/");
    const parent = slash < 0 ? "" : resolveInRoot(links, dest.slice(0, slash), true);
    dest = (parent ? parent + "/" : "") + dest.slice(slash + 1);
    const existing = opts.destTree.get(dest);
    if (existing?.type === "symlink") {
      const r = resolveInRoot(links, dest, true);
      if (opts.destTree.get(r)?.type === "dir") dest = r;
    }
  }
  const existingDir = dest === "" || opts.destTree.get(dest)?.type === "dir";
  const nonDirCount = sel.length;
  const destIsDir = trailing || existingDir || nonDirCount > 1 || !!opts.parents;
  if (opts.multipleArgs && !trailing && !existingDir && !opts.parents) {
    throw new StepError("When using COPY with more than one source file, the destination must be a directory and end with a /");
  }
  const out = new Map<string, LayerFile>();
  const owner = (n: SourceNode) => opts.owner ?? (opts.keepOwner ? { uid: n.uid, gid: n.gid } : { uid: 0, gid: 0 });
  const mode = (n: SourceNode) => (n.type === "symlink" ? 0o777 : opts.chmod ?? n.mode);
  const put = (path: string, n: SourceNode) => {
    const o = owner(n);
    out.set(path, { path, type: n.type, mode: mode(n), uid: o.uid, gid: o.gid, size: n.type === "file" ? n.size : 0, linkname: n.linkname, src: n });
  };
  const join = (a: string, b: string) => (a && b ? `${a}/${b}` : a || b);
  for (const s of sel) {
    if (opts.parents && s.parentPath) {
      const target = join(dest, s.parentPath);
      put(target, s.node);
      const base = s.node.path;
      for (const n of s.below) put(join(target, base === "" ? n.path : n.path.slice(base.length + 1)), n);
      continue;
    }
    if (s.node.type === "dir") {
      if (dest) put(dest, s.node);
      const base = s.node.path;
      for (const n of s.below) put(join(dest, base === "" ? n.path : n.path.slice(base.length + 1)), n);
    } else {
      const name = s.node.path.slice(s.node.path.lastIndexOf("/") + 1) || s.arg.slice(s.arg.lastIndexOf("/") + 1);
      put(destIsDir ? join(dest, name) : dest, s.node);
    }
  }
  // parents that do not exist below are created 0755 (owned like the copied files when --chown)
  const parentOwner = opts.owner ?? { uid: 0, gid: 0 };
  for (const p of [...out.keys()]) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (out.has(d) || opts.destTree.get(d)?.type === "dir") continue;
      out.set(d, { path: d, type: "dir", mode: 0o755, uid: parentOwner.uid, gid: parentOwner.gid, size: 0 });
    }
  }
  return [...out.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Stages bodies of layer-sourced files into R2 (one pass per source layer) so the layer can be written in path order. */
async function stageLayerBodies(env: Env, files: LayerFile[], layers: LayerRef[], tmpPrefix: string): Promise<string[]> {
  const nodes = new Map<FsNode, SourceNode[]>();
  for (const f of files) {
    // empty files need no staging: writeCopyLayer writes them without a body
    if (f.type !== "file" || !f.src?.fs || f.size === 0) continue;
    const list = nodes.get(f.src.fs) ?? [];
    list.push(f.src);
    nodes.set(f.src.fs, list);
  }
  const keys: string[] = [];
  let n = 0;
  await readLayerFiles(env, layers, [...nodes.keys()], async (fsNode, body) => {
    const key = `${tmpPrefix}/${n++}`;
    const fixed = new FixedLengthStream(fsNode.size);
    await Promise.all([body.pipeTo(fixed.writable), putScratch(env, key, fixed.readable)]);
    keys.push(key);
    for (const s of nodes.get(fsNode) ?? []) s.r2Key = key;
  });
  return keys;
}

const fromPack = (s: SourceNode | undefined): s is SourceNode & PackSpan => !!s && !s.data && !s.r2Key && s.offset !== undefined;

async function openBody(env: Env, f: LayerFile, packReader?: PackReader): Promise<ReadableStream<Uint8Array> | Uint8Array> {
  const s = f.src!;
  if (s.data) return s.data;
  if (s.r2Key) return await readScratch(env, s.r2Key);
  if (fromPack(s) && packReader) return await packReader.body(s);
  throw new Error(`no contents for ${f.path}`);
}

/** Writes the mapped files as one layer. */
export async function writeCopyLayer(
  env: Env,
  files: LayerFile[],
  source: CopySource | undefined,
  mtime: number,
  tmpPrefix: string,
): Promise<LayerRef> {
  let staged: string[] = [];
  try {
    if (source?.kind === "layers") staged = await stageLayerBodies(env, files, source.layers!, tmpPrefix);
    // the context's files are read as the pack lies: many per ranged GET, in batches of the layer's order
    const packReader = source?.pack
      ? new PackReader(
          env,
          source.pack,
          files.flatMap((f) => (f.type === "file" && fromPack(f.src) ? [f.src] : [])),
        )
      : undefined;
    async function* entries(): AsyncGenerator<TarEntry> {
      let n = 0;
      for (const f of files) {
        // small entries make little tar each: a turn for the isolate's other requests every so many
        if (++n % 1024 === 0) await new Promise((r) => setTimeout(r, 0));
        const base = { path: f.path, mode: f.mode, uid: f.uid, gid: f.gid, mtime };
        if (f.type === "dir") yield { ...base, type: "dir" };
        else if (f.type === "symlink") yield { ...base, type: "symlink", linkname: f.linkname ?? "" };
        else yield { ...base, type: "file", size: f.size, body: f.size === 0 ? new Uint8Array(0) : await openBody(env, f, packReader) };
      }
    }
    return await storeLayer(env, entries());
  } finally {
    await deleteScratch(env, staged);
  }
}

export { loadTree };
