/** ADD specifics: local tar archives are extracted, http(s) URLs downloaded (with --checksum verified). */
import type { Env } from "../../env";
import { ByteReader } from "../../oci/bytes";
import { concatBytes } from "../../http/body";
import { OutboundError, outboundPolicy, safeFetch } from "../../http/outbound";
import { workerHasher } from "../../context/hasher";
import { readTar } from "../../context/tar-reader";
import { cleanPath, rootRelative } from "../../context/paths";
import { readContextRange } from "../../storage/contexts";
import { deleteScratch, putScratch } from "../../storage/scratch";
import { StepError, type LayerRef } from "../model";
import { writeCopyLayer, type CopySource, type LayerFile, type Owner, type SourceNode } from "./copy-files";
import type { FsTree } from "../layers";
import { readContextFile, type PackSpan } from "./pack-reader";
import { transfer } from "./copy";
import type { Executor, StepContext, StepInput, StepOutcome } from "./executor";
import { gunzipPaced } from "../../context/gunzip";

const MAX_UNKNOWN_LENGTH = 64 * 1024 * 1024;

function tarHeaderOk(h: Uint8Array): boolean {
  if (h.length < 512) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
  const s = new TextDecoder().decode(h.subarray(148, 156)).replace(/\0/g, "").trim();
  return s !== "" && parseInt(s, 8) === sum;
}

async function head(stream: ReadableStream<Uint8Array>, n: number): Promise<Uint8Array> {
  const br = new ByteReader(stream);
  const out = await br.peek(n);
  await br.cancel();
  return out;
}

/** Whether a context file is a tar archive (plain or gzip), as docker decides before extracting. */
export async function isArchive(env: Env, source: CopySource, node: SourceNode): Promise<boolean> {
  if (node.size < 18 || !source.pack || node.offset === undefined) return false;
  const first = await head(node.parts ? await readContextFile(env, source.pack, node as PackSpan) : await readContextRange(env, node.pack ?? source.pack, node.offset, Math.min(node.size, 4096)), 4096);
  if (first[0] === 0x1f && first[1] === 0x8b) {
    try {
      const s = gunzipPaced(await readContextFile(env, source.pack, node as PackSpan));
      return tarHeaderOk(await head(s, 512));
    } catch {
      return false;
    }
  }
  return tarHeaderOk(first.subarray(0, 512));
}

