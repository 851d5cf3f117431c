// `kiln gc [--dry-run]` and `kiln usage`: the storage lifecycle calls of /v1, said as sentences.
import { authHeaders, httpError, request } from "./http";

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

interface GcReport {
  id: string;
  dryRun: boolean;
  graceSeconds: number;
  durationMs: number;
  bytesFreed: number;
  retention: { pattern: string; tags: string[]; manifests: string[] }[];
  deleted: { tags: string[]; manifests: string[]; links: number; blobs: string[]; cacheEntries: number; contexts: number; objects: number; pullThrough?: number };
  counts: { tags: number; manifests: number; blobs: number };
}

/** POST /v1/gc; prints what was (or, with --dry-run, would be) deleted. */
export async function gcCommand(server: string, token: string | undefined, opts: { dryRun: boolean; graceSeconds?: string; json: boolean }): Promise<number> {
  const q = new URLSearchParams();
  if (opts.dryRun) q.set("dryRun", "1");
  if (opts.graceSeconds !== undefined) q.set("graceSeconds", opts.graceSeconds);
  const res = await request(server, `/v1/gc${q.size ? `?${q}` : ""}`, { method: "POST", headers: authHeaders(token) });
  if (!res.ok) throw await httpError("collecting garbage", res, res.status === 403 ? "garbage collection needs an admin token" : res.status === 409 ? "wait for the running collection to finish" : undefined);
  if (res.status === 202) {
    // a large store: the collection goes on in slices on the server
    const run = (await res.json()) as { id: string };
    if (opts.json) process.stdout.write(`${JSON.stringify(run, null, 2)}\n`);
    else process.stdout.write(`collection ${run.id} is still running on the server; its report will be in GET /v1/gc when it ends\n`);
    return 0;
  }
  const r = (await res.json()) as GcReport;
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    return 0;
  }
  const verb = r.dryRun ? "would delete" : "deleted";
  for (const p of r.retention) {
    for (const t of p.tags) process.stdout.write(`retention ${p.pattern}: ${verb} tag ${t}\n`);
    for (const m of p.manifests) process.stdout.write(`retention ${p.pattern}: ${verb} manifest ${m}\n`);
  }
  for (const b of r.deleted.blobs) process.stdout.write(`${verb} blob ${b}\n`);
  process.stdout.write(
    `${r.dryRun ? "dry run: would free" : "freed"} ${formatBytes(r.bytesFreed)}: ${r.counts.blobs} blobs, ${r.counts.manifests} manifests, ${r.counts.tags} tags, ` +
    `${r.deleted.cacheEntries} cache entries, ${r.deleted.contexts} contexts, ${r.deleted.objects} stray objects, ${r.deleted.pullThrough ?? 0} pull-through records ` +
    `(grace ${r.graceSeconds} s, ${(r.durationMs / 1000).toFixed(1)} s, run ${r.id})\n`,
  );
  return 0;
}

interface Usage { namespace: string; bytes: number; blobs: number; manifests: number; tags: number; cacheBytes: number; stagedBytes?: number; quota?: number }

/** GET /v1/usage as a table (the namespaces the token may read). */
export async function usageCommand(server: string, token: string | undefined, opts: { json: boolean }): Promise<number> {
  const res = await request(server, "/v1/usage", { headers: authHeaders(token) });
  if (!res.ok) throw await httpError("reading usage", res);
  const { namespaces } = (await res.json()) as { namespaces: Usage[] };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(namespaces, null, 2)}\n`);
    return 0;
  }
  if (!namespaces.length) {
    process.stdout.write("no namespace you may read holds anything\n");
    return 0;
  }
  const rows = [["NAMESPACE", "BYTES", "QUOTA", "BLOBS", "MANIFESTS", "TAGS", "CACHE", "STAGED"], ...namespaces.map((u) => [
    u.namespace, formatBytes(u.bytes), u.quota === undefined ? "-" : `${formatBytes(u.quota)} (${u.quota ? Math.round((100 * u.bytes) / u.quota) : 100}%)`,
    String(u.blobs), String(u.manifests), String(u.tags), formatBytes(u.cacheBytes), formatBytes(u.stagedBytes ?? 0),
  ])];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd()}\n`);
  return 0;
}
