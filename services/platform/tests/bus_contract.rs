//! The bus contract: one suite, run against the volatile in-process bus, the persisted
//! in-process bus (a SQLite file in a temporary directory) and JetStream on a real NATS server
//! (skipped loudly when NATS is not reachable, failing under `AGRIPORTAL_REQUIRE_SERVERS=1`).
//! Each JetStream test has its own subject prefix, hence its own stream, deleted at the end.
//!
//! Then the persisted in-process bus alone: reopening, surviving `kill -9`, and retention.

// A test crate: helpers as well as tests fail by panicking (clippy.toml allows it only inside
// `#[test]` functions, not in the helpers they share).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::bus::{
    stream_name, Bus, BusKind, ConsumerSpec, Delivery, InProcessBus, JetStreamBus, Message,
};
use agriportal_platform::testing::{nats_url, unique_prefix};
use bytes::Bytes;
use tokio::time::Instant;

/// Small, so that redelivery tests are fast (NATS accepts 1 s).
const ACK_WAIT: Duration = Duration::from_secs(1);

/// Long enough for anything available to be fetched, on a loaded CI machine too.
const FETCH_WAIT: Duration = Duration::from_secs(5);

/// Waiting this long for nothing proves nothing is redelivered: well past `ACK_WAIT`.
const QUIET: Duration = Duration::from_millis(2500);

fn message(subject: &str, id: &str) -> Message {
    Message {
        subject: subject.to_string(),
        id: id.to_string(),
        headers: Vec::new(),
        payload: Bytes::from(format!("payload of {id}")),
    }
}

fn spec(durable: &str, subjects: &[&str]) -> ConsumerSpec {
    ConsumerSpec {
        durable: durable.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ack_wait: ACK_WAIT,
    }
}

async fn publish_all(bus: &Arc<dyn Bus>, messages: impl IntoIterator<Item = Message>) {
    for m in messages {
        let ack = bus.publish(m).await.expect("publish");
        assert!(!ack.duplicate);
    }
}

/// Fetches (and acks) until `count` deliveries arrived or `FETCH_WAIT` passed.
async fn collect(
    consumer: &mut Box<dyn agriportal_platform::bus::Consumer>,
    count: usize,
) -> Vec<Delivery> {
    let deadline = Instant::now() + FETCH_WAIT;
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let got = consumer
            .fetch(count - out.len(), left)
            .await
            .expect("fetch");
        for d in got {
            d.ack().await.expect("ack");
            out.push(d);
        }
    }
    out
}

fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.message.id.clone()).collect()
}

async fn assert_quiet(consumer: &mut Box<dyn agriportal_platform::bus::Consumer>) {
    let got = consumer.fetch(10, QUIET).await.expect("fetch");
    assert!(got.is_empty(), "expected nothing, got {:?}", ids(&got));
}

// ---------------------------------------------------------------------------------------------
// The contract.

async fn publish_fetch_ack_then_nothing_redelivered(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(&bus, [message("orders.placed", "m1")]).await;
    let got = c.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.message.subject, "orders.placed");
    assert_eq!(d.message.id, "m1");
    assert_eq!(d.message.payload, Bytes::from("payload of m1"));
    assert_eq!(d.delivered, 1);
    d.ack().await.expect("ack");
    d.ack().await.expect("a second ack is harmless");
    assert_quiet(&mut c).await;
}

async fn fetch_returns_as_soon_as_a_message_arrives(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let started = Instant::now();
    assert!(c
        .fetch(10, Duration::from_millis(300))
        .await
        .expect("fetch")
        .is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "an empty fetch returned after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "an empty fetch returned after {waited:?}"
    );

    let publisher = Arc::clone(&bus);
    let publishing = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        publisher
            .publish(message("orders.placed", "late"))
            .await
            .expect("publish");
    });
    let started = Instant::now();
    let got = c.fetch(10, Duration::from_secs(20)).await.expect("fetch");
    let waited = started.elapsed();
    publishing.await.expect("publisher");
    assert_eq!(ids(&got), ["late"]);
    assert!(
        waited < Duration::from_secs(5),
        "fetch(10, 20s) took {waited:?} for one message"
    );
    got[0].ack().await.expect("ack");
}

