//! `PushOnboarding` as the marketplace's gRPC adapter sees it: decode the request, check the
//! envelope, validate the records, hash the content. Arbitrary bytes must never panic, and the
//! validator's outcome must account for every record.
#![no_main]

use std::collections::HashSet;

use agriportal_marketplace::domain::{
    check_envelope, content_hash, normalize_key, today_in_vietnam, validate_onboarding,
};
use agriportal_marketplace::Limits;
use agriportal_platform::reference::{Reference, PLAN_START};
use agriportal_proto::marketplace::v1::PushOnboardingRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PushOnboardingRequest::decode(data) else {
        return;
    };
    let limits = Limits::default();
    let envelope = check_envelope(
        &request.batch_id,
        request.records.len(),
        request.encoded_len(),
        &limits,
    );
    if envelope.is_ok() {
        assert!(!request.batch_id.trim().is_empty());
        assert!(request.records.len() <= limits.max_records);
    }
    let validated = validate_onboarding(&request.records, &limits);
    let n = request.records.len();
    assert_eq!(validated.records.len() + validated.rejections.len(), n);

    let mut rejected = HashSet::new();
    let mut last = None;
    for r in &validated.rejections {
        let index = r.index as usize;
        assert!(index < n, "rejection index {index} out of {n}");
        assert!(last.is_none_or(|l| l < index), "rejections out of order");
        last = Some(index);
        rejected.insert(index);
        assert!(!r.field.is_empty() && !r.reason.is_empty());
        assert!(r.record_id.chars().count() <= 40);
    }

    let reference = Reference::get();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let today = today_in_vietnam();
    let mut keys = HashSet::new();
    let mut accepted = (0..n).filter(|i| !rejected.contains(i));
    for household in &validated.records {
        let index = accepted
            .next()
            .expect("more valid households than unrejected records");
        let record = &request.records[index];
        // Keys are kept trimmed and in NFC.
        assert_eq!(
            household.household_ref,
            normalize_key(&record.household_ref)
        );
        assert!(
            keys.insert(household.household_ref.as_str()),
            "duplicate key accepted"
        );
        let province = reference
            .province(&household.province_code)
            .expect("a valid household has a 2025 province code");
        assert!(
            (1..=3).contains(&household.status),
            "status {}",
            household.status
        );
        if !household.commune_code.is_empty() {
            let commune = reference
                .commune(&household.commune_code)
                .expect("known commune");
            assert_eq!(commune.province_code, province.code);
        }
        let day = time::Date::parse(&household.registered_on, format).expect("a date");
        assert!(day >= PLAN_START && day <= today + time::Duration::days(1));
        // Categories: known, sorted, unique, and exactly the record's set.
        let categories: Vec<&str> = if household.categories.is_empty() {
            Vec::new()
        } else {
            household.categories.split(';').collect()
        };
        assert!(
            categories.windows(2).all(|w| w[0] < w[1]),
            "categories not sorted/unique"
        );
        assert!(categories.iter().all(|c| reference.category(c).is_some()));
        let given: HashSet<&str> = record.categories.iter().map(String::as_str).collect();
        assert_eq!(given, categories.iter().copied().collect::<HashSet<_>>());
        assert_eq!(household.figures().status, household.status);
    }
    assert!(
        accepted.next().is_none(),
        "a record neither valid nor rejected"
    );

    let hash = content_hash("onboarding", &request);
    assert_eq!(hash.len(), 64);
    let again =
        PushOnboardingRequest::decode(request.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(again, request);
    assert_eq!(content_hash("onboarding", &again), hash);
});
