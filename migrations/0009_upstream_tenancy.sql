-- Upstream credentials carry the namespaces allowed to use them, and the pull-through store knows
-- what each upstream repository holds and who it let read it (DESIGN.md, "Tenancy and trust").

-- JSON array of namespaces allowed to use the entry's credentials; NULL = every namespace (the
-- operator's rate-limit account).
ALTER TABLE upstreams ADD COLUMN namespaces TEXT;

-- What kiln fetched (digest-verified) from each upstream repository: manifests, configs, layers.
-- Bytes are stored once by digest, but a reference of (host, repository) is served from the store
-- only what came from that repository; anything else is fetched from it again, so naming a digest
-- on another host proves nothing.
CREATE TABLE upstream_links (
  host TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  linked_at INTEGER NOT NULL,
  PRIMARY KEY (host, repository, digest)
);

-- Per image of an upstream repository (the digest a reference resolved to): whether the upstream
-- served it without credentials when last asked. A public image is served from the store to every
-- namespace; a private one only after the upstream authorized the build's namespace (a HEAD).
CREATE TABLE upstream_images (
  host TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  public INTEGER NOT NULL,
  checked_at INTEGER NOT NULL,
  PRIMARY KEY (host, repository, digest)
);

-- Namespaces the upstream authorized to read a private image (with the credentials they may use).
-- Consulted only while the upstream is unreachable.
CREATE TABLE upstream_image_grants (
  host TEXT NOT NULL,
  repository TEXT NOT NULL,
  digest TEXT NOT NULL,
  namespace TEXT NOT NULL,
  granted_at INTEGER NOT NULL,
  PRIMARY KEY (host, repository, digest, namespace)
);
