-- Garbage collection in bounded memory and time slices (issue 13).

-- What a collection has decided so far, in D1 instead of the collector's memory: every step reads
-- and writes these a page at a time, and a collection split over several slices (alarms) picks up
-- where it stopped. `kind`: build, build-repo, context (a running build's), dead-tag, manifest
-- (kept; `round` is the propagation frontier), dead-manifest, dead-link, dead-cache, pack (a context
-- pack some content names), ctx-data (a data object a pack pointer names). A collection drops its
-- rows when it ends; the next one drops any another run left behind.
CREATE TABLE gc_marks (
  run TEXT NOT NULL,
  kind TEXT NOT NULL,
  repo TEXT NOT NULL DEFAULT '',
  key TEXT NOT NULL,
  ref TEXT,
  at INTEGER,
  round INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run, kind, repo, key)
);
CREATE INDEX gc_marks_key ON gc_marks(run, kind, key);
CREATE INDEX gc_marks_round ON gc_marks(run, kind, round, repo, key);

-- A running collection's progress (phase, cursor, the report so far), saved after every slice.
ALTER TABLE gc_runs ADD COLUMN progress TEXT;

-- Pull-through records expire when unused (KILN_PULL_THROUGH_MAX_AGE_DAYS): a use refreshes used_at;
-- a record's last use is the later of linked_at and used_at.
ALTER TABLE upstream_links ADD COLUMN used_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX upstream_links_digest ON upstream_links(digest);
CREATE INDEX upstream_manifests_fetched ON upstream_manifests(fetched_at);
