/**
 * Manifests, tags and referrers. Manifest bytes are blobs (R2 `blobs/<alg>/<hex>`); the D1
 * `manifests` row makes them a manifest of one repository, `manifest_refs` records what they use.
 * A small manifest's row also holds its exact bytes as text (`body`, migrations/0010), so reading it
 * by tag or digest is one D1 query and no R2 read.
 */
import type { Env } from "../env";
import { StorageError } from "./errors";
import { algorithmOf, digestOf, parseDigest } from "../oci/digest";
import { isTag } from "../oci/names";
import { blobKey, collectBlob, ensureRepository, putBlobBytes, requireDigest, withBlobPins } from "./blobs";
import { withQuota } from "./usage";
import { ImageFormatError, manifestReferences, type Descriptor, type ManifestReferences } from "../oci/image";

export { ensureRepository };

/** Largest manifest accepted (the spec asks for at least 4 MiB). */
export const MAX_MANIFEST_SIZE = 16 * 1024 * 1024;

export { isTag };

function requireTag(tag: string): void {
  if (!isTag(tag)) throw new StorageError("MANIFEST_INVALID", "invalid tag (want [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127})", { detail: { tag } });
}

/** digest → stored size of the rows of `values`, in chunks the D1 bind limit (100 parameters) allows. */
async function existing(env: Env, sql: string, repo: string, values: string[]): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for (let i = 0; i < values.length; i += 90) {
    const part = values.slice(i, i + 90);
    const { results } = await env.DB.prepare(sql.replace("(?)", `(${part.map(() => "?").join(",")})`))
      .bind(repo, ...part).all<{ digest: string; size: number }>();
    for (const r of results) found.set(r.digest, r.size);
  }
  return found;
}

/**
 * Stores a manifest in `repo` under `reference` (a tag, or a digest that must match the bytes) with
 * the same validation as `PUT /v2/<repo>/manifests/<reference>`: valid JSON of a supported media type,
 * config and layers linked in the repository and index entries stored in it (else
 * MANIFEST_BLOB_UNKNOWN). `extraTags` are tagged too. Creates the repository. The manifest's bytes
 * are reserved in the namespace's quota before anything is written (DENIED: no tag moved), unless
 * `quotaHeld`: the caller holds a reservation (withQuota) that covers them.
 */
export async function putManifest(
  env: Env,
  repo: string,
  reference: string,
  bytes: Uint8Array,
  mediaType: string,
  extraTags: string[] = [],
  opts: { quotaHeld?: boolean } = {},
): Promise<{ digest: string; subject?: string }> {
  if (bytes.byteLength > MAX_MANIFEST_SIZE) {
    throw new StorageError("MANIFEST_TOO_LARGE", `manifest larger than ${MAX_MANIFEST_SIZE} bytes`);
  }
  const refDigest = reference.includes(":") ? requireDigest(reference) : null;
  const tags = [...new Set([...(refDigest ? [] : [reference]), ...extraTags])];
  tags.forEach(requireTag);
  let parsed: ManifestReferences;
  try {
    parsed = manifestReferences(bytes, mediaType);
  } catch (e) {
    if (e instanceof ImageFormatError) throw new StorageError("MANIFEST_INVALID", e.message, { detail: e.detail });
    throw e;
  }
  const digest = await digestOf(bytes, refDigest ? algorithmOf(refDigest) : "sha256");
  if (refDigest && digest !== reference) {
    throw new StorageError("DIGEST_INVALID", "the manifest does not match the digest in the URL", { detail: { expected: reference, actual: digest } });
  }

  // Pinned (the manifest's bytes and everything it names) from before the checks below until the
  // manifest row exists: neither a concurrent DELETE of the same digest nor a collection can remove
  // what was found present.
  return withBlobPins(env, [digest, ...parsed.blobs, ...parsed.children], async () => {
    const haveBlobs = await existing(env, "SELECT r.digest AS digest, b.size AS size FROM repo_blobs r JOIN blobs b ON b.digest = r.digest WHERE r.repo = ? AND r.digest IN (?)", repo, parsed.blobs);
    const missingBlob = parsed.blobs.find((b) => !haveBlobs.has(b));
    if (missingBlob) throw new StorageError("MANIFEST_BLOB_UNKNOWN", `blob ${missingBlob} is not in repository ${repo}`, { detail: { digest: missingBlob } });
    const haveChildren = await existing(env, "SELECT digest, size FROM manifests WHERE repo = ? AND digest IN (?)", repo, parsed.children);
    const missingChild = parsed.children.find((c) => !haveChildren.has(c));
    if (missingChild) throw new StorageError("MANIFEST_BLOB_UNKNOWN", `manifest ${missingChild} is not in repository ${repo}`, { detail: { digest: missingChild } });
    // Descriptor sizes must be the stored ones (both are in `repo`, so the caller may know them).
    for (const [what, have] of [["blob", haveBlobs], ["manifest", haveChildren]] as const) {
      for (const [ref, stored] of have) {
        const declared = parsed.sizes.get(ref);
        if (declared !== undefined && declared !== stored) {
          throw new StorageError("MANIFEST_INVALID", `the manifest declares ${what} ${ref} with size ${declared}, but it is ${stored} bytes`, {
            detail: { digest: ref, declared, size: stored },
          });
        }
      }
    }
    if (opts.quotaHeld) return storeManifest(env, repo, digest, bytes, parsed, tags);
    return withQuota(env, [{ repo, content: [{ digest, size: bytes.byteLength }] }], () => storeManifest(env, repo, digest, bytes, parsed, tags));
  });
}

