-- Image jobs and their state machine: queued -> running -> succeeded | failed | canceled.
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  key_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'canceled')),
  request TEXT NOT NULL,
  webhook_url TEXT,
  webhook_events TEXT NOT NULL DEFAULT '["completed"]',
  idempotency_key TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  result TEXT,
  error TEXT,
  created_at INTEGER NOT NULL,
  queued_at INTEGER NOT NULL,
  running_at INTEGER,
  succeeded_at INTEGER,
  failed_at INTEGER,
  canceled_at INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (key_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_by_key ON jobs (key_id, created_at);

-- One Standard Webhooks secret per API key; during a rotation the previous one signs too.
CREATE TABLE webhook_secrets (
  key_id TEXT PRIMARY KEY,
  secret TEXT NOT NULL,
  previous_secret TEXT,
  previous_expires_at INTEGER,
  created_at INTEGER NOT NULL
);
