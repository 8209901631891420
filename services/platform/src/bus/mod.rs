//! The event bus: durable, de-duplicating publish and durable consumers with explicit acks.
//!
//! Two implementations share one contract (tested by one suite): NATS JetStream for
//! production and an in-process bus for the embedded mode. Subjects given to the bus are
//! relative (`marketplace.sales_recorded`); the bus puts its configured prefix in front
//! (`agriportal.marketplace.sales_recorded`), so deployments and tests sharing one NATS
//! server stay apart.

mod jetstream;
mod memory;
mod nats_auth;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use jetstream::JetStreamBus;
pub use memory::InProcessBus;

/// The stream's maximum message age (both buses): the longest a message can be delivered again,
/// so the least time a consumer's inbox must remember an applied event's id.
pub const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 60 * 60);

/// A message on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Relative subject, `<service>.<event>`.
    pub subject: String,
    /// Unique id (the event id); a second publish of the same id within the
    /// de-duplication window is dropped (JetStream `Nats-Msg-Id`).
    pub id: String,
    /// Headers, such as the W3C `traceparent`.
    pub headers: Vec<(String, String)>,
    /// Protobuf-encoded event.
    pub payload: Bytes,
}

/// What the bus said of a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishAck {
    /// The message id was already stored within the window; this publish was dropped.
    pub duplicate: bool,
}

/// Which implementation a bus is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    /// In-process: only services in the same process see the messages.
    InProcess,
    /// NATS JetStream.
    JetStream,
}

/// A durable consumer's settings.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Durable name; consumers with the same name share the work and the position.
    pub durable: String,
    /// Relative subjects (exact, or ending in `.>` / `.*` wildcards) the consumer receives.
    pub subjects: Vec<String>,
    /// A delivered message not acked within this time is delivered again.
    pub ack_wait: Duration,
}

/// Bus failures. Every one is transient from the caller's point of view: retry.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached or did not answer in time.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the request.
    #[error("event bus error: {0}")]
    Other(String),
    /// The stream is at its `max_bytes` and refuses new messages (it never drops stored ones to
    /// make room); publishing works again once old messages age out or the limit is raised.
    #[error("event stream full: {0}")]
    Full(String),
}

/// A durable publish/subscribe bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Stores the message durably and returns once the bus has acknowledged it.
    async fn publish(&self, message: Message) -> Result<PublishAck, BusError>;
    /// Publishes `messages` with every ack in flight at once; each has its own result, in
    /// order, and an `Ok` means that message is stored as [`Bus::publish`] would have. The
    /// default awaits the publishes together; a bus that can store several in one write does.
    async fn publish_all(&self, messages: Vec<Message>) -> Vec<Result<PublishAck, BusError>> {
        futures::future::join_all(messages.into_iter().map(|m| self.publish(m))).await
    }
    /// Creates (or binds to) a durable consumer.
    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError>;
    /// Which implementation this is.
    fn kind(&self) -> BusKind;
}

/// A durable consumer's handle.
#[async_trait]
pub trait Consumer: Send + Sync {
    /// Waits up to `wait` for messages and returns at most `max` of them (possibly none).
    /// Delivered messages must be acked; unacked ones come back after `ack_wait`.
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;
    /// Messages this durable still has to deliver, or delivered (to any of its handles, in
    /// any process) and not yet acked. Zero means every stored message it wants is acked.
    async fn backlog(&mut self) -> Result<u64, BusError>;
}

/// Acknowledges one delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledges: the message will not be delivered again to this durable.
    async fn ack(&self) -> Result<(), BusError>;
}

/// A delivered message.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// How many times it has been delivered, 1 the first time.
    pub delivered: u64,
    acker: Box<dyn Acker>,
}

impl Delivery {
    /// Builds a delivery (for bus implementations).
    pub fn new(message: Message, delivered: u64, acker: Box<dyn Acker>) -> Self {
        Delivery {
            message,
            delivered,
            acker,
        }
    }
    /// Acknowledges the message; call only after its effects are committed.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("delivered", &self.delivered)
            .finish()
    }
}

/// The JetStream stream name for a subject prefix (`agriportal` → `AGRIPORTAL`).
pub fn stream_name(prefix: &str) -> String {
    prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