/** Manifests up to this size keep a copy of their bytes in their D1 row. */
export const INLINE_MANIFEST_MAX = 64 * 1024;

/**
 * The text that encodes back to exactly `bytes`, or null when the bytes must stay in R2 only: too
 * large, not UTF-8, or holding a NUL (which SQLite text functions may cut at). Checked by encoding the text again, so a row's body is always byte-exact.
 */
export function inlineBody(bytes: Uint8Array): string | null {
  if (bytes.byteLength > INLINE_MANIFEST_MAX) return null;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null;
  }
  if (text.includes("\0")) return null;
  const again = new TextEncoder().encode(text);
  if (again.byteLength !== bytes.byteLength || !again.every((b, i) => b === bytes[i])) return null;
  return text;
}

async function storeManifest(
  env: Env, repo: string, digest: string, bytes: Uint8Array, parsed: ManifestReferences, tags: string[],
): Promise<{ digest: string; subject?: string }> {
  await putBlobBytes(env, bytes, digest);
  // A push again counts as a push (created_at is its time): an untagged manifest pushed again by digest
  // (an index's child, before the index) gets the grace period again, and a collection that judged it
  // dead before (the delete re-checks created_at) leaves it.
  const now = Date.now();
  const db = env.DB;
  const refs = [...parsed.blobs, ...parsed.children];
  const stmts: D1PreparedStatement[] = [
    db.prepare("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING").bind(repo, now),
    db.prepare(
      `INSERT INTO manifests (repo, digest, media_type, size, artifact_type, subject, annotations, body, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(repo, digest) DO UPDATE SET media_type = excluded.media_type, artifact_type = excluded.artifact_type,
         subject = excluded.subject, annotations = excluded.annotations, body = excluded.body, created_at = excluded.created_at`,
    ).bind(repo, digest, parsed.mediaType, bytes.byteLength, parsed.artifactType ?? null, parsed.subject ?? null,
      annotationsColumn(parsed.annotations), inlineBody(bytes), now),
    db.prepare("DELETE FROM manifest_refs WHERE repo = ? AND manifest = ?").bind(repo, digest),
  ];
  for (let i = 0; i < refs.length; i += 30) {
    const part = refs.slice(i, i + 30);
    stmts.push(db.prepare(`INSERT OR IGNORE INTO manifest_refs (repo, manifest, ref) VALUES ${part.map(() => "(?, ?, ?)").join(",")}`)
      .bind(...part.flatMap((r) => [repo, digest, r])));
  }
  for (const tag of tags) {
    stmts.push(db.prepare(
      "INSERT INTO tags (repo, tag, digest, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(repo, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
    ).bind(repo, tag, digest, now));
  }
  await db.batch(stmts);
  return { digest, subject: parsed.subject };
}

