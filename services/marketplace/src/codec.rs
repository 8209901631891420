//! Bounded decoding of the push rpcs. prost decodes a `repeated` field by allocating one
//! element per occurrence, so a 16 MiB body of empty records (two bytes each on the wire) would
//! become eight million records, about 1 GiB, before the batch's 10,000-record limit is
//! checked. [`BatchDecoder`] first scans the message's protobuf wire format, which costs no
//! allocation, counting the records (field 2) and, inside each, the entries of its repeated
//! strings; a message over 4 MiB (which the transport refuses from its frame header before
//! buffering it), over 10,000 records or over [`MAX_REPEATED_ENTRIES`] entries
//! is refused before anything is decoded, with the same messages as the envelope check. What
//! is decoded is then at most a small multiple of the 4 MiB a batch may be.
//!
//! [`BoundedIngest`] serves `PushSales` and `PushOnboarding` with it and passes every other
//! path to the generated server.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use agriportal_platform::Error;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_ingest_server::{
    MarketplaceIngest, MarketplaceIngestServer,
};
use bytes::Buf;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::Status;

use crate::config::Limits;
use crate::error;

/// Entries of repeated fields inside a batch's records (an onboarding record's categories),
/// all records together: far above what a real batch carries (a household sells in a handful
/// of the categories), and small enough that decoding them costs a few MiB.
pub const MAX_REPEATED_ENTRIES: usize = 100_000;

/// Nesting of groups the scan follows, as prost's own recursion limit.
const MAX_DEPTH: u32 = 100;

/// A batch request: which field of its records is a repeated, allocated entry.
pub trait Batch: Message + Default + Send + 'static {
    /// Field number of a repeated string or message inside each record, if any.
    const REPEATED_IN_RECORD: Option<u32>;
}

impl Batch for pb::PushSalesRequest {
    const REPEATED_IN_RECORD: Option<u32> = None;
}

impl Batch for pb::PushOnboardingRequest {
    const REPEATED_IN_RECORD: Option<u32> = Some(6);
}

/// What a wire-format scan of a batch found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Occurrences of field 2 (records), length-delimited.
    pub records: usize,
    /// Occurrences of the records' repeated field, all records together.
    pub entries: usize,
    /// Whether the scan reached the end; `false` when the message is malformed at some point
    /// (prost then fails there too, having decoded at most what was counted before it).
    pub complete: bool,
}

/// Scans the top level of a batch message without allocating, counting its records and,
/// with `repeated`, the entries of that field inside each record.
pub fn scan(mut buf: &[u8], repeated: Option<u32>) -> Counts {
    let mut counts = Counts::default();
    while !buf.is_empty() {
        let Some((field, wire)) = key(&mut buf) else {
            return counts;
        };
        if field == 2 && wire == 2 {
            let Some(record) = delimited(&mut buf) else {
                return counts;
            };
            counts.records += 1;
            if let Some(inner) = repeated {
                let (entries, _) = count_field(record, inner);
                counts.entries = counts.entries.saturating_add(entries);
            }
        } else if !skip(&mut buf, field, wire, 0) {
            return counts;
        }
    }
    counts.complete = true;
    counts
}

/// Occurrences of length-delimited `field` in a message, and whether its scan completed.
fn count_field(mut buf: &[u8], field: u32) -> (usize, bool) {
    let mut n = 0usize;
    while !buf.is_empty() {
        let Some((f, wire)) = key(&mut buf) else {
            return (n, false);
        };
        if f == field && wire == 2 {
            if delimited(&mut buf).is_none() {
                return (n, false);
            }
            n += 1;
        } else if !skip(&mut buf, f, wire, 0) {
            return (n, false);
        }
    }
    (n, true)
}

fn key(buf: &mut &[u8]) -> Option<(u32, u8)> {
    let key = prost::encoding::decode_varint(buf).ok()?;
    let key = u32::try_from(key).ok()?;
    let field = key >> 3;
    // Field 0 is invalid, as prost says.
    (field != 0).then_some((field, (key & 7) as u8))
}

