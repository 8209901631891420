-- Gateway service (SQLite file `gateway.sqlite`): rollups of the marketplace events, and the inbox that
-- makes applying them idempotent.

-- Sales by day, province, partner and category (time series).
CREATE TABLE sales_daily (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    category TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner, category)
);

-- Sales by province and partner over all time (national and provincial summaries).
CREATE TABLE sales_totals (
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (province_code, partner)
);

-- Households by registration day, province, partner and status (time series).
CREATE TABLE households_daily (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner, status)
);

-- Households by province, partner and status (summaries).
CREATE TABLE household_totals (
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (province_code, partner, status)
);

-- Events applied; an event id found here is acknowledged without being applied again.
CREATE TABLE inbox (
    event_id TEXT PRIMARY KEY,
    applied_at_ms BIGINT NOT NULL
);

-- Small facts: `as_of_ms`, the commit time of the newest event applied.
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
