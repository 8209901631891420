//! Writes the committed seed corpus, `fuzz/corpus/<target>/seed-*`: a handful of valid
//! requests, events, queries and tokens, plus a few edge cases. Run it again after a proto or
//! rule change: `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`.

use std::path::{Path, PathBuf};

use agriportal_proto::gateway::v1::GetTimeSeriesRequest;
use agriportal_proto::marketplace::v1 as pb;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use prost::Message;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn sale(id: &str, date: &str, province: &str, commune: &str, category: &str) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: date.into(),
        province_code: province.into(),
        commune_code: commune.into(),
        category: category.into(),
        quantity_grams: 250_000,
        value_vnd: 7_500_000,
        orders: 12,
        household_ref: "H-1".into(),
    }
}

fn household(
    r: &str,
    province: &str,
    commune: &str,
    status: i32,
    cats: &[&str],
) -> pb::OnboardingRecord {
    pb::OnboardingRecord {
        household_ref: r.into(),
        province_code: province.into(),
        commune_code: commune.into(),
        registered_on: "2024-05-01".into(),
        status,
        categories: cats.iter().map(|c| c.to_string()).collect(),
        listed_products: Some(12),
        has_digital_address: Some(true),
    }
}

fn figures(date: &str, province: &str, grams: i64) -> pb::SalesFigures {
    pb::SalesFigures {
        sale_date: date.into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: grams * 30,
        orders: 3,
        household_ref: "H-1".into(),
    }
}

/// An events-target input: selector byte, traceparent length, traceparent, payload.
fn event_input(selector: u8, traceparent: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![
        selector,
        u8::try_from(traceparent.len()).expect("short traceparent"),
    ];
    out.extend_from_slice(traceparent.as_bytes());
    out.extend_from_slice(payload);
    out
}

