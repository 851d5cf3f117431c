/**
 * What each kind of step does, given the states it depends on. Pure of DO state: the coordinator
 * persists what these return.
 */
import type { Env } from "../env";
import { ShellError, ShellLex } from "../dockerfile/shell";
import { DockerfileError } from "../dockerfile/errors";
import { chompHeredocContent } from "../dockerfile/parser";
import type { AddInstruction, CopyInstruction, Instruction, RunInstruction } from "../dockerfile/types";
import type { ContextIndex } from "../context/ingest";
import { cleanPath, resolveInRoot } from "../context/paths";
import { appendHistory, appendLayer, rfc3339, type HistoryEntry, type ImageConfig } from "../oci/image";
import { getCacheEntry, putCacheEntry, type CacheEntry } from "../storage/cache";
import type { JobMount, RunJob } from "../protocol/jobs";
import { cacheKeyFor, keyedInstruction, sharesWorkerCache, stepScopes } from "./cachekey";
import { expansionEnv } from "./expand";
import { expandInstruction } from "../dockerfile/expand";
import { platformString, resolveFrom } from "./frontend";
import { loadImage, scratchConfig } from "./image";
import { loadTree, storeLayer, type FsTree } from "./layers";
import { applyMetadata, shellOf } from "./executors/metadata";
import { contextSource, mapCopy, parseChmod, resolveChown, selectSources, sourceDigestList, treeSource, writeCopyLayer, type CopySource, type SelectedSource, type SourceNode } from "./executors/copy";
import { addRemoteSources, extractArchiveEntries, isArchive } from "./executors/add";
import { StepError, type BuildGraph, type BuildSpec, type ImageState, type LayerRef, type PlannedStep, type BaseImage } from "./model";

export const HISTORY_COMMENT = "buildkit.dockerfile.v0";

export interface StepContext {
  env: Env;
  spec: BuildSpec;
  graph: BuildGraph;
  /** The state after a finished step. */
  stateOf(index: number): ImageState;
  contextIndex(): Promise<ContextIndex>;
  log(text: string): Promise<void>;
}

export type StepOutcome =
  | { status: "done" | "cached"; state: ImageState; layer?: LayerRef | null; base?: BaseImage }
  | { status: "run"; key: string; job: Omit<RunJob, "jobId" | "registryToken">; createdBy: string };

const lexFor = (graph: BuildGraph) => new ShellLex(graph.escapeToken);

function expand<T extends Instruction>(step: PlannedStep, inst: T, state: ImageState, lex: ShellLex): T {
  try {
    return expandInstruction(inst, expansionEnv(state), lex);
  } catch (e) {
    if (e instanceof ShellError) throw new DockerfileError(e.message, step.line);
    if (e instanceof DockerfileError && e.line !== step.line) throw new DockerfileError(e.message, step.line);
    throw e;
  }
}

function history(ctx: StepContext, createdBy: string, emptyLayer: boolean): HistoryEntry {
  const h: HistoryEntry = { created: rfc3339(ctx.spec.sourceDateEpoch), created_by: createdBy, comment: HISTORY_COMMENT };
  if (emptyLayer) h.empty_layer = true;
  return h;
}

/** Applies a cache entry (or a fresh result) to the parent state. */
export function applyEntry(parent: ImageState, key: string, entry: CacheEntry, extra: Partial<ImageState> = {}): ImageState {
  let config: ImageConfig = { ...parent.config, config: entry.config as ImageConfig["config"] };
  if (entry.author !== undefined) config.author = entry.author;
  if (entry.layer) {
    config = appendLayer(config, { diffId: entry.layer.diffId, history: (entry.history ?? {}) as HistoryEntry });
  } else if (entry.history) {
    config = { ...config, history: [...(config.history ?? []), entry.history as HistoryEntry] };
  }
  return {
    ...parent,
    ...extra,
    config,
    layers: entry.layer ? [...parent.layers, entry.layer] : parent.layers,
    key,
  };
}

async function lookup(ctx: StepContext, key: string): Promise<CacheEntry | null> {
  if (ctx.spec.noCache) return null;
  return await getCacheEntry(ctx.env, key);
}

async function commit(ctx: StepContext, parent: ImageState, key: string, entry: CacheEntry, extra: Partial<ImageState> = {}): Promise<ImageState> {
  await putCacheEntry(ctx.env, key, entry);
  return applyEntry(parent, key, entry, extra);
}