fn delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(prost::encoding::decode_varint(buf).ok()?).ok()?;
    if len > buf.len() {
        return None;
    }
    let (value, rest) = buf.split_at(len);
    *buf = rest;
    Some(value)
}

/// Skips one field's value; `false` when the message is malformed there.
fn skip(buf: &mut &[u8], field: u32, wire: u8, depth: u32) -> bool {
    match wire {
        0 => prost::encoding::decode_varint(buf).is_ok(),
        1 | 5 => {
            let n = if wire == 1 { 8 } else { 4 };
            if buf.len() < n {
                return false;
            }
            buf.advance(n);
            true
        }
        2 => delimited(buf).is_some(),
        // A group: its fields up to the matching end.
        3 => {
            if depth >= MAX_DEPTH {
                return false;
            }
            loop {
                let Some((inner, inner_wire)) = key(buf) else {
                    return false;
                };
                if inner_wire == 4 {
                    return inner == field;
                }
                if !skip(buf, inner, inner_wire, depth + 1) {
                    return false;
                }
            }
        }
        _ => false,
    }
}

/// Checks a batch's counts against the limits: the same refusals as the envelope check,
/// decided before anything is allocated.
pub fn check(bytes: usize, counts: &Counts, limits: &Limits) -> Result<(), Error> {
    if bytes > limits.max_bytes {
        return Err(error::too_large(bytes, limits));
    }
    if counts.records > limits.max_records {
        return Err(error::too_many_records(counts.records, limits));
    }
    if counts.entries > MAX_REPEATED_ENTRIES {
        return Err(error::too_many_entries(
            counts.entries,
            MAX_REPEATED_ENTRIES,
        ));
    }
    Ok(())
}

/// Decodes `buf` as a `B` if its scan is within `limits`.
pub fn decode_bounded<B: Batch>(buf: &[u8], limits: &Limits) -> Result<B, Status> {
    let counts = scan(buf, B::REPEATED_IN_RECORD);
    check(buf.len(), &counts, limits)?;
    // The same status as tonic's own decoder, which the platform's decode layer maps.
    B::decode(buf).map_err(|err| Status::internal(err.to_string()))
}

/// The codec of the push rpcs: prost's encoder for the result, [`BatchDecoder`] for the
/// request.
#[derive(Debug)]
pub struct BatchCodec<B> {
    limits: Limits,
    _batch: PhantomData<fn() -> B>,
}

impl<B> BatchCodec<B> {
    /// A codec refusing batches over `limits`.
    pub fn new(limits: Limits) -> Self {
        BatchCodec {
            limits,
            _batch: PhantomData,
        }
    }
}

impl<B: Batch> Codec for BatchCodec<B> {
    type Encode = pb::PushResult;
    type Decode = B;
    type Encoder = ResultEncoder;
    type Decoder = BatchDecoder<B>;

    fn encoder(&mut self) -> Self::Encoder {
        ResultEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BatchDecoder {
            limits: self.limits,
            _batch: PhantomData,
        }
    }
}

/// Encodes a [`pb::PushResult`] as prost does.
#[derive(Debug, Default)]
pub struct ResultEncoder;

impl Encoder for ResultEncoder {
    type Item = pb::PushResult;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|_| Status::internal("the response did not fit its buffer"))
    }
}

/// Decodes a batch after a scan of its wire format shows it within the limits.
#[derive(Debug)]
pub struct BatchDecoder<B> {
    limits: Limits,
    _batch: PhantomData<fn() -> B>,
}

