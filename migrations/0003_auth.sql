-- API tokens: only the SHA-256 (hex) of a token is stored; the token itself is shown once.
CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  scopes TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);

-- Generated secrets (e.g. the registry token signing key when neither KILN_TOKEN_SECRET nor
-- KILN_ADMIN_TOKEN is set), created once and kept.
CREATE TABLE auth_secrets (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
