-- Quotas that hold under concurrency (issue 13). A writer to a namespace with a quota reserves the
-- bytes it is about to add in one statement that also checks stored + staged + reserved + adding
-- against the quota (SQLite runs one statement at a time, so two writers never both pass on the
-- same room), writes, then releases the reservation (its bytes now count as stored or staged).
-- `expires_at`: a reservation of a writer that died stops counting then.
CREATE TABLE quota_reservations (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX quota_reservations_namespace ON quota_reservations(namespace, expires_at);

-- Staged bytes of upload sessions count against their namespace's quota (summed by repository).
CREATE INDEX uploads_repo ON uploads(repo);
