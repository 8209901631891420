//! Event intake, owned by the kit: a durable consumer that applies a batch of events and
//! records their ids in the inbox in one transaction, acks only after the commit, retries
//! outages with backoff, and parks what can never be applied.
//!
//! A service gives a [`Handler`]: the topics it handles (typed, from `agriportal-proto`, so no
//! subject is written here twice) and how to apply a batch of decoded events inside the kit's
//! transaction. The kit does the rest:
//!
//! - **Idempotent.** Each event's id (the id inside the payload, so an event re-published under
//!   another message id is still known) is inserted into the service's `inbox` in the same
//!   transaction as its effects; an id already there is acknowledged without being applied.
//! - **Ack after commit.** Nothing is acknowledged before its effects (or its parking) are
//!   committed; a crash in between redelivers, and the inbox drops the second copy.
//! - **Outages are waited out.** A failure the database or bus explains
//!   ([`ErrorCode::Unavailable`]) is retried with backoff for as long as it lasts, and never
//!   counts against an event.
//! - **Poison is parked.** An event that cannot be decoded, or whose subject no topic of the
//!   handler names, is parked at once; an event whose apply fails for any other reason is
//!   retried alone (the rest of its batch is applied without it) up to
//!   [`ConsumerOptions::max_attempts`] times, then parked. Parking writes the whole message
//!   and the reason to `parked_events`, counts it, and logs a warning; the message is then
//!   acknowledged, so one poison event neither blocks the consumer nor disappears silently.
//!   `agriportal events parked` lists them; `agriportal events replay <service>:<id>` asks the
//!   running consumer to apply one again (through this same path) once the cause is fixed.
//!
//! Parking skips an event: handlers whose effects commute (sums of deltas, as the gateway's)
//! stay exact once it is replayed; a handler whose events must apply in order should refuse
//! later events itself until the parked one is resolved.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agriportal_proto::{Event, Topic};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::bus::{self, Bus, Delivery, Message};
use crate::error::{Error, ErrorCode, Result};
use crate::metrics::{self, Counter, EncodeLabelSet, Family, Gauge};
use crate::storage::{now_ms, Database, Tx, TxInner};
use crate::telemetry::set_parent_from_headers;
use crate::{with_db, with_tx};

/// An event decoded from a delivery: its id (for the inbox) and what the handler made of it.
#[derive(Clone, Debug)]
pub struct Decoded<E> {
    /// The event's id, from its payload.
    pub event_id: String,
    /// The handler's value.
    pub event: E,
}

type DecodeFn<E> = Box<dyn Fn(&[u8]) -> std::result::Result<Decoded<E>, String> + Send + Sync>;

/// The topics a handler consumes, each with how its payload becomes the handler's event type.
pub struct Subscriptions<E> {
    routes: Vec<(&'static str, DecodeFn<E>)>,
}

impl<E> Default for Subscriptions<E> {
    fn default() -> Self {
        Subscriptions { routes: Vec::new() }
    }
}

impl<E: 'static> Subscriptions<E> {
    /// No topics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles `topic`: its payload is decoded as the topic's type and turned into `E` by
    /// `convert`; an `Err` from `convert` (a payload that decodes but makes no sense) parks
    /// the event with that reason.
    pub fn on<M: Event>(
        mut self,
        topic: Topic<M>,
        convert: impl Fn(M) -> std::result::Result<E, String> + Send + Sync + 'static,
    ) -> Self {
        let decode = move |payload: &[u8]| {
            let message = topic
                .decode(payload)
                .map_err(|e| format!("not a valid {} payload: {e}", topic.subject()))?;
            let event_id = message.event_id().to_string();
            if event_id.is_empty() {
                return Err(format!("a {} event without an event_id", topic.subject()));
            }
            Ok(Decoded {
                event_id,
                event: convert(message)?,
            })
        };
        self.routes.push((topic.subject(), Box::new(decode)));
        self
    }

