-- API keys are stored only as SHA-256 hashes; the key itself is shown once, at creation.
CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  key_hash TEXT NOT NULL UNIQUE,
  key_prefix TEXT NOT NULL,
  requests_per_minute INTEGER,
  max_concurrent INTEGER,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);
