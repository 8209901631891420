//! The gateway consumer's intake: a bus message (subject, `traceparent` header, protobuf
//! payload) through `consumer::decode`, the gateway's topics as the kit's consumer decodes them
//! (`SalesRecorded` / `HouseholdsRecorded` summed into `Deltas`; anything else is refused, and
//! the consumer parks it). The payload comes off the bus, so any bytes must be refused or
//! applied, never panic (overflow checks are on: an `i64` overflow is a crash here).
//!
//! Input layout: byte 0 picks the subject (bit 0: sales or households; bit 1: an unknown
//! subject) and, with bit 2 set, builds the event from the rest as structured data (so extreme
//! integers are one mutation away instead of a ten-byte varint); byte 1 is the length of the
//! `traceparent` value that follows; the rest is the payload.
#![no_main]

use agriportal_gateway::consumer;
use agriportal_gateway::domain::Deltas;
use agriportal_platform::bus::Message as BusMessage;
use agriportal_proto::marketplace::v1::{
    HouseholdChange, HouseholdFigures, SalesChange, SalesFigures,
};
use agriportal_proto::marketplace::v1::{HouseholdsRecorded, SalesRecorded};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Sums of every cell of the sales maps, in i128 so the check itself cannot overflow.
fn sales_sums(d: &Deltas) -> ([i128; 4], [i128; 4]) {
    let mut daily = [0i128; 4];
    let mut totals = [0i128; 4];
    for cell in d.sales_daily.values() {
        for (s, v) in daily.iter_mut().zip(cell) {
            *s += i128::from(*v);
        }
    }
    for cell in d.sales_totals.values() {
        for (s, v) in totals.iter_mut().zip(cell) {
            *s += i128::from(*v);
        }
    }
    (daily, totals)
}

fn check_sales(payload: &[u8]) {
    let Ok(event) = SalesRecorded::decode(payload) else {
        return;
    };
    let mut d = Deltas::default();
    let outcome = d.add_sales(&event);
    let (daily, totals) = sales_sums(&d);
    assert_eq!(daily, totals, "daily and total rollups disagree");
    if outcome.is_ok() {
        let lines: i128 = event
            .changes
            .iter()
            .map(|c| i128::from(c.current.is_some()) - i128::from(c.previous.is_some()))
            .sum();
        assert_eq!(daily[3], lines, "line count");
        // Every line that names a household moves that household's count, and no other.
        let named = |f: &Option<SalesFigures>| {
            i128::from(f.as_ref().is_some_and(|f| !f.household_ref.is_empty()))
        };
        let trading: i128 = event
            .changes
            .iter()
            .map(|c| named(&c.current) - named(&c.previous))
            .sum();
        let counted: i128 = d.household_trading.values().map(|v| i128::from(*v)).sum();
        assert_eq!(counted, trading, "trading household lines");
        assert!(d.newest_ms >= event.recorded_at_ms);
        // Applying an event and then its inverse leaves nothing behind.
        let inverse = SalesRecorded {
            changes: event
                .changes
                .iter()
                .filter(|c| c.previous.is_none())
                .map(|c| {
                    let mut c = c.clone();
                    c.previous = c.current.take();
                    c.current = c.previous.clone().map(|mut f| {
                        f.quantity_grams = 0;
                        f.value_vnd = 0;
                        f.orders = 0;
                        f
                    });
                    c
                })
                .collect(),
            ..event.clone()
        };
        let mut both = Deltas::default();
        let all_new = SalesRecorded {
            changes: event
                .changes
                .iter()
                .filter(|c| c.previous.is_none())
                .cloned()
                .collect(),
            ..event.clone()
        };
        if both.add_sales(&all_new).is_ok() && both.add_sales(&inverse).is_ok() {
            assert!(both.sales_totals.values().all(|c| c[..3] == [0, 0, 0]));
        }
    }
}

fn check_households(payload: &[u8]) {
    let Ok(event) = HouseholdsRecorded::decode(payload) else {
        return;
    };
    let mut d = Deltas::default();
    let outcome = d.add_households(&event);
    let daily: i128 = d.households_daily.values().map(|v| i128::from(*v)).sum();
    let totals: i128 = d.household_totals.values().map(|v| i128::from(*v)).sum();
    assert_eq!(daily, totals, "daily and total household rollups disagree");
    if outcome.is_ok() {
        let households: i128 = event
            .changes
            .iter()
            .map(|c| i128::from(c.current.is_some()) - i128::from(c.previous.is_some()))
            .sum();
        assert_eq!(daily, households);
        assert!(d.newest_ms >= event.recorded_at_ms);
        // The stocks move by exactly the reported figures' differences.
        let listed = |f: &Option<HouseholdFigures>| {
            f.as_ref()
                .and_then(|f| f.listed_products)
                .map_or(0, i128::from)
        };
        let expected: i128 = event
            .changes
            .iter()
            .map(|c| listed(&c.current) - listed(&c.previous))
            .sum();
        let stocked: i128 = d.household_stock.values().map(|v| i128::from(v[0])).sum();
        assert_eq!(stocked, expected, "listed products stock");
        // The as-at corrections add each changed household's previous figures and take its
        // current ones away: households net to zero, listed products to the changes undone.
        let corrected: i128 = d.household_asof.values().map(|v| i128::from(v[0])).sum();
        assert_eq!(corrected, 0, "as-at households");
        let undone: i128 = event
            .changes
            .iter()
            .filter(|c| c.previous.is_some())
            .map(|c| listed(&c.previous) - listed(&c.current))
            .sum();
        let asof_listed: i128 = d.household_asof.values().map(|v| i128::from(v[1])).sum();
        assert_eq!(asof_listed, undone, "as-at listed products");
    }
}