/** Extracts archives (plus already-mapped plain files) into `dest` as one layer. */
export async function extractArchiveEntries(
  env: Env,
  source: CopySource,
  archives: SourceNode[],
  plain: LayerFile[],
  opts: { dest: string; workdir: string; owner?: Owner; destTree: FsTree; mtime: number },
): Promise<LayerRef> {
  const destAbs = cleanPath(opts.dest.startsWith("/") ? opts.dest : `${opts.workdir}/${opts.dest}`);
  const dest = rootRelative(destAbs);
  const files = new Map<string, LayerFile>();
  for (const f of plain) files.set(f.path, f);
  const staged: string[] = [];
  const prefix = `tmp/extract/${crypto.randomUUID()}`;
  try {
    for (const a of archives) {
      let s = await readContextFile(env, source.pack!, a as PackSpan);
      const first = await (async () => {
        const br = new ByteReader(s);
        const h = await br.peek(2);
        s = new ReadableStream({
          async pull(c) {
            const chunk = await br.readExact(Math.max(1, (await br.peek(65536)).byteLength));
            if (!chunk || !chunk.byteLength) c.close();
            else c.enqueue(chunk);
          },
        });
        return h;
      })();
      if (first[0] === 0x1f && first[1] === 0x8b) s = gunzipPaced(s);
      for await (const e of readTar(new ByteReader(s))) {
        const rel = rootRelative(e.path);
        if (!rel) continue;
        const path = dest ? `${dest}/${rel}` : rel;
        const owner = opts.owner ?? { uid: e.uid, gid: e.gid };
        if (e.type === "dir") files.set(path, { path, type: "dir", mode: e.mode, ...owner, size: 0 });
        else if (e.type === "symlink") files.set(path, { path, type: "symlink", mode: 0o777, ...owner, size: 0, linkname: e.linkname });
        else if (e.type === "file" && e.size === 0) {
          // nothing to stage (a zero-length stream into R2 never settles)
          files.set(path, { path, type: "file", mode: e.mode, ...owner, size: 0, src: { path, type: "file", mode: e.mode, uid: e.uid, gid: e.gid, size: 0, data: new Uint8Array(0) } });
        } else if (e.type === "file") {
          const key = `${prefix}/${staged.length}`;
          const fixed = new FixedLengthStream(e.size);
          const w = fixed.writable.getWriter();
          const put = putScratch(env, key, fixed.readable);
          await e.body(async (c) => {
            await w.write(c);
          });
          await w.close();
          await put;
          staged.push(key);
          files.set(path, { path, type: "file", mode: e.mode, ...owner, size: e.size, src: { path, type: "file", mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, r2Key: key } });
        } else if (e.type === "hardlink") {
          const target = files.get(dest ? `${dest}/${rootRelative(e.linkname)}` : rootRelative(e.linkname));
          if (target) files.set(path, { ...target, path });
        }
      }
    }
    const parentOwner = opts.owner ?? { uid: 0, gid: 0 };
    for (const p of [...files.keys()]) {
      const parts = p.split("/");
      for (let i = 1; i < parts.length; i++) {
        const d = parts.slice(0, i).join("/");
        if (files.has(d) || opts.destTree.get(d)?.type === "dir") continue;
        files.set(d, { path: d, type: "dir", mode: 0o755, ...parentOwner, size: 0 });
      }
    }
    const sorted = [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return await writeCopyLayer(env, sorted, source.kind === "context" ? source : undefined, opts.mtime, prefix);
  } finally {
    await deleteScratch(env, staged);
  }
}

/** Downloads ADD URLs into R2 (temporary), verifying --checksum. */
export async function addRemoteSources(
  env: Env,
  urls: string[],
  checksum: string | undefined,
  tmpPrefix: string,
  log: (text: string) => Promise<void>,
  /** The origin the build was started with: kiln itself, never fetched. */
  origin?: string,
): Promise<{ nodes: SourceNode[]; keys: string[] }> {
  if (checksum && urls.length !== 1) throw new StepError("ADD --checksum needs exactly one source URL");
  if (checksum && !/^sha256:[0-9a-f]{64}$/.test(checksum)) throw new StepError(`invalid checksum digest format: ${checksum}`);
  const nodes: SourceNode[] = [];
  const keys: string[] = [];
  let policy: ReturnType<typeof outboundPolicy>;
  try {
    policy = outboundPolicy(env, origin);
  } catch (e) {
    throw new StepError(`ADD: ${(e as Error).message}`);
  }
  for (const [i, url] of urls.entries()) {
    await log(`downloading ${url}\n`);
    let res: Response;
    try {
      // the URL is the user's: internal addresses and kiln itself are refused, at every redirect hop
      res = await safeFetch(url, {}, { policy, label: `ADD ${url}` });
    } catch (e) {
      if (e instanceof OutboundError) throw new StepError(e.message);
      throw new StepError(`failed to load ${url}: ${(e as Error).message}`);
    }
    if (!res.ok || !res.body) throw new StepError(`failed to load ${url}: invalid response status ${res.status}`);
    const name = decodeURIComponent(new URL(url).pathname.split("/").filter(Boolean).pop() ?? "") || "__unnamed__";
    const key = `${tmpPrefix}/url-${i}`;
    const h = workerHasher();
    const len = Number(res.headers.get("content-length") ?? NaN);
    let size = 0;
    if (Number.isFinite(len)) {
      const fixed = new FixedLengthStream(len);
      const hashing = new TransformStream<Uint8Array, Uint8Array>({
        transform(c, ctl) {
          h.update(c);
          size += c.byteLength;
          ctl.enqueue(c);
        },
      });
      await Promise.all([res.body.pipeThrough(hashing).pipeTo(fixed.writable), putScratch(env, key, fixed.readable)]);
    } else {
      const chunks: Uint8Array[] = [];
      const r = res.body.getReader();
      for (;;) {
        const { done, value } = await r.read();
        if (done) break;
        size += value.byteLength;
        if (size > MAX_UNKNOWN_LENGTH) throw new StepError(`${url}: response without Content-Length larger than ${MAX_UNKNOWN_LENGTH} bytes`);
        h.update(value);
        chunks.push(value);
      }
      await putScratch(env, key, concatBytes(chunks));
    }
    keys.push(key);
    const sha256 = await h.digest();
    if (checksum && sha256 !== checksum) throw new StepError(`digest mismatch ${sha256}: ${checksum}`);
    nodes.push({ path: name, type: "file", mode: 0o600, uid: 0, gid: 0, size, sha256, r2Key: key });
  }
  return { nodes, keys };
}

/** ADD: COPY's transfer, with URLs downloaded (safeFetch, the build's origin refused) and local archives extracted. */
export const addExecutor: Executor = {
  kind: "add",
  async execute(ctx: StepContext, input: StepInput): Promise<StepOutcome> {
    return await transfer(ctx, input, {
      remote: (urls, checksum, tmpPrefix) => addRemoteSources(ctx.env, urls, checksum, tmpPrefix, ctx.log, ctx.spec.origin),
      isArchive: (source, node) => isArchive(ctx.env, source, node),
      extract: (source, archives, plain, opts) => extractArchiveEntries(ctx.env, source, archives, plain, opts),
    });
  },
};
