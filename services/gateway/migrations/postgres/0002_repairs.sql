-- Gaps the periodic reconciliation found between these rollups and the marketplace service's
-- records, and repaired: one row per daily cell, with the difference that was added (the same
-- difference went to the province total). Kept for audit; nothing reads it back.
CREATE TABLE repairs (
    id BIGSERIAL PRIMARY KEY,
    repaired_at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    partner TEXT NOT NULL,
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    cell_key TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    count BIGINT NOT NULL
);
