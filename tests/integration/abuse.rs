//! Bad input and overload: a corpus of malformed, oversized and absurd requests over gRPC (raw
//! bytes, below the generated clients) and HTTP (raw query strings and paths), each answered
//! with the exact code and a message naming the problem, nothing stored from any of them, and
//! the server still answering afterwards; then the per-partner rate limit and the concurrency
//! limit, asserted functionally (who is refused, with which hint), never by timing.

use std::pin::Pin;
use std::time::Duration;

use agriportal_platform::auth::Role;
use agriportal_proto::gateway::v1 as gpb;
use agriportal_proto::marketplace::v1 as pb;
use futures::future::poll_fn;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::{Body as _, Service as _};
use tonic::transport::Channel;
use tonic::{Code, Status};

use agriportal_marketplace::Marketplace;

use agriportal::client::PartnerClient;

use crate::support::{spawn_app, spawn_app_with, Mode, TestApp};

pub(crate) const PUSH_SALES: &str = "/agriportal.marketplace.v1.MarketplaceIngest/PushSales";
pub(crate) const PUSH_ONBOARDING: &str =
    "/agriportal.marketplace.v1.MarketplaceIngest/PushOnboarding";
pub(crate) const GET_BATCH: &str = "/agriportal.marketplace.v1.MarketplaceIngest/GetBatch";
const GET_PROVINCE: &str = "/agriportal.gateway.v1.Dashboard/GetProvince";
const GET_TIME_SERIES: &str = "/agriportal.gateway.v1.Dashboard/GetTimeSeries";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Raw gRPC: arbitrary message bytes in a well-formed frame, and arbitrary frames.

/// A codec that sends and receives message bytes as they are, so a test can put anything in
/// a correctly framed gRPC message.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// A fresh connection to the app's gRPC server.
pub(crate) async fn channel(app: &TestApp) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .expect("uri")
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .expect("connect")
}

/// One unary call to `path` whose request message is `message`, byte for byte; the reply's
/// message bytes or its status.
pub(crate) async fn raw_unary(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    message: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(app).await)
        .max_encoding_message_size(64 * MIB)
        .max_decoding_message_size(64 * MIB);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii token"),
        );
    }
    let path = http::uri::PathAndQuery::try_from(path).expect("path");
    grpc.unary(request, path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A gRPC request to `path` whose whole HTTP/2 body is `body` (frame headers included, so a
/// test can send truncated or malformed frames; ASCII only, which the frames here are). Returns
/// the status, from the headers (trailers-only answer) or the trailers.
async fn raw_frames(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &str) -> Status {
    let mut channel = channel(app).await;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{path}", app.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(body.to_string()))
        .expect("request");
    poll_fn(|cx| channel.poll_ready(cx)).await.expect("ready");
    let response = channel.call(request).await.expect("response");
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers) {
        return status;
    }
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(trailers) = frame.expect("frame").into_trailers() {
            return Status::from_header_map(&trailers).expect("grpc-status in trailers");
        }
    }
    panic!("{path}: no grpc-status in the answer");
}

// ---------------------------------------------------------------------------------------------
// Protobuf by hand, so that the corpus can hold what no generated encoder would write.

fn varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn tag(field: u64, wire: u64, out: &mut Vec<u8>) {
    varint((field << 3) | wire, out);
}

fn bytes_field(field: u64, data: &[u8], out: &mut Vec<u8>) {
    tag(field, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn int_field(field: u64, value: u64, out: &mut Vec<u8>) {
    tag(field, 0, out);
    varint(value, out);
}

/// A `SalesRecord`, encoded; `category` may be any bytes.
fn sales_record(id: &str, category: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    bytes_field(1, id.as_bytes(), &mut r);
    bytes_field(2, b"2022-03-10", &mut r);
    bytes_field(3, b"01", &mut r);
    bytes_field(5, category, &mut r);
    int_field(6, 10, &mut r);
    int_field(7, 100, &mut r);
    int_field(8, 1, &mut r);
    r
}

/// A `PushSalesRequest`, encoded, from encoded records.
fn push_sales(batch_id: &[u8], records: &[Vec<u8>]) -> Vec<u8> {
    let mut m = Vec::new();
    bytes_field(1, batch_id, &mut m);
    for r in records {
        bytes_field(2, r, &mut m);
    }
    m
}

fn line(id: &str, province: &str, grams: i64) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2022-03-10".into(),
        province_code: province.into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: grams * 10,
        orders: 1,
        household_ref: String::new(),
    }
}

fn sales(batch: &str, records: Vec<pb::SalesRecord>) -> pb::PushSalesRequest {
    pb::PushSalesRequest {
        batch_id: batch.into(),
        records,
    }
}

/// What a refused case must answer: the code, and words its message must contain.
struct Expect<'a> {
    code: Code,
    words: &'a [&'a str],
}

