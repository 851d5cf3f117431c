/** Parsing of /v2 paths. Repository names contain slashes, so the path is matched from its end. */
import { OciError } from "../errors";
import { isRepositoryName } from "../oci/names";

export function requireRepositoryName(name: string): string {
  if (!isRepositoryName(name)) throw new OciError("NAME_INVALID", "invalid repository name", { detail: { name } });
  return name;
}

export type Route =
  | { kind: "ping" }
  | { kind: "catalog" }
  | { kind: "tags"; name: string }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "upload"; name: string; id: string }
  | { kind: "blob"; name: string; digest: string }
  | { kind: "referrers"; name: string; digest: string };

const PATTERNS: [RegExp, (m: RegExpMatchArray) => Route][] = [
  [/^(.+)\/tags\/list$/, (m) => ({ kind: "tags", name: m[1] })],
  [/^(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: "manifest", name: m[1], reference: m[2] })],
  [/^(.+)\/blobs\/uploads\/?([^/]*)$/, (m) => ({ kind: "upload", name: m[1], id: m[2] })],
  [/^(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: "blob", name: m[1], digest: m[2] })],
  [/^(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: "referrers", name: m[1], digest: m[2] })],
];

/**
 * The route of a path below /v2 (`rest` has no leading `/v2`), or null. Greedy name matching
 * picks the LAST occurrence of each marker; among markers the one ending the path wins, since
 * references and digests never contain `/`. The name is validated separately.
 */
export function parseRoute(rest: string): Route | null {
  if (rest === "" || rest === "/") return { kind: "ping" };
  if (rest === "/_catalog") return { kind: "catalog" };
  const path = rest.startsWith("/") ? rest.slice(1) : rest;
  let best: { route: Route; nameLength: number } | null = null;
  for (const [re, make] of PATTERNS) {
    const m = path.match(re);
    if (!m) continue;
    // The marker that starts latest (longest name) is the real one: `a/blobs/x/manifests/t`.
    if (!best || m[1].length > best.nameLength) best = { route: make(m), nameLength: m[1].length };
  }
  if (!best) return null;
  const r = best.route;
  try {
    if ("reference" in r) r.reference = decodeURIComponent(r.reference);
    if ("digest" in r) r.digest = decodeURIComponent(r.digest);
    if (r.kind === "upload") r.id = decodeURIComponent(r.id);
  } catch {
    return null;
  }
  return r;
}