    /// The exact subjects handled.
    pub fn subjects(&self) -> Vec<&'static str> {
        self.routes.iter().map(|(s, _)| *s).collect()
    }

    /// The durable's filter: `<service>.>` for each publishing service of the topics. A filter
    /// per service rather than per subject keeps a durable's filter stable as a producer adds
    /// events (a changed filter re-creates the durable on some brokers), and a subject under it
    /// that no topic handles is parked, visibly, instead of silently dropped.
    pub fn filters(&self) -> Vec<String> {
        let services: BTreeSet<&str> = self
            .routes
            .iter()
            .map(|(s, _)| agriportal_proto::topic::service_of(s))
            .collect();
        services.into_iter().map(|s| format!("{s}.>")).collect()
    }

    /// Decodes `message`; `Err` says why it can never be applied.
    pub fn decode(&self, message: &Message) -> std::result::Result<Decoded<E>, String> {
        match self.routes.iter().find(|(s, _)| *s == message.subject) {
            Some((_, decode)) => decode(&message.payload),
            None => Err(format!(
                "no handler for subject `{}` (this consumer handles {})",
                message.subject,
                self.subjects().join(", ")
            )),
        }
    }
}

/// What a service gives the kit to consume events.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// What one event becomes.
    type Event: Send + Sync + 'static;

    /// The topics handled (asked once, when the consumer starts).
    fn subscriptions(&self) -> Subscriptions<Self::Event>;

    /// Applies events not applied before, inside `tx`. The kit has already recorded their ids
    /// in the inbox in `tx`, and commits it afterwards; an error rolls everything back. Return
    /// [`ErrorCode::Unavailable`] for outages (retried without limit), anything else for an
    /// event that cannot be applied (retried alone, then parked).
    async fn apply(&self, tx: &mut Tx, events: &[&Decoded<Self::Event>]) -> Result<()>;

    /// Called after a commit that applied `applied` new events (to refresh what is derived
    /// from the store, such as an in-memory read model).
    fn committed(&self, _applied: usize) {}
}

/// A consumer's settings.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Durable name; every replica of the service shares it (and so the work and position).
    pub durable: String,
    /// A delivered event not acked within this time is delivered again.
    pub ack_wait: Duration,
    /// Events fetched at once, and applied per transaction at most.
    pub batch: usize,
    /// Payload bytes applied per transaction at most (a single larger event goes alone): a
    /// fetch past it is applied in several transactions, in order. The decoded events of a
    /// fold are in memory together, several times their payload, so a consumer that lags
    /// behind large events (`bench scale`'s 10,000-record batches, ~0.5 MiB each) no longer
    /// decodes a whole fetch of them at once (it peaked at 1.1 GiB resident with 400,000
    /// lines behind, for a gateway otherwise at 200 MiB).
    pub fold_bytes: usize,
    /// Failed applies of one event (alone) before it is parked.
    pub max_attempts: u32,
    /// How long one fetch waits for events.
    pub fetch_wait: Duration,
    /// How often the consumer looks for parked events whose replay was asked for.
    pub replay_poll: Duration,
}

impl ConsumerOptions {
    /// Defaults for the durable `durable`: 30 s ack wait, batches of 256 events and 8 MiB,
    /// 5 attempts.
    pub fn new(durable: impl Into<String>) -> Self {
        ConsumerOptions {
            durable: durable.into(),
            ack_wait: Duration::from_secs(30),
            batch: 256,
            fold_bytes: 8 * 1024 * 1024,
            max_attempts: 5,
            fetch_wait: Duration::from_secs(1),
            replay_poll: Duration::from_secs(1),
        }
    }
}

/// What others (reconciliation, tests) may know of a consumer: whether it recently found
/// nothing left to apply with nothing delivered and unacked, and whether it is failing.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    drained_at_ms: AtomicI64,
    failing: AtomicBool,
}

impl ConsumerHealth {
    /// True when the last fetch or apply succeeded and a fetch found nothing to apply, with a
    /// zero backlog, within the last `within`.
    pub fn caught_up(&self, within: Duration) -> bool {
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        !self.failing.load(Ordering::SeqCst)
            && now_ms().saturating_sub(self.drained_at_ms.load(Ordering::SeqCst)) <= within
    }