const fn refused<'a>(code: Code, words: &'a [&'a str]) -> Expect<'a> {
    Expect { code, words }
}

fn check(case: &str, status: &Status, expect: &Expect<'_>) {
    assert_eq!(
        status.code(),
        expect.code,
        "{case}: {:?} {}",
        status.code(),
        status.message()
    );
    for word in expect.words {
        assert!(
            status.message().contains(word),
            "{case}: message {:?} does not name {word:?}",
            status.message()
        );
    }
    // Messages are for people: bounded, whatever the size of the input that caused them.
    assert!(
        status.message().len() < 1_000,
        "{case}: message of {} bytes",
        status.message().len()
    );
}

/// The marketplace's stored batches (partner, batch id) and record counts, read from its own
/// store: the ground truth of "nothing was stored".
pub(crate) async fn stored(app: &TestApp) -> (Vec<(String, String)>, i64, i64) {
    let db = app.ctx.database("marketplace").await.expect("db");
    agriportal_platform::with_db!(&db.pool, |pool| {
        let batches = sqlx::query_as::<_, (String, String)>(
            "SELECT partner, batch_id FROM batches ORDER BY partner, batch_id",
        )
        .fetch_all(pool)
        .await
        .expect("batches");
        let sales: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sales_records")
            .fetch_one(pool)
            .await
            .expect("sales");
        let households: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM households")
            .fetch_one(pool)
            .await
            .expect("households");
        (batches, sales, households)
    })
}

// ---------------------------------------------------------------------------------------------
// The gRPC corpus.

async fn bad_grpc_input(mode: Mode) {
    let Some(app) = spawn_app(mode, "bad_grpc_input").await else {
        return;
    };
    let token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let mut postmart = app.partner("postmart").await;
    // One good batch first, so that "nothing changed" has something to keep.
    postmart
        .push_sales(sales("good", vec![line("g1", "01", 10)]))
        .await
        .expect("good batch");

    const DECODE: &[&str] = &["PushSales", "not a valid protobuf message"];
    let valid = push_sales(
        b"trunc",
        &[sales_record("t1", b"fruit"), sales_record("t2", b"fruit")],
    );
    let mut deep = Vec::new();
    for _ in 0..1_000 {
        tag(15, 3, &mut deep); // start group, unknown field 15
    }
    let mut nested_bad_utf8 = Vec::new();
    bytes_field(1, b"nested", &mut nested_bad_utf8);
    let mut record = Vec::new();
    bytes_field(1, &[b'r', 0xc3, 0x28], &mut record);
    bytes_field(2, &record, &mut nested_bad_utf8);
    let mut grams_as_string = Vec::new();
    bytes_field(6, b"ten", &mut grams_as_string);
    let mut unknown_only = Vec::new();
    int_field(15, 7, &mut unknown_only);
    bytes_field(16, &[0xff; 64], &mut unknown_only);

    let cases: Vec<(&str, Vec<u8>, Expect<'static>)> = vec![
        (
            "truncated message",
            valid[..valid.len() - 5].to_vec(),
            refused(Code::InvalidArgument, DECODE),
        ),
        (
            "batch_id sent as a varint (wrong type)",
            vec![0x08, 0x01],
            refused(Code::InvalidArgument, &["PushSales", "invalid wire type"]),
        ),
        (
            "records sent as fixed64 (wrong type)",
            {
                let mut m = vec![0x11];
                m.extend_from_slice(&[0u8; 8]);
                m
            },
            refused(Code::InvalidArgument, &["PushSales", "invalid wire type"]),
        ),
        (
            "quantity_grams sent as a string (wrong type)",
            push_sales(b"wrong-type", &[grams_as_string]),
            refused(Code::InvalidArgument, &["PushSales", "invalid wire type"]),
        ),
        (
            "batch_id not UTF-8",
            vec![0x0a, 0x02, 0xff, 0xfe],
            refused(Code::InvalidArgument, &["PushSales", "UTF-8"]),
        ),
        (
            "record_id not UTF-8",
            nested_bad_utf8,
            refused(Code::InvalidArgument, &["PushSales", "UTF-8"]),
        ),
        (
            "a thousand nested groups",
            deep,
            refused(Code::InvalidArgument, &["PushSales", "recursion limit"]),
        ),
        (
            "length past the end",
            vec![0x0a, 0x7f, b'a'],
            refused(Code::InvalidArgument, DECODE),
        ),
        (
            "varint of eleven bytes",
            {
                let mut m = vec![0x78]; // field 15, varint
                m.extend_from_slice(&[0xff; 11]);
                m
            },
            refused(Code::InvalidArgument, &["PushSales", "varint"]),
        ),
        (
            "field number 0",
            vec![0x00, 0x01],
            refused(Code::InvalidArgument, &["PushSales", "tag"]),
        ),
        (
            "wire type 7",
            vec![0x0f],
            refused(Code::InvalidArgument, &["PushSales", "wire type"]),
        ),
        (
            "end of a group never started",
            vec![0x7c],
            refused(Code::InvalidArgument, DECODE),
        ),
        (
            "only unknown fields (no batch id)",
            unknown_only,
            refused(Code::InvalidArgument, &["batch_id", "empty"]),
        ),
        (
            "control characters in batch_id",
            push_sales(b"ctrl\x00\x07", &[sales_record("c1", b"fruit")]),
            refused(Code::InvalidArgument, &["batch_id", "control characters"]),
        ),
        (
            "batch_id of 1 MiB",
            push_sales(&vec![b'b'; MIB], &[sales_record("l1", b"fruit")]),
            refused(Code::InvalidArgument, &["batch_id", "longer than 128"]),
        ),
        (
            "10,001 records",
            push_sales(
                b"too-many",
                &(0..10_001)
                    .map(|i| sales_record(&format!("m{i}"), b"fruit"))
                    .collect::<Vec<_>>(),
            ),
            refused(Code::ResourceExhausted, &["10001 records", "10000"]),
        ),
        (
            "5 MiB batch",
            push_sales(b"too-big", &[sales_record("b1", &vec![b'x'; 5 * MIB])]),
            refused(Code::ResourceExhausted, &["4194304"]),
        ),
        (
            "17 MiB message, over the server's decode limit",
            push_sales(b"huge", &[sales_record("h1", &vec![b'x'; 17 * MIB])]),
            refused(Code::ResourceExhausted, &["PushSales", "4194304"]),
        ),
    ];
    for (case, message, expect) in &cases {
        let status = raw_unary(&app, PUSH_SALES, Some(&token), message.clone())
            .await
            .expect_err(case);
        check(case, &status, expect);
    }

    // Random bytes, reproducibly: never accepted, never anything but INVALID_ARGUMENT.
    let mut rng = StdRng::seed_from_u64(1034);
    for round in 0..50 {
        let len = rng.random_range(1..4_096);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let status = raw_unary(&app, PUSH_SALES, Some(&token), bytes)
            .await
            .expect_err("random bytes are never a batch");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "random round {round}: {status:?}"
        );
    }

    // The other rpcs decode through the same layer.
    for (path, rpc) in [
        (PUSH_ONBOARDING, "PushOnboarding"),
        (GET_BATCH, "GetBatch"),
        (GET_PROVINCE, "GetProvince"),
        (GET_TIME_SERIES, "GetTimeSeries"),
        (HEALTH_CHECK, "Check"),
    ] {
        let status = raw_unary(&app, path, Some(&token), vec![0x0a, 0x02, 0xff, 0xfe])
            .await
            .expect_err(rpc);
        check(
            rpc,
            &status,
            &refused(
                Code::InvalidArgument,
                &[rpc, "not a valid protobuf message"],
            ),
        );
    }
    // Onboarding: a category that is not UTF-8, and a status of the wrong type.
    let mut household = Vec::new();
    bytes_field(1, b"h1", &mut household);
    bytes_field(6, &[0xe2, 0x82], &mut household);
    let mut onboarding = Vec::new();
    bytes_field(1, b"hb", &mut onboarding);
    bytes_field(2, &household, &mut onboarding);
    let status = raw_unary(&app, PUSH_ONBOARDING, Some(&token), onboarding)
        .await
        .expect_err("categories not UTF-8");
    check(
        "categories not UTF-8",
        &status,
        &refused(Code::InvalidArgument, &["PushOnboarding", "UTF-8"]),
    );
    let mut household = Vec::new();
    bytes_field(1, b"h2", &mut household);
    bytes_field(5, b"ACTIVE", &mut household);
    let mut onboarding = Vec::new();
    bytes_field(1, b"hb2", &mut onboarding);
    bytes_field(2, &household, &mut onboarding);
    let status = raw_unary(&app, PUSH_ONBOARDING, Some(&token), onboarding)
        .await
        .expect_err("status as a string");
    check(
        "status as a string",
        &status,
        &refused(Code::InvalidArgument, &["PushOnboarding", "wire type"]),
    );

    // Malformed gRPC frames, below the message.
    let auth = format!("Bearer {token}");
    let bearer = [("authorization", auth.as_str())];
    for (case, headers, body, expect) in [
        (
            "no message at all",
            &bearer[..],
            "",
            refused(Code::InvalidArgument, &["PushSales", "no message"]),
        ),
        (
            "frame cut short",
            &bearer[..],
            "\0\0\0\0\x64abc",
            refused(Code::InvalidArgument, &["PushSales", "truncated"]),
        ),
        (
            "compressed flag without an encoding",
            &bearer[..],
            "\x01\0\0\0\x03abc",
            refused(Code::InvalidArgument, &["PushSales", "compressed-flag"]),
        ),
        (
            "compression flag 2",
            &bearer[..],
            "\x02\0\0\0\x03abc",
            refused(Code::InvalidArgument, &["PushSales", "compression flag"]),
        ),
        (
            "frame announcing 2 GiB",
            &bearer[..],
            "\0\x7f\x7f\x7f\x7f",
            refused(Code::ResourceExhausted, &["PushSales", "4194304"]),
        ),
        (
            "frame announcing 16 MiB + 1",
            &bearer[..],
            "\0\x01\0\0\x01",
            refused(Code::ResourceExhausted, &["16777217", "4194304"]),
        ),
        (
            "frame announcing one byte over the batch limit",
            &bearer[..],
            "\0\0\x40\0\x01",
            refused(Code::ResourceExhausted, &["4194305", "4194304", "split"]),
        ),
        (
            "two messages in a unary call (the second is ignored; the first has no batch id)",
            &bearer[..],
            "\0\0\0\0\0\0\0\0\0\0",
            refused(Code::InvalidArgument, &["batch_id"]),
        ),
        // An encoding the server does not speak is UNIMPLEMENTED by the gRPC specification
        // (the client can retry without it); it still names the problem.
        (
            "unsupported grpc-encoding",
            &[("authorization", auth.as_str()), ("grpc-encoding", "br")][..],
            "\x01\0\0\0\x03abc",
            refused(Code::Unimplemented, &["br"]),
        ),
    ] {
        let status = raw_frames(&app, PUSH_SALES, headers, body).await;
        check(case, &status, &expect);
    }

    // Huge and absurd values inside records are rejected record by record, each naming its
    // field, in a bounded message; the batch is answered, and none of its records is kept.
    // Four strings of 900 KiB and one of 100 KB: large, yet together under the 4 MiB limit.
    let large = "x".repeat(900 * 1024);
    let mut strings = vec![line("s-id", "01", 1); 7];
    strings[0].record_id = "r".repeat(100_000);
    strings[1].category = large.clone();
    strings[2].province_code = large.clone();
    strings[3].sale_date = large.clone();
    strings[4].commune_code = large.clone();
    strings[5].record_id = "s-grams".into();
    strings[5].quantity_grams = i64::MIN;
    strings[6].record_id = "s-value".into();
    strings[6].value_vnd = i64::MAX;
    let result = postmart
        .push_sales(sales("strings", strings))
        .await
        .expect("a batch of bad records is answered")
        .into_inner();
    assert_eq!((result.accepted, result.rejected), (0, 7), "{result:?}");
    let fields: Vec<&str> = result.rejections.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "record_id",
            "category",
            "province_code",
            "sale_date",
            "commune_code",
            "quantity_grams",
            "value_vnd"
        ]
    );
    for rejection in &result.rejections {
        assert!(
            rejection.reason.len() < 300 && rejection.record_id.len() <= 100_000,
            "{}",
            rejection.reason
        );
    }
    // GetBatch with a batch id no push could have used says so instead of echoing it back.
    let err = postmart
        .get_batch(pb::GetBatchRequest {
            batch_id: "g".repeat(MIB),
        })
        .await
        .expect_err("huge id");
    check(
        "GetBatch with a 1 MiB id",
        &err,
        &refused(Code::InvalidArgument, &["batch_id", "longer than 128"]),
    );

    // Dashboards over gRPC: absurd ranges and huge values are INVALID_ARGUMENT or NOT_FOUND.
    let huge = "x".repeat(MIB);
    let mut dashboard = gpb::dashboard_client::DashboardClient::new(channel(&app).await)
        .max_encoding_message_size(64 * MIB);
    let series = |metric: &str, from: &str, to: &str| gpb::GetTimeSeriesRequest {
        metric: metric.into(),
        granularity: "day".into(),
        from: from.into(),
        to: to.into(),
        ..Default::default()
    };
    for (case, request, expect) in [
        (
            "ten thousand years",
            series("orders", "0001-01-01", "9999-12-31"),
            refused(Code::InvalidArgument, &["from", "2000", "2100"]),
        ),
        (
            "a century",
            series("orders", "2000-01-01", "2100-01-01"),
            refused(Code::InvalidArgument, &["to", "3660"]),
        ),
        (
            "inverted range",
            series("orders", "2024-01-01", "2023-01-01"),
            refused(Code::InvalidArgument, &["before"]),
        ),
        (
            "year 10000",
            series("orders", "+10000-01-01", "2022-01-01"),
            refused(Code::InvalidArgument, &["from", "YYYY-MM-DD"]),
        ),
        (
            "1 MiB metric",
            series(&huge, "2022-01-01", "2022-01-02"),
            refused(Code::InvalidArgument, &["metric"]),
        ),
        (
            "1 MiB date",
            series("orders", &huge, "2022-01-02"),
            refused(Code::InvalidArgument, &["from"]),
        ),
    ] {
        let status = dashboard.get_time_series(request).await.expect_err(case);
        check(case, &status, &expect);
    }
    let status = dashboard
        .get_province(gpb::GetProvinceRequest { code: huge.clone() })
        .await
        .expect_err("huge province code");
    check(
        "1 MiB province code",
        &status,
        &refused(Code::NotFound, &["province"]),
    );

    // Nothing was stored from any refused request: the good batch and the answered batch of
    // rejected records are the only batches, with the good line the only record, and the
    // totals show that line alone.
    for id in [
        "trunc",
        "wrong-type",
        "nested",
        "too-many",
        "too-big",
        "huge",
        "hb",
        "hb2",
    ] {
        let err = postmart
            .get_batch(pb::GetBatchRequest {
                batch_id: id.into(),
            })
            .await
            .expect_err(id);
        assert_eq!(err.code(), Code::NotFound, "{id}: {err:?}");
    }
    let (batches, sales_records, households) = stored(&app).await;
    assert_eq!(
        batches,
        [
            ("postmart".to_string(), "good".to_string()),
            ("postmart".to_string(), "strings".to_string())
        ]
    );
    assert_eq!((sales_records, households), (1, 0));
    // Still answering, and still counting right: a marker after everything shows up exactly.
    postmart
        .push_sales(sales("marker", vec![line("m1", "79", 5)]))
        .await
        .expect("the server still takes good batches");
    app.wait_national(|n| {
        n["sales"]["grams"] == 15 && n["sales"]["orders"] == 2 && n["households"]["onboarded"] == 0
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bad_grpc_input_is_refused_by_name_and_stores_nothing_embedded() {
    bad_grpc_input(Mode::Embedded).await;
}

#[tokio::test]
async fn bad_grpc_input_is_refused_by_name_and_stores_nothing_on_postgres_and_jetstream() {
    bad_grpc_input(Mode::Distributed).await;
}

// ---------------------------------------------------------------------------------------------
// The HTTP corpus.

/// Sends `request` as raw bytes over HTTP/1.1 and returns the status code: for requests no
/// HTTP client library would send (raw non-ASCII bytes, a 1 MiB request line).
async fn raw_http(app: &TestApp, request: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(&app.http)
        .await
        .expect("connect");
    // The server may answer and close before reading everything; that is its right.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {line:?}"))
}

#[tokio::test]
async fn bad_http_input_gets_json_errors_naming_the_problem() {
    let Some(app) = spawn_app(Mode::Embedded, "bad_http_input").await else {
        return;
    };
    let (_, before) = app.get("/api/v1/national").await;
    let ok = "metric=orders&from=2022-01-01&to=2022-01-31";
    let long = "a".repeat(20_000);
    let cases: Vec<(String, u16, &[&str])> = vec![
        // Invalid UTF-8 behind percent-escapes, in values, names and both.
        (
            format!("/api/v1/timeseries?{ok}&granularity=%C3%28"),
            400,
            &["granularity"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=%ED%A0%80&to=2022-01-31".into(),
            400,
            &["from"],
        ),
        (format!("/api/v1/timeseries?{ok}&%FF%FE=1"), 400, &["query"]),
        (format!("/api/v1/timeseries?{ok}&%="), 400, &["query"]),
        (
            format!("/api/v1/timeseries?{ok}&province=%FF"),
            404,
            &["province"],
        ),
        // Unknown and repeated parameters.
        (format!("/api/v1/timeseries?{ok}&bogus=1"), 400, &["bogus"]),
        (
            format!("/api/v1/timeseries?{ok}&metric=orders"),
            400,
            &["duplicate", "metric"],
        ),
        // Huge values.
        (
            format!("/api/v1/timeseries?metric={long}&from=2022-01-01&to=2022-01-31"),
            400,
            &["metric"],
        ),
        (
            format!("/api/v1/timeseries?metric=orders&from={long}&to=2022-01-31"),
            400,
            &["from", "YYYY-MM-DD"],
        ),
        // Absurd date ranges.
        (
            "/api/v1/timeseries?metric=orders&from=0001-01-01&to=9999-12-31".into(),
            400,
            &["from", "2000"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=2000-01-01&to=2100-12-31".into(),
            400,
            &["to", "3660"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=-9999-01-01&to=-9999-12-31".into(),
            400,
            &["from", "2000", "2100"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=2022-01-01&to=2200-01-01".into(),
            400,
            &["to", "2100"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=%2B10000-01-01&to=%2B10000-01-02".into(),
            400,
            &["from", "YYYY-MM-DD"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=2022-01-31&to=2022-01-01".into(),
            400,
            &["to", "before"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=2022-02-30&to=2022-03-01".into(),
            400,
            &["from"],
        ),
        (
            "/api/v1/timeseries?metric=orders&from=2022-01-01T00:00:00&to=2022-03-01".into(),
            400,
            &["from"],
        ),
        // Province codes with odd bytes.
        ("/api/v1/provinces/%00".into(), 404, &["province"]),
        ("/api/v1/provinces/..%2F..%2Fetc".into(), 404, &["province"]),
        (format!("/api/v1/provinces/{long}"), 404, &["province"]),
        ("/api/v1/provinces/79%20OR%201=1".into(), 404, &["province"]),
        // Not UTF-8 once decoded: JSON like every other refusal, not the framework's text.
        ("/api/v1/provinces/%FF".into(), 400, &["code", "UTF-8"]),
        // No such route: JSON too.
        (
            "/api/v2/national".into(),
            404,
            &["/api/v2/national", "/api/v1"],
        ),
        ("/api/wp-login.php".into(), 404, &["/api/wp-login.php"]),
    ];
    for (path, status, words) in &cases {
        let (got, body) = app.get(path).await;
        let shown = &path[..path.len().min(100)];
        assert_eq!(got, *status, "{shown}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            body["error"]["code"].is_string() && message.len() < 1_000,
            "{shown}: {body}"
        );
        for word in *words {
            assert!(
                message.contains(word),
                "{shown}: {message:?} lacks {word:?}"
            );
        }
    }
    // A method nothing accepts: 405 in JSON, with `Allow`.
    let refused = reqwest::Client::new()
        .post(format!("http://{}/api/v1/national", app.http))
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status().as_u16(), 405);
    let allowed: Vec<String> = refused
        .headers()
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_string())
        .collect();
    assert_eq!(allowed, ["GET", "HEAD"]);
    let body: serde_json::Value = refused.json().await.expect("json body");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("POST"),
        "{body}"
    );
    // Requests no client library would send are refused by the HTTP parser itself, before any
    // handler: raw non-ASCII bytes in the query, a request line of 1 MiB.
    let status = raw_http(
        &app,
        b"GET /api/v1/timeseries?metric=\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "raw invalid UTF-8 in the request line");
    let mut request = b"GET /api/v1/timeseries?metric=".to_vec();
    request.extend(std::iter::repeat_n(b'a', MIB));
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let status = raw_http(&app, &request).await;
    assert!(
        (400..500).contains(&status),
        "a 1 MiB request line: {status}"
    );
    // Nothing changed, and the server still answers.
    let (status, after) = app.get("/api/v1/national").await;
    assert_eq!(status, 200);
    assert_eq!(after["sales"], before["sales"]);
    assert_eq!(after["households"], before["households"]);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Overload.

#[tokio::test]
async fn a_partner_over_its_rate_limit_is_refused_with_a_hint_and_the_other_is_not() {
    let Some(app) = spawn_app_with(Mode::Embedded, "rate_limit", |settings| {
        let marketplace = settings.section_mut::<Marketplace>().expect("registered");
        marketplace.partner_records_per_second = 10;
        marketplace.partner_burst_records = 20;
    })
    .await
    else {
        return;
    };
    let mut postmart = app.partner("postmart").await;
    let mut voso = app.partner("voso").await;
    let batch = |id: &str, n: usize| {
        sales(
            id,
            (0..n)
                .map(|i| line(&format!("{id}-{i}"), "01", 1))
                .collect(),
        )
    };
    postmart
        .push_sales(batch("p1", 15))
        .await
        .expect("within the burst");
    let err = postmart
        .push_sales(batch("p2", 15))
        .await
        .expect_err("over the rate");
    check(
        "over the rate",
        &err,
        &refused(
            Code::ResourceExhausted,
            &[
                "postmart",
                "10 records per second",
                "--partner-records-per-second",
                "retry",
            ],
        ),
    );
    let hint = |name: &str| -> u64 {
        err.metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", err.metadata()))
    };
    let retry_ms = hint("retry-after-ms");
    assert_eq!(hint("grpc-retry-pushback-ms"), retry_ms);
    assert!(
        (1..=1_000).contains(&retry_ms),
        "15 records with at least 5 left at 10/s: {retry_ms} ms"
    );
    // A call that could never pass says so, without a hint to retry.
    let err = postmart
        .push_sales(batch("p3", 21))
        .await
        .expect_err("over the burst");
    check(
        "over the burst",
        &err,
        &refused(
            Code::ResourceExhausted,
            &["burst of 20", "--partner-burst-records", "split"],
        ),
    );
    assert!(err.metadata().get("retry-after-ms").is_none());
    // The other partner has its own quota, untouched by the first one's excess.
    let result = voso
        .push_sales(batch("v1", 20))
        .await
        .expect("voso is not throttled by postmart")
        .into_inner();
    assert_eq!(result.accepted, 20);
    // Nothing was kept from the refused calls, and the hint is honest: after it, the call passes.
    tokio::time::sleep(Duration::from_millis(retry_ms)).await;
    for id in ["p2", "p3"] {
        let err = postmart
            .get_batch(pb::GetBatchRequest {
                batch_id: id.into(),
            })
            .await
            .expect_err(id);
        assert_eq!(err.code(), Code::NotFound, "{id}: {err:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the two GetBatch calls' tokens
    postmart
        .push_sales(batch("p2", 15))
        .await
        .expect("after the hinted wait");
    app.wait_national(|n| {
        n["sales"]["by_partner"]["postmart"]["grams"] == 30
            && n["sales"]["by_partner"]["voso"]["grams"] == 20
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_partner_with_an_empty_bucket_is_refused_before_its_body_is_read() {
    let Some(app) = spawn_app_with(Mode::Embedded, "early_throttle", |settings| {
        let marketplace = settings.section_mut::<Marketplace>().expect("registered");
        marketplace.partner_records_per_second = 1;
        marketplace.partner_burst_records = 20;
    })
    .await
    else {
        return;
    };
    let token = app.token(Role::Partner {
        partner: "voso".into(),
    });
    let garbage = vec![0x0a, 0x02, 0xff, 0xfe];
    // With tokens left, the body is read: garbage is INVALID_ARGUMENT.
    let status = raw_unary(&app, PUSH_SALES, Some(&token), garbage.clone())
        .await
        .expect_err("garbage");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut voso = app.partner("voso").await;
    let records: Vec<pb::SalesRecord> = (0..20).map(|i| line(&format!("e{i}"), "01", 1)).collect();
    voso.push_sales(sales("empties", records))
        .await
        .expect("within the burst");
    // Bucket empty: refused from the headers alone, so the same garbage is never decoded, and
    // the answer is the rate limit with a hint; a 15 MiB body costs no more.
    for body in [garbage, vec![0xff; 15 * MIB]] {
        let status = raw_unary(&app, PUSH_SALES, Some(&token), body)
            .await
            .expect_err("refused early");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("voso") && status.message().contains("1 records per second"),
            "{status:?}"
        );
        assert!(status.metadata().get("retry-after-ms").is_some());
    }
    // Postmart's calls are untouched, and a bad token still gets its own answer.
    let postmart = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let status = raw_unary(
        &app,
        PUSH_SALES,
        Some(&postmart),
        vec![0x0a, 0x02, 0xff, 0xfe],
    )
    .await
    .expect_err("garbage");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw_unary(&app, PUSH_SALES, Some("ap1.forged.token"), vec![])
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    app.wait_national(|n| n["sales"]["by_partner"]["voso"]["grams"] == 20)
        .await;
    app.stop().await;
}

/// A `PushSales` call of `token` whose request message never comes, so it holds its slots
/// until the task is aborted.
async fn hold_a_call(
    app: &TestApp,
    token: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<Vec<u8>>, Status>> {
    let channel = channel(app).await;
    let token = token.to_string();
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        let mut request = tonic::Request::new(futures::stream::pending::<Vec<u8>>());
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        let path = http::uri::PathAndQuery::from_static(PUSH_SALES);
        grpc.client_streaming(request, path, RawCodec).await
    })
}

/// Asks for an unknown batch until the answer is `want` (a refusal, or NOT_FOUND once let
/// through), or fails after 10 s.
async fn get_batch_until(client: &mut PartnerClient, want: Code) -> Status {
    // Only the bound of a machine busy with other builds: the answer comes within
    // milliseconds when it is quiet.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .get_batch(pb::GetBatchRequest {
                batch_id: "any".into(),
            })
            .await
        {
            Err(err) if err.code() == want => return err,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never {want:?}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_partner_at_its_cap_of_calls_in_flight_is_refused_and_the_other_is_not() {
    let Some(app) = spawn_app_with(Mode::Embedded, "partner_cap", |settings| {
        settings.platform.partner_max_concurrent_requests = 2;
    })
    .await
    else {
        return;
    };
    let postmart_token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let holders = [
        hold_a_call(&app, &postmart_token).await,
        hold_a_call(&app, &postmart_token).await,
    ];
    // Postmart's third call is refused before its body is read, naming the cap.
    let mut postmart = app.partner("postmart").await;
    let err = get_batch_until(&mut postmart, Code::ResourceExhausted).await;
    check(
        "partner cap",
        &err,
        &refused(
            Code::ResourceExhausted,
            &[
                "2 calls in flight",
                "--partner-max-concurrent-requests",
                "retry",
            ],
        ),
    );
    assert_eq!(
        err.metadata()
            .get("retry-after-ms")
            .and_then(|v| v.to_str().ok()),
        Some("100")
    );
    // Vỏ Sò's calls are untouched: the process has slots, and they are not Postmart's.
    let mut voso = app.partner("voso").await;
    get_batch_until(&mut voso, Code::NotFound).await;
    // Once Postmart's calls end, its slots are free again.
    for holder in holders {
        holder.abort();
    }
    get_batch_until(&mut postmart, Code::NotFound).await;
    app.stop().await;
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_not_queued() {
    let Some(app) = spawn_app_with(Mode::Embedded, "concurrency_limit", |settings| {
        settings.platform.max_concurrent_requests = 1;
    })
    .await
    else {
        return;
    };
    let token = app.token(Role::Partner {
        partner: "voso".into(),
    });
    // Hold the one slot: a call whose request message never comes.
    let holder = hold_a_call(&app, &token).await;
    // Once the slot is taken, another call is refused at once with a hint, not queued.
    let mut voso = app.partner("voso").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match voso
            .get_batch(pb::GetBatchRequest {
                batch_id: "any".into(),
            })
            .await
        {
            Err(err) if err.code() == Code::ResourceExhausted => break err,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never shed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    check(
        "shed",
        &err,
        &refused(
            Code::ResourceExhausted,
            &[
                "1 concurrent requests",
                "--max-concurrent-requests",
                "retry",
            ],
        ),
    );
    assert_eq!(
        err.metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok()),
        Some("100")
    );
    // Health checks are never shed: a busy replica is not a dead one.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&app).await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health while saturated")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // When the slot frees, calls pass again.
    holder.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match voso
            .get_batch(pb::GetBatchRequest {
                batch_id: "any".into(),
            })
            .await
        {
            Err(err) if err.code() == Code::NotFound => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the slot never freed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    app.stop().await;
}

/// A `PushSales` call on `channel` (with `token`, or none) whose request message never comes:
/// a client that opens a stream and stalls. A stream the server refuses before reading it
/// (`REFUSED_STREAM`, over the connection's stream limit as the server counts it: a stream
/// the client has seen end may not have ended on the server yet) is opened again, as a
/// persistent attacker would; any other end of the call ends the task.
fn stall_on(
    channel: &Channel,
    token: Option<&str>,
) -> tokio::task::JoinHandle<Result<tonic::Response<Vec<u8>>, Status>> {
    stall(channel, token, false)
}

/// [`stall_on`] that also opens the stream again when the server sheds it at its limit of
/// requests (RESOURCE_EXHAUSTED: refused before its body is read), so it holds a slot as soon
/// as one is free, as an attacker would: a test that counts the slots such streams hold is
/// then not decided by when the server frees the slot of a call the client saw end.
fn stall_until_held(
    channel: &Channel,
    token: Option<&str>,
) -> tokio::task::JoinHandle<Result<tonic::Response<Vec<u8>>, Status>> {
    stall(channel, token, true)
}

fn stall(
    channel: &Channel,
    token: Option<&str>,
    again_when_shed: bool,
) -> tokio::task::JoinHandle<Result<tonic::Response<Vec<u8>>, Status>> {
    let channel = channel.clone();
    let token = token.map(str::to_string);
    tokio::spawn(async move {
        loop {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.expect("ready");
            let mut request = tonic::Request::new(futures::stream::pending::<Vec<u8>>());
            if let Some(token) = &token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii"),
                );
            }
            let path = http::uri::PathAndQuery::from_static(PUSH_SALES);
            let ended = grpc.client_streaming(request, path, RawCodec).await;
            match &ended {
                Err(status)
                    if refused_stream(status)
                        || (again_when_shed && status.code() == Code::ResourceExhausted) =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return ended,
            }
        }
    })
}

/// The server refused the stream before any of its application saw it (HTTP/2
/// `REFUSED_STREAM`), so nothing of the call was processed.
fn refused_stream(status: &Status) -> bool {
    let h2 = std::error::Error::source(status)
        .and_then(|e| find_h2(e))
        .and_then(h2::Error::reason);
    h2 == Some(h2::Reason::REFUSED_STREAM)
}

fn find_h2<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a h2::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        next = e.source();
    }
    None
}

#[tokio::test]
async fn one_connection_cannot_take_every_slot_with_stalled_streams() {
    let Some(app) = spawn_app_with(Mode::Embedded, "streams_per_connection", |settings| {
        settings.platform.max_concurrent_requests = 3;
        settings.platform.grpc_max_streams_per_connection = 2;
        // The attacker holds a partner's token (calls without one are refused from their
        // headers and never stall): its own cap must not be what stops it here.
        settings.platform.partner_max_concurrent_requests = 10;
        // The stalled streams must outlive the test however busy the machine is: ended by
        // the request timeout, they would look like streams the server never held.
        settings.platform.grpc_request_timeout_seconds = 600;
    })
    .await
    else {
        return;
    };
    // Five stalled streams on one connection: only two are let open at once (the others wait
    // on the client's side, as HTTP/2 requires), so none is shed and a slot stays free.
    let token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let attacker = channel(&app).await;
    // One call first, so the client has the server's SETTINGS (its stream limit) before it
    // opens the stalled ones; streams opened before would be refused (REFUSED_STREAM).
    tonic_health::pb::health_client::HealthClient::new(attacker.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health");
    // The health call's slot may still be held on the server when they arrive (the client sees
    // its answer first), so a stalled stream shed then is opened again.
    let stalled: Vec<_> = (0..5)
        .map(|_| stall_until_held(&attacker, Some(&token)))
        .collect();
    // A second connection's stalled stream takes the last slot: calls are shed, which shows
    // the first connection's streams have arrived.
    let other = stall_until_held(&channel(&app).await, Some(&token));
    let mut voso = app.partner("voso").await;
    get_batch_until(&mut voso, Code::ResourceExhausted).await;
    assert!(
        stalled.iter().all(|h| !h.is_finished()),
        "a stream of the first connection ended"
    );
    // With that one gone, the partner's calls pass beside the first connection's stalled
    // streams: had it opened more than its two, they would hold every slot (each shed one
    // opens again), and these calls would be shed until the deadline.
    other.abort();
    get_batch_until(&mut voso, Code::NotFound).await;
    voso.push_sales(sales("beside-stalled", vec![line("s1", "01", 5)]))
        .await
        .expect("a push beside the stalled connection");
    for holder in stalled {
        holder.abort();
    }
    app.stop().await;
}

#[tokio::test]
async fn stalled_streams_time_out_and_give_their_slots_back() {
    let Some(app) = spawn_app_with(Mode::Embedded, "stalled_timeout", |settings| {
        settings.platform.max_concurrent_requests = 2;
        settings.platform.grpc_request_timeout_seconds = 1;
    })
    .await
    else {
        return;
    };
    // With a partner's token, so the stalled calls pass the access gate and take the slots.
    let token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let attacker = channel(&app).await;
    let stalled: Vec<_> = (0..2).map(|_| stall_on(&attacker, Some(&token))).collect();
    // Each stalled call is ended by the server after its second (10 s is only the bound of a
    // busy machine), with an error, never an answer.
    for holder in stalled {
        let ended = tokio::time::timeout(Duration::from_secs(10), holder)
            .await
            .expect("a stalled stream was never ended by the server")
            .expect("task");
        let status = ended.expect_err("a stalled call cannot succeed");
        assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    }
    // Their slots are free: a partner's push passes.
    let mut voso = app.partner("voso").await;
    get_batch_until(&mut voso, Code::NotFound).await;
    voso.push_sales(sales("after-stalled", vec![line("t1", "01", 5)]))
        .await
        .expect("a push once the stalled streams timed out");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP limits: slow clients, the concurrency cap, the per-client rate, admin routes apart.

/// Reads from `stream` until the server closes it; what it answered before closing, if any.
async fn until_closed(stream: &mut tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return answer,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn slowloris_connections_are_closed_and_a_normal_request_is_served_meanwhile() {
    let Some(app) = spawn_app_with(Mode::Embedded, "slowloris", |settings| {
        settings.platform.http_header_read_timeout_seconds = 1;
    })
    .await
    else {
        return;
    };
    // Hundreds of connections that send a request's first line, then one header line every
    // 100 ms, never the blank line that ends the headers.
    let mut slow = Vec::new();
    for i in 0..300 {
        let stream = tokio::net::TcpStream::connect(&app.http)
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        slow.push(tokio::spawn(async move {
            let trickle = async move {
                let _ = write
                    .write_all(b"GET /api/v1/national HTTP/1.1\r\nHost: portal\r\n")
                    .await;
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if write
                        .write_all(format!("x-slow-{i}: 1\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            };
            tokio::select! {
                answer = until_closed(&mut read) => answer,
                _ = trickle => until_closed(&mut read).await,
            }
        }));
    }
    // Meanwhile a normal request is answered (10 s is only the bound of a busy machine).
    let normal = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!("http://{}/api/v1/national", app.http)),
    )
    .await
    .expect("the normal request waited behind the slow ones")
    .expect("answered");
    assert_eq!(normal.status(), 200);
    // Every slow connection is closed by the server once its second is over, without an
    // answer to the request it never finished (at most a 408 saying so).
    for (i, connection) in slow.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(20), connection)
            .await
            .unwrap_or_else(|_| panic!("slow connection {i} was never closed"))
            .expect("task");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "slow connection {i} got {answer:?}"
        );
    }
    app.stop().await;
}

/// Opens a sign-in whose form body never arrives, so the request stays in its handler (the
/// form extractor waits for the body) and holds its slot of the HTTP concurrency cap.
async fn stalled_form(app: &TestApp) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(&app.http)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /signin HTTP/1.1\r\nHost: portal\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nuser=",
        )
        .await
        .expect("write");
    stream
}

#[tokio::test]
async fn http_over_the_concurrency_cap_is_shed_with_retry_after_and_slow_requests_time_out() {
    let Some(app) = spawn_app_with(Mode::Embedded, "http_shed", |settings| {
        settings.platform.http_max_concurrent_requests = 1;
        settings.platform.http_request_timeout_seconds = 2;
    })
    .await
    else {
        return;
    };
    let url = format!("http://{}/api/v1/national", app.http);
    let mut held = stalled_form(&app).await;
    // Once the stalled request holds the one slot, others are refused at once, with a hint.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let web = reqwest::Client::new();
    let shed = loop {
        let response = web
            .get(&url)
            .header("origin", "https://dashboard.example.org")
            .send()
            .await
            .expect("answered");
        if response.status() == 503 {
            break response;
        }
        assert!(std::time::Instant::now() < deadline, "never shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Readable from another origin, like every edge refusal.
    assert_eq!(
        shed.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let body: serde_json::Value = shed.json().await.expect("json");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("--http-max-concurrent-requests") && message.contains("1 concurrent"),
        "{body}"
    );
    // The stalled request itself is ended by the request timeout: a 503 naming it.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(&answer).contains("timeout") {
            match held.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled request was never ended");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("--http-request-timeout-seconds"),
        "{answer}"
    );
    // Its slot is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(&url).await.expect("answered").status();
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_client_over_its_http_rate_gets_429_with_retry_after_and_another_does_not() {
    let Some(app) = spawn_app_with(Mode::Embedded, "http_rate", |settings| {
        settings.platform.http_rate_per_second = 1;
        settings.platform.http_rate_burst = 3;
        settings.platform.http_client_address_header = Some("x-forwarded-for".into());
    })
    .await
    else {
        return;
    };
    let web = reqwest::Client::new();
    let url = format!("http://{}/api/v1/national", app.http);
    let get = |client: &'static str| {
        web.get(&url)
            .header("x-forwarded-for", format!("198.51.100.9, {client}"))
            .header("origin", "https://dashboard.example.org")
            .send()
    };
    // The burst passes; past it, within the second it takes to refill, 429 with a hint.
    for _ in 0..3 {
        assert_eq!(get("203.0.113.1").await.expect("get").status(), 200);
    }
    let mut refused = None;
    for _ in 0..10 {
        let response = get("203.0.113.1").await.expect("get");
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("never refused over the rate");
    assert!(refused.headers().contains_key("retry-after"));
    // A dashboard on another origin can read the refusal and its hint, to back off.
    let header = |name: &str| {
        refused
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(
        header("access-control-expose-headers").as_deref(),
        Some("retry-after")
    );
    assert_eq!(header("access-control-allow-credentials"), None);
    let body: serde_json::Value = refused.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--http-rate-per-second")),
        "{body}"
    );
    // Another client (the proxy's last entry differs; the first entry, which a client may
    // write, is the same) has its own bucket.
    assert_eq!(get("203.0.113.2").await.expect("get").status(), 200);
    // The admin port is not limited: readiness answers whatever the public rate.
    for _ in 0..10 {
        let ready = reqwest::get(format!("http://{}/readyz", app.admin))
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_are_on_the_admin_listener_only() {
    let Some(app) = spawn_app(Mode::Embedded, "admin_apart").await else {
        return;
    };
    for path in ["/metrics", "/healthz", "/readyz"] {
        let public = reqwest::get(format!("http://{}{path}", app.http))
            .await
            .expect("public");
        assert_eq!(public.status(), 404, "{path} on the public port");
        let admin = reqwest::get(format!("http://{}{path}", app.admin))
            .await
            .expect("admin");
        assert_eq!(admin.status(), 200, "{path} on the admin port");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("agriportal_"), "{metrics}");
    // The admin port serves nothing else.
    let page = reqwest::get(format!("http://{}/api/v1/national", app.admin))
        .await
        .expect("admin");
    assert_eq!(page.status(), 404);
    app.stop().await;
}

/// Grams in the gateway's sales totals, read from its store on a connection of the test's own.
async fn rolled_up_grams(app: &TestApp) -> i64 {
    use agriportal_gateway::GatewayStore;
    let db = agriportal_platform::storage::Database::connect_pool(&app.config, "gateway", 1)
        .await
        .expect("gateway db");
    let store = agriportal_gateway::SqlStore::new(db.clone());
    let grams = store
        .sales_totals()
        .await
        .expect("totals")
        .iter()
        .map(|t| t.cell[0])
        .sum();
    db.close().await;
    grams
}

#[tokio::test]
async fn a_read_flood_neither_stalls_the_rollups_nor_fails_readiness() {
    let Some(app) = spawn_app_with(Mode::Distributed, "read_flood", |settings| {
        // Small pools, so that sharing one would show: the consumer and readiness on two
        // connections, the public reads on one of their own.
        settings.platform.db_max_connections = 2;
        settings.platform.http_rate_per_second = 0;
        settings.platform.http_max_concurrent_requests = 1024;
        settings
            .section_mut::<agriportal_gateway::Gateway>()
            .expect("registered")
            .gateway_read_pool = 1;
    })
    .await
    else {
        return;
    };
    let flooding = tokio_util::sync::CancellationToken::new();
    let web = reqwest::Client::new();
    let mut flood = Vec::new();
    for _ in 0..64 {
        let (web, flooding) = (web.clone(), flooding.clone());
        let url = format!(
            "http://{}/api/v1/timeseries?metric=orders&granularity=day&from=2015-01-01&to=2024-12-31",
            app.http
        );
        flood.push(tokio::spawn(async move {
            let mut answered = 0u32;
            while !flooding.is_cancelled() {
                if web.get(&url).send().await.is_ok() {
                    answered += 1;
                }
            }
            answered
        }));
    }
    // While the reads flood in, pushes are rolled up and readiness holds.
    let mut voso = app.partner("voso").await;
    for i in 0..5 {
        voso.push_sales(sales(
            &format!("flood-{i}"),
            vec![line(&format!("f{i}"), "01", 10)],
        ))
        .await
        .expect("push during the flood");
        let ready = reqwest::get(format!("http://{}/readyz", app.admin))
            .await
            .expect("readyz");
        assert_eq!(
            ready.status(),
            200,
            "readiness failed during the read flood"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rolled_up_grams(&app).await != 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollups stalled during the read flood"
        );
        let ready = reqwest::get(format!("http://{}/readyz", app.admin))
            .await
            .expect("readyz");
        assert_eq!(
            ready.status(),
            200,
            "readiness failed during the read flood"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flooding.cancel();
    let mut answered = 0;
    for task in flood {
        answered += task.await.expect("flood task");
    }
    assert!(answered > 0, "the flood never got an answer");
    app.stop().await;
}

/// Calls without a valid token are answered from their headers, whatever their body: one
/// whose body never comes takes no slot of the process's concurrency limit (it held the only
/// one before authentication moved in front of it), so a partner's call passes at its first
/// try, however many such calls are open.
#[tokio::test]
async fn unauthenticated_calls_whose_body_never_comes_take_no_slot() {
    let Some(app) = spawn_app_with(Mode::Embedded, "unauthenticated_slots", |settings| {
        settings.platform.max_concurrent_requests = 1;
    })
    .await
    else {
        return;
    };
    let mut holders = Vec::new();
    for token in ["", "ap1.forged.token"] {
        for _ in 0..4 {
            holders.push(hold_a_call(&app, token).await);
        }
    }
    for holder in holders {
        // Answered at once; before, such a call waited for its body while holding the slot.
        let status = tokio::time::timeout(Duration::from_secs(10), holder)
            .await
            .expect("answered from the headers, without waiting for the body")
            .expect("task")
            .expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    // The process's one slot is free for a partner.
    let mut voso = app.partner("voso").await;
    let err = voso
        .get_batch(pb::GetBatchRequest {
            batch_id: "any".into(),
        })
        .await
        .expect_err("no such batch");
    assert_eq!(err.code(), Code::NotFound, "first try: {err:?}");
    app.stop().await;
}
