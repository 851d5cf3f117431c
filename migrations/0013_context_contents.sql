-- Content-addressed build contexts (issue 14): the file contents a namespace (cache scope) has
-- uploaded, by sha256, each a list of byte ranges in context packs (`contexts/sha256/<pack>`): one
-- range for a file sent whole, several for a large file sent in pieces. A build's file index points
-- at these ranges, so a rebuild uploads only the contents its scope lacks. Never shared across scopes.
-- created_at / last_used_at (ms) let a collector drop contents no build used for a while (and then the
-- packs no row names any more).
CREATE TABLE context_contents (
  scope TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  parts TEXT NOT NULL, -- JSON [{ "pack": "sha256:…", "offset": n, "size": n }]
  created_at INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL,
  PRIMARY KEY (scope, sha256)
);
CREATE INDEX context_contents_last_used ON context_contents(last_used_at);

-- Pieces of a large file received so far (a file larger than one request is sent in several); the
-- content row is written once the pieces cover the file and their bytes hash to its sha256.
CREATE TABLE context_pieces (
  scope TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  start INTEGER NOT NULL,
  pack TEXT NOT NULL,
  offset INTEGER NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (scope, sha256, start)
);
