-- Registry (issue 17): a push never loses to a concurrent delete of the same digest.
-- A writer pins a digest while it stores and links it; collectBlob deletes nothing pinned.
CREATE TABLE blob_pins (
  id TEXT PRIMARY KEY,
  digest TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX blob_pins_digest ON blob_pins(digest);

-- A collection in progress: the D1 row is gone, the R2 bytes are being deleted. Writers wait for it
-- to end before writing the same digest's bytes, so the delete cannot remove bytes just written.
CREATE TABLE blob_deletions (
  digest TEXT PRIMARY KEY,
  started_at INTEGER NOT NULL
);
