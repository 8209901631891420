-- Household stocks as at a month's end (numbered 0005, leaving 0006 to another change being
-- built beside it).
--
-- `households_daily` and `household_stock_daily` keep every household under its current
-- figures, so on their own a household closed in November would leave October's active
-- count too. Each change of a known household (one with previous figures) adds two rows here,
-- in the month it was recorded (Vietnam's time): its previous figures with +1 and its current
-- ones with -1. The stock at the end of month M is the current-based sum over registration days
-- up to M's last day, plus these rows recorded after M (`change_month > M`) over the same days:
-- for each household that undoes the changes made after M, leaving the figures it had then.
-- Plain sums, so events apply in any order and a parked event replayed later still sums right.
-- Changes applied before this table existed have no rows: the months before them keep the
-- current-based figures, as they had until then.
CREATE TABLE household_asof (
    -- The month the change was recorded, `YYYYMM`.
    change_month TEXT NOT NULL,
    -- The registration day of the figures the row carries, as in `households_daily`.
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
);