async fn unacked_is_redelivered_after_ack_wait(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(&bus, [message("orders.placed", "m1")]).await;
    let first = c.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(ids(&first), ["m1"]);
    assert_eq!(first[0].delivered, 1);
    let fetched_at = Instant::now();
    let again = c.fetch(10, FETCH_WAIT).await.expect("fetch");
    let after = fetched_at.elapsed();
    assert_eq!(ids(&again), ["m1"]);
    assert_eq!(again[0].delivered, 2);
    assert!(
        after >= ACK_WAIT - Duration::from_millis(100),
        "redelivered after {after:?}"
    );
    again[0].ack().await.expect("ack");
    assert_quiet(&mut c).await;
}

async fn backlog_counts_what_is_not_acked(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    assert_eq!(c.backlog().await.expect("backlog"), 0);
    publish_all(
        &bus,
        [
            message("orders.placed", "m1"),
            message("orders.placed", "m2"),
            message("stock.moved", "other"),
        ],
    )
    .await;
    assert_eq!(
        c.backlog().await.expect("backlog"),
        2,
        "pending, unwanted not counted"
    );
    let got = c.fetch(1, FETCH_WAIT).await.expect("fetch");
    assert_eq!(ids(&got), ["m1"]);
    // Delivered but not acked still counts: another replica may be about to redeliver it.
    assert_eq!(c.backlog().await.expect("backlog"), 2);
    got[0].ack().await.expect("ack");
    let rest = collect(&mut c, 1).await;
    assert_eq!(ids(&rest), ["m2"]);
    let deadline = Instant::now() + FETCH_WAIT;
    // JetStream applies acks asynchronously; the count settles at zero.
    loop {
        let left = c.backlog().await.expect("backlog");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "backlog stayed at {left}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn same_id_twice_is_a_duplicate(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let first = bus
        .publish(message("orders.placed", "same"))
        .await
        .expect("publish");
    assert!(!first.duplicate);
    let mut again = message("orders.placed", "same");
    again.payload = Bytes::from_static(b"another payload");
    let second = bus.publish(again).await.expect("publish");
    assert!(
        second.duplicate,
        "the second publish of an id must be a duplicate"
    );
    publish_all(&bus, [message("orders.placed", "other")]).await;
    let got = collect(&mut c, 3).await;
    assert_eq!(ids(&got), ["same", "other"]);
    assert_eq!(got[0].message.payload, Bytes::from("payload of same"));
    assert_quiet(&mut c).await;
}

async fn two_durables_each_get_every_message(bus: Arc<dyn Bus>) {
    let mut a = bus
        .consumer(spec("a", &["orders.>"]))
        .await
        .expect("consumer");
    let mut b = bus
        .consumer(spec("b", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(
        &bus,
        (1..=3).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    assert_eq!(ids(&collect(&mut a, 3).await), ["m1", "m2", "m3"]);
    assert_eq!(ids(&collect(&mut b, 3).await), ["m1", "m2", "m3"]);
    tokio::join!(assert_quiet(&mut a), assert_quiet(&mut b));
}

async fn handles_of_one_durable_share_the_work(bus: Arc<dyn Bus>) {
    let mut h1 = bus
        .consumer(spec("w", &["orders.>"]))
        .await
        .expect("consumer");
    let mut h2 = bus
        .consumer(spec("w", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(
        &bus,
        (1..=10).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    let (mut by1, mut by2) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + FETCH_WAIT * 2;
    while by1.len() + by2.len() < 10 && Instant::now() < deadline {
        for (handle, seen) in [(&mut h1, &mut by1), (&mut h2, &mut by2)] {
            for d in handle
                .fetch(3, Duration::from_millis(500))
                .await
                .expect("fetch")
            {
                d.ack().await.expect("ack");
                seen.push(d.message.id.clone());
            }
        }
    }
    assert!(
        !by1.is_empty() && !by2.is_empty(),
        "both handles should get work: {by1:?} {by2:?}"
    );
    let all: Vec<&String> = by1.iter().chain(&by2).collect();
    let unique: HashSet<&String> = all.iter().copied().collect();
    assert_eq!(all.len(), 10, "each message exactly once: {by1:?} {by2:?}");
    assert_eq!(
        unique.len(),
        10,
        "each message exactly once: {by1:?} {by2:?}"
    );
    tokio::join!(assert_quiet(&mut h1), assert_quiet(&mut h2));
}

async fn position_survives_recreating_the_handle(bus: Arc<dyn Bus>) {
    publish_all(
        &bus,
        (1..=5).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    let mut c = bus
        .consumer(spec("p", &["orders.>"]))
        .await
        .expect("consumer");
    assert_eq!(ids(&collect(&mut c, 2).await), ["m1", "m2"]);
    let unacked = c.fetch(1, FETCH_WAIT).await.expect("fetch");
    assert_eq!(ids(&unacked), ["m3"]);
    drop(unacked);
    drop(c);

    let mut c = bus
        .consumer(spec("p", &["orders.>"]))
        .await
        .expect("consumer again");
    let got = collect(&mut c, 3).await;
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, ["m3", "m4", "m5"], "acked ones must not come back");
    for d in &got {
        let expected = if d.message.id == "m3" { 2 } else { 1 };
        assert_eq!(d.delivered, expected, "{}", d.message.id);
    }
    assert_quiet(&mut c).await;
}

async fn headers_survive(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let headers = vec![
        (
            "traceparent".to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        ),
        ("tracestate".to_string(), "congo=t61rcWkgMzE".to_string()),
        (
            "x-agriportal-source".to_string(),
            "bus contract test".to_string(),
        ),
    ];
    let mut m = message("orders.placed", "with-headers");
    m.headers = headers.clone();
    publish_all(&bus, [m]).await;
    let got = collect(&mut c, 1).await;
    assert_eq!(got.len(), 1);
    let mut received = got[0].message.headers.clone();
    received.sort();
    assert_eq!(received, headers);
    assert_eq!(got[0].message.id, "with-headers");
}

async fn subjects_are_filtered(bus: Arc<dyn Bus>) {
    let mut market = bus
        .consumer(spec("market", &["marketplace.>"]))
        .await
        .expect("consumer");
    let mut star = bus
        .consumer(spec("star", &["*.x"]))
        .await
        .expect("consumer");
    let mut exact = bus
        .consumer(spec("exact", &["marketplace.a"]))
        .await
        .expect("consumer");
    let mut several = bus
        .consumer(spec("several", &["content.x", "marketplace.b.>"]))
        .await
        .expect("consumer");
    let mut everything = bus
        .consumer(spec("everything", &[]))
        .await
        .expect("consumer");
    publish_all(
        &bus,
        [
            message("content.x", "c1"),
            message("marketplace.a", "m1"),
            message("marketplace.b.c", "m2"),
            message("marketplace", "m3"),
            message("content.y", "c2"),
        ],
    )
    .await;
    assert_eq!(ids(&collect(&mut market, 2).await), ["m1", "m2"]);
    assert_eq!(ids(&collect(&mut star, 1).await), ["c1"]);
    assert_eq!(ids(&collect(&mut exact, 1).await), ["m1"]);
    assert_eq!(ids(&collect(&mut several, 2).await), ["c1", "m2"]);
    assert_eq!(
        ids(&collect(&mut everything, 5).await),
        ["c1", "m1", "m2", "m3", "c2"]
    );
    for c in [&mut market, &mut star, &mut exact, &mut several] {
        assert!(c
            .fetch(10, Duration::from_millis(300))
            .await
            .expect("fetch")
            .is_empty());
    }
}

async fn a_single_publisher_is_delivered_in_order(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let sent: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    publish_all(&bus, sent.iter().map(|id| message("orders.placed", id))).await;
    let mut received = Vec::new();
    let deadline = Instant::now() + FETCH_WAIT * 2;
    while received.len() < sent.len() && Instant::now() < deadline {
        for d in c.fetch(7, FETCH_WAIT).await.expect("fetch") {
            d.ack().await.expect("ack");
            received.push(d.message.id.clone());
        }
    }
    assert_eq!(received, sent);
}

async fn a_later_consumer_gets_every_stored_message(bus: Arc<dyn Bus>) {
    publish_all(
        &bus,
        (1..=3).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    let mut c = bus
        .consumer(spec("late", &["orders.>"]))
        .await
        .expect("consumer");
    assert_eq!(ids(&collect(&mut c, 3).await), ["m1", "m2", "m3"]);
}

async fn invalid_input_is_refused(bus: Arc<dyn Bus>) {
    for bad in [
        message("orders.*", "id"),
        message("orders.>", "id"),
        message("orders..placed", "id"),
        message("", "id"),
        message("orders.placed", ""),
        Message {
            headers: vec![("Nats-Msg-Id".into(), "x".into())],
            ..message("orders.placed", "id")
        },
        Message {
            headers: vec![("bad name".into(), "x".into())],
            ..message("orders.placed", "id")
        },
        Message {
            headers: vec![("ok".into(), "line\nbreak".into())],
            ..message("orders.placed", "id")
        },
    ] {
        assert!(bus.publish(bad.clone()).await.is_err(), "accepted {bad:?}");
    }
    for (durable, subjects) in [
        ("a.b", vec!["orders.>"]),
        ("", vec!["orders.>"]),
        ("d", vec!["orders.>.x"]),
    ] {
        assert!(
            bus.consumer(spec(durable, &subjects)).await.is_err(),
            "accepted {durable:?} {subjects:?}"
        );
    }
    let zero = ConsumerSpec {
        ack_wait: Duration::ZERO,
        ..spec("d", &["orders.>"])
    };
    assert!(bus.consumer(zero).await.is_err());
}

/// Several messages published together: each gets its own result, in order; an id already
/// stored, or repeated within the same call, is a duplicate; a malformed message fails alone;
/// what was stored is delivered once, in the order given.
async fn publishing_together_keeps_each_message_s_outcome(bus: Arc<dyn Bus>) {
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(&bus, [message("orders.placed", "m0")]).await;
    let results = bus
        .publish_all(vec![
            message("orders.placed", "m1"),
            message("orders.placed", "m0"),
            message("orders.*", "bad"),
            message("orders.placed", "m2"),
            message("orders.placed", "m1"),
        ])
        .await;
    let outcome: Vec<Option<bool>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|ack| ack.duplicate))
        .collect();
    assert_eq!(
        outcome,
        [Some(false), Some(true), None, Some(false), Some(true)]
    );
    assert!(bus.publish_all(Vec::new()).await.is_empty());
    let got = collect(&mut c, 4).await;
    assert_eq!(ids(&got), ["m0", "m1", "m2"]);
    assert_eq!(got[1].message.payload, Bytes::from("payload of m1"));
    assert_quiet(&mut c).await;
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        /// The volatile in-process bus.
        mod in_memory {
            $(
                #[tokio::test]
                async fn $case() {
                    let bus = agriportal_platform::bus::InProcessBus::memory("t");
                    assert_eq!(agriportal_platform::bus::Bus::kind(bus.as_ref()), super::BusKind::InProcess);
                    super::$case(bus).await;
                }
            )*
        }

        /// The in-process bus persisted in a SQLite file.
        mod in_sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let bus = agriportal_platform::bus::InProcessBus::open(&dir.path().join("bus.sqlite"), "t")
                        .await
                        .expect("open");
                    super::$case(bus).await;
                }
            )*
        }

        /// JetStream on the real server.
        mod jetstream {
            $(
                #[tokio::test]
                async fn $case() {
                    let test = concat!("bus_contract::jetstream::", stringify!($case));
                    let Some(server) = super::Nats::start(test, stringify!($case)).await else { return };
                    super::$case(server.bus.clone()).await;
                    server.clean_up().await;
                }
            )*
        }
    };
}

contract!(
    publish_fetch_ack_then_nothing_redelivered,
    fetch_returns_as_soon_as_a_message_arrives,
    unacked_is_redelivered_after_ack_wait,
    backlog_counts_what_is_not_acked,
    same_id_twice_is_a_duplicate,
    two_durables_each_get_every_message,
    handles_of_one_durable_share_the_work,
    position_survives_recreating_the_handle,
    headers_survive,
    subjects_are_filtered,
    a_single_publisher_is_delivered_in_order,
    a_later_consumer_gets_every_stored_message,
    invalid_input_is_refused,
    publishing_together_keeps_each_message_s_outcome,
);

/// A JetStream bus on its own stream.
struct Nats {
    bus: Arc<dyn Bus>,
    url: String,
    prefix: String,
}

impl Nats {
    async fn start(test: &str, name: &str) -> Option<Nats> {
        let url = nats_url(test).await?;
        let prefix = unique_prefix(name);
        let bus = JetStreamBus::connect(&url, &prefix, 1, 1 << 30)
            .await
            .expect("JetStream bus");
        assert_eq!(bus.stream(), stream_name(&prefix));
        assert_eq!(bus.kind(), BusKind::JetStream);
        Some(Nats { bus, url, prefix })
    }

    /// Deletes the test's stream (left behind if the test failed, for inspection).
    async fn clean_up(self) {
        let client = async_nats::connect(self.url.as_str())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        js.delete_stream(stream_name(&self.prefix))
            .await
            .expect("delete the test stream");
    }
}

/// A stream at its `max_bytes` refuses new messages with `BusError::Full` and keeps every one
/// it stored (`DiscardPolicy::New`: nothing unread is dropped to make room). The in-process
/// bus has no byte limit: it serves the embedded mode only, its file in the data directory
/// beside the SQLite stores, bounded by the same 30 days' maximum age.
#[tokio::test]
async fn jetstream_full_stream_refuses_publishes_and_keeps_what_it_stored() {
    let Some(url) = nats_url("bus_contract_full").await else {
        return;
    };
    let prefix = unique_prefix("busfull");
    let bus = JetStreamBus::connect(&url, &prefix, 1, 4096)
        .await
        .expect("JetStream bus");
    let mut stored = 0u64;
    let mut refusal = None;
    for i in 0..100 {
        let mut m = message("a.full", &format!("m{i}"));
        m.payload = Bytes::from(vec![1u8; 512]);
        match bus.publish(m).await {
            Ok(_) => stored += 1,
            Err(err) => {
                refusal = Some(err);
                break;
            }
        }
    }
    assert!(
        matches!(refusal, Some(agriportal_platform::bus::BusError::Full(_))),
        "{refusal:?} after {stored} messages"
    );
    assert!(stored > 0);
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream_name(&prefix)).await.expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    assert_eq!(state.messages, stored);
    assert_eq!(state.first_sequence, 1, "the oldest message was dropped");
    js.delete_stream(stream_name(&prefix))
        .await
        .expect("delete the test stream");
}

/// A stream made before the byte limit (discarding old messages, unbounded) is updated in
/// place on connect: an upgrade needs no manual step.
#[tokio::test]
async fn jetstream_existing_stream_gets_the_byte_limit_in_place() {
    use async_nats::jetstream::stream::{Config, DiscardPolicy};
    let Some(url) = nats_url("bus_contract_upgrade").await else {
        return;
    };
    let prefix = unique_prefix("busupgrade");
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(Config {
        name: stream_name(&prefix),
        subjects: vec![format!("{prefix}.>")],
        discard: DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .expect("the old stream");
    JetStreamBus::connect(&url, &prefix, 1, 4096)
        .await
        .expect("JetStream bus");
    let mut stream = js.get_stream(stream_name(&prefix)).await.expect("stream");
    let config = stream.info().await.expect("stream info").config.clone();
    assert_eq!(config.discard, DiscardPolicy::New);
    assert_eq!(config.max_bytes, 4096);
    js.delete_stream(stream_name(&prefix))
        .await
        .expect("delete the test stream");
}

#[tokio::test]
async fn jetstream_connect_to_nothing_is_unavailable() {
    let started = Instant::now();
    let err = JetStreamBus::connect("nats://127.0.0.1:1", "t", 1, 1 << 30)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, agriportal_platform::bus::BusError::Unavailable(_)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

// ---------------------------------------------------------------------------------------------
// The persisted in-process bus alone.

async fn open(path: &Path) -> Arc<InProcessBus> {
    InProcessBus::open(path, "t").await.expect("open")
}

#[tokio::test]
async fn reopening_redelivers_what_was_not_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus.sqlite");
    {
        let bus = open(&path).await;
        let dynbus: Arc<dyn Bus> = bus.clone();
        let mut d = bus
            .consumer(spec("d", &["orders.>"]))
            .await
            .expect("consumer");
        let _e = bus
            .consumer(spec("e", &["orders.>"]))
            .await
            .expect("consumer");
        publish_all(
            &dynbus,
            (1..=4).map(|i| message("orders.placed", &format!("m{i}"))),
        )
        .await;
        let got = d.fetch(10, FETCH_WAIT).await.expect("fetch");
        assert_eq!(ids(&got), ["m1", "m2", "m3", "m4"]);
        got[0].ack().await.expect("ack");
        got[2].ack().await.expect("ack");
        bus.close().await;
    }

    let bus = open(&path).await;
    let mut d = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let got = d.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(ids(&got), ["m2", "m4"], "only the unacked ones come back");
    assert!(
        got.iter().all(|d| d.delivered == 2),
        "delivery counts are remembered"
    );
    for g in &got {
        g.ack().await.expect("ack");
    }
    assert!(d.fetch(10, QUIET).await.expect("fetch").is_empty());

    // `e` never fetched: it gets everything, for the first time.
    let mut e = bus
        .consumer(spec("e", &["orders.>"]))
        .await
        .expect("consumer");
    let got = e.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(ids(&got), ["m1", "m2", "m3", "m4"]);
    assert!(got.iter().all(|d| d.delivered == 1));

    // The de-duplication window survives too.
    assert!(
        bus.publish(message("orders.placed", "m1"))
            .await
            .expect("publish")
            .duplicate
    );
    assert!(
        !bus.publish(message("orders.placed", "m5"))
            .await
            .expect("publish")
            .duplicate
    );
}

/// The child half of [`persisted_bus_survives_kill_9`]: does nothing unless that test runs it.
#[tokio::test]
async fn kill_9_child() {
    let Ok(path) = std::env::var("BUS_CONTRACT_KILL_9_FILE") else {
        return;
    };
    let bus = open(Path::new(&path)).await;
    let dynbus: Arc<dyn Bus> = bus.clone();
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(
        &dynbus,
        (1..=6).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    let got = c.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(got.len(), 6);
    for d in &got[..3] {
        d.ack().await.expect("ack");
    }
    println!("\nBUS-CONTRACT-CHILD-READY");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn persisted_bus_survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus.sqlite");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["kill_9_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("BUS_CONTRACT_KILL_9_FILE", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let ready = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("BUS-CONTRACT-CHILD-READY"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), ready).await;
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert!(matches!(ready, Ok(Ok(true))), "the child never got ready");

    let bus = open(&path).await;
    let mut c = bus
        .consumer(spec("d", &["orders.>"]))
        .await
        .expect("consumer");
    let got = c.fetch(10, FETCH_WAIT).await.expect("fetch");
    assert_eq!(
        ids(&got),
        ["m4", "m5", "m6"],
        "acked messages stay acked, unacked come back"
    );
    assert!(got.iter().all(|d| d.delivered == 2));
    assert!(
        bus.publish(message("orders.placed", "m1"))
            .await
            .expect("publish")
            .duplicate
    );
}

#[tokio::test]
async fn retention_prunes_what_every_durable_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus.sqlite");
    let window = Duration::from_millis(300);
    {
        let bus = open(&path).await;
        bus.set_dedup_window(window);
        let dynbus: Arc<dyn Bus> = bus.clone();
        let mut a = bus
            .consumer(spec("a", &["orders.>"]))
            .await
            .expect("consumer");
        let mut b = bus
            .consumer(spec("b", &["orders.>"]))
            .await
            .expect("consumer");
        let mut other = bus
            .consumer(spec("other", &["content.>"]))
            .await
            .expect("consumer");
        publish_all(
            &dynbus,
            (1..=5).map(|i| message("orders.placed", &format!("m{i}"))),
        )
        .await;
        assert_eq!(collect(&mut a, 5).await.len(), 5);
        tokio::time::sleep(window).await;
        assert_eq!(bus.prune().await.expect("prune"), 0, "b has not acked");
        assert_eq!(bus.stored_messages().await, 5);

        let got = collect(&mut b, 5).await;
        assert_eq!(got.len(), 5);
        // `other` wants none of them, so it holds nothing back.
        assert!(other
            .fetch(10, Duration::from_millis(100))
            .await
            .expect("fetch")
            .is_empty());
        tokio::time::sleep(window).await;
        assert_eq!(bus.prune().await.expect("prune"), 5);
        assert_eq!(bus.stored_messages().await, 0);
        assert!(
            !bus.publish(message("orders.placed", "m1"))
                .await
                .expect("publish")
                .duplicate,
            "window passed"
        );
        assert_eq!(ids(&collect(&mut a, 1).await), ["m1"]);
        bus.close().await;
    }

    // After reopening, sequences continue: nothing new is mistaken for acked.
    let bus = open(&path).await;
    assert_eq!(bus.stored_messages().await, 1, "m1 is still unacked by b");
    let mut b = bus
        .consumer(spec("b", &["orders.>"]))
        .await
        .expect("consumer");
    let dynbus: Arc<dyn Bus> = bus.clone();
    publish_all(&dynbus, [message("orders.placed", "m6")]).await;
    assert_eq!(ids(&collect(&mut b, 2).await), ["m1", "m6"]);
    let mut a = bus
        .consumer(spec("a", &["orders.>"]))
        .await
        .expect("consumer");
    assert_eq!(ids(&collect(&mut a, 1).await), ["m6"]);
    bus.set_dedup_window(Duration::ZERO);
    assert_eq!(bus.prune().await.expect("prune"), 2);
}

#[tokio::test]
async fn retention_applies_to_the_volatile_bus_too() {
    let bus = InProcessBus::memory("t");
    bus.set_dedup_window(Duration::ZERO);
    let dynbus: Arc<dyn Bus> = bus.clone();
    let mut a = bus
        .consumer(spec("a", &["orders.>"]))
        .await
        .expect("consumer");
    publish_all(
        &dynbus,
        (1..=3).map(|i| message("orders.placed", &format!("m{i}"))),
    )
    .await;
    let got = collect(&mut a, 3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(bus.prune().await.expect("prune"), 3);
    assert_eq!(bus.stored_messages().await, 0);
    let seen: BTreeSet<String> = ids(&got).into_iter().collect();
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn acked_payloads_leave_memory_at_once_and_stay_in_the_file_for_the_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus.sqlite");
    {
        let bus = open(&path).await;
        let dynbus: Arc<dyn Bus> = bus.clone();
        let mut a = bus
            .consumer(spec("a", &["orders.>"]))
            .await
            .expect("consumer");
        let mut other = bus
            .consumer(spec("other", &["content.>"]))
            .await
            .expect("consumer");
        publish_all(
            &dynbus,
            (1..=4).map(|i| message("orders.placed", &format!("m{i}"))),
        )
        .await;
        publish_all(&dynbus, [message("content.published", "c1")]).await;
        assert_eq!(bus.messages_in_memory().await, 5);
        assert_eq!(collect(&mut a, 4).await.len(), 4);
        // `other` wants none of m1..m4, so their payloads leave memory with `a`'s acks, before
        // `other`'s floor moves over them (at its own acks, or when the bus prunes every 30 s).
        // `other` has not acked c1, so its payload (and only its) stays in memory; the acked
        // ones stay in the file, within the de-duplication window.
        assert_eq!(bus.messages_in_memory().await, 1);
        assert_eq!(bus.prune().await.expect("prune"), 0);
        assert_eq!(bus.messages_in_memory().await, 1);
        assert_eq!(bus.stored_messages().await, 5);
        assert!(
            bus.publish(message("orders.placed", "m2"))
                .await
                .expect("publish")
                .duplicate,
            "an evicted message's id is still known"
        );
        assert_eq!(ids(&collect(&mut other, 1).await), ["c1"]);
        assert_eq!(bus.messages_in_memory().await, 0);

        // A durable created now sees every message the file still has, payloads included.
        let mut late = bus
            .consumer(spec("late", &["orders.>"]))
            .await
            .expect("consumer");
        let got = collect(&mut late, 4).await;
        assert_eq!(ids(&got), ["m1", "m2", "m3", "m4"]);
        assert_eq!(got[1].message.payload, Bytes::from("payload of m2"));
        assert_eq!(bus.messages_in_memory().await, 0);
        bus.close().await;
    }
    // After a restart, acked messages are not loaded into memory, and their ids still count
    // as duplicates within the window.
    let bus = open(&path).await;
    assert_eq!(bus.messages_in_memory().await, 0);
    assert_eq!(bus.stored_messages().await, 5);
    assert!(
        bus.publish(message("orders.placed", "m3"))
            .await
            .expect("publish")
            .duplicate
    );
    bus.set_dedup_window(Duration::ZERO);
    assert_eq!(bus.prune().await.expect("prune"), 5);
    assert_eq!(bus.stored_messages().await, 0);
}

#[tokio::test]
async fn a_bus_file_is_used_by_one_bus_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bus.sqlite");
    let first = open(&path).await;
    let started = Instant::now();
    let second = InProcessBus::open(&path, "t").await;
    let Err(err) = second else {
        panic!("a second bus on the same file would diverge from the first");
    };
    assert!(err.to_string().contains("in use"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    first.close().await;
    let err = first
        .publish(message("orders.placed", "x"))
        .await
        .expect_err("closed");
    assert!(matches!(
        err,
        agriportal_platform::bus::BusError::Unavailable(_)
    ));
    open(&path).await;
}
