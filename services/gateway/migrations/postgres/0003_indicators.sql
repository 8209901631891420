-- Read model of the indicators service's events: what the public may read of the plan's key
-- indicators (catalogue, targets, report states, approved values). Drafts never reach here:
-- the events carry values only on approval.

-- The catalogue: the newest revision of each indicator, as its encoded protobuf message
-- (agriportal.indicators.v1.Indicator), so a field added to the catalogue needs no migration.
CREATE TABLE ind_catalogue (
    code TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    position BIGINT NOT NULL,
    indicator BYTEA NOT NULL
);

-- Targets by indicator, year and province ('' = the nation); the latest set_at_ms wins, and an
-- empty value is a removed target (kept, so an older event arriving later cannot revive it).
CREATE TABLE ind_targets (
    indicator_code TEXT NOT NULL,
    year BIGINT NOT NULL,
    province_code TEXT NOT NULL,
    value TEXT NOT NULL,
    set_at_ms BIGINT NOT NULL,
    PRIMARY KEY (indicator_code, year, province_code)
);

-- Each province's report for a period: its state after the event with the highest sequence
-- (events arrive in any order; an older one changes nothing). on_time: 1, 0.
CREATE TABLE ind_reports (
    province_code TEXT NOT NULL,
    period TEXT NOT NULL,
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    deadline TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    approved_at_ms BIGINT NOT NULL,
    on_time BIGINT NOT NULL,
    PRIMARY KEY (province_code, period)
);

-- Approved values of a report, replaced wholesale by a newer approval and withdrawn by a newer
-- reopening. source_province_code: '' or, for history entered under a pre-2025 code, that code
-- (a province's value is then the aggregate of its source units, each kept once).
CREATE TABLE ind_values (
    province_code TEXT NOT NULL,
    period TEXT NOT NULL,
    indicator_code TEXT NOT NULL,
    source_province_code TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (province_code, period, indicator_code, source_province_code)
);

CREATE INDEX ind_values_by_indicator ON ind_values (indicator_code, period);
