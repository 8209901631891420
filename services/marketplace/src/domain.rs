//! The marketplace's rules: which records are valid, how a record compares with what is held,
//! and what a batch's outcome is. Pure functions; the store applies their decisions.

use std::collections::HashMap;

use agriportal_platform::reference::{Partner, Reference, PLAN_START};
use agriportal_platform::{Error, Result};
use agriportal_proto::common::v1::HouseholdStatus;
use agriportal_proto::marketplace::v1 as pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Date, OffsetDateTime, UtcOffset};

use crate::config::Limits;
use crate::error;

/// A valid sales line, normalised: 2025 province code, orders at least 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleLine {
    /// The partner's key.
    pub record_id: String,
    /// `YYYY-MM-DD`.
    pub sale_date: String,
    /// Province code since 1 July 2025.
    pub province_code: String,
    /// Commune code or empty.
    pub commune_code: String,
    /// Category code.
    pub category: String,
    /// Grams.
    pub quantity_grams: i64,
    /// Đồng.
    pub value_vnd: i64,
    /// Orders, at least 1.
    pub orders: i64,
    /// The partner's key of the household that sold, trimmed; `None` when not given. Absent
    /// from a record sent without it, so such a record compares equal to one stored before
    /// the field existed (its column is NULL) and a replayed old batch stays unchanged.
    #[serde(default)]
    pub household_ref: Option<String>,
}

/// A valid household record, normalised: 2025 province code, sorted unique categories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Household {
    /// The partner's key.
    pub household_ref: String,
    /// Province code since 1 July 2025.
    pub province_code: String,
    /// Commune code or empty.
    pub commune_code: String,
    /// `YYYY-MM-DD`.
    pub registered_on: String,
    /// `HouseholdStatus` value (1 active, 2 suspended, 3 closed).
    pub status: i32,
    /// Category codes, `;`-joined.
    pub categories: String,
    /// Products listed now; `None` when the partner did not say (so a record sent without it
    /// compares equal to one stored before the field existed).
    #[serde(default)]
    pub listed_products: Option<i64>,
    /// Whether it has a digital address; `None` when the partner did not say. Stored as a
    /// boolean on PostgreSQL and as 0/1 on SQLite, so it is read back from either.
    #[serde(default, deserialize_with = "flag::deserialize")]
    pub has_digital_address: Option<bool>,
}

/// Reads an optional flag written as a JSON boolean (PostgreSQL's `json_build_object` of a
/// BOOLEAN column) or as 0/1 (SQLite's `json_object` of an INTEGER column).
mod flag {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Ok(Option::<Flag>::deserialize(d)?.map(|f| match f {
            Flag::Bool(b) => b,
            Flag::Int(i) => i != 0,
        }))
    }
}

/// Keyed records of either kind.
pub trait Keyed {
    /// Name of the key field in the protobuf record.
    const KEY_FIELD: &'static str;
    /// The partner's key of the record.
    fn key(&self) -> &str;
}

impl Keyed for SaleLine {
    const KEY_FIELD: &'static str = "record_id";
    fn key(&self) -> &str {
        &self.record_id
    }
}

impl Keyed for Household {
    const KEY_FIELD: &'static str = "household_ref";
    fn key(&self) -> &str {
        &self.household_ref
    }
}

/// The outcome of validation: valid records (with their index) and rejections.
#[derive(Debug, Default)]
pub struct Validated<T> {
    /// Valid records in batch order.
    pub records: Vec<T>,
    /// One entry per invalid record.
    pub rejections: Vec<pb::Rejection>,
}

/// Checks a batch's envelope (id, record count, size); an error refuses the whole batch.
pub fn check_envelope(
    batch_id: &str,
    records: usize,
    encoded_len: usize,
    limits: &Limits,
) -> Result<()> {
    if encoded_len > limits.max_bytes {
        return Err(error::too_large(encoded_len, limits));
    }
    if records > limits.max_records {
        return Err(error::too_many_records(records, limits));
    }
    if batch_id.trim().is_empty() {
        return Err(error::bad_batch_id(
            "is empty; give each batch a unique id so it can be retried safely",
        ));
    }
    if batch_id.chars().count() > limits.max_key_len {
        return Err(error::bad_batch_id(&format!(
            "is longer than {} characters",
            limits.max_key_len
        )));
    }
    if batch_id.chars().any(char::is_control) {
        return Err(error::bad_batch_id("contains control characters"));
    }
    Ok(())
}

