-- A collection asks, for each page of context packs it is about to delete, whether a build that
-- started since it read the running builds uses one of them (issue 13, red team): by context digest.
CREATE INDEX builds_context ON builds(context_digest);
