//! `PushSales` as the marketplace's gRPC adapter sees it: decode the request, check the
//! envelope, validate the records, hash the content. Arbitrary bytes must never panic, and the
//! validator's outcome must account for every record.
#![no_main]

use std::collections::HashSet;

use agriportal_marketplace::domain::{
    check_envelope, content_hash, normalize_key, today_in_vietnam, validate_sales,
};
use agriportal_marketplace::Limits;
use agriportal_platform::reference::{Reference, PLAN_START};
use agriportal_proto::marketplace::v1::PushSalesRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = PushSalesRequest::decode(data) else {
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
    // The adapter validates only after the envelope passed; the validator must cope with any
    // records regardless, so it is fuzzed either way.
    let validated = validate_sales(&request.records, &limits);
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
    for line in &validated.records {
        // Valid lines come out in batch order, each from the record at its index.
        let index = accepted
            .next()
            .expect("more valid lines than unrejected records");
        let record = &request.records[index];
        // Keys are kept trimmed and in NFC.
        assert_eq!(line.record_id, normalize_key(&record.record_id));
        assert!(
            keys.insert(line.record_id.as_str()),
            "duplicate key accepted"
        );
        let province = reference
            .province(&line.province_code)
            .expect("a valid line has a 2025 province code");
        assert!(line.orders >= 1, "orders below 1");
        assert!(line.orders <= limits.max_orders, "orders above the limit");
        assert_eq!(line.orders, i64::from(record.orders.max(1)));
        assert!((0..=limits.max_grams).contains(&line.quantity_grams));
        assert!((0..=limits.max_value_vnd).contains(&line.value_vnd));
        assert!(reference.category(&line.category).is_some());
        if !line.commune_code.is_empty() {
            let commune = reference
                .commune(&line.commune_code)
                .expect("known commune");
            assert_eq!(commune.province_code, province.code);
        }
        let day = time::Date::parse(&line.sale_date, format).expect("a valid line has a date");
        assert!(day >= PLAN_START && day <= today + time::Duration::days(1));
        assert!(line.figures().orders >= 1);
    }
    assert!(
        accepted.next().is_none(),
        "a record neither valid nor rejected"
    );

    let hash = content_hash("sales", &request);
    assert_eq!(hash.len(), 64);
    // The hash is over the re-encoded request, so a re-encoding must hash alike.
    let again = PushSalesRequest::decode(request.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(again, request);
    assert_eq!(content_hash("sales", &again), hash);
});
