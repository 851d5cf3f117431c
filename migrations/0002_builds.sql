-- Builds, for listing and for finding a build's repository (auth) without waking its Durable Object.
-- The authoritative step state lives in the build's BuildCoordinator (ctx.storage.sql).
CREATE TABLE builds (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  context_digest TEXT,
  repository TEXT,
  tags TEXT NOT NULL DEFAULT '[]',
  image_digest TEXT,
  error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
CREATE INDEX builds_created ON builds(created_at);