impl<B: Batch> Decoder for BatchDecoder<B> {
    type Item = B;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<B>, Status> {
        let len = buf.remaining();
        // The message is buffered whole and contiguous; should it ever not be, one copy
        // (of at most tonic's decode limit) makes it so.
        let item = if buf.chunk().len() == len {
            let item = decode_bounded(buf.chunk(), &self.limits)?;
            buf.advance(len);
            item
        } else {
            let bytes = buf.copy_to_bytes(len);
            decode_bounded(&bytes, &self.limits)?
        };
        Ok(Some(item))
    }
}

const PUSH_SALES: &str = "/agriportal.marketplace.v1.MarketplaceIngest/PushSales";
const PUSH_ONBOARDING: &str = "/agriportal.marketplace.v1.MarketplaceIngest/PushOnboarding";

/// `MarketplaceIngest` with the push rpcs decoded by [`BatchCodec`]; other paths go to the
/// generated server.
pub struct BoundedIngest<T: MarketplaceIngest> {
    adapter: Arc<T>,
    generated: MarketplaceIngestServer<T>,
    limits: Limits,
    max_decoding: usize,
}

impl<T: MarketplaceIngest> Clone for BoundedIngest<T> {
    fn clone(&self) -> Self {
        BoundedIngest {
            adapter: self.adapter.clone(),
            generated: self.generated.clone(),
            limits: self.limits,
            max_decoding: self.max_decoding,
        }
    }
}

impl<T: MarketplaceIngest> BoundedIngest<T> {
    /// Serves `adapter`, refusing batches over `limits` before decoding them, and messages
    /// over `max_decoding` bytes before buffering them.
    pub fn new(adapter: T, limits: Limits, max_decoding: usize) -> Self {
        let adapter = Arc::new(adapter);
        BoundedIngest {
            generated: MarketplaceIngestServer::from_arc(adapter.clone())
                .max_decoding_message_size(max_decoding),
            adapter,
            limits,
            max_decoding,
        }
    }
}

impl<T: MarketplaceIngest> NamedService for BoundedIngest<T> {
    const NAME: &'static str = <MarketplaceIngestServer<T> as NamedService>::NAME;
}

struct Push<T, B> {
    adapter: Arc<T>,
    _batch: PhantomData<fn() -> B>,
}

impl<T: MarketplaceIngest> tonic::server::UnaryService<pb::PushSalesRequest>
    for Push<T, pb::PushSalesRequest>
{
    type Response = pb::PushResult;
    type Future =
        futures::future::BoxFuture<'static, Result<tonic::Response<pb::PushResult>, Status>>;
    fn call(&mut self, request: tonic::Request<pb::PushSalesRequest>) -> Self::Future {
        let adapter = self.adapter.clone();
        Box::pin(async move { adapter.push_sales(request).await })
    }
}

impl<T: MarketplaceIngest> tonic::server::UnaryService<pb::PushOnboardingRequest>
    for Push<T, pb::PushOnboardingRequest>
{
    type Response = pb::PushResult;
    type Future =
        futures::future::BoxFuture<'static, Result<tonic::Response<pb::PushResult>, Status>>;
    fn call(&mut self, request: tonic::Request<pb::PushOnboardingRequest>) -> Self::Future {
        let adapter = self.adapter.clone();
        Box::pin(async move { adapter.push_onboarding(request).await })
    }
}

