-- A reused Idempotency-Key must come with the same body: the first request's SHA-256 is kept.
ALTER TABLE jobs ADD COLUMN request_digest TEXT;
