//! The push rpcs' bounded decoding (`agriportal_marketplace::codec`): a scan of the wire format
//! that counts records (and an onboarding record's categories) before anything is decoded.
//! Arbitrary bytes must never panic; what the scan counts must be what prost decodes, so the
//! limits it enforces are the real ones; and the bounded decoder must accept exactly what
//! prost accepts within the limits, and refuse everything beyond them.
#![no_main]

use agriportal_marketplace::codec::{check, decode_bounded, scan, Batch};
use agriportal_marketplace::Limits;
use agriportal_proto::marketplace::v1::{PushOnboardingRequest, PushSalesRequest};
use libfuzzer_sys::fuzz_target;

/// Limits small enough for the fuzzer to reach: a few records, a few entries.
fn small() -> Limits {
    Limits {
        max_records: 4,
        max_bytes: 512,
        ..Limits::default()
    }
}

fn one<B: Batch + PartialEq + std::fmt::Debug>(
    data: &[u8],
    records: impl Fn(&B) -> usize,
    entries: impl Fn(&B) -> usize,
) {
    let counts = scan(data, B::REPEATED_IN_RECORD);
    let prost = B::decode(data);
    if let Ok(decoded) = &prost {
        // What prost decodes, the scan counted: the limits bound the real allocation.
        assert!(
            counts.complete,
            "prost decoded what the scan calls malformed"
        );
        assert_eq!(counts.records, records(decoded));
        assert_eq!(counts.entries, entries(decoded));
    }
    for limits in [Limits::default(), small()] {
        let within = check(data.len(), &counts, &limits).is_ok();
        match decode_bounded::<B>(data, &limits) {
            Ok(decoded) => {
                assert!(within);
                assert!(records(&decoded) <= limits.max_records);
                assert!(data.len() <= limits.max_bytes);
                assert_eq!(Some(&decoded), prost.as_ref().ok());
            }
            Err(status) if within => {
                // Within the limits, only prost's own refusal, as tonic's decoder words it.
                assert!(prost.is_err(), "refused within the limits: {status:?}");
                assert_eq!(status.code(), tonic::Code::Internal);
                assert!(status
                    .message()
                    .starts_with("failed to decode Protobuf message"));
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    one::<PushSalesRequest>(data, |r| r.records.len(), |_| 0);
    one::<PushOnboardingRequest>(
        data,
        |r| r.records.len(),
        |r| r.records.iter().map(|h| h.categories.len()).sum(),
    );
});
