/**
 * WORKDIR: config only, plus a layer creating the directory (owned by the image's USER) when the image
 * below lacks it, as BuildKit does.
 */
import { cleanPath, resolveInRoot } from "../../context/paths";
import type { WorkdirInstruction } from "../../dockerfile/types";
import { cacheKeyFor } from "../cachekey";
import { loadTree, storeLayer, type FsTree } from "../layers";
import type { LayerRef } from "../model";
import { resolveChown } from "./copy-files";
import { cached, commit, history, lookup, prepare, type Executor, type StepContext, type StepInput, type StepOutcome } from "./executor";

export const workdirExecutor: Executor = {
  kind: "workdir",
  async execute(ctx: StepContext, { step, platform, scope }: StepInput): Promise<StepOutcome> {
    const { parent, inst } = prepare<WorkdirInstruction>(ctx, step);
    const cur = parent.config.config?.WorkingDir || "/";
    const wd = cleanPath(inst.path.startsWith("/") ? inst.path : `${cur}/${inst.path}`);
    const key = await cacheKeyFor({ scope, parent: parent.key, platform, instruction: { kind: "WORKDIR", path: wd } });
    const hit = await lookup(ctx, key);
    if (hit) return cached(parent, key, hit);
    const config = { ...(parent.config.config ?? {}), WorkingDir: wd };
    let layer: LayerRef | null = null;
    if (wd !== "/") {
      let treeCache: FsTree | undefined;
      const tree = async () => (treeCache ??= await loadTree(ctx.env, parent.layers));
      const t = await tree();
      const links = { linkTarget: (p: string) => (t.get(p)?.type === "symlink" ? t.get(p)!.linkname : undefined) };
      const resolved = resolveInRoot(links, wd.slice(1), true);
      if (t.get(resolved)?.type !== "dir") {
        const user = parent.config.config?.User;
        const owner = user ? await resolveChown(ctx.env, user, parent.layers, tree) : { uid: 0, gid: 0 };
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
  },
};
