-- Fast small requests (issue 16): a manifest of at most 64 KiB whose bytes are UTF-8 text (JSON
-- always is) keeps a copy of its exact bytes in its row, so a GET by tag or digest is one D1 query
-- and no R2 read. R2 `blobs/<alg>/<hex>` stays the manifest's store of record; rows without a body
-- (larger manifests, rows written before this migration) are read from there.
ALTER TABLE manifests ADD COLUMN body TEXT;