/** Annotations too large for a D1 row stay only in the manifest bytes; this marks them. */
const ANNOTATIONS_IN_MANIFEST = "@manifest";
const MAX_ANNOTATIONS_ROW = 32 * 1024;

function annotationsColumn(a: Record<string, string> | undefined): string | null {
  if (!a) return null;
  const json = JSON.stringify(a);
  return json.length > MAX_ANNOTATIONS_ROW ? ANNOTATIONS_IN_MANIFEST : json;
}

export interface ManifestInfo {
  digest: string;
  mediaType: string;
  size: number;
  subject?: string;
}

/** Looks up a manifest of `repo` by tag or digest without reading its bytes. */
export function statManifest(env: Env, repo: string, reference: string): Promise<ManifestInfo | null> {
  return findManifest(env, repo, reference, false);
}

/** A manifest found by tag or digest, with its exact bytes when its row holds them. */
export interface ManifestRecord extends ManifestInfo {
  /** The pushed bytes, when the D1 row holds them (small manifests); else read them with manifestBytes. */
  bytes?: Uint8Array;
}

/**
 * Looks up a manifest of `repo` by tag or digest, with its bytes when its row holds them and
 * `withBytes` (false for HEAD): one D1 query.
 */
export async function findManifest(env: Env, repo: string, reference: string, withBytes = true): Promise<ManifestRecord | null> {
  type Row = { digest: string; media_type: string; size: number; subject: string | null; body: string | null };
  const body = withBytes ? "m.body" : "NULL AS body";
  const row = reference.includes(":")
    ? await env.DB.prepare(`SELECT m.digest, m.media_type, m.size, m.subject, ${body} FROM manifests m WHERE m.repo = ? AND m.digest = ?`)
      .bind(repo, reference).first<Row>()
    : await env.DB.prepare(
      `SELECT m.digest, m.media_type, m.size, m.subject, ${body} FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = ? AND t.tag = ?`,
    ).bind(repo, reference).first<Row>();
  if (!row) return null;
  const record: ManifestRecord = { digest: row.digest, mediaType: row.media_type, size: row.size, subject: row.subject ?? undefined };
  if (row.body !== null) {
    const bytes = new TextEncoder().encode(row.body);
    // The row must give back exactly the bytes of the digest; anything else is read from R2.
    if (bytes.byteLength === row.size && (await digestOf(bytes, algorithmOf(row.digest))) === row.digest) record.bytes = bytes;
  }
  return record;
}

/** A manifest's bytes from R2 (for manifests whose row holds none); null when they are gone. */
export async function manifestBytes(env: Env, digest: string): Promise<Uint8Array | null> {
  const obj = await env.BUCKET.get(blobKey(parseDigest(digest)));
  return obj ? new Uint8Array(await obj.arrayBuffer()) : null;
}

/** The manifest's exact pushed bytes and media type, by tag or digest. */
export async function getManifest(env: Env, repo: string, reference: string): Promise<{ bytes: Uint8Array; mediaType: string; digest: string } | null> {
  const m = await findManifest(env, repo, reference);
  if (!m) return null;
  const bytes = m.bytes ?? (await manifestBytes(env, m.digest));
  if (!bytes) return null;
  return { bytes, mediaType: m.mediaType, digest: m.digest };
}

/**
 * Deletes a manifest of `repo` by digest with every tag pointing at it. Blobs it referenced stay
 * linked to the repository; bytes are collected only when nothing uses them any more.
 */
export async function deleteManifest(env: Env, repo: string, digest: string): Promise<boolean> {
  const { results } = await env.DB.prepare("SELECT ref FROM manifest_refs WHERE repo = ? AND manifest = ?").bind(repo, digest).all<{ ref: string }>();
  const [, , del] = await env.DB.batch([
    env.DB.prepare("DELETE FROM tags WHERE repo = ? AND digest = ?").bind(repo, digest),
    env.DB.prepare("DELETE FROM manifest_refs WHERE repo = ? AND manifest = ?").bind(repo, digest),
    env.DB.prepare("DELETE FROM manifests WHERE repo = ? AND digest = ?").bind(repo, digest),
  ]);
  if (!del.meta.changes) return false;
  await collectBlob(env, digest);
  for (const r of results) await collectBlob(env, r.ref);
  return true;
}