/// A short string, mostly one the rules know (so cells collide and sums grow).
fn pick(u: &mut Unstructured, known: &[&str]) -> ArbResult<String> {
    if u.ratio(7, 8)? {
        Ok(u.choose(known)?.to_string())
    } else {
        u.arbitrary()
    }
}

const DATES: [&str; 3] = ["2024-05-01", "2024-05-02", "not a date"];
const PROVINCES: [&str; 3] = ["79", "01", "99"];

fn sales_figures(u: &mut Unstructured) -> ArbResult<Option<SalesFigures>> {
    if !u.ratio(3, 4)? {
        return Ok(None);
    }
    Ok(Some(SalesFigures {
        sale_date: pick(u, &DATES)?,
        province_code: pick(u, &PROVINCES)?,
        commune_code: String::new(),
        category: pick(u, &["fruit", "vegetables"])?,
        quantity_grams: u.arbitrary()?,
        value_vnd: u.arbitrary()?,
        orders: u.arbitrary()?,
        household_ref: pick(u, &["", "h1", "h2"])?,
    }))
}

fn household_figures(u: &mut Unstructured) -> ArbResult<Option<HouseholdFigures>> {
    if !u.ratio(3, 4)? {
        return Ok(None);
    }
    Ok(Some(HouseholdFigures {
        province_code: pick(u, &PROVINCES)?,
        commune_code: String::new(),
        registered_on: pick(u, &DATES)?,
        status: u.arbitrary()?,
        listed_products: u.arbitrary()?,
        has_digital_address: u.arbitrary()?,
    }))
}

/// An event encoded from structured data, as the marketplace's outbox would publish it.
fn structured(households: bool, data: &[u8]) -> ArbResult<Vec<u8>> {
    let mut u = Unstructured::new(data);
    let event_id: String = u.arbitrary()?;
    let partner = *u.choose(&[1, 2, 0, 7])?;
    let recorded_at_ms: i64 = u.arbitrary()?;
    let n = u.int_in_range(0..=16)?;
    if households {
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            changes.push(HouseholdChange {
                household_ref: u.arbitrary()?,
                previous: household_figures(&mut u)?,
                current: household_figures(&mut u)?,
            });
        }
        Ok(HouseholdsRecorded {
            event_id,
            partner,
            batch_id: String::new(),
            recorded_at_ms,
            changes,
        }
        .encode_to_vec())
    } else {
        let mut changes = Vec::with_capacity(n);
        for _ in 0..n {
            changes.push(SalesChange {
                record_id: u.arbitrary()?,
                previous: sales_figures(&mut u)?,
                current: sales_figures(&mut u)?,
            });
        }
        Ok(SalesRecorded {
            event_id,
            partner,
            batch_id: String::new(),
            recorded_at_ms,
            changes,
        }
        .encode_to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let (selector, rest) = data.split_first().unwrap_or((&0, &[]));
    let (header_len, rest) = rest.split_first().unwrap_or((&0, &[]));
    let split = usize::from(*header_len).min(rest.len());
    let (traceparent, raw) = rest.split_at(split);
    let built;
    let payload = if selector & 4 != 0 {
        let Ok(bytes) = structured(selector & 1 == 1, raw) else {
            return;
        };
        built = bytes;
        built.as_slice()
    } else {
        raw
    };
    let subject = match selector & 3 {
        0 => "marketplace.sales_recorded",
        1 => "marketplace.households_recorded",
        _ => "marketplace.something_else",
    };
    let message = BusMessage {
        subject: subject.to_string(),
        id: "fuzz".to_string(),
        headers: vec![(
            "traceparent".to_string(),
            String::from_utf8_lossy(traceparent).into_owned(),
        )],
        payload: bytes::Bytes::copy_from_slice(payload),
    };
    // The consumer's own path: decode and sum, or refuse (and so park) with a reason.
    match consumer::decode(&message) {
        Ok(event) => {
            assert!(!event.event_id.is_empty());
            assert!(selector & 3 < 2, "an unknown subject was decoded");
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
    // And the rules on their own, with invariants on the sums.
    match selector & 3 {
        0 => check_sales(payload),
        1 => check_households(payload),
        _ => {}
    }
});
