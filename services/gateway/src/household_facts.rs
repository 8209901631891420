//! Marketplace facts about households that the partner protocol is gaining (who sold in a
//! month, products listed, digital addresses), read for the indicators `HH_TRADING`,
//! `PRODUCTS_LISTED` and `DIGITAL_ADDR_HH`.
//!
//! **Placeholders.** The protocol fields these come from (`SalesRecord.household_ref`,
//! `OnboardingRecord.listed_products` / `has_digital_address`) are being added in parallel, with
//! the rollups that keep them; until that work is merged, which replaces the bodies below with
//! real queries, each function answers `Ok(None)`: "no data yet". The indicators API then shows
//! no value with the missing reason `no_data` — never a zero, which would read as a fact.
//! The signatures are the contract with that work: keep them.

use std::collections::BTreeMap;

use agriportal_platform::period::Period;
use agriportal_platform::Result;

use crate::store::Store;

/// Distinct households that sold at least once in `month`, by province code; `None`: no data
/// yet (see the module's note).
pub async fn trading_households(
    store: &Store,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    let _ = (store, month);
    Ok(None)
}

/// Products listed at the end of `month` (a stock), by province code; `None`: no data yet.
pub async fn listed_products(
    store: &Store,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    let _ = (store, month);
    Ok(None)
}

/// Households with a digital address at the end of `month` (a stock), by province code;
/// `None`: no data yet.
pub async fn digital_address_households(
    store: &Store,
    month: Period,
) -> Result<Option<BTreeMap<String, i64>>> {
    let _ = (store, month);
    Ok(None)
}
