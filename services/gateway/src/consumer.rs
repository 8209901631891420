//! The rollup consumer: reads marketplace events from the bus, applies a batch of them in one
//! transaction (inbox + rollups), and acks only after the commit. A redelivered event finds
//! its id in the inbox and changes nothing.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::storage::now_ms;

use agriportal_platform::bus::{Bus, ConsumerSpec, Delivery};
use agriportal_platform::http::metrics;
use agriportal_platform::telemetry::set_parent_from_headers;
use agriportal_proto::marketplace::v1 as mpb;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{ACK_WAIT, APPLY_BATCH, CONSUMER, SUBJECTS};
use crate::domain::Deltas;
use crate::store::{GatewayStore, PendingEvent};

/// What reconciliation must know of the consumer before it trusts a difference between the
/// rollups and the records: that the consumer recently found nothing left to apply and the
/// durable nothing delivered and unacked, and that neither fetching nor applying is failing
/// (events stuck in the stream, or held by a crashed replica, are late, not lost).
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    drained_at_ms: AtomicI64,
    failing: AtomicBool,
}

impl ConsumerHealth {
    /// True when the last fetch or apply succeeded and a fetch found nothing to apply within
    /// the last `within`.
    pub fn caught_up(&self, within: Duration) -> bool {
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        !self.failing.load(Ordering::SeqCst)
            && now_ms().saturating_sub(self.drained_at_ms.load(Ordering::SeqCst)) <= within
    }

    /// Records that a fetch found nothing to apply.
    pub fn drained(&self) {
        self.failing.store(false, Ordering::SeqCst);
        self.drained_at_ms.store(now_ms(), Ordering::SeqCst);
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// Starts the consumer; it runs until `shutdown`.
pub fn spawn(
    store: Arc<dyn GatewayStore>,
    bus: Arc<dyn Bus>,
    health: Arc<ConsumerHealth>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let spec = ConsumerSpec {
                durable: CONSUMER.into(),
                subjects: vec![SUBJECTS.into()],
                ack_wait: ACK_WAIT,
            };
            let consumer = tokio::select! {
                c = bus.consumer(spec) => c,
                _ = shutdown.cancelled() => return,
            };
            let mut consumer = match consumer {
                Ok(c) => c,
                Err(err) => {
                    health.set_failing(true);
                    tracing::warn!(error = %err, "cannot bind the rollup consumer; retrying");
                    if sleep_or_stop(&shutdown, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            loop {
                let fetched = tokio::select! {
                    f = consumer.fetch(APPLY_BATCH, Duration::from_secs(1)) => f,
                    _ = shutdown.cancelled() => return,
                };
                let deliveries = match fetched {
                    Ok(d) => d,
                    Err(err) => {
                        health.set_failing(true);
                        tracing::warn!(error = %err, "fetching events failed; retrying");
                        if sleep_or_stop(&shutdown, &mut backoff).await {
                            return;
                        }
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                if deliveries.is_empty() {
                    // Nothing to fetch is not yet nothing in flight: a delivery another
                    // replica (or a killed process) holds unacked comes back after ack_wait.
                    match consumer.backlog().await {
                        Ok(0) => health.drained(),
                        Ok(_) => {}
                        Err(err) => {
                            health.set_failing(true);
                            tracing::debug!(error = %err, "cannot read the consumer's backlog");
                        }
                    }
                    continue;
                }
                // Retried until it commits: the deliveries stay unacked meanwhile, and the
                // inbox makes a late redelivery of the same events harmless.
                loop {
                    match apply(store.as_ref(), &deliveries).await {
                        Ok(()) => {
                            health.set_failing(false);
                            break;
                        }
                        Err(err) => {
                            health.set_failing(true);
                            tracing::warn!(error = %err, "applying events failed; retrying");
                            if sleep_or_stop(&shutdown, &mut backoff).await {
                                return;
                            }
                        }
                    }
                }
                for delivery in &deliveries {
                    if let Err(err) = delivery.ack().await {
                        // Not acked: it comes back after ack_wait and the inbox skips it.
                        tracing::warn!(error = %err, "ack failed");
                    }
                }
            }
        }
    });
}

/// Longest wait between two attempts while the bus or the database is down. Short, so that the
/// rollups move again within a couple of seconds of an outage ending (the services recover
/// within 10 s of a fault clearing); an attempt costs one pull or one transaction.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

async fn sleep_or_stop(shutdown: &CancellationToken, backoff: &mut Duration) -> bool {
    let stop = tokio::select! {
        _ = tokio::time::sleep(*backoff) => false,
        _ = shutdown.cancelled() => true,
    };
    *backoff = (*backoff * 2).min(RETRY_BACKOFF_MAX);
    stop
}

/// Decodes deliveries into pending events. An event that cannot be decoded can never be
/// applied: it is logged, counted and skipped (acked) rather than blocking the stream.
pub fn decode(deliveries: &[Delivery]) -> Vec<PendingEvent> {
    let mut events = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let message = &delivery.message;
        let span =
            tracing::info_span!("apply_event", subject = %message.subject, event_id = %message.id);
        set_parent_from_headers(&span, &message.headers);
        let _entered = span.enter();
        let mut deltas = Deltas::default();
        // The inbox keys on the event id inside the payload, not on the bus message id, so an
        // event re-published under any message id is still recognised.
        let outcome = match message.subject.as_str() {
            "marketplace.sales_recorded" => mpb::SalesRecorded::decode(message.payload.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|e| deltas.add_sales(&e).map(|()| e.event_id)),
            "marketplace.households_recorded" => {
                mpb::HouseholdsRecorded::decode(message.payload.as_ref())
                    .map_err(|e| e.to_string())
                    .and_then(|e| deltas.add_households(&e).map(|()| e.event_id))
            }
            other => Err(format!("unknown subject {other}")),
        };
        match outcome.and_then(|id| {
            if id.is_empty() {
                Err("event has no id".to_string())
            } else {
                Ok(id)
            }
        }) {
            Ok(event_id) => events.push(PendingEvent { event_id, deltas }),
            Err(err) => {
                tracing::error!(error = %err, "skipping an event that cannot be applied");
                metrics().add(
                    "agriportal_gateway_events_skipped_total",
                    "",
                    "Events that could not be decoded",
                    1,
                );
            }
        }
    }
    events
}

async fn apply(
    store: &dyn GatewayStore,
    deliveries: &[Delivery],
) -> agriportal_platform::Result<()> {
    let events = decode(deliveries);
    let span = tracing::info_span!("apply_events", count = events.len());
    let applied = store.apply(&events).instrument(span).await?;
    let m = metrics();
    m.add(
        "agriportal_gateway_events_applied_total",
        "",
        "Events applied to the rollups",
        applied as i64,
    );
    m.add(
        "agriportal_gateway_events_duplicate_total",
        "",
        "Events delivered again and skipped by the inbox",
        (events.len() - applied) as i64,
    );
    Ok(())
}