export async function executeStep(ctx: StepContext, step: PlannedStep): Promise<StepOutcome> {
  const platform = platformString(ctx.spec.platform);
  // every key carries the build's cache scope (Worker steps: a shared one when the operator asks)
  const scopes = stepScopes(ctx.spec.scope, sharesWorkerCache(ctx.env));
  if (step.kind === "from") return await fromStep(ctx, step, platform, scopes.worker);
  const parent = ctx.stateOf(step.deps[0]);
  const lex = lexFor(ctx.graph);
  const inst = expand(step, step.inst!, parent, lex);
  switch (step.kind) {
    case "metadata": {
      const { state, createdBy } = applyMetadata(parent, inst, ctx.spec.buildArgs, ctx.graph.metaArgs);
      // ARG: the value it resolves to (default, global or --build-arg) is what later steps see
      const values = inst.kind === "ARG" ? inst.args.map((a) => [a.key, state.args.find(([k]) => k === a.key)?.[1] ?? null]) : undefined;
      const key = await cacheKeyFor({ scope: scopes.worker, parent: parent.key, platform, instruction: keyedInstruction(inst), values });
      const extra = { args: state.args, cmdSet: state.cmdSet };
      const hit = await lookup(ctx, key);
      if (hit) return { status: "cached", state: applyEntry(parent, key, hit, extra), layer: hit.layer };
      const entry: CacheEntry = {
        version: 1,
        layer: null,
        config: state.config.config as Record<string, unknown>,
        history: createdBy ? (history(ctx, createdBy, true) as Record<string, unknown>) : null,
      };
      if (inst.kind === "MAINTAINER") entry.author = inst.maintainer;
      return { status: "done", state: await commit(ctx, parent, key, entry, extra) };
    }
    case "workdir":
      return await workdirStep(ctx, step, parent, inst as Extract<Instruction, { kind: "WORKDIR" }>, platform, scopes.worker);
    case "copy":
    case "add":
      return await copyStep(ctx, step, parent, inst as CopyInstruction | AddInstruction, platform, scopes.worker);
    case "run":
      return await runStep(ctx, step, parent, inst as RunInstruction, platform, scopes.run);
  }
  throw new Error(`unknown step kind ${step.kind}`);
}

async function fromStep(ctx: StepContext, step: PlannedStep, platform: string, scope: string): Promise<StepOutcome> {
  const stage = ctx.graph.stages.find((s) => s.index === step.stage)!;
  let state: ImageState;
  let base: BaseImage | undefined;
  if (stage.base.kind === "stage") {
    const base = ctx.stateOf(step.deps[0]);
    const key = await cacheKeyFor({ scope, parent: base.key, platform, instruction: { kind: "FROM", stage: true } });
    state = { config: structuredClone(base.config), layers: base.layers, key, args: [], cmdSet: false };
  } else if (stage.base.kind === "scratch") {
    const key = await cacheKeyFor({ scope, parent: "scratch", platform, instruction: { kind: "FROM" } });
    state = { config: scratchConfig(ctx.spec.platform), layers: [], key, args: [], cmdSet: false };
  } else {
    const pulls: string[] = [];
    const img = await loadImage(ctx.env, stage.base.ref, ctx.spec, ctx.spec.platform, (line) => pulls.push(line));
    for (const line of pulls) await ctx.log(`${line}\n`);
    const via = img.resolvedDigest && img.resolvedDigest !== img.manifestDigest ? ` (index ${img.resolvedDigest})` : "";
    const where = img.source === "kiln" ? `kiln's registry (${img.repository})` : img.repository;
    await ctx.log(`resolved ${stage.base.ref} to ${where}@${img.manifestDigest}${via}\n`);
    const key = await cacheKeyFor({ scope, parent: img.manifestDigest, platform, instruction: { kind: "FROM" } });
    // the triggers run as the next steps (planned at start); the new image does not inherit them
    const config = { ...img.config, config: { ...img.config.config } };
    delete config.config.OnBuild;
    state = { config, layers: img.layers, key, args: [], cmdSet: false };
    base = { stage: stage.index, ref: stage.base.ref, source: img.source, repository: img.repository, digest: img.manifestDigest, ...(via ? { resolvedDigest: img.resolvedDigest } : {}) };
  }
  const hit = await lookup(ctx, state.key);
  if (!hit) await putCacheEntry(ctx.env, state.key, { version: 1, layer: null, config: state.config.config as Record<string, unknown>, history: null });
  return { status: hit ? "cached" : "done", state, base };
}

