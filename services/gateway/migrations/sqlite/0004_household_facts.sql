-- Rollups of the partner protocol's household fields (numbered 0004, leaving 0003 to the
-- gateway's indicator read model being built beside it).

-- Sales lines per partner, month (`YYYYMM`), province and household: a change subtracts its
-- previous line and adds its current one, so corrections and any order of events sum right.
-- A household trades in a month while its count is above zero (a count may be negative for
-- a while when a correction arrives before the line it corrects).
CREATE TABLE household_trading (
    partner TEXT NOT NULL,
    month TEXT NOT NULL,
    province_code TEXT NOT NULL,
    household_ref TEXT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (partner, month, province_code, household_ref)
);
-- The read counts one month's trading households by province.
CREATE INDEX household_trading_month ON household_trading (month, province_code);

-- Household stocks by registration day, province and partner, from the households' current
-- figures: listed products and how many households reported them, households with a digital
-- address and how many said either way. A stock at a month's end is the sum over the days up
-- to it, as onboarded households are summed from `households_daily`.
CREATE TABLE household_stock_daily (
    day TEXT NOT NULL,
    province_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    listed_products BIGINT NOT NULL,
    listed_reporting BIGINT NOT NULL,
    digital_households BIGINT NOT NULL,
    digital_reporting BIGINT NOT NULL,
    PRIMARY KEY (day, province_code, partner)
);
