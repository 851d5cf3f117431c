#!/usr/bin/env node
// R2 and D1 are reached only through src/storage (DESIGN.md "Folders"). Bindings are not imports, so
// dependency-cruiser cannot see them: this fails when the bucket or database binding, or an R2/D1 type,
// appears in any other source file. src/env.ts and the generated worker-configuration.d.ts declare them.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";

const root = process.argv[2] ?? "src";
const allowed = [/^src\/storage\//, /^src\/env\.ts$/];
// the bindings, and any R2/D1 type (R2Bucket, R2ObjectBody, D1Database, D1Result, …): storage hands out
// streams, bytes and plain rows
const forbidden = /\b(BUCKET|DB|(?:R2|D1)[A-Z][A-Za-z]*)\b/;

function* sources(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (/\.(ts|mts|js|mjs)$/.test(e.name)) yield p;
  }
}

const hits = [];
for (const file of sources(root)) {
  const rel = relative(process.cwd(), file).split("\\").join("/");
  if (allowed.some((a) => a.test(rel))) continue;
  readFileSync(file, "utf8").split("\n").forEach((line, i) => {
    const m = forbidden.exec(line);
    if (m) hits.push(`${rel}:${i + 1}: ${m[1]}: ${line.trim()}`);
  });
}
if (hits.length) {
  console.error(`R2/D1 reached outside src/storage (add a src/storage function taking env instead):\n${hits.join("\n")}`);
  process.exit(1);
}
console.log("bindings: R2 and D1 are reached only in src/storage");