async function userOwner(ctx: StepContext, state: ImageState, tree: () => Promise<FsTree>) {
  const user = state.config.config?.User;
  if (!user) return { uid: 0, gid: 0 };
  return await resolveChown(ctx.env, user, state.layers, tree);
}

async function workdirStep(ctx: StepContext, step: PlannedStep, parent: ImageState, inst: Extract<Instruction, { kind: "WORKDIR" }>, platform: string, scope: string): Promise<StepOutcome> {
  const cur = parent.config.config?.WorkingDir || "/";
  const wd = cleanPath(inst.path.startsWith("/") ? inst.path : `${cur}/${inst.path}`);
  const key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: { kind: "WORKDIR", path: wd } });
  const hit = await lookup(ctx, key);
  if (hit) return { status: "cached", state: applyEntry(parent, key, hit), layer: hit.layer };
  const config = { ...(parent.config.config ?? {}), WorkingDir: wd };
  let layer: LayerRef | null = null;
  if (wd !== "/") {
    let treeCache: FsTree | undefined;
    const tree = async () => (treeCache ??= await loadTree(ctx.env, parent.layers));
    const t = await tree();
    const rel = wd.slice(1);
    const links = { linkTarget: (p: string) => (t.get(p)?.type === "symlink" ? t.get(p)!.linkname : undefined) };
    const resolved = resolveInRoot(links, rel, true);
    if (t.get(resolved)?.type !== "dir") {
      const owner = await userOwner(ctx, parent, tree);
      const parts = resolved.split("/");
      const entries = [];
      for (let i = 1; i <= parts.length; i++) {
        const d = parts.slice(0, i).join("/");
        if (t.get(d)?.type === "dir") continue;
        entries.push({ path: d, type: "dir" as const, mode: 0o755, uid: owner.uid, gid: owner.gid, mtime: ctx.spec.sourceDateEpoch });
      }
      layer = await storeLayer(ctx.env, entries);
    }
  }
  const state = await commit(ctx, parent, key, {
    version: 1,
    layer,
    config: config as Record<string, unknown>,
    history: history(ctx, `WORKDIR ${wd}`, layer === null) as Record<string, unknown>,
  });
  return { status: "done", state, layer };
}

function heredocNodes(inst: CopyInstruction | AddInstruction): SourceNode[] {
  return inst.sourceContents.map((s) => {
    const data = new TextEncoder().encode(s.data);
    return { path: s.path, type: "file" as const, mode: 0o644, uid: 0, gid: 0, size: data.byteLength, data };
  });
}

