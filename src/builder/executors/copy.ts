/**
 * COPY (and the transfer ADD shares): sources from the context, an earlier stage or an image (read as
 * the build's principal), mapped with docker's rules, written as one deterministic layer. The key
 * sees every source file (never mtimes) and, for --from, the source stage's key or image digest.
 */
import type { AddInstruction, CopyInstruction } from "../../dockerfile/types";
import { resolveFrom } from "../../plan/graph";
import { cacheKeyFor, keyedInstruction } from "../cachekey";
import { deleteScratch } from "../../storage/scratch";
import { loadImage } from "../image";
import { loadTree, type FsTree } from "../layers";
import { StepError, type LayerRef } from "../model";
import {
  contextSource,
  mapCopy,
  parseChmod,
  resolveChown,
  selectSources,
  sourceDigestList,
  treeSource,
  writeCopyLayer,
  type CopySource,
  type LayerFile,
  type Owner,
  type SelectedSource,
  type SourceNode,
} from "./copy-files";
import { cached, commit, history, lookup, prepare, type Executor, type StepContext, type StepInput, type StepOutcome } from "./executor";

/** What ADD adds to COPY's transfer (add.ts). */
export interface AddHooks {
  remote(urls: string[], checksum: string | undefined, tmpPrefix: string): Promise<{ nodes: SourceNode[]; keys: string[] }>;
  isArchive(source: CopySource, node: SourceNode): Promise<boolean>;
  extract(source: CopySource, archives: SourceNode[], plain: LayerFile[], opts: { dest: string; workdir: string; owner?: Owner; destTree: FsTree; mtime: number }): Promise<LayerRef>;
}

function heredocNodes(inst: CopyInstruction | AddInstruction): SourceNode[] {
  return inst.sourceContents.map((s) => {
    const data = new TextEncoder().encode(s.data);
    return { path: s.path, type: "file" as const, mode: 0o644, uid: 0, gid: 0, size: data.byteLength, data };
  });
}

/** The files COPY reads: the context, or with --from the last state of a stage or an image. */
async function copySource(ctx: StepContext, stage: number, from: string | undefined): Promise<{ source: CopySource; fromKey?: string }> {
  if (!from) return { source: contextSource(await ctx.contextIndex()) };
  const b = resolveFrom(from, ctx.graph.allStages, stage);
  if (b.kind === "stage") {
    const srcStage = ctx.graph.stages.find((s) => s.index === b.index);
    if (!srcStage) throw new StepError(`stage ${from} is not part of this build`);
    const srcState = ctx.stateOf(srcStage.steps[srcStage.steps.length - 1]);
    return { source: treeSource(await loadTree(ctx.env, srcState.layers), srcState.layers), fromKey: srcState.key };
  }
  if (b.kind === "scratch") throw new StepError("COPY --from=scratch: scratch has no files");
  const img = await loadImage(ctx.env, b.ref, ctx.spec, ctx.spec.platform);
  return { source: treeSource(await loadTree(ctx.env, img.layers), img.layers), fromKey: img.manifestDigest };
}

/** COPY, or ADD with its hooks. */
export async function transfer(ctx: StepContext, { step, platform, scope }: StepInput, add?: AddHooks): Promise<StepOutcome> {
  const { parent, inst } = prepare<CopyInstruction | AddInstruction>(ctx, step);
  const from = inst.kind === "COPY" ? inst.from : undefined;
  const { source, fromKey } = await copySource(ctx, step.stage, from);
  const isUrl = (s: string) => !!add && /^https?:\/\//i.test(s);
  const remoteArgs = inst.sources.filter(isUrl);
  const selected: SelectedSource[] = selectSources(source, inst.sources.filter((s) => !isUrl(s)), inst.exclude);
  for (const n of heredocNodes(inst)) selected.push({ arg: n.path, node: n, below: [] });
  let key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: keyedInstruction(inst), sources: sourceDigestList(selected, source.keepOwner), fromKey });
  if (!remoteArgs.length) {
    const hit = await lookup(ctx, key);
    if (hit) return cached(parent, key, hit);
  }

  let treeCache: FsTree | undefined;
  const tree = async () => (treeCache ??= await loadTree(ctx.env, parent.layers));
  const owner = inst.chown ? await resolveChown(ctx.env, inst.chown, parent.layers, tree) : undefined;
  const chmod = inst.chmod ? parseChmod(inst.chmod) : undefined;
  const tmpPrefix = `tmp/builds/${ctx.spec.id}/${step.index}`;
  const staged: string[] = [];
  try {
    if (add && remoteArgs.length) {
      const remote = await add.remote(remoteArgs, (inst as AddInstruction).checksum, tmpPrefix);
      staged.push(...remote.keys);
      for (const n of remote.nodes) selected.push({ arg: n.path, node: n, below: [] });
      // the downloaded bytes' digests enter the key
      key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: keyedInstruction(inst), sources: sourceDigestList(selected, source.keepOwner), fromKey });
      const hit = await lookup(ctx, key);
      if (hit) return cached(parent, key, hit);
    }
    const destTree = await tree();
    const mtime = ctx.spec.sourceDateEpoch;
    const workdir = parent.config.config?.WorkingDir || "/";
    const archives = add && !from ? selected.filter((s) => s.node.type === "file" && !s.node.data && s.node.offset !== undefined) : [];
    const archiveFlags = await Promise.all(archives.map((s) => add!.isArchive(source, s.node)));
    const toExtract = archives.filter((_, i) => archiveFlags[i]);
    let layer: LayerRef;
    if (add && toExtract.length) {
      const plain = selected.filter((s) => !toExtract.includes(s));
      const files = plain.length
        ? mapCopy(plain, { dest: inst.dest.endsWith("/") ? inst.dest : inst.dest + "/", workdir, owner, chmod, keepOwner: source.keepOwner, destTree, multipleArgs: false })
        : [];
      layer = await add.extract(source, toExtract.map((s) => s.node), files, { dest: inst.dest, workdir, owner, destTree, mtime });
    } else {
      const files = mapCopy(selected, {
        dest: inst.dest,
        workdir,
        owner,
        chmod,
        keepOwner: source.keepOwner,
        destTree,
        multipleArgs: inst.sources.length + inst.sourceContents.length > 1,
        parents: inst.kind === "COPY" && inst.parents,
      });
      layer = await writeCopyLayer(ctx.env, files, source, mtime, tmpPrefix);
    }
    // BuildKit's commit message: the flags that change the result, then sources and dest
    const flags = [(inst as CopyInstruction).parents ? "--parents" : "", inst.chown ? `--chown=${inst.chown}` : "", inst.chmod ? `--chmod=${inst.chmod}` : ""].filter(Boolean);
    const createdBy = `${inst.kind} ${[...flags, ...inst.sources, ...inst.sourceContents.map((s) => `<<${s.path}`)].join(" ")} ${inst.dest} # buildkit`;
    const state = await commit(ctx, parent, key, {
      version: 1,
      layer,
      config: (parent.config.config ?? {}) as Record<string, unknown>,
      history: history(ctx, createdBy, false) as Record<string, unknown>,
    });
    return { status: "done", state, layer };
  } finally {
    await deleteScratch(ctx.env, staged).catch(() => {});
  }
}

export const copyExecutor: Executor = {
  kind: "copy",
  execute: (ctx: StepContext, input: StepInput) => transfer(ctx, input),
};
