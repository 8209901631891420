-- The service kit's tables, created in every service's SQLite file (platform::storage::Migrations).
-- `IF NOT EXISTS`: services written before the kit created `outbox` and `inbox` in their own
-- first migration, with these very columns; for them this only adds `parked_events`.

-- Events committed with the state change that caused them, until the relay published them
-- (platform::outbox).
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at_ms IS NULL;

-- Events applied by this service's consumers; a known id is acknowledged without being applied
-- again (platform::consumer).
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY,
    applied_at_ms BIGINT NOT NULL
);

-- Events a consumer could not decode or apply after its retries, with the reason; kept whole so
-- that `agriportal events replay <id>` can apply one once the cause is fixed.
CREATE TABLE IF NOT EXISTS parked_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    message_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    parked_at_ms BIGINT NOT NULL,
    replay_requested_at_ms BIGINT,
    UNIQUE (consumer, message_id)
);
CREATE INDEX IF NOT EXISTS parked_events_replay ON parked_events (replay_requested_at_ms)
    WHERE replay_requested_at_ms IS NOT NULL;