async function copyStep(ctx: StepContext, step: PlannedStep, parent: ImageState, inst: CopyInstruction | AddInstruction, platform: string, scope: string): Promise<StepOutcome> {
  const isAdd = inst.kind === "ADD";
  let source: CopySource;
  let fromKey: string | undefined;
  const from = inst.kind === "COPY" ? inst.from : undefined;
  if (from) {
    const allStages = ctx.graph.allStages;
    const b = resolveFrom(from, allStages, step.stage);
    if (b.kind === "stage") {
      const srcStage = ctx.graph.stages.find((s) => s.index === b.index);
      if (!srcStage) throw new StepError(`stage ${from} is not part of this build`);
      const srcState = ctx.stateOf(srcStage.steps[srcStage.steps.length - 1]);
      fromKey = srcState.key;
      source = treeSource(await loadTree(ctx.env, srcState.layers), srcState.layers);
    } else if (b.kind === "scratch") {
      throw new StepError("COPY --from=scratch: scratch has no files");
    } else {
      const img = await loadImage(ctx.env, b.ref, ctx.spec, ctx.spec.platform);
      fromKey = img.manifestDigest;
      source = treeSource(await loadTree(ctx.env, img.layers), img.layers);
    }
  } else {
    source = contextSource(await ctx.contextIndex());
  }

  const localArgs = inst.sources.filter((s) => !(isAdd && /^https?:\/\//i.test(s)));
  const remoteArgs = inst.sources.filter((s) => isAdd && /^https?:\/\//i.test(s));
  let selected: SelectedSource[] = [];
  try {
    selected = selectSources(source, localArgs, inst.exclude);
  } catch (e) {
    if (e instanceof StepError && !from) throw e;
    throw e;
  }
  for (const n of heredocNodes(inst)) selected.push({ arg: n.path, node: n, below: [] });
  const sources = sourceDigestList(selected, source.keepOwner);
  const key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: keyedInstruction(inst), sources, fromKey });
  if (!remoteArgs.length) {
    const hit = await lookup(ctx, key);
    if (hit) return { status: "cached", state: applyEntry(parent, key, hit), layer: hit.layer };
  }

  let treeCache: FsTree | undefined;
  const tree = async () => (treeCache ??= await loadTree(ctx.env, parent.layers));
  const owner = inst.chown ? await resolveChown(ctx.env, inst.chown, parent.layers, tree) : undefined;
  const chmod = inst.chmod ? parseChmod(inst.chmod) : undefined;
  const tmpPrefix = `tmp/builds/${ctx.spec.id}/${step.index}`;
  const staged: string[] = [];
  try {
    let remoteKey = key;
    if (remoteArgs.length) {
      const remote = await addRemoteSources(ctx.env, remoteArgs, (inst as AddInstruction).checksum, tmpPrefix, ctx.log, ctx.spec.origin);
      staged.push(...remote.keys);
      for (const n of remote.nodes) selected.push({ arg: n.path, node: n, below: [] });
      remoteKey = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: keyedInstruction(inst), sources: sourceDigestList(selected, source.keepOwner), fromKey });
      const hit = await lookup(ctx, remoteKey);
      if (hit) return { status: "cached", state: applyEntry(parent, remoteKey, hit), layer: hit.layer };
    }
    const destTree = await tree();
    const mtime = ctx.spec.sourceDateEpoch;
    const workdir = parent.config.config?.WorkingDir || "/";
    let layer: LayerRef;
    const archives = isAdd && !from ? selected.filter((s) => s.node.type === "file" && !s.node.data && s.node.offset !== undefined) : [];
    const archiveFlags = await Promise.all(archives.map((s) => isArchive(ctx.env, source, s.node)));
    const toExtract = archives.filter((_, i) => archiveFlags[i]);
    if (toExtract.length) {
      const plain = selected.filter((s) => !toExtract.includes(s));
      const files = plain.length
        ? mapCopy(plain, { dest: inst.dest.endsWith("/") ? inst.dest : inst.dest + "/", workdir, owner, chmod, keepOwner: source.keepOwner, destTree, multipleArgs: false })
        : [];
      layer = await extractArchiveEntries(ctx.env, source, toExtract.map((s) => s.node), files, { dest: inst.dest, workdir, owner, destTree, mtime });
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
    const state = await commit(ctx, parent, remoteKey, {
      version: 1,
      layer,
      config: (parent.config.config ?? {}) as Record<string, unknown>,
      history: history(ctx, createdBy, false) as Record<string, unknown>,
    });
    return { status: "done", state, layer };
  } finally {
    if (staged.length) await ctx.env.BUCKET.delete(staged).catch(() => {});
  }
}

/** BuildKit's runCommandString: `|N K=V … cmd` when build args are in scope. */
export function runCommandString(args: string[], state: ImageState): string {
  const env = expansionEnv({ ...state, args: [] });
  const tmp = state.args.map(([k, v]) => `${k}=${env.get(k) ?? v ?? ""}`);
  return [...(tmp.length ? [`|${tmp.length}`, ...tmp] : []), ...args].join(" ");
}

