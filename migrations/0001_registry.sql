-- Registry metadata. Blob and manifest bytes live in R2 under blobs/<alg>/<hex>;
-- a repository sees a blob only through a repo_blobs link row.
CREATE TABLE repositories (
  name TEXT PRIMARY KEY,
  public INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);

-- Written only after the bytes at blobs/<alg>/<hex> were verified against the digest.
CREATE TABLE blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE repo_blobs (
  repo TEXT NOT NULL,
  digest TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);

-- Manifest bytes are blobs too (R2 blobs/<alg>/<hex>); this row makes them a manifest of `repo`.
CREATE TABLE manifests (
  repo TEXT NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  artifact_type TEXT,
  subject TEXT,
  annotations TEXT,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_subject ON manifests(repo, subject);
CREATE INDEX manifests_digest ON manifests(digest);

-- Every descriptor a manifest references (config, layers, child manifests),
-- so a blob still used by some manifest is never deleted.
CREATE TABLE manifest_refs (
  repo TEXT NOT NULL,
  manifest TEXT NOT NULL,
  ref TEXT NOT NULL,
  PRIMARY KEY (repo, manifest, ref)
);
CREATE INDEX manifest_refs_ref ON manifest_refs(ref);

CREATE TABLE tags (
  repo TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (repo, tag)
);
CREATE INDEX tags_digest ON tags(repo, digest);

-- Upload sessions live here and in R2 (never in Worker memory), so they survive a restart.
-- Each PATCH (and a PUT's final body) is one staged R2 object `key`, in order `n`.
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  repo TEXT NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  chunks INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX uploads_updated ON uploads(updated_at);

CREATE TABLE upload_chunks (
  upload_id TEXT NOT NULL,
  n INTEGER NOT NULL,
  key TEXT NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (upload_id, n)
);
