-- What started a build, for the dashboard's list: 'cli' (the kiln CLI), 'api' (any other POST
-- /v1/builds) or 'webhook' (a git push, with its commit). NULL for builds recorded before.
ALTER TABLE builds ADD COLUMN trigger TEXT;
ALTER TABLE builds ADD COLUMN source_commit TEXT;
