CREATE TABLE webhooks (
  id TEXT PRIMARY KEY,
  provider TEXT NOT NULL,
  repository TEXT NOT NULL,
  secret_sealed TEXT NOT NULL,
  base_url TEXT NOT NULL,
  image TEXT NOT NULL,
  dockerfile TEXT NOT NULL DEFAULT 'Dockerfile',
  context TEXT NOT NULL DEFAULT '.',
  branches TEXT NOT NULL DEFAULT '[]',
  tags TEXT NOT NULL DEFAULT '[]',
  build_args TEXT NOT NULL DEFAULT '{}',
  token_sealed TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX webhooks_repository ON webhooks(provider, repository);

-- One build per delivery: a redelivery answers with the same build.
CREATE TABLE webhook_deliveries (
  webhook_id TEXT NOT NULL,
  delivery_id TEXT NOT NULL,
  build_id TEXT NOT NULL,
  sha TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (webhook_id, delivery_id)
);
CREATE INDEX webhook_deliveries_build ON webhook_deliveries(build_id);