async function runStep(ctx: StepContext, step: PlannedStep, parent: ImageState, inst: RunInstruction, platform: string, scope: string): Promise<StepOutcome> {
  const c = parent.config.config ?? {};
  let args: string[];
  args = [...inst.args];
  if (inst.heredocs.length && inst.prependShell && args.length === 1) {
    // BuildKit: `RUN <<EOF` alone runs the document's text; anything more complex is handed to the shell whole
    const only = inst.heredocs.length === 1 && /^<<-?(["']?)[A-Za-z0-9_]+\1$/.test(args[0].trim());
    const data = (h: (typeof inst.heredocs)[number]) => (h.chomp ? chompHeredocContent(h.content) : h.content);
    args = only ? [data(inst.heredocs[0])] : [args[0] + inst.heredocs.map((h) => `\n${data(h)}${h.name}`).join("")];
  }
  if (inst.prependShell) args = [...shellOf(c), args.join(" ")];
  const imageEnv = c.Env ?? [];
  const envNames = new Set(imageEnv.map((e) => e.slice(0, e.indexOf("="))));
  const env = [...imageEnv, ...parent.args.filter(([k, v]) => v !== undefined && !envNames.has(k)).map(([k, v]) => `${k}=${v}`)];
  const mounts: JobMount[] = [];
  /** What each `--mount=type=bind,from=` mounts (the stage's key, the image's digest): part of the key. */
  const mountSources: string[] = [];
  const secrets: Record<string, string> = {};
  for (const m of inst.mounts) {
    if (m.type === "ssh") throw new StepError("RUN --mount=type=ssh is not supported");
    const jm: JobMount = { type: m.type, target: m.target ?? "" };
    if (m.id) jm.id = m.id;
    if (m.readOnly) jm.readonly = true;
    if (m.sharing) jm.sharing = m.sharing;
    if (m.mode !== undefined) jm.mode = m.mode;
    if (m.uid !== undefined) jm.uid = m.uid;
    if (m.gid !== undefined) jm.gid = m.gid;
    if (m.size !== undefined) jm.size = m.size;
    if (m.source) jm.source = m.source;
    if (m.type === "secret") {
      const id = m.id ?? (m.target ? m.target.split("/").pop()! : "");
      jm.id = id;
      if (m.required) jm.required = true;
      if (m.env) jm.env = m.env;
      const v = ctx.spec.secrets?.[id];
      if (v === undefined && m.required) throw new StepError(`secret ${id} not found`);
      if (v !== undefined) secrets[id] = v;
    }
    if (m.type === "bind" && m.from) {
      const b = resolveFrom(m.from, ctx.graph.allStages, step.stage);
      if (b.kind === "stage") {
        const st = ctx.graph.stages.find((s) => s.index === b.index)!;
        const src = ctx.stateOf(st.steps[st.steps.length - 1]);
        jm.fromLayers = src.layers;
        mountSources.push(src.key);
      } else if (b.kind === "image") {
        const img = await loadImage(ctx.env, b.ref, ctx.spec, ctx.spec.platform);
        jm.fromLayers = img.layers;
        mountSources.push(img.manifestDigest);
      }
    }
    mounts.push(jm);
  }
  const key = await cacheKeyFor({
    scope,
    parent: parent.key,
    platform,
    instruction: keyedInstruction({ ...inst, mounts: inst.mounts.map((m) => ({ ...m })) } as RunInstruction),
    env,
    values: { args, workdir: c.WorkingDir || "/", user: c.User ?? "", ...(mountSources.length ? { mountSources } : {}) },
  });
  const createdBy = `RUN ${runCommandString(args, parent)} # buildkit`;
  const hit = await lookup(ctx, key);
  if (hit) return { status: "cached", state: applyEntry(parent, key, hit), layer: hit.layer };
  return {
    status: "run",
    key,
    createdBy,
    job: {
      buildId: ctx.spec.id,
      stepIndex: step.index,
      platform: ctx.spec.platform,
      layers: parent.layers,
      args,
      env,
      workdir: c.WorkingDir || "/",
      user: c.User ?? "",
      network: inst.network === "host" ? "host" : "none",
      mounts,
      timeoutSeconds: 3600,
      repository: ctx.spec.tags[0]?.repository ?? ctx.spec.manifestRepository ?? "kiln/build-cache",
      sourceDateEpoch: ctx.spec.sourceDateEpoch,
      cacheScope: scope,
      ...(Object.keys(secrets).length ? { secrets } : {}),
    },
  };
}

/** The state after a RUN step's job finished (and its cache entry written). */
export async function finishRun(ctx: StepContext, parent: ImageState, key: string, createdBy: string, layer: LayerRef | null): Promise<ImageState> {
  return await commit(ctx, parent, key, {
    version: 1,
    layer,
    config: (parent.config.config ?? {}) as Record<string, unknown>,
    history: history(ctx, createdBy, layer === null) as Record<string, unknown>,
  });
}

export { appendHistory };
