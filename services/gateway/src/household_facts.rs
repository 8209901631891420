//! The household indicators' figures, read from the rollups the consumer keeps of the partner
//! protocol's household fields (`household_trading`, `household_stock_daily`): distinct
//! trading households in a month, and the listed-products and digital-address stocks at a
//! month's end, by province. The indicator read model turns them into figures.
//!
//! A household is the partner's key, so "distinct" means distinct per (partner,
//! household_ref); a province's figure sums the partners. Every function answers `Ok(None)`
//! for a period that is not a month (these facts are monthly).
//!
//! Stocks (these two, and the households onboarded and active that `service.rs` reads through
//! `ReadView::households_at_end`) are as at the month's end: each household counts with the
//! figures (province, status, listed products, digital address, registration day) of its last
//! change recorded by then, in Vietnam's time, or of its first record if none was. A change
//! recorded later leaves the figures of the months before it alone, so approved history does
//! not move when a partner changes a household. The rollups hold current figures; the table
//! `household_asof` holds, per change, what undoes it for the months before the one it was
//! recorded in (its previous figures added, its current ones subtracted), and a read adds the
//! rows recorded after the month asked. A new household has no previous figures: it counts
//! from its registration day, also in months before it was recorded (partners back-fill their
//! history), which is the best known of those months.

use std::collections::BTreeMap;

use agriportal_platform::period::{Period, PeriodType};
use agriportal_platform::{with_tx, Result};

use crate::store::ReadView;

/// A province and one figure of it.
#[derive(sqlx::FromRow)]
struct ProvinceCount {
    province_code: String,
    n: i64,
}

/// A province's stock and how many households reported it.
#[derive(sqlx::FromRow)]
struct ProvinceStock {
    province_code: String,
    total: i64,
    reporting: i64,
}

/// Province code → distinct households (per partner) with at least one sales line in `month`.
/// A province with none is absent. `Ok(None)` only if `month` is not a month.
pub async fn trading_households(
    view: &mut ReadView,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    if month.kind() != PeriodType::Month {
        return Ok(None);
    }
    // `lines > 0`: a count is zero once every line was moved away, and may be negative while
    // a correction waits for the line it corrects; neither household trades.
    let rows: Vec<ProvinceCount> = with_tx!(view.tx(), |conn| {
        sqlx::query_as(
            "SELECT province_code, COUNT(*) AS n FROM household_trading \
             WHERE month = $1 AND lines > 0 GROUP BY province_code",
        )
        .bind(month.to_string())
        .fetch_all(&mut *conn)
        .await?
    });
    Ok(Some(
        rows.into_iter().map(|r| (r.province_code, r.n)).collect(),
    ))
}

/// A household and a province it traded in.
#[derive(sqlx::FromRow)]
struct TradedIn {
    partner: String,
    household_ref: String,
    province_code: String,
}

/// The households that traded in more than one province in `month`, each as the list of
/// those provinces: what a region's or the nation's distinct count must not count twice.
/// Rare (a household sells where it lives), so the answer is small. `Ok(None)` only if `month`
/// is not a month.
pub async fn trading_overlaps(
    view: &mut ReadView,
    month: Period,
) -> Result<Option<Vec<Vec<String>>>> {
    if month.kind() != PeriodType::Month {
        return Ok(None);
    }
    let rows: Vec<TradedIn> = with_tx!(view.tx(), |conn| {
        sqlx::query_as(
            "SELECT partner, household_ref, province_code FROM household_trading \
             WHERE month = $1 AND lines > 0 AND (partner, household_ref) IN ( \
                 SELECT partner, household_ref FROM household_trading \
                 WHERE month = $1 AND lines > 0 \
                 GROUP BY partner, household_ref HAVING COUNT(*) > 1) \
             ORDER BY partner, household_ref, province_code",
        )
        .bind(month.to_string())
        .fetch_all(&mut *conn)
        .await?
    });
    let mut overlaps: Vec<Vec<String>> = Vec::new();
    let mut last: Option<(String, String)> = None;
    for row in rows {
        let key = (row.partner, row.household_ref);
        if last.as_ref() == Some(&key) {
            if let Some(current) = overlaps.last_mut() {
                current.push(row.province_code);
            }
        } else {
            overlaps.push(vec![row.province_code]);
            last = Some(key);
        }
    }
    Ok(Some(overlaps))
}

/// Province code → products listed by the households registered up to the end of `month`, as
/// they reported at its end. A province where no such household reported the figure is absent (a
/// present 0 is a reported zero). `Ok(None)` only if `month` is not a month.
pub async fn listed_products(
    view: &mut ReadView,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    stock(view, month, "listed_products", "listed_reporting").await
}

/// Province code → households registered up to the end of `month` that have a digital
/// address, as they reported at its end. A province where no such household said either way is
/// absent. `Ok(None)` only if `month` is not a month.
pub async fn digital_address_households(
    view: &mut ReadView,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    stock(view, month, "digital_households", "digital_reporting").await
}

/// A stock at the end of `month`: the sum over registration days up to its last day of the
/// households' current figures, plus the corrections of the changes recorded after `month`,
/// in one statement so a concurrent apply is seen whole or not at all.
async fn stock(
    view: &mut ReadView,
    month: Period,
    column: &'static str,
    reporting: &'static str,
) -> Result<Option<BTreeMap<String, i64>>> {
    if month.kind() != PeriodType::Month {
        return Ok(None);
    }
    let sql = format!(
        "SELECT province_code, CAST(SUM({column}) AS BIGINT) AS total, \
         CAST(SUM({reporting}) AS BIGINT) AS reporting FROM ( \
         SELECT province_code, {column}, {reporting} FROM household_stock_daily WHERE day <= $2 \
         UNION ALL SELECT province_code, {column}, {reporting} FROM household_asof \
         WHERE change_month > $1 AND day <= $2) AS counted GROUP BY province_code"
    );
    let rows: Vec<ProvinceStock> = with_tx!(view.tx(), |conn| {
        sqlx::query_as(&sql)
            .bind(month.to_string())
            .bind(month.end().to_string())
            .fetch_all(&mut *conn)
            .await?
    });
    Ok(Some(
        rows.into_iter()
            .filter(|r| r.reporting > 0)
            .map(|r| (r.province_code, r.total))
            .collect(),
    ))
}