export async function deleteTag(env: Env, repo: string, tag: string): Promise<boolean> {
  const res = await env.DB.prepare("DELETE FROM tags WHERE repo = ? AND tag = ?").bind(repo, tag).run();
  return (res.meta.changes ?? 0) > 0;
}

export async function repositoryExists(env: Env, repo: string): Promise<boolean> {
  return (await env.DB.prepare("SELECT 1 AS x FROM repositories WHERE name = ?").bind(repo).first()) !== null;
}

/** Tags of `repo` in lexical (byte) order after `last`; `more` when another page exists. */
export async function listTags(env: Env, repo: string, opts: { n?: number; last?: string } = {}): Promise<{ tags: string[]; more: boolean }> {
  const limit = opts.n ?? 10_000;
  const { results } = await env.DB.prepare(
    "SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag COLLATE BINARY LIMIT ?",
  ).bind(repo, opts.last ?? "", limit + 1).all<{ tag: string }>();
  const tags = results.map((r) => r.tag);
  return { tags: tags.slice(0, limit), more: tags.length > limit };
}

/** The tags of `repo` with the manifest each points at and when it was pushed, newest first (at most `limit`). */
export async function listTagDetails(env: Env, repo: string, limit = 500): Promise<{ tag: string; digest: string; mediaType: string; pushedAt: number }[]> {
  const { results } = await env.DB.prepare(
    "SELECT t.tag, t.digest, t.updated_at, m.media_type FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest WHERE t.repo = ? ORDER BY t.updated_at DESC, t.tag LIMIT ?",
  ).bind(repo, limit).all<{ tag: string; digest: string; updated_at: number; media_type: string }>();
  return results.map((r) => ({ tag: r.tag, digest: r.digest, mediaType: r.media_type, pushedAt: r.updated_at }));
}

/** Repository names in lexical order after `last`, at most `limit`. */
export async function listRepositories(env: Env, opts: { last?: string; limit: number }): Promise<string[]> {
  const { results } = await env.DB.prepare("SELECT name FROM repositories WHERE name > ? ORDER BY name COLLATE BINARY LIMIT ?")
    .bind(opts.last ?? "", opts.limit).all<{ name: string }>();
  return results.map((r) => r.name);
}

/** Descriptors of the manifests of `repo` whose subject is `digest`, optionally of one artifactType. */
export async function listReferrers(env: Env, repo: string, digest: string, artifactType?: string): Promise<Descriptor[]> {
  type Row = { digest: string; media_type: string; size: number; artifact_type: string | null; annotations: string | null };
  const q = artifactType === undefined
    ? env.DB.prepare("SELECT digest, media_type, size, artifact_type, annotations FROM manifests WHERE repo = ? AND subject = ? ORDER BY created_at, digest").bind(repo, digest)
    : env.DB.prepare("SELECT digest, media_type, size, artifact_type, annotations FROM manifests WHERE repo = ? AND subject = ? AND artifact_type = ? ORDER BY created_at, digest").bind(repo, digest, artifactType);
  const { results } = await q.all<Row>();
  const out: Descriptor[] = [];
  for (const r of results) {
    const d: Descriptor = { mediaType: r.media_type, digest: r.digest, size: r.size };
    if (r.artifact_type) d.artifactType = r.artifact_type;
    if (r.annotations === ANNOTATIONS_IN_MANIFEST) {
      const obj = await env.BUCKET.get(blobKey(parseDigest(r.digest)));
      if (obj) d.annotations = ((await obj.json()) as { annotations?: Record<string, string> }).annotations;
    } else if (r.annotations) {
      d.annotations = JSON.parse(r.annotations) as Record<string, string>;
    }
    out.push(d);
  }
  return out;
}
