// `npm run bench` module: Dockerfile parsing speed and its growth. Parses generated 1,000 / 10,000 /
// 20,000-line Dockerfiles (a realistic mix: multi-stage, RUN with continuations, heredocs, ENV, ARG,
// COPY/ADD with flags, comments) with `parse` (text → AST) and `parseDockerfile` (→ typed stages),
// expands every word of the 10k file with ShellLex, and reports the 20k/10k time ratio (≈ 2 means
// linear growth). Runs under `node --import tsx` (no Workers APIs).
import v8 from "node:v8";
import vm from "node:vm";
import { parse, parseDockerfile } from "../src/dockerfile/index";
import { ShellLex } from "../src/dockerfile/shell";
import { rng } from "../src/dockerfile/testing";
import { result, type BenchContext, type BenchResult } from "./types";

/** A Dockerfile of about `lines` lines. */
export function generateDockerfile(lines: number, seed = 1): string {
  const rand = rng(seed);
  const out: string[] = ["# syntax=docker/dockerfile:1", "# generated for the parser bench", "ARG BASE=debian:bookworm-slim", "ARG VERSION=1.2.3", ""];
  let stage = 0;
  let sinceStage = Infinity;
  let n = 0;
  const blocks: Array<() => string[]> = [
    () => [
      `RUN apt-get update \\`,
      `    && apt-get install -y --no-install-recommends \\`,
      `        curl ca-certificates git-${n} \\`,
      `    # a comment inside a continuation`,
      `    && rm -rf /var/lib/apt/lists/*`,
    ],
    () => [`RUN <<EOF`, `set -eu`, `echo "step ${n}: \${VERSION}" > /tmp/step-${n}`, `test -s /tmp/step-${n}`, `EOF`],
    () => [`RUN <<-'SCRIPT' bash`, `\tfor i in 1 2 3; do`, `\t  echo "$i"`, `\tdone`, `\tSCRIPT`],
    () => [`ENV APP_HOME=/srv/app${n} PATH="/srv/app${n}/bin:\${PATH}" LANG=C.UTF-8`],
    () => [`ENV LEGACY_${n} value with spaces ${n}`],
    () => [`ARG FLAG_${n}=default-${n}`],
    () => [`COPY --chown=1000:1000 --chmod=0644 src/${n}/ /srv/app/src/${n}/`],
    () => [`COPY --link --from=${stage >= 2 ? `stage${stage - 2}` : "busybox:1.36"} /out/bin-${n} /usr/local/bin/tool-${n}`],
    () => [`ADD --checksum=sha256:${"ab".repeat(32)} https://example.com/f-${n}.tgz /tmp/`],
    () => [`COPY <<EOT /etc/app/conf-${n}.ini`, `[section]`, `key=${n}`, `EOT`],
    () => [`RUN --mount=type=cache,target=/root/.cache/pip,sharing=locked --network=none pip install -r req-${n}.txt`],
    () => [`LABEL org.example.step="${n}" org.example.version=\${VERSION}`],
    () => [`WORKDIR /srv/app/${n}`],
    () => [`# comment ${n}`, ``],
    () => [`EXPOSE ${8000 + (n % 1000)}/tcp`],
    () => [`HEALTHCHECK --interval=30s --timeout=3s CMD ["curl", "-f", "http://localhost/${n}"]`],
    () => [`USER app:app`],
    () => [`CMD ["/usr/local/bin/app", "--port", "${n}"]`],
  ];
  while (n < lines) {
    if (sinceStage > 150) {
      const from = stage === 0 ? "${BASE}" : `stage${stage - 1}`;
      out.push("", `FROM --platform=$BUILDPLATFORM ${from} AS stage${stage}`, `ARG VERSION`);
      stage++;
      sinceStage = 0;
    }
    const block = blocks[Math.floor(rand() * blocks.length)]();
    out.push(...block);
    sinceStage += block.length;
    n = out.length;
  }
  return out.join("\n") + "\n";
}

