-- Time series that do not scan: the daily rollups summed by day, ISO week (starting Monday)
-- and month, for one province or all (`province_code` ''), one partner or both (`partner`
-- ''), so a year of national figures by day reads 366 rows and by month 12, whatever the
-- number of provinces, partners and categories. Written in the same transaction as the daily
-- cells, with the same deltas (−previous, +current), by the consumer and by repairs.
CREATE TABLE sales_series (
    granularity TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    period_start TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    PRIMARY KEY (granularity, province_code, partner, period_start)
);

-- Households by registration day, week and month, every status counted.
CREATE TABLE households_series (
    granularity TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    period_start TEXT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (granularity, province_code, partner, period_start)
);

-- Backfilled from the daily cells, every period at every level. Only days that are real dates
-- of the years a series may ask for (2000-2100) are counted, as the consumer counts them.
CREATE TEMPORARY TABLE series_sales AS
SELECT g.granularity, s.province_code, s.partner,
       CASE g.granularity WHEN 'day' THEN s.day WHEN 'week' THEN to_char(date_trunc('week', to_date(s.day, 'YYYY-MM-DD')), 'YYYY-MM-DD') ELSE substr(s.day, 1, 8) || '01' END AS period_start,
       s.grams, s.value_vnd, s.orders
FROM sales_daily AS s
CROSS JOIN (SELECT 'day' AS granularity UNION ALL SELECT 'week' UNION ALL SELECT 'month') AS g
WHERE s.day IN (SELECT to_char(d, 'YYYY-MM-DD') FROM generate_series(DATE '2000-01-01', DATE '2100-12-31', INTERVAL '1 day') AS d);

INSERT INTO sales_series (granularity, province_code, partner, period_start, grams, value_vnd, orders)
SELECT granularity, province_code, partner, period_start, SUM(grams), SUM(value_vnd), SUM(orders)
FROM series_sales GROUP BY granularity, province_code, partner, period_start
UNION ALL
SELECT granularity, province_code, '', period_start, SUM(grams), SUM(value_vnd), SUM(orders)
FROM series_sales GROUP BY granularity, province_code, period_start
UNION ALL
SELECT granularity, '', partner, period_start, SUM(grams), SUM(value_vnd), SUM(orders)
FROM series_sales GROUP BY granularity, partner, period_start
UNION ALL
SELECT granularity, '', '', period_start, SUM(grams), SUM(value_vnd), SUM(orders)
FROM series_sales GROUP BY granularity, period_start;

DROP TABLE series_sales;

CREATE TEMPORARY TABLE series_households AS
SELECT g.granularity, s.province_code, s.partner,
       CASE g.granularity WHEN 'day' THEN s.day WHEN 'week' THEN to_char(date_trunc('week', to_date(s.day, 'YYYY-MM-DD')), 'YYYY-MM-DD') ELSE substr(s.day, 1, 8) || '01' END AS period_start,
       s.households
FROM households_daily AS s
CROSS JOIN (SELECT 'day' AS granularity UNION ALL SELECT 'week' UNION ALL SELECT 'month') AS g
WHERE s.day IN (SELECT to_char(d, 'YYYY-MM-DD') FROM generate_series(DATE '2000-01-01', DATE '2100-12-31', INTERVAL '1 day') AS d);

INSERT INTO households_series (granularity, province_code, partner, period_start, households)
SELECT granularity, province_code, partner, period_start, SUM(households)
FROM series_households GROUP BY granularity, province_code, partner, period_start
UNION ALL
SELECT granularity, province_code, '', period_start, SUM(households)
FROM series_households GROUP BY granularity, province_code, period_start
UNION ALL
SELECT granularity, '', partner, period_start, SUM(households)
FROM series_households GROUP BY granularity, partner, period_start
UNION ALL
SELECT granularity, '', '', period_start, SUM(households)
FROM series_households GROUP BY granularity, period_start;

DROP TABLE series_households;