    fn drained(&self) {
        self.failing.store(false, Ordering::SeqCst);
        self.drained_at_ms.store(now_ms(), Ordering::SeqCst);
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// A running consumer's shared state.
struct Intake<H: Handler> {
    handler: H,
    subscriptions: Subscriptions<H::Event>,
    options: ConsumerOptions,
    db: Database,
    health: Arc<ConsumerHealth>,
    shutdown: CancellationToken,
}

/// Starts consuming for `handler` into `db` from `bus` until `shutdown`; returns its health.
pub fn spawn<H: Handler>(
    handler: H,
    options: ConsumerOptions,
    db: Database,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Arc<ConsumerHealth> {
    let health = Arc::new(ConsumerHealth::default());
    let intake = Arc::new(Intake {
        subscriptions: handler.subscriptions(),
        handler,
        options,
        db,
        health: health.clone(),
        shutdown,
    });
    tasks.spawn(async move { intake.run(bus).await });
    health
}

/// How many of `deliveries`, from the first, one transaction applies: as many as fit in
/// `max_bytes` of payload, and at least one.
fn fold_len(deliveries: &[Delivery], max_bytes: usize) -> usize {
    fold_len_of(
        deliveries.iter().map(|d| d.message.payload.len()),
        max_bytes,
    )
}

fn fold_len_of(sizes: impl IntoIterator<Item = usize>, max_bytes: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if n > 0 && total > max_bytes {
            break;
        }
        n += 1;
    }
    n
}

/// One apply attempt's outcome for a set of events.
enum Attempt {
    /// Committed.
    Applied,
    /// An outage: retry the same later.
    Outage(Error),
    /// The events (or one of them) cannot be applied.
    Failed(Error),
    /// The handler refused the events (or one of them) as never applicable
    /// ([`Error::permanent`], such as figures that would overflow): no retry can help.
    Rejected(Error),
}

impl<H: Handler> Intake<H> {
    fn name(&self) -> &str {
        &self.options.durable
    }

    async fn run(self: Arc<Self>, bus: Arc<dyn Bus>) {
        let mut backoff = Backoff::default();
        let spec = bus::ConsumerSpec {
            durable: self.options.durable.clone(),
            subjects: self.subscriptions.filters(),
            ack_wait: self.options.ack_wait,
        };
        'bind: loop {
            let bound = tokio::select! {
                c = bus.consumer(spec.clone()) => c,
                _ = self.shutdown.cancelled() => return,
            };
            let mut consumer = match bound {
                Ok(c) => c,
                Err(err) => {
                    self.health.set_failing(true);
                    tracing::warn!(error = %err, consumer = self.name(), "cannot bind the consumer; retrying");
                    if backoff.wait(&self.shutdown).await {
                        return;
                    }
                    continue 'bind;
                }
            };
            let mut replay_checked = tokio::time::Instant::now();
            loop {
                if replay_checked.elapsed() >= self.options.replay_poll {
                    replay_checked = tokio::time::Instant::now();
                    if let Err(err) = self.replay_requested().await {
                        tracing::warn!(error = %err, consumer = self.name(), "replaying parked events failed; will retry");
                    }
                }
                let fetched = tokio::select! {
                    f = consumer.fetch(self.options.batch, self.options.fetch_wait) => f,
                    _ = self.shutdown.cancelled() => return,
                };
                let deliveries = match fetched {
                    Ok(d) => d,
                    Err(err) => {
                        self.health.set_failing(true);
                        tracing::warn!(error = %err, consumer = self.name(), "fetching events failed; retrying");
                        if backoff.wait(&self.shutdown).await {
                            return;
                        }
                        continue;
                    }
                };
                backoff.reset();
                if deliveries.is_empty() {
                    // Nothing to fetch is not yet nothing in flight: a delivery another
                    // replica (or a killed process) holds unacked comes back after ack_wait.
                    match consumer.backlog().await {
                        Ok(lag) => {
                            consumer_metrics()
                                .lag
                                .get_or_create(&self.label())
                                .set(clamp(lag));
                            if lag == 0 {
                                self.health.drained();
                            }
                        }
                        Err(err) => {
                            self.health.set_failing(true);
                            tracing::debug!(error = %err, "cannot read the consumer's backlog");
                        }
                    }
                    continue;
                }
                let mut rest = deliveries;
                while !rest.is_empty() {
                    // Each fold's payloads are dropped once it is acked, before the next one
                    // is decoded.
                    let fold: Vec<Delivery> = rest
                        .drain(..fold_len(&rest, self.options.fold_bytes))
                        .collect();
                    if !self.process(&fold).await {
                        return;
                    }
                    // Every effect is committed: the acks go out together (one round trip's
                    // wait for the lot on JetStream, not one each). Any that fails is not
                    // lost: its message comes back after ack_wait and the inbox skips it.
                    let acks = futures::future::join_all(fold.iter().map(Delivery::ack)).await;
                    for err in acks.into_iter().filter_map(|a| a.err()) {
                        tracing::warn!(error = %err, consumer = self.name(), "ack failed");
                    }
                }
            }
        }
    }

    fn label(&self) -> ConsumerLabels {
        ConsumerLabels {
            consumer: self.options.durable.clone(),
        }
    }

    /// Applies or parks every delivery; `false` when shutdown came first (nothing may be
    /// acked then: what was not committed must come back).
    async fn process(&self, deliveries: &[Delivery]) -> bool {
        let mut events = Vec::with_capacity(deliveries.len());
        let mut poison = Vec::new();
        for delivery in deliveries {
            match self.subscriptions.decode(&delivery.message) {
                Ok(decoded) => events.push((delivery, decoded)),
                Err(reason) => poison.push((delivery, reason)),
            }
        }
        for (delivery, reason) in poison {
            if !self.park(&delivery.message, "", &reason, 0).await {
                return false;
            }
        }
        if events.is_empty() {
            return true;
        }
        let batch: Vec<&Decoded<H::Event>> = events.iter().map(|(_, d)| d).collect();
        let span = tracing::info_span!("apply_events", consumer = self.name(), count = batch.len());
        if let Some(first) = events.first() {
            set_parent_from_headers(&span, &first.0.message.headers);
        }
        let mut backoff = Backoff::default();
        loop {
            match self.attempt(&batch).instrument(span.clone()).await {
                Attempt::Applied => return true,
                Attempt::Outage(err) => {
                    self.health.set_failing(true);
                    tracing::warn!(error = %err, consumer = self.name(), "applying events failed (an outage); retrying");
                    if backoff.wait(&self.shutdown).await {
                        return false;
                    }
                }
                Attempt::Failed(err) if batch.len() == 1 => {
                    let (delivery, decoded) = &events[0];
                    return self.retry_alone(delivery, decoded, err).await;
                }
                Attempt::Rejected(err) if batch.len() == 1 => {
                    let (delivery, decoded) = &events[0];
                    return self.reject(delivery, decoded, err).await;
                }
                Attempt::Failed(err) | Attempt::Rejected(err) => {
                    tracing::warn!(error = %err, consumer = self.name(), events = batch.len(),
                        "a batch of events failed to apply; applying them one at a time");
                    for (delivery, decoded) in &events {
                        let first = match self.attempt_until_not_outage(&[decoded]).await {
                            Some(outcome) => outcome,
                            None => return false,
                        };
                        match first {
                            Attempt::Failed(err) => {
                                if !self.retry_alone(delivery, decoded, err).await {
                                    return false;
                                }
                            }
                            Attempt::Rejected(err) => {
                                if !self.reject(delivery, decoded, err).await {
                                    return false;
                                }
                            }
                            Attempt::Applied | Attempt::Outage(_) => {}
                        }
                    }
                    return true;
                }
            }
        }
    }

    /// Attempts until the outcome is not an outage; `None` on shutdown.
    async fn attempt_until_not_outage(&self, events: &[&Decoded<H::Event>]) -> Option<Attempt> {
        let mut backoff = Backoff::default();
        loop {
            match self.attempt(events).await {
                Attempt::Outage(err) => {
                    self.health.set_failing(true);
                    tracing::warn!(error = %err, consumer = self.name(), "applying an event failed (an outage); retrying");
                    if backoff.wait(&self.shutdown).await {
                        return None;
                    }
                }
                other => return Some(other),
            }
        }
    }

    /// One event that failed once: retried alone up to `max_attempts` in all, then parked.
    /// `false` on shutdown.
    async fn retry_alone(
        &self,
        delivery: &Delivery,
        decoded: &Decoded<H::Event>,
        first: Error,
    ) -> bool {
        let mut attempts = 1u32;
        let mut last = first;
        let mut backoff = Backoff::default();
        let one = [decoded];
        while attempts < self.options.max_attempts {
            consumer_metrics()
                .failures
                .get_or_create(&self.label())
                .inc();
            if backoff.wait(&self.shutdown).await {
                return false;
            }
            match self.attempt(&one).await {
                Attempt::Applied => return true,
                // An outage is no evidence against the event: wait it out without counting.
                Attempt::Outage(err) => {
                    self.health.set_failing(true);
                    tracing::warn!(error = %err, consumer = self.name(), "applying an event failed (an outage); retrying");
                }
                Attempt::Failed(err) => {
                    attempts += 1;
                    last = err;
                }
                Attempt::Rejected(err) => return self.reject(delivery, decoded, err).await,
            }
        }
        consumer_metrics()
            .failures
            .get_or_create(&self.label())
            .inc();
        let reason = format!("apply failed {attempts} times: {}", last.message);
        self.park(&delivery.message, &decoded.event_id, &reason, attempts)
            .await
    }

    /// One event its handler refused alone as never applicable (figures that would overflow
    /// a total): parked at once, without retries. `false` on shutdown.
    async fn reject(&self, delivery: &Delivery, decoded: &Decoded<H::Event>, err: Error) -> bool {
        consumer_metrics()
            .failures
            .get_or_create(&self.label())
            .inc();
        let reason = format!("refused by its handler: {}", err.message);
        self.park(&delivery.message, &decoded.event_id, &reason, 1)
            .await
    }

    /// One transaction: inbox claims, apply, commit.
    async fn attempt(&self, events: &[&Decoded<H::Event>]) -> Attempt {
        match self.apply_once(events).await {
            Ok((claimed, duplicates)) => {
                self.health.set_failing(false);
                let m = consumer_metrics();
                m.applied
                    .get_or_create(&self.label())
                    .inc_by(claimed as u64);
                m.duplicates
                    .get_or_create(&self.label())
                    .inc_by(duplicates as u64);
                if claimed > 0 {
                    self.handler.committed(claimed);
                }
                Attempt::Applied
            }
            Err(err) if err.code == ErrorCode::Unavailable => Attempt::Outage(err),
            Err(err) if err.permanent => Attempt::Rejected(err),
            Err(err) => Attempt::Failed(err),
        }
    }

    async fn apply_once(&self, events: &[&Decoded<H::Event>]) -> Result<(usize, usize)> {
        let applied = apply(&self.db, &self.handler, events).await?;
        Ok((applied.new, applied.duplicates))
    }

    /// Parks `message` (idempotent per message id); retried through outages. `false` on
    /// shutdown.
    async fn park(&self, message: &Message, event_id: &str, reason: &str, attempts: u32) -> bool {
        let mut backoff = Backoff::default();
        loop {
            match park(&self.db, self.name(), message, event_id, reason, attempts).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(error = %err, consumer = self.name(), "cannot park an event yet; retrying");
                    if backoff.wait(&self.shutdown).await {
                        return false;
                    }
                }
            }
        }
        consumer_metrics().parked.get_or_create(&self.label()).inc();
        tracing::warn!(
            consumer = self.name(),
            subject = %message.subject,
            message_id = %message.id,
            event_id,
            reason,
            "parked an event that cannot be applied (list: `agriportal events parked`; \
             replay once fixed: `agriportal events replay <service>:<id>`)"
        );
        true
    }

    /// Applies the parked events whose replay was asked for, each in one transaction with the
    /// removal of its parked row; one that fails again stays parked with the new reason.
    async fn replay_requested(&self) -> Result<()> {
        let requested: Vec<ParkedRow> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT id, consumer, message_id, event_id, subject, headers, payload, reason, attempts, \
                 parked_at_ms, replay_requested_at_ms FROM parked_events \
                 WHERE consumer = $1 AND replay_requested_at_ms IS NOT NULL ORDER BY id",
            )
            .bind(self.name())
            .fetch_all(pool)
            .await?
        });
        for row in requested {
            let message = row.message();
            let outcome = match self.subscriptions.decode(&message) {
                Ok(decoded) => self.replay_one(row.id, &decoded).await,
                Err(reason) => Err(Error::invalid(reason)),
            };
            match outcome {
                Ok(()) => {
                    tracing::info!(consumer = self.name(), id = row.id, event_id = %row.event_id, "replayed a parked event");
                }
                Err(err) if err.code == ErrorCode::Unavailable => return Err(err),
                Err(err) => {
                    let reason = format!("replay failed: {}", err.message);
                    let mut tx = self.db.begin().await?;
                    with_tx!(&mut tx, |conn| {
                        sqlx::query(
                            "UPDATE parked_events SET reason = $1, attempts = attempts + 1, \
                             replay_requested_at_ms = NULL WHERE id = $2",
                        )
                        .bind(&reason)
                        .bind(row.id)
                        .execute(&mut *conn)
                        .await?;
                    });
                    tx.commit().await?;
                    tracing::warn!(
                        consumer = self.name(),
                        id = row.id,
                        reason,
                        "a parked event failed again on replay"
                    );
                }
            }
        }
        Ok(())
    }

    async fn replay_one(&self, id: i64, decoded: &Decoded<H::Event>) -> Result<()> {
        let mut tx = self.db.begin().await?;
        // Another replica may have replayed it meanwhile: only the one that removes the row
        // applies it, and the inbox stops a second application in any case.
        let removed = with_tx!(&mut tx, |conn| {
            sqlx::query(
                "DELETE FROM parked_events WHERE id = $1 AND replay_requested_at_ms IS NOT NULL",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        if removed == 1 && claim(&mut tx, &decoded.event_id).await? {
            self.handler.apply(&mut tx, &[decoded]).await?;
            tx.commit().await?;
            consumer_metrics()
                .applied
                .get_or_create(&self.label())
                .inc();
            self.handler.committed(1);
            return Ok(());
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What one [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Events applied now.
    pub new: usize,
    /// Events found in the inbox (applied before) and skipped.
    pub duplicates: usize,
}

/// The consumer's transaction, for a batch of decoded events: each id is claimed in the
/// inbox, the new ones are applied by `handler`, and all of it commits together. The consumer
/// runs every batch through this; tests of a handler call it to apply events exactly as the
/// consumer does.
pub async fn apply<H: Handler>(
    db: &Database,
    handler: &H,
    events: &[&Decoded<H::Event>],
) -> Result<Applied> {
    // Sorted by id: concurrent replicas claim inbox rows in one order and cannot deadlock.
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by(|a, b| events[*a].event_id.cmp(&events[*b].event_id));
    order.dedup_by(|a, b| events[*a].event_id == events[*b].event_id);
    let mut tx = db.begin().await?;
    let ids: Vec<&str> = order.iter().map(|i| events[*i].event_id.as_str()).collect();
    let new_ids = claim_all(&mut tx, &ids).await?;
    let fresh: Vec<&Decoded<H::Event>> = order
        .into_iter()
        .map(|i| events[i])
        .filter(|e| new_ids.contains(e.event_id.as_str()))
        .collect();
    if !fresh.is_empty() {
        handler.apply(&mut tx, &fresh).await?;
    }
    tx.commit().await?;
    Ok(Applied {
        new: fresh.len(),
        duplicates: events.len() - fresh.len(),
    })
}

/// Inbox ids claimed per SQLite statement: two parameters' worth under its limit of 32766
/// bound parameters, whatever `ConsumerOptions::batch` says.
const CLAIMS_PER_STATEMENT: usize = 16_000;

/// Records `event_ids` (sorted and unique, so that concurrent replicas take the inbox's row
/// locks in one order and cannot deadlock) in the inbox inside `tx`, in one statement per
/// [`CLAIMS_PER_STATEMENT`] instead of one per event; returns the ids that were new and must
/// be applied (an id already there was applied before).
pub async fn claim_all(tx: &mut Tx, event_ids: &[&str]) -> Result<HashSet<String>> {
    let mut fresh = HashSet::with_capacity(event_ids.len());
    let now = now_ms();
    for chunk in event_ids.chunks(CLAIMS_PER_STATEMENT) {
        let inserted: Vec<String> = match tx.inner_mut() {
            TxInner::Postgres(conn) => {
                // WITH ORDINALITY … ORDER BY: the rows go in in the array's (sorted) order.
                sqlx::query_scalar(
                    "INSERT INTO inbox (event_id, applied_at_ms) \
                     SELECT id, $2 FROM UNNEST($1::text[]) WITH ORDINALITY AS t(id, n) ORDER BY n \
                     ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                )
                .bind(chunk)
                .bind(now)
                .fetch_all(&mut **conn)
                .await?
            }
            TxInner::Sqlite(conn) => {
                // Anonymous parameters, each row binding its own `now`: SQLite looks numbered
                // ones up in a list, once per parameter, as it binds them (quadratic).
                let sql = format!(
                    "INSERT INTO inbox (event_id, applied_at_ms) VALUES {} \
                     ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query_scalar(&sql);
                for id in chunk {
                    query = query.bind(*id).bind(now);
                }
                query.fetch_all(&mut **conn).await?
            }
        };
        fresh.extend(inserted);
    }
    Ok(fresh)
}

/// Records `event_id` in the inbox inside `tx`; `true` when it is new and must be applied.
pub async fn claim(tx: &mut Tx, event_id: &str) -> Result<bool> {
    let inserted = with_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO inbox (event_id, applied_at_ms) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?
        .rows_affected()
    });
    Ok(inserted == 1)
}

async fn park(
    db: &Database,
    consumer: &str,
    message: &Message,
    event_id: &str,
    reason: &str,
    attempts: u32,
) -> Result<()> {
    let headers = serde_json::to_string(&message.headers).map_err(Error::internal)?;
    let mut tx = db.begin().await?;
    with_tx!(&mut tx, |conn| {
        sqlx::query(
            "INSERT INTO parked_events (consumer, message_id, event_id, subject, headers, payload, reason, \
             attempts, parked_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (consumer, message_id) DO UPDATE SET reason = excluded.reason, \
             attempts = parked_events.attempts + excluded.attempts, parked_at_ms = excluded.parked_at_ms",
        )
        .bind(consumer)
        .bind(&message.id)
        .bind(event_id)
        .bind(&message.subject)
        .bind(headers)
        .bind(message.payload.as_ref())
        .bind(reason)
        .bind(i64::from(attempts))
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    });
    tx.commit().await?;
    Ok(())
}

/// A parked event, as stored.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct ParkedRow {
    /// Its id in the service's `parked_events`.
    pub id: i64,
    /// The durable that parked it.
    pub consumer: String,
    /// The bus message id.
    pub message_id: String,
    /// The event id from the payload (empty when it could not be decoded).
    pub event_id: String,
    /// The relative subject.
    pub subject: String,
    /// Headers, as JSON pairs.
    #[serde(skip)]
    pub headers: String,
    /// The payload as received.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// Why it was parked (or why its last replay failed).
    pub reason: String,
    /// Failed applies so far.
    pub attempts: i64,
    /// When it was parked (ms since the epoch).
    pub parked_at_ms: i64,
    /// When a replay was asked for and not yet done.
    pub replay_requested_at_ms: Option<i64>,
}

impl ParkedRow {
    fn message(&self) -> Message {
        Message {
            subject: self.subject.clone(),
            id: self.message_id.clone(),
            headers: serde_json::from_str(&self.headers).unwrap_or_default(),
            payload: bytes::Bytes::from(self.payload.clone()),
        }
    }
}

/// Every parked event of a service's store, oldest first.
pub async fn parked(db: &Database) -> Result<Vec<ParkedRow>> {
    Ok(with_db!(&db.pool, |pool| {
        sqlx::query_as(
            "SELECT id, consumer, message_id, event_id, subject, headers, payload, reason, attempts, \
             parked_at_ms, replay_requested_at_ms FROM parked_events ORDER BY id",
        )
        .fetch_all(pool)
        .await?
    }))
}

/// Asks the service's running consumer to apply parked event `id` again; `false` when there
/// is no such parked event.
pub async fn request_replay(db: &Database, id: i64) -> Result<bool> {
    let mut tx = db.begin().await?;
    let changed = with_tx!(&mut tx, |conn| {
        sqlx::query("UPDATE parked_events SET replay_requested_at_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    });
    tx.commit().await?;
    Ok(changed == 1)
}

/// One parked event by id (`None` once it was replayed and removed).
pub async fn parked_one(db: &Database, id: i64) -> Result<Option<ParkedRow>> {
    Ok(with_db!(&db.pool, |pool| {
        sqlx::query_as(
            "SELECT id, consumer, message_id, event_id, subject, headers, payload, reason, attempts, \
             parked_at_ms, replay_requested_at_ms FROM parked_events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?
    }))
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Label of every consumer metric: the durable's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    consumer: String,
}

/// The kit's consumer metrics, declared once.
struct ConsumerMetrics {
    applied: Family<ConsumerLabels, Counter>,
    duplicates: Family<ConsumerLabels, Counter>,
    failures: Family<ConsumerLabels, Counter>,
    parked: Family<ConsumerLabels, Counter>,
    lag: Family<ConsumerLabels, Gauge>,
}

fn consumer_metrics() -> &'static ConsumerMetrics {
    static METRICS: OnceLock<ConsumerMetrics> = OnceLock::new();
    METRICS.get_or_init(|| ConsumerMetrics {
        applied: metrics::counter_family(
            "agriportal_consumer_events_applied",
            "Events applied by a consumer (each once, whatever the redeliveries)",
        ),
        duplicates: metrics::counter_family(
            "agriportal_consumer_events_duplicate",
            "Events delivered again and skipped by the inbox",
        ),
        failures: metrics::counter_family(
            "agriportal_consumer_apply_failures",
            "Failed applies of a single event (outages excepted); at the limit the event is parked",
        ),
        parked: metrics::counter_family(
            "agriportal_consumer_events_parked",
            "Events parked because they could not be decoded or applied (see `agriportal events parked`)",
        ),
        lag: metrics::gauge_family(
            "agriportal_consumer_lag",
            "Events the durable had still to deliver or had delivered unacked, at its last empty fetch",
        ),
    })
}

#[cfg(test)]
mod fold_tests {
    use super::fold_len_of;

    #[test]
    fn a_fold_holds_what_fits_in_its_bytes_and_at_least_one_event() {
        assert_eq!(fold_len_of([100, 100, 100], 250), 2);
        assert_eq!(fold_len_of([100, 100, 100], 300), 3);
        assert_eq!(fold_len_of([400, 100], 300), 1, "a large event goes alone");
        assert_eq!(fold_len_of([100, 400], 300), 1);
        assert_eq!(fold_len_of([10; 256], 8 * 1024 * 1024), 256);
        assert_eq!(fold_len_of([], 300), 0);
        // Every fetch is applied whole, fold after fold, in order.
        let sizes = [300, 50, 50, 250, 600, 10];
        let mut rest = &sizes[..];
        let mut folds = Vec::new();
        while !rest.is_empty() {
            let n = fold_len_of(rest.iter().copied(), 300);
            folds.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        assert_eq!(
            folds,
            vec![vec![300], vec![50, 50], vec![250], vec![600], vec![10]]
        );
    }
}