/// Checks a rollup request: a known partner, a kind, and an empty or known province code.
/// Returns them, the province as `None` when the request asks for digests.
pub fn check_rollup_request(
    request: &pb::GetRollupCellsRequest,
) -> Result<(Partner, pb::RollupKind, Option<&str>)> {
    let partner = Partner::from_proto(request.partner)
        .ok_or_else(|| Error::invalid("partner must be postmart or voso"))?;
    let kind = match pb::RollupKind::try_from(request.kind) {
        Ok(kind @ (pb::RollupKind::Sales | pb::RollupKind::Households)) => kind,
        _ => {
            return Err(Error::invalid(
                "kind must be ROLLUP_KIND_SALES or ROLLUP_KIND_HOUSEHOLDS",
            ))
        }
    };
    let province = match request.province_code.as_str() {
        "" => None,
        code if Reference::get().province(code).is_some() => Some(code),
        code => {
            return Err(Error::invalid(format!(
                "province_code `{}` is not one of the 34 provinces' 2025 codes",
                code.chars().take(16).collect::<String>()
            )))
        }
    };
    Ok((partner, kind, province))
}

/// Today in Vietnam (UTC+7): partners date records by local days, and a sale made this
/// morning in Hà Nội is still "yesterday" in UTC.
pub fn today_in_vietnam() -> Date {
    let offset = UtcOffset::from_hms(7, 0, 0).unwrap_or(UtcOffset::UTC);
    OffsetDateTime::now_utc().to_offset(offset).date()
}

struct Checker<'a> {
    reference: &'a Reference,
    limits: &'a Limits,
    today: Date,
}

