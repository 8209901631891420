-- Indicators service (sqlite): the catalogue, provinces' reports (values stored per version, so a
-- reopened report keeps what was approved), their audit trail, and targets. Enumerations are
-- stored as their protobuf numbers; values and targets as exact decimal text.

-- The catalogue, in `position` order. `revision` is +1 on every edit.
CREATE TABLE indicators (
    code TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    name_vi TEXT NOT NULL,
    name_en TEXT NOT NULL,
    unit TEXT NOT NULL,
    period_type BIGINT NOT NULL,
    source BIGINT NOT NULL,
    value_type BIGINT NOT NULL,
    national_target TEXT NOT NULL,
    measure TEXT NOT NULL,
    aggregation BIGINT NOT NULL,
    min_value TEXT NOT NULL,
    max_value TEXT NOT NULL,
    scale BIGINT NOT NULL,
    target_basis TEXT NOT NULL,
    revision BIGINT NOT NULL
);

-- One report per province (2025 code) and period. `sequence` counts its changes, for the
-- events; `period_end` (YYYY-MM-DD) orders reports newest first across period kinds.
CREATE TABLE reports (
    province_code TEXT NOT NULL,
    period TEXT NOT NULL,
    period_end TEXT NOT NULL,
    state BIGINT NOT NULL,
    version BIGINT NOT NULL,
    sequence BIGINT NOT NULL,
    deadline TEXT NOT NULL,
    submitted_at_ms BIGINT NOT NULL,
    approved_at_ms BIGINT NOT NULL,
    on_time BIGINT NOT NULL,
    review_comment TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (province_code, period)
);
CREATE INDEX reports_by_period ON reports (period, state);

-- Values, per report version, indicator and source unit (`source_province_code`: the pre-2025
-- province a history value was entered for, '' otherwise), so merged provinces never
-- overwrite each other and a re-imported line updates its row.
CREATE TABLE report_values (
    province_code TEXT NOT NULL,
    period TEXT NOT NULL,
    version BIGINT NOT NULL,
    indicator_code TEXT NOT NULL,
    source_province_code TEXT NOT NULL,
    value TEXT NOT NULL,
    comment TEXT NOT NULL,
    PRIMARY KEY (province_code, period, version, indicator_code, source_province_code)
);

-- Every change of a report, in order.
CREATE TABLE report_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    province_code TEXT NOT NULL,
    period TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    indicator_code TEXT NOT NULL,
    old_value TEXT NOT NULL,
    new_value TEXT NOT NULL,
    comment TEXT NOT NULL,
    version BIGINT NOT NULL,
    source_province_code TEXT NOT NULL
);
CREATE INDEX report_audit_by_report ON report_audit (province_code, period, id);

-- Targets by indicator, year and province ('' for the nation); a removed target has no row.
CREATE TABLE targets (
    indicator_code TEXT NOT NULL,
    year BIGINT NOT NULL,
    province_code TEXT NOT NULL,
    value TEXT NOT NULL,
    set_at_ms BIGINT NOT NULL,
    set_by TEXT NOT NULL,
    PRIMARY KEY (indicator_code, year, province_code)
);
