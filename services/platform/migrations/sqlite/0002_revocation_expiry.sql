-- A revocation is kept until its token expires (plus a leeway), then pruned
-- (`auth::REVOCATIONS`): growth bounded. Rows from before this column revoked ap1 (HMAC)
-- tokens, which are no longer accepted at all, so 0 (prune at once) is right for them.
ALTER TABLE revoked_tokens ADD COLUMN expires_at_ms BIGINT NOT NULL DEFAULT 0;
CREATE INDEX revoked_tokens_expires_at_ms ON revoked_tokens (expires_at_ms);
