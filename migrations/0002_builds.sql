CREATE TABLE builds (
  id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  context_digest TEXT,
  repository TEXT,
  tags TEXT NOT NULL DEFAULT '[]',
  image_digest TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
);
