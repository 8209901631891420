-- Marketplace service (SQLite file `marketplace.sqlite`): the partners' records, their batches, and the outbox.

-- One row per sales line, keyed by the partner's own record id; a correction replaces the row.
CREATE TABLE sales_records (
    partner TEXT NOT NULL,
    record_id TEXT NOT NULL,
    sale_date TEXT NOT NULL,
    province_code TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    category TEXT NOT NULL,
    quantity_grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    batch_id TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (partner, record_id)
);

-- One row per household account, keyed by the partner's own household reference.
CREATE TABLE households (
    partner TEXT NOT NULL,
    household_ref TEXT NOT NULL,
    province_code TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    registered_on TEXT NOT NULL,
    status INTEGER NOT NULL,
    categories TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (partner, household_ref)
);

-- Every batch received: its content hash (idempotency), its result, and the raw request as
-- received (audit and replay).
CREATE TABLE batches (
    partner TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    result BLOB NOT NULL,
    request BLOB NOT NULL,
    received_at_ms BIGINT NOT NULL,
    PRIMARY KEY (partner, batch_id)
);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    headers TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL,
    sent_at_ms BIGINT
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at_ms IS NULL;
