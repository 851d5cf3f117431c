-- Storage lifecycle (issue 13): collection reports, retention policies, quotas, and the cache index.

-- One row per collection (dry runs included), listed by GET /v1/gc. `report` is the JSON report.
CREATE TABLE gc_runs (
  id TEXT PRIMARY KEY,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  dry_run INTEGER NOT NULL,
  grace_ms INTEGER NOT NULL,
  trigger TEXT NOT NULL,
  status TEXT NOT NULL,
  report TEXT
);
CREATE INDEX gc_runs_started ON gc_runs(started_at);

-- Retention per repository pattern (the patterns of token scopes: `team/*`, `team/**`, `app`).
-- `policy` is the JSON { keepLast?, keepTags?, untaggedOlderThanDays?, olderThanDays? }.
CREATE TABLE retention_policies (
  pattern TEXT PRIMARY KEY,
  policy TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);

-- A byte quota per namespace (the first segment of a repository name).
CREATE TABLE quotas (
  namespace TEXT PRIMARY KEY,
  bytes INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);

-- The build cache index in D1 (the entries themselves stay in R2 `cache/sha256/<key>`): which scope
-- wrote an entry, the layer it points at, and when it was last hit, for eviction and for marking.
CREATE TABLE cache_entries (
  key TEXT PRIMARY KEY,
  scope TEXT NOT NULL,
  layer TEXT,
  size INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  last_hit_at INTEGER NOT NULL
);
CREATE INDEX cache_entries_scope ON cache_entries(scope, last_hit_at);
CREATE INDEX cache_entries_layer ON cache_entries(layer);
