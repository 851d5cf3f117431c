-- Write once (issue 16): a blob of unknown digest is written straight to its final object and found
-- through this pointer, never copied to blobs/<alg>/<hex> after the fact.
--   object_key NULL, segments 0: the bytes are at blobs/<alg>/<hex> (written with a known digest).
--   object_key set, segments 0: the bytes are one object at object_key (blobs/objects/<uuid>).
--   segments > 0: the bytes are the objects of blob_segments whose owner is object_key, in order n
--                 (the chunks of a push, adopted as they were written).
ALTER TABLE blobs ADD COLUMN object_key TEXT;
ALTER TABLE blobs ADD COLUMN segments INTEGER NOT NULL DEFAULT 0;

CREATE TABLE blob_segments (
  owner TEXT NOT NULL,
  n INTEGER NOT NULL,
  key TEXT NOT NULL,
  offset INTEGER NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (owner, n)
);

-- The sha256 of an upload session's bytes, when its first chunk was hashed while it was written and
-- no other chunk followed: the completion then needs no second read.
ALTER TABLE uploads ADD COLUMN sha256 TEXT;
