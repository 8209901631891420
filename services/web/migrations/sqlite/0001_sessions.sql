-- The web front end's store: signed-in officials' sessions, and nothing else (every figure
-- comes from the other services). A session is found by the SHA-256 of its cookie, so a copy
-- of this table cannot be replayed as cookies.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at_ms);