impl<T: MarketplaceIngest> BoundedIngest<T> {
    fn push<B>(
        &self,
        request: http::Request<Body>,
    ) -> <Self as tower::Service<http::Request<Body>>>::Future
    where
        B: Batch,
        Push<T, B>: tonic::server::UnaryService<B, Response = pb::PushResult>,
        <Push<T, B> as tonic::server::UnaryService<B>>::Future: Send,
    {
        let method = Push::<T, B> {
            adapter: self.adapter.clone(),
            _batch: PhantomData,
        };
        let codec = BatchCodec::<B>::new(self.limits);
        let max_decoding = self.max_decoding;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

impl<T: MarketplaceIngest> tower::Service<http::Request<Body>> for BoundedIngest<T> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            PUSH_SALES => self.push::<pb::PushSalesRequest>(request),
            PUSH_ONBOARDING => self.push::<pb::PushOnboardingRequest>(request),
            _ => Box::pin(self.generated.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_records(n: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        prost::encoding::string::encode(1, &"b".to_string(), &mut buf);
        for _ in 0..n {
            buf.extend_from_slice(&[0x12, 0x00]);
        }
        buf
    }

    #[test]
    fn the_scan_counts_what_prost_would_decode() {
        let request = pb::PushOnboardingRequest {
            batch_id: "b".into(),
            records: vec![
                pb::OnboardingRecord {
                    household_ref: "h1".into(),
                    categories: vec!["fruit".into(), "rice_grains".into()],
                    ..Default::default()
                },
                pb::OnboardingRecord {
                    categories: vec![String::new(); 3],
                    ..Default::default()
                },
                pb::OnboardingRecord::default(),
            ],
        };
        let bytes = request.encode_to_vec();
        let counts = scan(&bytes, Some(6));
        assert_eq!(
            counts,
            Counts {
                records: 3,
                entries: 5,
                complete: true
            }
        );
        let decoded: pb::PushOnboardingRequest =
            decode_bounded(&bytes, &Limits::default()).unwrap();
        assert_eq!(decoded, request);
        // Unknown fields of every wire type, a group among them, are skipped, not counted.
        let mut odd = Vec::new();
        prost::encoding::uint64::encode(9, &5, &mut odd);
        prost::encoding::fixed64::encode(10, &5, &mut odd);
        prost::encoding::fixed32::encode(11, &5, &mut odd);
        odd.extend_from_slice(&[(12 << 3) | 3, 13 << 3, 0x05, 0x12, 0x00, (12 << 3) | 4]);
        odd.extend_from_slice(&[0x12, 0x00]);
        assert_eq!(
            scan(&odd, None),
            Counts {
                records: 1,
                entries: 0,
                complete: true
            }
        );
        let decoded: pb::PushSalesRequest = decode_bounded(&odd, &Limits::default()).unwrap();
        assert_eq!(decoded.records.len(), 1);
    }

    #[test]
    fn too_many_records_are_refused_before_decoding() {
        let limits = Limits::default();
        let ok = empty_records(10_000);
        let decoded: pb::PushSalesRequest = decode_bounded(&ok, &limits).unwrap();
        assert_eq!(decoded.records.len(), 10_000);
        let status =
            decode_bounded::<pb::PushSalesRequest>(&empty_records(10_001), &limits).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("10001 records") && status.message().contains("10000"),
            "{}",
            status.message()
        );
        // The attack, at the 4 MiB limit: two million empty records, none decoded.
        let attack = empty_records(2 * 1024 * 1024 - 4);
        assert!(attack.len() <= limits.max_bytes);
        let status = decode_bounded::<pb::PushSalesRequest>(&attack, &limits).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        // Over 4 MiB: refused by size, as the envelope check would.
        let status =
            decode_bounded::<pb::PushSalesRequest>(&empty_records(2 * 1024 * 1024 + 8), &limits)
                .unwrap_err();
        assert!(status.message().contains("4194304"), "{}", status.message());
        // Categories: one record of 100,001 empty ones.
        let mut record = Vec::new();
        for _ in 0..=MAX_REPEATED_ENTRIES {
            record.extend_from_slice(&[0x32, 0x00]);
        }
        let mut request = Vec::new();
        prost::encoding::bytes::encode(2, &record, &mut request);
        let status = decode_bounded::<pb::PushOnboardingRequest>(&request, &limits).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("100001"), "{}", status.message());
        // Malformed messages fail as prost's decoder says (the platform maps that status).
        let status =
            decode_bounded::<pb::PushSalesRequest>(&[0x0a, 0x02, 0xff, 0xfe], &limits).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(status
            .message()
            .starts_with("failed to decode Protobuf message"));
    }
}
