//! The gateway's query parsers: `GET /api/v1/timeseries?…` (the raw query string through
//! `parse_series_query` and `SeriesParams::check`), the same parameters as the gRPC
//! `GetTimeSeries` request carries them, and the province code of `/api/v1/provinces/{code}`.
//! Errors are fine, panics are not; a checked query must be bounded and bucket into a
//! non-empty, zero-filled series.
#![no_main]

use agriportal_gateway::config::MAX_SERIES_DAYS;
use agriportal_gateway::domain::{bucket, SeriesParams};
use agriportal_gateway::http::parse_series_query;
use agriportal_platform::reference::{ProvinceMatch, Reference};
use agriportal_proto::gateway::v1::GetTimeSeriesRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn check(params: &SeriesParams) {
    let Ok(query) = params.check() else {
        return;
    };
    assert!(query.from <= query.to, "from after to");
    let years =
        agriportal_gateway::domain::SERIES_YEARS.0..=agriportal_gateway::domain::SERIES_YEARS.1;
    assert!(years.contains(&query.from.year()) && years.contains(&query.to.year()));
    assert!(
        (query.to - query.from).whole_days() <= MAX_SERIES_DAYS,
        "span too long"
    );
    if let Some(code) = &query.province {
        assert!(
            Reference::get().province(code).is_some(),
            "unknown province {code}"
        );
    }
    let empty = bucket(&query, &[]);
    assert!(!empty.is_empty(), "empty series");
    assert!(empty.iter().all(|p| p.value == 0));
    // Periods are dates in increasing order (compared as dates, not as strings), the first
    // one holding `from`.
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let starts: Vec<time::Date> = empty
        .iter()
        .map(|p| time::Date::parse(&p.period_start, format).expect("period_start is a date"))
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "periods out of order"
    );
    assert!(starts[0] <= query.from && *starts.last().unwrap() <= query.to);
    // Values on the first and last day are kept, whatever the granularity.
    let points = bucket(&query, &[(query.from, 2), (query.to, 3)]);
    assert_eq!(points.len(), empty.len());
    assert_eq!(points.iter().map(|p| p.value).sum::<i64>(), 5);
}

fn resolve(code: &str) {
    let reference = Reference::get();
    match reference.resolve_province(code) {
        Some(ProvinceMatch::Current(p)) => assert_eq!(p.code, code),
        Some(ProvinceMatch::Merged(p)) => {
            assert_ne!(p.code, code);
            assert!(matches!(
                reference.resolve_province(&p.code),
                Some(ProvinceMatch::Current(_))
            ));
        }
        None => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // HTTP: a query string may hold any bytes; axum hands over `&str`, so try the bytes as they
    // are when they are UTF-8, and lossily otherwise.
    let text = String::from_utf8_lossy(data);
    if let Ok(params) = parse_series_query(Some(&text)) {
        if let Some(code) = &params.province {
            resolve(code);
        }
        check(&params);
    }
    // Path segment of /api/v1/provinces/{code}.
    resolve(&text);
    // gRPC: the same parameters, every one present (possibly empty).
    if let Ok(r) = GetTimeSeriesRequest::decode(data) {
        check(&SeriesParams {
            metric: Some(r.metric),
            granularity: Some(r.granularity),
            from: Some(r.from),
            to: Some(r.to),
            province: Some(r.province),
            partner: Some(r.partner),
        });
    }
});