fn main() {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));

    // push_sales
    let valid = pb::PushSalesRequest {
        batch_id: "2024-05-01-001".into(),
        records: vec![
            sale("PM-889", "2024-05-01", "79", "", "fruit"),
            sale("PM-890", "2022-01-15", "74", "", "vegetables"), // pre-2025 code, mapped to 79
            sale("PM-891", "2021-07-21", "01", "00004", "fruit"), // first day, commune in Hà Nội
        ],
    };
    write(&dir, "push_sales", "valid", &valid.encode_to_vec());
    let mut invalid = valid.clone();
    invalid.records = vec![
        sale("", "2024-05-01", "79", "", "fruit"),
        sale("a", "15/01/2022", "79", "", "fruit"),
        sale("b", "2021-07-20", "79", "", "fruit"),
        sale("c", "2024-05-01", "99", "", "fruit"),
        sale("d", "2024-05-01", "79", "00004", "fruit"),
        sale("e", "2024-05-01", "79", "", "gold"),
        sale("PM-889", "2024-05-01", "79", "", "fruit"),
        sale("PM-889", "2024-05-01", "79", "", "fruit"),
    ];
    invalid.records[1].quantity_grams = -1;
    invalid.records[2].value_vnd = i64::MAX;
    invalid.records[3].orders = u32::MAX;
    write(&dir, "push_sales", "rejections", &invalid.encode_to_vec());
    let mut extreme = valid.clone();
    extreme.batch_id = "\u{7}".into();
    extreme.records[0].quantity_grams = 1_000_000_000;
    extreme.records[0].value_vnd = 100_000_000_000;
    extreme.records[1].quantity_grams = i64::MIN;
    extreme.records[2].record_id = "ộ".repeat(129);
    write(&dir, "push_sales", "extremes", &extreme.encode_to_vec());
    write(&dir, "push_sales", "empty", &[]);

    // push_onboarding
    let valid = pb::PushOnboardingRequest {
        batch_id: "hh-2024-05-01".into(),
        records: vec![
            household("H-1", "01", "00004", 1, &["fruit", "vegetables", "fruit"]),
            household("H-2", "74", "", 2, &[]),
            household("H-3", "79", "", 3, &["vegetables"]),
        ],
    };
    write(&dir, "push_onboarding", "valid", &valid.encode_to_vec());
    let mut invalid = valid.clone();
    invalid.batch_id = " ".into();
    invalid.records = vec![
        household("H-1", "01", "00004", 0, &["fruit"]),
        household("H-2", "01", "", 7, &["fruit"]),
        household("H-3", "01", "", 1, &["nope"]),
        household("H-4", "01", "99999", 1, &[]),
        household("H-1", "01", "", 1, &[]),
        household("H-1", "01", "", 1, &[]),
        household("\n", "01", "", 1, &[]),
    ];
    invalid.records[1].registered_on = "2999-01-01".into();
    write(
        &dir,
        "push_onboarding",
        "rejections",
        &invalid.encode_to_vec(),
    );
    write(&dir, "push_onboarding", "empty", &[]);

    // batch_decode: the same batches, and the shapes its scan must count right (records with
    // categories, unknown fields of every wire type and a group, empty records past a limit).
    write(&dir, "batch_decode", "onboarding", &valid.encode_to_vec());
    let mut odd = vec![0x0a, 0x01, b'b'];
    odd.extend_from_slice(&[0x48, 0x05, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5d, 1, 2, 3, 4]);
    odd.extend_from_slice(&[0x63, 0x68, 0x05, 0x12, 0x00, 0x64]);
    odd.extend_from_slice(&[0x12, 0x04, 0x32, 0x00, 0x32, 0x00]);
    write(&dir, "batch_decode", "odd", &odd);
    let mut empties = vec![0x0a, 0x01, b'e'];
    for _ in 0..5 {
        empties.extend_from_slice(&[0x12, 0x00]);
    }
    write(&dir, "batch_decode", "empties", &empties);

    // timeseries_query: HTTP query strings, province codes and gRPC requests.
    for (name, q) in [
        ("day", "metric=sales_grams&granularity=day&from=2024-01-01&to=2024-01-31"),
        ("week", "metric=orders&granularity=week&from=2021-11-15&to=2022-02-01&province=74&partner=voso"),
        ("month", "metric=households_onboarded&granularity=month&from=2015-01-01&to=2025-01-08&partner=postmart"),
        ("value", "metric=sales_value_vnd&from=2024-02-29&to=2024-02-29&province=79"),
        ("encoded", "metric=sales%5Fgrams&granularity=week&from=2024-01-01&to=2024%2D01%2D02&province=%37%39"),
        ("bad", "metric=x&granularity=year&from=2024-13-01&to=&unknown=1&&=&%zz"),
        ("edge-dates", "metric=orders&granularity=week&from=-9999-01-01&to=-9999-01-02"),
        ("edge-dates-max", "metric=orders&granularity=month&from=9999-12-01&to=9999-12-31"),
        ("province", "79"),
        ("province-old", "02"),
    ] {
        write(&dir, "timeseries_query", name, q.as_bytes());
    }
    let grpc = GetTimeSeriesRequest {
        metric: "orders".into(),
        granularity: "week".into(),
        from: "2022-01-01".into(),
        to: "2022-03-01".into(),
        province: "01".into(),
        partner: "voso".into(),
    };
    write(&dir, "timeseries_query", "grpc", &grpc.encode_to_vec());

    // events: the gateway consumer's input.
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let sales = pb::SalesRecorded {
        event_id: "0190f3a0-0000-7000-8000-000000000001".into(),
        partner: 2,
        batch_id: "2024-05-01-001".into(),
        recorded_at_ms: 1_714_521_600_000,
        changes: vec![
            pb::SalesChange {
                record_id: "PM-889".into(),
                previous: None,
                current: Some(figures("2024-05-01", "79", 250_000)),
            },
            pb::SalesChange {
                record_id: "PM-890".into(),
                previous: Some(figures("2024-05-01", "79", 100)),
                current: Some(figures("2024-05-02", "01", 130)),
            },
        ],
    };
    write(
        &dir,
        "events",
        "sales",
        &event_input(0, traceparent, &sales.encode_to_vec()),
    );
    let mut no_current = sales.clone();
    no_current.changes[1].current = None;
    no_current.partner = 1;
    write(
        &dir,
        "events",
        "sales-no-current",
        &event_input(0, "", &no_current.encode_to_vec()),
    );
    let households = pb::HouseholdsRecorded {
        event_id: "0190f3a0-0000-7000-8000-000000000002".into(),
        partner: 1,
        batch_id: "hh-2024-05-01".into(),
        recorded_at_ms: 1_714_521_600_000,
        changes: vec![
            pb::HouseholdChange {
                household_ref: "H-1".into(),
                previous: None,
                current: Some(pb::HouseholdFigures {
                    province_code: "01".into(),
                    commune_code: "00004".into(),
                    registered_on: "2024-05-01".into(),
                    status: 1,
                    listed_products: Some(4),
                    has_digital_address: Some(false),
                }),
            },
            pb::HouseholdChange {
                household_ref: "H-2".into(),
                previous: Some(pb::HouseholdFigures {
                    province_code: "79".into(),
                    commune_code: String::new(),
                    registered_on: "2024-05-01".into(),
                    status: 1,
                    listed_products: Some(4),
                    has_digital_address: Some(false),
                }),
                current: Some(pb::HouseholdFigures {
                    province_code: "79".into(),
                    commune_code: String::new(),
                    registered_on: "2024-05-01".into(),
                    status: 3,
                    listed_products: Some(9),
                    has_digital_address: Some(true),
                }),
            },
        ],
    };
    write(
        &dir,
        "events",
        "households",
        &event_input(1, traceparent, &households.encode_to_vec()),
    );
    let unknown_partner = pb::HouseholdsRecorded {
        partner: 9,
        ..households.clone()
    };
    write(
        &dir,
        "events",
        "households-unknown-partner",
        &event_input(1, "garbage", &unknown_partner.encode_to_vec()),
    );
    write(
        &dir,
        "events",
        "unknown-subject",
        &event_input(2, traceparent, &sales.encode_to_vec()),
    );
    // Structured mode (selector bit 2): the payload is built from these bytes.
    let structured: Vec<u8> = (0u8..64).map(|i| i % 5).collect();
    write(
        &dir,
        "events",
        "structured-sales",
        &event_input(4, "", &structured),
    );
    write(
        &dir,
        "events",
        "structured-households",
        &event_input(5, "", &structured),
    );

    // bearer_token: raw strings, and claims JSON (which the target also signs).
    // A well-formed token signed with another key (fixed claims, so the file never churns).
    let body = B64.encode(
        r#"{"id":"0123456789abcdef0123456789abcdef","role":"partner","partner":"postmart","aud":"portal","iat":1714521600,"exp":4102444800}"#,
    );
    let other = agriportal_platform::keys::Signer::from_seed("fuzz", &[8u8; 32]).expect("key");
    let signed = format!("ap2.fuzz.{body}");
    let token = format!("{signed}.{}", B64.encode(other.sign(signed.as_bytes())));
    write(&dir, "bearer_token", "foreign-token", token.as_bytes());
    write(&dir, "bearer_token", "bearer-malformed", b"Bearer ap2...");
    for (name, claims) in [
        (
            "claims-partner",
            r#"{"id":"a","role":"partner","partner":"voso","aud":"portal","iat":9999000000,"exp":9999999999}"#,
        ),
        (
            "claims-admin",
            r#"{"id":"b","role":"admin","aud":"portal","iat":9999900000,"exp":9999999999}"#,
        ),
        (
            "claims-province",
            r#"{"id":"c","role":"province","province":"79","aud":"portal","iat":9999000000,"exp":9999999999}"#,
        ),
        (
            "claims-expired",
            r#"{"id":"d","role":"admin","iat":0,"exp":-9223372036854775808}"#,
        ),
        (
            "claims-odd",
            r#"{"id":"e","role":"partner","partner":"shopee","iat":1e400,"exp":18446744073709551616}"#,
        ),
    ] {
        write(&dir, "bearer_token", name, claims.as_bytes());
    }

    // rollup_cells: first byte even → a request, odd → an answer.
    let with_mode = |mode: u8, bytes: Vec<u8>| {
        let mut out = vec![mode];
        out.extend(bytes);
        out
    };
    for (name, partner, kind, province) in [
        ("request-digests", 1, 1, ""),
        ("request-province", 2, 2, "79"),
        ("request-bad", 7, 9, "74"),
    ] {
        let request = pb::GetRollupCellsRequest {
            partner,
            kind,
            province_code: province.into(),
        };
        write(
            &dir,
            "rollup_cells",
            name,
            &with_mode(0, request.encode_to_vec()),
        );
    }
    let cell = |day: &str, province: &str, grams: i64| pb::RollupCell {
        day: day.into(),
        province_code: province.into(),
        category: "fruit".into(),
        status: 0,
        quantity_grams: grams,
        value_vnd: grams.saturating_mul(30),
        orders: 2,
        count: 1,
    };
    let answer = pb::GetRollupCellsResponse {
        unsent_events: 0,
        provinces: Vec::new(),
        cells: vec![
            cell("2024-05-01", "79", 250_000),
            cell("2024-05-02", "79", -5),
            cell("2024-05-01", "01", i64::MAX),
            cell("2024-05-03", "01", 0),
        ],
    };
    write(
        &dir,
        "rollup_cells",
        "answer",
        &with_mode(1, answer.encode_to_vec()),
    );

    // indicators_csv: byte 0 other than 0xFF → the file as is; 0xFF → a repeat count (2 bytes), a head,
    // 0xFF, and a body repeated after it (short lines: a file under 2 MiB stops at 32 KiB).
    let as_is = |file: &[u8]| [&[0u8][..], file].concat();
    let repeated = |times: u16, head: &[u8], body: &[u8]| {
        [&[0xFFu8][..], &times.to_be_bytes(), head, &[0xFF], body].concat()
    };
    let vietnamese = "\u{FEFF}Mã tỉnh,Kỳ báo cáo,Mã chỉ tiêu,Giá trị,Ghi chú\r\n\
                      79,202611,TRAINED_HH,1250,\"Hộ đã tập huấn, quý 4\"\r\n\
                      79,202611,OCOP_LISTED_PCT,'-5,\"=SUM(A1)\"\r\n";
    write(
        &dir,
        "indicators_csv",
        "utf8-bom",
        &as_is(vietnamese.as_bytes()),
    );
    let english = "province_code,period,indicator_code,value\n01,202611,trained_hh,7\n,,,,\n";
    write(
        &dir,
        "indicators_csv",
        "english",
        &as_is(english.as_bytes()),
    );
    // "Ghi chú" and "Hộ" as Windows-1258 writes them: base letters and combining tone marks
    // (0xFA is ú; 0xF4 0xF2 is ô with a dot below).
    let mut cp1258 = b"province_code,period,indicator_code,value,Ghi ch\xFA\n".to_vec();
    cp1258.extend_from_slice(b"79,202611,TRAINED_HH,3,H\xF4\xF2\n");
    write(&dir, "indicators_csv", "windows-1258", &as_is(&cp1258));
    let errors = "province_code,period,indicator_code,value,comment\n79,202611\n\"unclosed,1\n";
    write(&dir, "indicators_csv", "errors", &as_is(errors.as_bytes()));
    write(&dir, "indicators_csv", "empty", &as_is(b""));
    let header = b"province_code,period,indicator_code,value\n";
    write(
        &dir,
        "indicators_csv",
        "too-many-lines",
        &repeated(10_001, header, b"1\n"),
    );
    write(
        &dir,
        "indicators_csv",
        "too-large",
        &repeated(2_100, header, &[b'7'; 1_024]),
    );
}
