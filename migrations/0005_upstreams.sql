-- Other registries kiln pulls base images from, and what it pulled.
CREATE TABLE upstreams (
  host TEXT PRIMARY KEY,
  endpoint TEXT NOT NULL,
  username TEXT,
  -- AES-GCM sealed with a key derived from KILN_TOKEN_SECRET (or the admin token); never returned.
  password_sealed TEXT,
  mirrors TEXT NOT NULL DEFAULT '[]',
  updated_at INTEGER NOT NULL
);

-- Manifests pulled through (bytes are blobs in R2 under their digest).
CREATE TABLE upstream_manifests (
  digest TEXT PRIMARY KEY,
  media_type TEXT NOT NULL,
  size INTEGER NOT NULL,
  fetched_at INTEGER NOT NULL
);

-- The last resolution of each tag, used when the upstream is unreachable.
CREATE TABLE upstream_refs (
  host TEXT NOT NULL,
  repository TEXT NOT NULL,
  reference TEXT NOT NULL,
  digest TEXT NOT NULL,
  resolved_at INTEGER NOT NULL,
  PRIMARY KEY (host, repository, reference)
);
