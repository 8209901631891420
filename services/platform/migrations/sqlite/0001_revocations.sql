-- Token revocations, owned by the platform library (schema `platform`).
CREATE TABLE revoked_tokens (
    id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);
