/**
 * Repositories, their tags and an image's page (platforms, layers with the history entry that made
 * each, referrers). A repository is shown when /v2 would let the session pull it: the token's grants
 * (principalAllows) or the repository being public; anything else is answered like a missing one.
 */
import { Hono } from "hono";
import { principalAllows } from "../auth/registry";
import { isRepositoryName } from "../auth/scopes";
import { isIndexDocument, parseImageConfig, parseManifest, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest } from "../oci/image";
import { isDigest } from "../oci/digest";
import { getBlobBytes, repoHasBlob } from "../storage/blobs";
import { getManifest, listReferrers, listRepositories, listTagDetails } from "../storage/manifests";
import { isRepositoryPublic, listPublicRepositories } from "../storage/tokens";
import { formatBytes, h, page, shortDigest, time, type Html } from "./layout";
import { LIVE_SCRIPT } from "./live";
import { UiError, pageOptions } from "./errors";
import type { UiContext, UiEnv } from "./session";

export const uiRepositories = new Hono<UiEnv>();

/** Most repositories listed, and most tags whose image size is worked out from their manifests. */
const MAX_REPOSITORIES = 1000;
const MAX_SIZED_TAGS = 100;

async function canPull(c: UiContext, repo: string): Promise<boolean> {
  return principalAllows(c.get("principal"), repo, "pull") || (await isRepositoryPublic(c.env, repo));
}

function notFound(repo: string): UiError {
  return new UiError(404, "Repository not found", `There is no repository ${repo} that your token may read.`);
}

uiRepositories.get("/", async (c) => {
  const principal = c.get("principal");
  const publicRepos = await listPublicRepositories(c.env);
  const names: string[] = [];
  let last: string | undefined;
  // Page through names as /v2/_catalog does, keeping those the session may pull.
  for (;;) {
    const batch = await listRepositories(c.env, { last, limit: 200 });
    for (const name of batch) if (principalAllows(principal, name, "pull") || publicRepos.has(name)) names.push(name);
    if (batch.length < 200 || names.length >= MAX_REPOSITORIES) break;
    last = batch[batch.length - 1];
  }
  const body = h`<h1>Repositories</h1>${names.length === 0 ? h`<p>No repositories your token may read.</p>` : h`<ul>${names.slice(0, MAX_REPOSITORIES).map(
    (n) => h`<li><a href="/ui/repositories/${n}">${n}</a>${publicRepos.has(n) ? h` <span class="muted">(public)</span>` : ""}</li>`,
  )}</ul>`}`;
  return c.html(page(pageOptions(c, "Repositories", "repositories"), body));
});

/** The total size of an image (config and layers), or of each platform's manifest of an index. */
function imageSize(m: ImageManifest | ImageIndex): string {
  if (isIndexDocument(m)) return `index of ${m.manifests.length} manifest${m.manifests.length === 1 ? "" : "s"}`;
  return formatBytes(m.config.size + m.layers.reduce((n, l) => n + l.size, 0));
}

uiRepositories.get("/:name{.+}", async (c) => {
  const name = c.req.param("name");
  if (!isRepositoryName(name) || !(await canPull(c, name))) throw notFound(name);
  const tags = await listTagDetails(c.env, name);
  const sizes = new Map<string, string>();
  for (const digest of [...new Set(tags.map((t) => t.digest))].slice(0, MAX_SIZED_TAGS)) {
    const m = await getManifest(c.env, name, digest);
    if (m) sizes.set(digest, safeParse(m.bytes, m.mediaType, (doc) => imageSize(doc)) ?? "—");
  }
  const host = new URL(c.req.url).host;
  const body = h`<h1>${name}</h1>
${tags.length === 0 ? h`<p>No tags.</p>` : h`<div class="scroll"><table><caption class="skip">Tags of ${name}</caption>
<thead><tr><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Size</th><th scope="col">Pushed</th></tr></thead>
<tbody>${tags.map((t) => h`<tr><td><code>${t.tag}</code></td><td><a href="/ui/image/${name}@${t.digest}"><code>${shortDigest(t.digest)}</code></a></td><td>${sizes.get(t.digest) ?? "—"}</td><td>${time(t.pushedAt)}</td></tr>`)}</tbody></table></div>
<p class="muted">Pull: <code>docker pull ${host}/${name}:${tags[0].tag}</code></p>`}
<p><a href="/ui/builds?repository=${encodeURIComponent(name)}">Builds of ${name}</a></p>`;
  return c.html(page(pageOptions(c, name, "repositories"), body));
});

function safeParse<T>(bytes: Uint8Array, mediaType: string, f: (m: ImageManifest | ImageIndex) => T): T | null {
  try {
    return f(parseManifest(bytes, mediaType));
  } catch {
    return null;
  }
}

function platformOf(p: { os?: string; architecture?: string; variant?: string } | undefined): string {
  if (!p?.os) return "—";
  return [p.os, p.architecture, p.variant].filter(Boolean).join("/");
}


/** /ui/image/<repository>@<digest> */
export const uiImages = new Hono<UiEnv>();

