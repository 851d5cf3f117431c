/** GET /v2/<name>/tags/list, /v2/_catalog and /v2/<name>/referrers/<digest>. */
import { authorizeRegistry, canPull } from "../auth/registry";
import { OciError } from "../errors";
import { requireDigest } from "../storage/blobs";
import { listReferrers, listRepositories, listTags, repositoryExists } from "../storage/manifests";
import { intParam, unsupportedMethod, type Ctx } from "./http";

function json(body: unknown, headers: Record<string, string> = {}, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

function nextLink(path: string, n: number, last: string): string {
  return `<${path}?n=${n}&last=${encodeURIComponent(last)}>; rel="next"`;
}

export async function handleTags(c: Ctx, name: string): Promise<Response> {
  if (c.req.method !== "GET" && c.req.method !== "HEAD") return unsupportedMethod(c);
  await authorizeRegistry(c, name, "pull");
  if (!(await repositoryExists(c.env, name))) throw new OciError("NAME_UNKNOWN", "repository name not known to registry", { detail: { name } });
  const n = intParam(c, "n");
  const last = c.req.query("last") || undefined;
  const { tags, more } = await listTags(c.env, name, { n, last });
  const headers: Record<string, string> = {};
  if (more && n !== undefined && tags.length > 0) headers.Link = nextLink(`/v2/${name}/tags/list`, n, tags[tags.length - 1]);
  return json({ name, tags }, headers);
}

export async function handleCatalog(c: Ctx): Promise<Response> {
  if (c.req.method !== "GET" && c.req.method !== "HEAD") return unsupportedMethod(c);
  await authorizeRegistry(c, undefined, "pull");
  const n = intParam(c, "n");
  const want = n ?? 10_000;
  let last = c.req.query("last") || undefined;
  const repositories: string[] = [];
  let more = false;
  // Page through names, keeping only those the caller may pull, until one beyond `want` is found.
  for (;;) {
    const batch = await listRepositories(c.env, { last, limit: 200 });
    for (const name of batch) {
      if (!(await canPull(c, name))) continue;
      if (repositories.length === want) {
        more = true;
        break;
      }
      repositories.push(name);
    }
    if (more || batch.length < 200) break;
    last = batch[batch.length - 1];
  }
  const headers: Record<string, string> = {};
  if (more && n !== undefined && repositories.length > 0) headers.Link = nextLink("/v2/_catalog", n, repositories[repositories.length - 1]);
  return json({ repositories }, headers);
}

export async function handleReferrers(c: Ctx, name: string, digest: string): Promise<Response> {
  if (c.req.method !== "GET" && c.req.method !== "HEAD") return unsupportedMethod(c);
  await authorizeRegistry(c, name, "pull");
  requireDigest(digest);
  const artifactType = c.req.query("artifactType") || undefined;
  const manifests = await listReferrers(c.env, name, digest, artifactType);
  const headers: Record<string, string> = { "Content-Type": "application/vnd.oci.image.index.v1+json" };
  if (artifactType !== undefined) headers["OCI-Filters-Applied"] = "artifactType";
  return json({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests }, headers);
}
