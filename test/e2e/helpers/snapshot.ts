// A frozen copy of the committed tree for benchmarks: the figures belong to one commit, whatever other
// engineers edit while a bench runs. `git archive HEAD` into a temp dir (node_modules symlinked).
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ROOT } from "../server";

export function snapshotRoot(rev = "HEAD"): { root: string; rev: string; remove(): void } {
  const root = mkdtempSync(path.join(os.tmpdir(), "kiln-snapshot-"));
  const sha = spawnSync("git", ["rev-parse", "--short", rev], { cwd: ROOT, encoding: "utf8" }).stdout.trim();
  const r = spawnSync("sh", ["-c", `git archive --format=tar ${rev} | tar -x -C '${root}'`], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`git archive: ${r.stderr}`);
  symlinkSync(path.join(ROOT, "node_modules"), path.join(root, "node_modules"));
  return { root, rev: sha, remove: () => rmSync(root, { recursive: true, force: true }) };
}

/** `startKiln()` from another checkout (e.g. a snapshot): a free 127.0.0.1 port, fresh state. */
export { startKilnAt } from "../server";