type FieldError = (&'static str, String);

impl Checker<'_> {
    /// A record's key as it is kept: trimmed and in Unicode NFC, so the same key typed or
    /// exported in two encodings (precomposed `ệ` or `e` with combining marks) is one record.
    fn key(&self, field: &'static str, key: &str) -> Result<String, FieldError> {
        let key = normalize_key(key);
        if key.is_empty() {
            return Err((
                field,
                "is empty; every record needs the partner's own key".into(),
            ));
        }
        if key.chars().count() > self.limits.max_key_len {
            return Err((
                field,
                format!("is longer than {} characters", self.limits.max_key_len),
            ));
        }
        check_key_chars(field, &key)?;
        Ok(key)
    }

    fn date(&self, field: &'static str, value: &str) -> Result<String, FieldError> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let date = Date::parse(value, format).map_err(|_| {
            (
                field,
                format!("`{}` is not a date in the form YYYY-MM-DD", truncate(value)),
            )
        })?;
        if date < PLAN_START {
            return Err((
                field,
                format!("{value} is before the plan started on {PLAN_START}"),
            ));
        }
        if date > self.today {
            return Err((
                field,
                format!(
                    "{value} is in the future (today is {} in Vietnam)",
                    self.today
                ),
            ));
        }
        Ok(value.to_string())
    }

    /// Resolves the province (mapping a pre-2025 code) and checks the commune lies in it.
    fn place(&self, province: &str, commune: &str) -> Result<(String, String), FieldError> {
        let Some(found) = self.reference.resolve_province(province) else {
            return Err((
                "province_code",
                format!(
                    "`{}` is not a province code (34 codes since 1 July 2025, or a pre-2025 code)",
                    truncate(province)
                ),
            ));
        };
        let code = found.province().code.clone();
        if commune.is_empty() {
            return Ok((code, String::new()));
        }
        let Some(c) = self.reference.commune(commune) else {
            return Err((
                "commune_code",
                format!(
                    "`{}` is not a commune code since 1 July 2025",
                    truncate(commune)
                ),
            ));
        };
        if c.province_code != code {
            return Err((
                "commune_code",
                format!(
                    "commune {} ({}) is not in province {} ({})",
                    c.code,
                    c.name,
                    code,
                    found.province().name
                ),
            ));
        }
        Ok((code, commune.to_string()))
    }

    fn category(&self, field: &'static str, code: &str) -> Result<(), FieldError> {
        if self.reference.category(code).is_none() {
            let known: Vec<&str> = self
                .reference
                .categories()
                .iter()
                .map(|c| c.code.as_str())
                .collect();
            return Err((
                field,
                format!(
                    "`{}` is not a category; use one of {}",
                    truncate(code),
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }

    fn sale(&self, r: &pb::SalesRecord) -> Result<SaleLine, FieldError> {
        let record_id = self.key("record_id", &r.record_id)?;
        let sale_date = self.date("sale_date", &r.sale_date)?;
        let (province_code, commune_code) = self.place(&r.province_code, &r.commune_code)?;
        self.category("category", &r.category)?;
        if r.quantity_grams < 0 {
            return Err((
                "quantity_grams",
                format!("{} is negative", r.quantity_grams),
            ));
        }
        if r.quantity_grams > self.limits.max_grams {
            return Err((
                "quantity_grams",
                format!("{} g is over 1,000 tonnes in one line", r.quantity_grams),
            ));
        }
        if r.value_vnd < 0 {
            return Err(("value_vnd", format!("{} is negative", r.value_vnd)));
        }
        if r.value_vnd > self.limits.max_value_vnd {
            return Err((
                "value_vnd",
                format!("{} đồng is over 100 billion in one line", r.value_vnd),
            ));
        }
        if i64::from(r.orders) > self.limits.max_orders {
            return Err((
                "orders",
                format!(
                    "{} orders is over {} in one line",
                    r.orders, self.limits.max_orders
                ),
            ));
        }
        let household_ref = self.household_ref(&r.household_ref)?;
        Ok(SaleLine {
            record_id,
            sale_date,
            province_code,
            commune_code,
            category: r.category.clone(),
            quantity_grams: r.quantity_grams,
            value_vnd: r.value_vnd,
            orders: i64::from(r.orders.max(1)),
            household_ref,
        })
    }

    /// A sales line's optional household key: trimmed (partners pad fixed-width exports),
    /// empty meaning not given, at most `max_household_ref_len` characters, no control
    /// characters (it is shown and exported as text).
    fn household_ref(&self, value: &str) -> Result<Option<String>, FieldError> {
        let value = normalize_key(value);
        if value.is_empty() {
            return Ok(None);
        }
        let max = self.limits.max_household_ref_len;
        if value.chars().count() > max {
            return Err(("household_ref", format!("is longer than {max} characters")));
        }
        check_key_chars("household_ref", &value)?;
        Ok(Some(value))
    }

    fn household(&self, r: &pb::OnboardingRecord) -> Result<Household, FieldError> {
        let household_ref = self.key("household_ref", &r.household_ref)?;
        let registered_on = self.date("registered_on", &r.registered_on)?;
        let (province_code, commune_code) = self.place(&r.province_code, &r.commune_code)?;
        match HouseholdStatus::try_from(r.status) {
            Ok(HouseholdStatus::Active | HouseholdStatus::Suspended | HouseholdStatus::Closed) => {}
            _ => {
                return Err((
                    "status",
                    format!(
                        "{} is not a status; use ACTIVE, SUSPENDED or CLOSED",
                        r.status
                    ),
                ))
            }
        }
        let mut categories = Vec::with_capacity(r.categories.len());
        for code in &r.categories {
            self.category("categories", code)?;
            categories.push(code.as_str());
        }
        categories.sort_unstable();
        categories.dedup();
        if let Some(listed) = r.listed_products {
            if i64::from(listed) > self.limits.max_listed_products {
                return Err((
                    "listed_products",
                    format!(
                        "{listed} is over {} products for one household",
                        self.limits.max_listed_products
                    ),
                ));
            }
        }
        Ok(Household {
            household_ref,
            province_code,
            commune_code,
            registered_on,
            status: r.status,
            categories: categories.join(";"),
            listed_products: r.listed_products.map(i64::from),
            has_digital_address: r.has_digital_address,
        })
    }
}

/// A key trimmed and in Unicode NFC.
pub fn normalize_key(key: &str) -> String {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    let key = key.trim();
    // Nearly every key is ASCII, which is NFC already; composing each one char by char was
    // about 3 % of the CPU of `bench ingest`.
    if key.is_ascii() || is_nfc_quick(key.chars()) == IsNormalized::Yes {
        return key.to_string();
    }
    key.nfc().collect()
}

/// Refuses control characters and invisible format characters (Unicode category Cf: zero
/// width spaces and joiners, byte order marks, direction marks), which would make two keys
/// that look the same differ.
fn check_key_chars(field: &'static str, key: &str) -> Result<(), FieldError> {
    // ASCII has no format characters, and its control characters are its control bytes: a
    // byte scan answers what the Unicode tables would (looking each character's category up
    // was about 3 % of the CPU of `bench ingest`).
    if key.is_ascii() {
        if key.bytes().any(|b| b.is_ascii_control()) {
            return Err(control_characters(field));
        }
        return Ok(());
    }
    check_key_chars_by_category(field, key)
}

fn control_characters(field: &'static str) -> (&'static str, String) {
    (
        field,
        "contains control characters; use printable text".into(),
    )
}

/// [`check_key_chars`] by each character's Unicode category.
fn check_key_chars_by_category(field: &'static str, key: &str) -> Result<(), FieldError> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if key.chars().any(char::is_control) {
        return Err(control_characters(field));
    }
    if let Some(c) = key
        .chars()
        .find(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err((
            field,
            format!(
                "contains the invisible format character U+{:04X}; remove it (keys must look as they are)",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

fn truncate(value: &str) -> String {
    value.chars().take(40).collect()
}

fn validate<R, T: Keyed>(
    records: &[R],
    key_of: impl Fn(&R) -> &str,
    check: impl Fn(&R) -> Result<T, FieldError>,
) -> Validated<T> {
    let mut out = Validated {
        records: Vec::with_capacity(records.len()),
        rejections: Vec::new(),
    };
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(records.len());
    for (index, record) in records.iter().enumerate() {
        let key = key_of(record);
        let outcome = check(record).and_then(|valid| match seen.get(valid.key()) {
            Some(first) => Err((
                "",
                format!("the same key appears earlier in this batch, at index {first}"),
            )),
            None => Ok(valid),
        });
        match outcome {
            Ok(valid) => {
                seen.insert(valid.key().to_string(), index);
                out.records.push(valid);
            }
            Err((field, reason)) => out.rejections.push(pb::Rejection {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                record_id: truncate(key),
                field: if field.is_empty() {
                    T::KEY_FIELD
                } else {
                    field
                }
                .to_string(),
                reason,
            }),
        }
    }
    out
}

/// Validates a sales batch's records.
pub fn validate_sales(records: &[pb::SalesRecord], limits: &Limits) -> Validated<SaleLine> {
    let checker = Checker {
        reference: Reference::get(),
        limits,
        today: today_in_vietnam(),
    };
    validate(records, |r| &r.record_id, |r| checker.sale(r))
}

/// Validates an onboarding batch's records.
pub fn validate_onboarding(
    records: &[pb::OnboardingRecord],
    limits: &Limits,
) -> Validated<Household> {
    let checker = Checker {
        reference: Reference::get(),
        limits,
        today: today_in_vietnam(),
    };
    validate(records, |r| &r.household_ref, |r| checker.household(r))
}

/// Which way a record compares with what is held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change<T> {
    /// Not held before.
    New(T),
    /// Held with other values.
    Corrected {
        /// What was held.
        previous: T,
        /// What replaces it.
        current: T,
    },
}

/// Compares valid records with those held under the same keys; returns the changes to apply
/// and the counts (accepted, unchanged, corrected).
pub fn classify<T: Keyed + PartialEq + Clone>(
    records: Vec<T>,
    held: &HashMap<String, T>,
) -> (Vec<Change<T>>, [u32; 3]) {
    let mut changes = Vec::with_capacity(records.len());
    let mut counts = [0u32; 3];
    for record in records {
        match held.get(record.key()) {
            None => {
                counts[0] += 1;
                changes.push(Change::New(record));
            }
            Some(previous) if *previous == record => counts[1] += 1,
            Some(previous) => {
                counts[2] += 1;
                changes.push(Change::Corrected {
                    previous: previous.clone(),
                    current: record,
                });
            }
        }
    }
    (changes, counts)
}

/// The hash that identifies a batch's content: a batch id reused with the same hash is a
/// retry, with another hash a conflict. Computed over the decoded request re-encoded, so two
/// encodings of the same content agree.
pub fn content_hash(kind: &str, request: &impl Message) -> String {
    content_hash_of_encoded(kind, &request.encode_to_vec())
}

/// [`content_hash`] of a request already re-encoded (`encoded` is `request.encode_to_vec()`),
/// so that a push encodes its batch once for both the hash and the stored copy.
pub fn content_hash_of_encoded(kind: &str, encoded: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0u8]);
    hasher.update(encoded);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl SaleLine {
    /// The figures carried in events.
    pub fn figures(&self) -> pb::SalesFigures {
        pb::SalesFigures {
            sale_date: self.sale_date.clone(),
            province_code: self.province_code.clone(),
            commune_code: self.commune_code.clone(),
            category: self.category.clone(),
            quantity_grams: self.quantity_grams,
            value_vnd: self.value_vnd,
            orders: u32::try_from(self.orders).unwrap_or(u32::MAX),
            household_ref: self.household_ref.clone().unwrap_or_default(),
        }
    }
}

impl Household {
    /// The figures carried in events.
    pub fn figures(&self) -> pb::HouseholdFigures {
        pb::HouseholdFigures {
            province_code: self.province_code.clone(),
            commune_code: self.commune_code.clone(),
            registered_on: self.registered_on.clone(),
            status: self.status,
            listed_products: self
                .listed_products
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            has_digital_address: self.has_digital_address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(id: &str) -> pb::SalesRecord {
        pb::SalesRecord {
            record_id: id.into(),
            sale_date: "2022-01-15".into(),
            province_code: "79".into(),
            commune_code: String::new(),
            category: "fruit".into(),
            quantity_grams: 1_000,
            value_vnd: 50_000,
            orders: 0,
            household_ref: String::new(),
        }
    }

    #[test]
    fn ascii_keys_are_checked_and_normalised_as_by_the_unicode_tables() {
        use unicode_normalization::UnicodeNormalization;
        for byte in 0u8..=127 {
            let key = format!("a{}b", char::from(byte));
            assert_eq!(
                check_key_chars("k", &key),
                check_key_chars_by_category("k", &key),
                "byte {byte}"
            );
            assert_eq!(normalize_key(&key), key.trim().nfc().collect::<String>());
        }
        // Not ASCII: the tables decide, and a decomposed key is composed.
        assert!(check_key_chars("k", "a\u{200B}b").is_err());
        assert!(check_key_chars("k", "a\u{85}b").is_err());
        assert!(check_key_chars("k", "Hồ").is_ok());
        assert_eq!(normalize_key(" Ho\u{302}\u{300} "), "Hồ");
    }

    fn reject(record: pb::SalesRecord) -> pb::Rejection {
        let v = validate_sales(&[record], &Limits::default());
        assert!(v.records.is_empty(), "expected a rejection");
        v.rejections[0].clone()
    }

    #[test]
    fn valid_line_is_normalised() {
        let mut r = sale("a");
        r.province_code = "74".into(); // Bình Dương, merged into Hồ Chí Minh City
        let v = validate_sales(&[r], &Limits::default());
        assert_eq!(v.records[0].province_code, "79");
        assert_eq!(v.records[0].orders, 1);
    }

    #[test]
    fn every_rejection_names_its_field() {
        let today = today_in_vietnam();
        type Case = (
            Box<dyn Fn(&mut pb::SalesRecord)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (Box::new(|r| r.record_id = " ".into()), "record_id", "empty"),
            (
                Box::new(|r| r.province_code = "99".into()),
                "province_code",
                "not a province",
            ),
            (
                Box::new(|r| r.commune_code = "99999".into()),
                "commune_code",
                "not a commune",
            ),
            (
                Box::new(|r| r.commune_code = "00004".into()),
                "commune_code",
                "not in province",
            ),
            (
                Box::new(|r| r.category = "gold".into()),
                "category",
                "not a category",
            ),
            (
                Box::new(|r| r.quantity_grams = -1),
                "quantity_grams",
                "negative",
            ),
            (
                Box::new(|r| r.quantity_grams = 1_000_000_001),
                "quantity_grams",
                "1,000 tonnes",
            ),
            (Box::new(|r| r.value_vnd = -5), "value_vnd", "negative"),
            (
                Box::new(|r| r.value_vnd = 100_000_000_001),
                "value_vnd",
                "100 billion",
            ),
            (
                Box::new(|r| r.sale_date = "2021-07-20".into()),
                "sale_date",
                "before the plan",
            ),
            (
                Box::new(move |r| r.sale_date = (today + time::Duration::days(1)).to_string()),
                "sale_date",
                "future",
            ),
            (
                Box::new(|r| r.sale_date = "15/01/2022".into()),
                "sale_date",
                "YYYY-MM-DD",
            ),
        ];
        for (mutate, field, words) in cases {
            let mut r = sale("x");
            mutate(&mut r);
            let rejection = reject(r);
            assert_eq!(rejection.field, field);
            assert!(
                rejection.reason.contains(words),
                "{field}: {}",
                rejection.reason
            );
        }
    }

    #[test]
    fn household_ref_of_a_sale_is_optional_trimmed_and_bounded() {
        let limits = Limits::default();
        let mut r = sale("a");
        assert_eq!(
            validate_sales(&[r.clone()], &limits).records[0].household_ref,
            None
        );
        r.household_ref = "   ".into();
        assert_eq!(
            validate_sales(&[r.clone()], &limits).records[0].household_ref,
            None,
            "blank is not given"
        );
        r.household_ref = "  hh-7 ".into();
        let line = validate_sales(&[r.clone()], &limits).records[0].clone();
        assert_eq!(line.household_ref.as_deref(), Some("hh-7"));
        assert_eq!(line.figures().household_ref, "hh-7");
        r.household_ref = "đ".repeat(64);
        assert!(validate_sales(&[r.clone()], &limits).rejections.is_empty());
        for (value, words) in [
            ("đ".repeat(65), "longer than 64"),
            ("hh\u{7}1".to_string(), "control characters"),
            ("a\nb".to_string(), "control characters"),
        ] {
            r.household_ref = value;
            let rejection = reject(r.clone());
            assert_eq!(rejection.field, "household_ref");
            assert_eq!(rejection.record_id, "a");
            assert!(rejection.reason.contains(words), "{}", rejection.reason);
        }
    }

    #[test]
    fn keys_are_trimmed_nfc_and_free_of_invisible_characters() {
        let limits = Limits::default();
        // "Hộ Nguyễn" precomposed (NFC) and decomposed (NFD): one key.
        let nfc = "H\u{1ed9} Nguy\u{1ec5}n";
        let nfd = "Ho\u{323}\u{302} Nguye\u{302}\u{303}n";
        assert_ne!(nfc, nfd);
        let batch = validate_sales(&[sale(nfc), sale(&format!(" {nfd} "))], &limits);
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].record_id, nfc);
        assert_eq!(batch.rejections.len(), 1);
        assert!(batch.rejections[0].reason.contains("same key"));
        let mut with_ref = sale("x");
        with_ref.household_ref = nfd.into();
        let line = &validate_sales(&[with_ref], &limits).records[0];
        assert_eq!(line.household_ref.as_deref(), Some(nfc));
        let household = |key: &str| pb::OnboardingRecord {
            household_ref: key.into(),
            province_code: "01".into(),
            registered_on: "2021-08-01".into(),
            status: HouseholdStatus::Active as i32,
            ..Default::default()
        };
        let kept = validate_onboarding(&[household(nfd)], &limits);
        assert_eq!(kept.records[0].household_ref, nfc);
        // Zero width space, byte order mark, zero width joiner, left-to-right mark: refused.
        for invisible in ['\u{200B}', '\u{FEFF}', '\u{200D}', '\u{200E}'] {
            let key = format!("hh{invisible}1");
            let rejection = &validate_sales(&[sale(&key)], &limits).rejections[0];
            assert_eq!(rejection.field, "record_id");
            assert!(
                rejection.reason.contains("invisible"),
                "{}",
                rejection.reason
            );
            assert!(
                rejection
                    .reason
                    .contains(&format!("U+{:04X}", u32::from(invisible))),
                "{}",
                rejection.reason
            );
            let rejection = &validate_onboarding(&[household(&key)], &limits).rejections[0];
            assert_eq!(rejection.field, "household_ref");
            let mut r = sale("y");
            r.household_ref = key;
            let rejection = &validate_sales(&[r], &limits).rejections[0];
            assert_eq!(rejection.field, "household_ref");
        }
    }

    #[test]
    fn listed_products_and_digital_address_are_checked_and_carried() {
        let limits = Limits::default();
        let r = pb::OnboardingRecord {
            household_ref: "h1".into(),
            province_code: "01".into(),
            registered_on: "2021-08-01".into(),
            status: HouseholdStatus::Active as i32,
            ..Default::default()
        };
        let plain = validate_onboarding(std::slice::from_ref(&r), &limits).records[0].clone();
        assert_eq!(
            (plain.listed_products, plain.has_digital_address),
            (None, None)
        );
        let figures = plain.figures();
        assert_eq!(
            (figures.listed_products, figures.has_digital_address),
            (None, None)
        );
        let mut full = r.clone();
        full.listed_products = Some(100_000);
        full.has_digital_address = Some(false);
        let held = validate_onboarding(&[full.clone()], &limits).records[0].clone();
        assert_eq!(held.listed_products, Some(100_000));
        assert_eq!(held.has_digital_address, Some(false));
        assert_eq!(held.figures().listed_products, Some(100_000));
        assert_eq!(held.figures().has_digital_address, Some(false));
        assert_ne!(
            held, plain,
            "a reported value is a correction of an absent one"
        );
        full.listed_products = Some(100_001);
        let v = validate_onboarding(&[full], &limits);
        assert!(v.records.is_empty());
        assert_eq!(v.rejections[0].field, "listed_products");
        assert_eq!(v.rejections[0].record_id, "h1");
        assert!(
            v.rejections[0].reason.contains("100000"),
            "{}",
            v.rejections[0].reason
        );
    }

    #[test]
    fn records_without_the_new_fields_read_back_as_before() {
        // What the store's held-record query returns for rows stored before migration 0002
        // (the columns NULL) and, on SQLite, the flag as 0/1.
        let old: Household = serde_json::from_str(
            r#"{"household_ref":"h","province_code":"01","commune_code":"","registered_on":"2021-08-01","status":1,"categories":"","listed_products":null,"has_digital_address":null}"#,
        )
        .unwrap();
        assert_eq!((old.listed_products, old.has_digital_address), (None, None));
        let sqlite: Household = serde_json::from_str(
            r#"{"household_ref":"h","province_code":"01","commune_code":"","registered_on":"2021-08-01","status":1,"categories":"","listed_products":3,"has_digital_address":1}"#,
        )
        .unwrap();
        assert_eq!(sqlite.has_digital_address, Some(true));
        let line: SaleLine = serde_json::from_str(
            r#"{"record_id":"a","sale_date":"2022-01-15","province_code":"79","commune_code":"","category":"fruit","quantity_grams":1,"value_vnd":1,"orders":1,"household_ref":null}"#,
        )
        .unwrap();
        assert_eq!(
            line,
            validate_sales(
                &[{
                    let mut r = sale("a");
                    r.quantity_grams = 1;
                    r.value_vnd = 1;
                    r
                }],
                &Limits::default()
            )
            .records[0]
        );
    }

    #[test]
    fn duplicate_key_in_one_batch_is_rejected() {
        let v = validate_sales(&[sale("a"), sale("a")], &Limits::default());
        assert_eq!(v.records.len(), 1);
        assert_eq!(v.rejections[0].index, 1);
        assert!(v.rejections[0].reason.contains("index 0"));
    }

    #[test]
    fn classify_counts_new_unchanged_and_corrected() {
        let lines = validate_sales(&[sale("a"), sale("b"), sale("c")], &Limits::default()).records;
        let mut held = HashMap::new();
        held.insert("a".to_string(), lines[0].clone());
        let mut changed = lines[1].clone();
        changed.quantity_grams = 7;
        held.insert("b".to_string(), changed);
        let (changes, counts) = classify(lines, &held);
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn envelope_limits_name_the_limit() {
        let limits = Limits::default();
        assert!(check_envelope("b", 10_001, 10, &limits)
            .unwrap_err()
            .message
            .contains("10000"));
        assert!(check_envelope("b", 1, 5 << 20, &limits)
            .unwrap_err()
            .message
            .contains("4194304"));
        assert!(check_envelope("", 1, 10, &limits).is_err());
        assert!(check_envelope("b", 10_000, 4 << 20, &limits).is_ok());
    }

    #[test]
    fn onboarding_status_and_categories_are_checked() {
        let r = pb::OnboardingRecord {
            household_ref: "h1".into(),
            province_code: "01".into(),
            commune_code: "00004".into(),
            registered_on: "2021-08-01".into(),
            status: 0,
            categories: vec!["fruit".into()],
            ..Default::default()
        };
        let v = validate_onboarding(std::slice::from_ref(&r), &Limits::default());
        assert_eq!(v.rejections[0].field, "status");
        let mut ok = r.clone();
        ok.status = HouseholdStatus::Active as i32;
        ok.categories = vec!["fruit".into(), "vegetables".into(), "fruit".into()];
        let v = validate_onboarding(&[ok.clone()], &Limits::default());
        assert_eq!(v.records[0].categories, "fruit;vegetables");
        ok.categories.push("nope".into());
        assert_eq!(
            validate_onboarding(&[ok], &Limits::default()).rejections[0].field,
            "categories"
        );
    }
}
