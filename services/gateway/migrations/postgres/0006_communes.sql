-- Rollups by commune (numbered 0006, leaving 0005 to work done beside it), for the communes
-- of a province under the marketplace-sourced indicators. Only records that name a commune
-- are here; a province's records without one are its figure minus its communes' sum.
-- Each change subtracts its previous figures and adds its current ones, so corrections (a
-- line moved to another commune too) and any order of events sum right.

-- Sales by province, month (`YYYYMM`), commune and partner: grams, đồng, orders, lines.
CREATE TABLE sales_commune_monthly (
    province_code TEXT NOT NULL,
    month TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    grams BIGINT NOT NULL,
    value_vnd BIGINT NOT NULL,
    orders BIGINT NOT NULL,
    lines BIGINT NOT NULL,
    PRIMARY KEY (province_code, month, commune_code, partner)
);

-- Households by province, registration month (`YYYYMM`), commune, partner and status (their
-- status now, as `households_daily`): a stock at a month's end is the sum over the months up
-- to it.
CREATE TABLE households_commune_monthly (
    province_code TEXT NOT NULL,
    month TEXT NOT NULL,
    commune_code TEXT NOT NULL,
    partner TEXT NOT NULL,
    status BIGINT NOT NULL,
    households BIGINT NOT NULL,
    PRIMARY KEY (province_code, month, commune_code, partner, status)
);