/** A full GC before each sample keeps one sample's garbage from being collected in the next. */
const gc: () => void = (() => {
  try {
    v8.setFlagsFromString("--expose-gc");
    return vm.runInNewContext("gc") as () => void;
  } catch {
    return () => {};
  }
})();

function timeMs(fn: () => unknown): number {
  gc();
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

export async function run(ctx?: Partial<BenchContext>): Promise<BenchResult[]> {
  const reps = Math.max(9, ctx?.reps ?? 5); // cheap: take more samples than the default
  const log = ctx?.log ?? ((m: string) => process.stderr.write(`${m}\n`));
  const sizes = [1_000, 10_000, 20_000];
  const texts = new Map(sizes.map((s) => [s, generateDockerfile(s)]));
  const results: BenchResult[] = [];
  const samples = new Map<number, number[]>();

  // warm the JIT on every size
  for (let i = 0; i < 2; i++) for (const s of sizes) parse(texts.get(s)!);

  // alternate sizes within each repetition so drift affects all sizes alike
  for (const s of sizes) samples.set(s, []);
  for (let r = 0; r < reps; r++) {
    for (const s of sizes) samples.get(s)!.push(timeMs(() => parse(texts.get(s)!)));
  }
  for (const s of sizes) {
    const text = texts.get(s)!;
    const lines = text.split("\n").length - 1;
    const instructions = parse(text).ast.children.length;
    const r = result({
      name: `parser.parse.${s / 1000}k`,
      what: `parse() a generated ${lines}-line Dockerfile (${instructions} instructions, ${(text.length / 1024).toFixed(0)} KiB) to an AST`,
      unit: "ms",
      kiln: samples.get(s)!,
    });
    results.push(r);
    log(`bench: parser: parse ${s} lines: median ${r.kiln.median.toFixed(2)} ms`);
  }

  // growth: per-repetition ratio of the 20k and 10k times
  const ratios = samples.get(20_000)!.map((t, i) => t / samples.get(10_000)![i]);
  const growth = result({
    name: "parser.parse.growth.20k/10k",
    what: "parse time of the 20,000-line file ÷ the 10,000-line file (2.0 = linear)",
    unit: "×",
    kiln: ratios,
  });
  growth.note = growth.kiln.median < 2.6 ? "linear" : "super-linear";
  results.push(growth);

  // typed instructions and stages
  const text10 = texts.get(10_000)!;
  const typed: number[] = [];
  for (let r = 0; r < reps; r++) typed.push(timeMs(() => parseDockerfile(text10)));
  results.push(result({ name: "parser.parseDockerfile.10k", what: "parseDockerfile() the 10,000-line file: AST, typed instructions, stages", unit: "ms", kiln: typed }));

  // word expansion: every argument word of the 10k file through ShellLex
  const words: string[] = [];
  for (const node of parse(text10).ast.children) for (const a of node.args) words.push(a);
  const env = new Map([["VERSION", "1.2.3"], ["PATH", "/usr/bin:/bin"], ["BASE", "debian"], ["BUILDPLATFORM", "linux/amd64"]]);
  const lex = new ShellLex("\\");
  const expand: number[] = [];
  for (let r = 0; r < reps; r++) {
    expand.push(
      timeMs(() => {
        for (const w of words) {
          try {
            lex.processWords(w, env);
          } catch {
            // unterminated quotes in shell-form RUN text are fine for the timing
          }
        }
      }),
    );
  }
  results.push(result({ name: "parser.shell.expand.10k", what: `ShellLex.processWords() over the ${words.length} argument strings of the 10,000-line file`, unit: "ms", kiln: expand }));
  return results;
}

export default run;

// `node --import tsx bench/parser.ts` prints the figures on its own.
if (import.meta.url === `file://${process.argv[1]}`) {
  run().then((r) => {
    for (const x of r) console.log(`${x.name.padEnd(32)} median ${x.kiln.median.toFixed(3)} ${x.unit}  (min ${x.kiln.min.toFixed(3)}, max ${x.kiln.max.toFixed(3)})${x.note ? "  " + x.note : ""}`);
  });
}
