-- The rollup tables as WITHOUT ROWID tables (SQLite only; PostgreSQL has no rowid).
--
-- Each is keyed by its composite text primary key and written only by upserts on that key
-- (every apply adds to a few thousand rows). A rowid table keeps the key twice, in the table
-- and in the key's own index, so every upsert looked the key up in one B-tree and wrote two;
-- here the table is the key's B-tree. Same columns, same key, same rows: the data is copied
-- over, and a binary from before this migration still reads and writes these tables.

CREATE TABLE sales_daily_new (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    category TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner, category)
) WITHOUT ROWID;
INSERT INTO sales_daily_new (day, province_code, partner, category, grams, value_vnd, orders, lines) SELECT day, province_code, partner, category, grams, value_vnd, orders, lines FROM sales_daily;
DROP TABLE sales_daily;
ALTER TABLE sales_daily_new RENAME TO sales_daily;

CREATE TABLE sales_totals_new (
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (province_code, partner)
) WITHOUT ROWID;
INSERT INTO sales_totals_new (province_code, partner, grams, value_vnd, orders, lines) SELECT province_code, partner, grams, value_vnd, orders, lines FROM sales_totals;
DROP TABLE sales_totals;
ALTER TABLE sales_totals_new RENAME TO sales_totals;

CREATE TABLE households_daily_new (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner, status)
) WITHOUT ROWID;
INSERT INTO households_daily_new (day, province_code, partner, status, households) SELECT day, province_code, partner, status, households FROM households_daily;
DROP TABLE households_daily;
ALTER TABLE households_daily_new RENAME TO households_daily;

CREATE TABLE household_totals_new (
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (province_code, partner, status)
) WITHOUT ROWID;
INSERT INTO household_totals_new (province_code, partner, status, households) SELECT province_code, partner, status, households FROM household_totals;
DROP TABLE household_totals;
ALTER TABLE household_totals_new RENAME TO household_totals;

CREATE TABLE household_trading_new (
    partner TEXT NOT NULL,
    month TEXT NOT NULL,
    province_code TEXT NOT NULL,
    household_ref TEXT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (partner, month, province_code, household_ref)
) WITHOUT ROWID;
INSERT INTO household_trading_new (partner, month, province_code, household_ref, lines) SELECT partner, month, province_code, household_ref, lines FROM household_trading;
DROP TABLE household_trading;
ALTER TABLE household_trading_new RENAME TO household_trading;

CREATE TABLE household_stock_daily_new (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    listed_products BIGINT NOT NULL,
    listed_reporting BIGINT NOT NULL,
    digital_households BIGINT NOT NULL,
    digital_reporting BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner)
) WITHOUT ROWID;
INSERT INTO household_stock_daily_new (day, province_code, partner, listed_products, listed_reporting, digital_households, digital_reporting) SELECT day, province_code, partner, listed_products, listed_reporting, digital_households, digital_reporting FROM household_stock_daily;
DROP TABLE household_stock_daily;
ALTER TABLE household_stock_daily_new RENAME TO household_stock_daily;

CREATE TABLE sales_commune_monthly_new (
    province_code TEXT NOT NULL,
    month TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (province_code, month, commune_code, partner)
) WITHOUT ROWID;
INSERT INTO sales_commune_monthly_new (province_code, month, commune_code, partner, grams, value_vnd, orders, lines) SELECT province_code, month, commune_code, partner, grams, value_vnd, orders, lines FROM sales_commune_monthly;
DROP TABLE sales_commune_monthly;
ALTER TABLE sales_commune_monthly_new RENAME TO sales_commune_monthly;

CREATE TABLE households_commune_monthly_new (
    province_code TEXT NOT NULL,
    month TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (province_code, month, commune_code, partner, status)
) WITHOUT ROWID;
INSERT INTO households_commune_monthly_new (province_code, month, commune_code, partner, status, households) SELECT province_code, month, commune_code, partner, status, households FROM households_commune_monthly;
DROP TABLE households_commune_monthly;
ALTER TABLE households_commune_monthly_new RENAME TO households_commune_monthly;

CREATE TABLE household_asof_new (
    change_month TEXT NOT NULL,
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    listed_products BIGINT NOT NULL,
    listed_reporting BIGINT NOT NULL,
    digital_households BIGINT NOT NULL,
    digital_reporting BIGINT NOT NULL,
    PRIMARY KEY (change_month, day, province_code, partner, status)
) WITHOUT ROWID;
INSERT INTO household_asof_new (change_month, day, province_code, partner, status, households, listed_products, listed_reporting, digital_households, digital_reporting) SELECT change_month, day, province_code, partner, status, households, listed_products, listed_reporting, digital_households, digital_reporting FROM household_asof;
DROP TABLE household_asof;
ALTER TABLE household_asof_new RENAME TO household_asof;

CREATE TABLE sales_series_new (
    granularity TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    period_start TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (granularity, province_code, partner, period_start)
) WITHOUT ROWID;
INSERT INTO sales_series_new (granularity, province_code, partner, period_start, grams, value_vnd, orders) SELECT granularity, province_code, partner, period_start, grams, value_vnd, orders FROM sales_series;
DROP TABLE sales_series;
ALTER TABLE sales_series_new RENAME TO sales_series;

CREATE TABLE households_series_new (
    granularity TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    period_start TEXT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (granularity, province_code, partner, period_start)
) WITHOUT ROWID;
INSERT INTO households_series_new (granularity, province_code, partner, period_start, households) SELECT granularity, province_code, partner, period_start, households FROM households_series;
DROP TABLE households_series;
ALTER TABLE households_series_new RENAME TO households_series;

CREATE INDEX household_trading_month ON household_trading (month, province_code);