uiImages.get("/:ref{.+}", async (c) => {
  const ref = c.req.param("ref");
  const at = ref.lastIndexOf("@");
  const name = at > 0 ? ref.slice(0, at) : "";
  const digest = at > 0 ? ref.slice(at + 1) : "";
  if (!isRepositoryName(name) || !isDigest(digest)) throw new UiError(400, "Invalid image reference", "Expected /ui/image/<repository>@<digest>.");
  if (!(await canPull(c, name))) throw notFound(name);
  const m = await getManifest(c.env, name, digest);
  if (!m) throw new UiError(404, "Image not found", `${name} has no manifest ${digest}.`);
  let doc: ImageManifest | ImageIndex;
  try {
    doc = parseManifest(m.bytes, m.mediaType);
  } catch (e) {
    throw new UiError(400, "Unreadable manifest", `${digest} is not an image manifest or index: ${(e as Error).message}`);
  }
  const referrers = await listReferrers(c.env, name, digest);
  const host = new URL(c.req.url).host;
  const pull = `docker pull ${host}/${name}@${digest}`;
  const body = h`<h1>${name}@${shortDigest(digest)}</h1>
<dl class="facts"><dt>Repository</dt><dd><a href="/ui/repositories/${name}">${name}</a></dd><dt>Digest</dt><dd><code>${digest}</code></dd>
<dt>Media type</dt><dd><code>${m.mediaType}</code></dd>${doc.artifactType ? h`<dt>Artifact type</dt><dd><code>${doc.artifactType}</code></dd>` : ""}
${doc.subject ? h`<dt>Subject</dt><dd><a href="/ui/image/${name}@${doc.subject.digest}"><code>${doc.subject.digest}</code></a></dd>` : ""}</dl>
<label for="pull-cmd">Pull command</label><div class="copy"><input id="pull-cmd" readonly value="${pull}"><button type="button" data-copy="pull-cmd" hidden>Copy</button></div>
${isIndexDocument(doc) ? indexSection(name, doc) : await imageSection(c, name, doc)}
<h2>Referrers</h2>${referrers.length === 0 ? h`<p>No referrers.</p>` : referrersTable(name, referrers)}`;
  return c.html(page({ ...pageOptions(c, `${name}@${shortDigest(digest)}`, "repositories"), script: LIVE_SCRIPT }, body));
});

function indexSection(name: string, idx: ImageIndex): Html {
  return h`<h2>Platforms</h2><div class="scroll"><table><thead><tr><th scope="col">Platform</th><th scope="col">Manifest</th><th scope="col">Size</th></tr></thead>
<tbody>${idx.manifests.map((d) => h`<tr><td>${platformOf(d.platform)}</td><td><a href="/ui/image/${name}@${d.digest}"><code>${shortDigest(d.digest)}</code></a></td><td>${formatBytes(d.size)}</td></tr>`)}</tbody></table></div>`;
}

async function imageSection(c: UiContext, name: string, m: ImageManifest): Promise<Html> {
  let config: ImageConfig | null = null;
  if (await repoHasBlob(c.env, name, m.config.digest)) {
    const bytes = await getBlobBytes(c.env, m.config.digest);
    try {
      config = bytes ? parseImageConfig(bytes) : null;
    } catch {
      config = null;
    }
  }
  // Each layer was made by the next history entry that is not an empty layer.
  const makers = (config?.history ?? []).filter((e) => !e.empty_layer);
  const total = m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
  return h`<h2>Platforms</h2><p>${config ? platformOf(config) : "unknown (config not readable)"}</p>
<dl class="facts"><dt>Size</dt><dd>${formatBytes(total)}</dd>${config?.created ? h`<dt>Created</dt><dd>${config.created}</dd>` : ""}</dl>
<h2>Layers</h2>${m.layers.length === 0 ? h`<p>No layers.</p>` : h`<div class="scroll"><table><thead><tr><th scope="col">#</th><th scope="col">Size</th><th scope="col">Created by</th><th scope="col">Digest</th></tr></thead>
<tbody>${m.layers.map((l, i) => h`<tr><td>${i + 1}</td><td>${formatBytes(l.size)}</td><td><code>${makers[i]?.created_by ?? "—"}</code></td><td><code title="${l.digest}">${shortDigest(l.digest)}</code></td></tr>`)}</tbody></table></div>`}
${config && config.history.some((e) => e.empty_layer) ? h`<h2>History without a layer</h2><ul>${config.history.filter((e) => e.empty_layer).map((e) => h`<li><code>${e.created_by ?? "—"}</code></li>`)}</ul>` : ""}`;
}

function referrersTable(name: string, refs: Descriptor[]): Html {
  return h`<div class="scroll"><table><thead><tr><th scope="col">Artifact type</th><th scope="col">Manifest</th><th scope="col">Size</th><th scope="col">Annotations</th></tr></thead>
<tbody>${refs.map((r) => h`<tr><td><code>${r.artifactType ?? r.mediaType}</code></td><td><a href="/ui/image/${name}@${r.digest}"><code>${shortDigest(r.digest)}</code></a></td><td>${formatBytes(r.size)}</td>
<td>${r.annotations ? Object.entries(r.annotations).map(([k, v]) => h`<code>${k}=${v}</code><br>`) : "—"}</td></tr>`)}</tbody></table></div>`;
}
