// Content-addressed context upload (issue 14): bytes and wall time of a rebuild after a one-file change
// in a 200 MiB context (100 files of 2 MiB, incompressible, plus a small app.txt that changes), with
// `kiln build` (index, missing contents only) against the full upload (the same rebuild posting the
// whole context as a tar, as kiln did before). Bytes are the request bodies counted by a proxy in front
// of the server; time is the client's wall time until the build ended. Each repetition starts from a
// fresh server state: one full `kiln build` first (not counted), then the change and both rebuilds.
//   BENCH_CONTEXT_REPS=3   repetitions (default min(BENCH_REPS, 3))
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ADMIN_TOKEN, ROOT } from "../test/e2e/server";
import { countingProxy } from "../test/e2e/helpers/count-proxy";
import { kilnBuild, startKilnInstance, stopKilnInstance } from "./builds";
import { result, type BenchContext, type BenchResult } from "./types";

const MiB = 1024 * 1024;

function kilnCli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bin", "kiln.mjs"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    child.on("close", (code) => resolve({ code: code ?? 1, out }));
  });
}

export async function run(ctx: BenchContext): Promise<BenchResult[]> {
  const reps = Number(process.env.BENCH_CONTEXT_REPS ?? Math.min(ctx.reps, 3));
  const dir = mkdtempSync(path.join(os.tmpdir(), "kiln-bench-ctx-"));
  mkdirSync(path.join(dir, "data"));
  for (let i = 0; i < 100; i++) writeFileSync(path.join(dir, "data", `f${String(i).padStart(3, "0")}.bin`), randomBytes(2 * MiB));
  // the build copies little: the figure is the upload (every file is in the index all the same)
  writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\nCOPY data/f000.bin /data/\nCOPY app.txt /app.txt\n");
  const contextMiB = 200;
  const bytes = { kiln: [] as number[], full: [] as number[] };
  const time = { kiln: [] as number[], full: [] as number[] };
  try {
    for (let rep = 0; rep < reps; rep++) {
      const k = await startKilnInstance(false);
      const proxy = await countingProxy(k.server.url);
      try {
        const build = async (tag: string) => {
          const t0 = performance.now();
          const r = await kilnCli(["build", "--progress", "quiet", "--server", proxy.url, "--token", ADMIN_TOKEN, "-t", tag, dir]);
          if (r.code !== 0) throw new Error(`kiln build ${tag}: ${r.out.slice(-500)}`);
          return (performance.now() - t0) / 1000;
        };
        writeFileSync(path.join(dir, "app.txt"), `rep ${rep} before\n`);
        await build(`bench/ctx:r${rep}a`);
        writeFileSync(path.join(dir, "app.txt"), `rep ${rep} after the change\n`);
        // kiln build: index + the one changed file
        proxy.reset();
        time.kiln.push(await build(`bench/ctx:r${rep}b`));
        bytes.kiln.push(proxy.bytes() / MiB);
        // the full upload of the same rebuild: the whole context as a tar
        writeFileSync(path.join(dir, "app.txt"), `rep ${rep} after the second change\n`);
        proxy.reset();
        const full = await kilnBuild({ server: { ...k.server, url: proxy.url } }, dir, { tag: `bench/ctx:r${rep}c` });
        time.full.push(full.total);
        bytes.full.push(proxy.bytes() / MiB);
        ctx.log(`bench contexts: rep ${rep}: kiln build ${bytes.kiln.at(-1)!.toFixed(2)} MiB in ${time.kiln.at(-1)!.toFixed(2)} s; full upload ${bytes.full.at(-1)!.toFixed(1)} MiB in ${full.total.toFixed(2)} s`);
      } finally {
        await proxy.close();
        await stopKilnInstance(k);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const what = `rebuild after a one-file change in a ${contextMiB} MiB context (100 × 2 MiB incompressible + app.txt; COPY of one data file and app.txt); kiln = \`kiln build\` (file index, then only the contents the scope lacks); peer = the same rebuild uploading the whole context as a tar`;
  return [
    result({ name: "contexts.rebuild-one-file.bytes", what: `${what}: request body bytes sent (counted by a proxy in front of the server)`, unit: "MiB", kiln: bytes.kiln, peer: { name: "full tar upload", samples: bytes.full } }),
    result({ name: "contexts.rebuild-one-file.time", what: `${what}: client wall time until the build ended (kiln build includes hashing the context)`, unit: "s", kiln: time.kiln, peer: { name: "full tar upload", samples: time.full } }),
  ];
}
