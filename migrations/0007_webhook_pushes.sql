-- Webhooks (issue 17): the GitLab numeric project id an admin registered (API paths use it, or the
-- URL-encoded registered path; never an id taken from a payload), and one build per
-- (webhook, ref, commit) whatever the delivery id.
ALTER TABLE webhooks ADD COLUMN project_id TEXT;

CREATE TABLE webhook_pushes (
  webhook_id TEXT NOT NULL,
  ref_type TEXT NOT NULL,
  ref_name TEXT NOT NULL,
  sha TEXT NOT NULL,
  build_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (webhook_id, ref_type, ref_name, sha)
);
