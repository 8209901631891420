//! The production bus: NATS JetStream, one stream per subject prefix.
//!
//! Every call is bounded by a timeout so that a NATS outage surfaces as
//! [`BusError::Unavailable`] within seconds (callers retry with backoff) instead of hanging;
//! async-nats keeps reconnecting in the background meanwhile.
//!
//! NATS 2.9 (the development machine's version): a consumer on several subjects needs
//! `filter_subjects`, which only NATS 2.10 knows; 2.9 silently ignores it and would deliver the
//! whole stream. Such a consumer notices (the server echoes no `filter_subjects`) and filters
//! on the client side, acking what it does not want: correct, but every message of the stream
//! crosses the wire to it. Re-creating a durable with other subjects updates its filter in
//! place and keeps its position (as the in-process bus does): messages published earlier on a
//! newly added subject are not delivered to it.
//!
//! At-least-once, as usual: a publish that timed out may still be stored once the client
//! reconnects (so callers re-send with the same id and the de-duplication window drops the
//! copy), and a NATS server killed with `kill -9` may forget recent acks and redeliver.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{
    self, ConsumerErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::{timeout, Instant};

use crate::config::NatsSecurity;

use super::memory::{check_message, check_spec, check_subject, subject_matches};
use super::nats_auth::connect_options;
use super::{
    stream_name, Acker, Bus, BusError, BusKind, Consumer, ConsumerSpec, Delivery, Message,
    PublishAck,
};

/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound of JetStream API requests, publish acks and double acks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Margin added to a fetch's own wait before giving up on an unresponsive server.
const GRACE: Duration = Duration::from_secs(3);

/// Shorter waits are not worth a pull request that waits; the fetch returns empty instead.
const MIN_EXPIRES: Duration = Duration::from_millis(10);

/// The stream's de-duplication window (`Nats-Msg-Id`).
const DEDUP_WINDOW: Duration = Duration::from_secs(2 * 60);

/// Longest wait between two reconnection attempts after the connection to NATS is lost.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// Delay before reconnection attempt `attempts`: at once, then doubling from 2 ms up to
/// [`RECONNECT_DELAY_MAX`]. async-nats' default grows to 4 s, which alone would use up much of
/// the 10 s in which the services must recover after NATS is back.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(20);
    Duration::from_millis(2u64.saturating_pow(exponent)).min(RECONNECT_DELAY_MAX)
}

/// A bus on NATS JetStream.
pub struct JetStreamBus {
    context: async_nats::jetstream::Context,
    prefix: String,
    stream: String,
}

impl JetStreamBus {
    /// Connects to NATS at `url` and creates (or updates) the stream [`stream_name`]`(prefix)`
    /// on subjects `<prefix>.>`: file storage, 2 minutes of de-duplication, `replicas`
    /// replicas, messages kept 30 days, at most `max_bytes` (0: no limit). Later disconnections are repaired
    /// by async-nats.
    ///
    /// A full stream refuses new messages (`DiscardPolicy::New`, publish fails with
    /// [`BusError::Full`]) rather than dropping its oldest (`Old`), which a lagging consumer
    /// may not have read yet: the relay keeps the outbox rows and retries, so nothing is lost.
    pub async fn connect(
        url: &str,
        prefix: &str,
        replicas: usize,
        max_bytes: u64,
    ) -> Result<Arc<Self>, BusError> {
        Self::connect_with(url, &NatsSecurity::default(), prefix, replicas, max_bytes).await
    }

    /// [`JetStreamBus::connect`] with credentials and TLS (`security`).
    ///
    /// The stream is read first and left alone when its settings are already these, so a
    /// service whose NATS user may only read the stream's info (not create or update it)
    /// starts once `agriportal migrate`, whose user may, has created it.
    pub async fn connect_with(
        url: &str,
        security: &NatsSecurity,
        prefix: &str,
        replicas: usize,
        max_bytes: u64,
    ) -> Result<Arc<Self>, BusError> {
        check_subject(prefix, false)?;
        if replicas == 0 {
            return Err(BusError::Other(
                "JetStream replicas must be at least 1".into(),
            ));
        }
        let connecting = connect_options(url, security)
            .await?
            .name("agriportal")
            .connection_timeout(CONNECT_TIMEOUT)
            .reconnect_delay_callback(reconnect_delay)
            .connect(url);
        let client = timeout(CONNECT_TIMEOUT + GRACE, connecting)
            .await
            .map_err(|_| BusError::Unavailable(format!("connecting to NATS at {url}: timed out")))?
            .map_err(|e| BusError::Unavailable(format!("connecting to NATS at {url}: {e}")))?;
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(REQUEST_TIMEOUT);
        let stream = stream_name(prefix);
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::New,
            // 0: no limit (JetStream's -1).
            max_bytes: match max_bytes {
                0 => -1,
                n => i64::try_from(n).unwrap_or(i64::MAX),
            },
            duplicate_window: DEDUP_WINDOW,
            max_age: super::MAX_AGE,
            num_replicas: replicas,
            ..Default::default()
        };
        ensure_stream(&context, config).await?;
        tracing::debug!(%stream, replicas, "JetStream stream ready");
        Ok(Arc::new(JetStreamBus {
            context,
            prefix: prefix.to_string(),
            stream,
        }))
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes this bus's stream with every message in it: for a stream of one's own once it
    /// is done with (a benchmark's run), never a deployment's.
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        timeout(REQUEST_TIMEOUT, self.context.delete_stream(&self.stream))
            .await
            .map_err(|_| {
                BusError::Unavailable(format!("deleting stream {}: timed out", self.stream))
            })?
            .map_err(|e| BusError::Other(format!("deleting stream {}: {e}", self.stream)))?;
        Ok(())
    }

    /// The name of the JetStream stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

/// Creates or updates the stream unless it exists with these settings already (read with
/// `$JS.API.STREAM.INFO`, which every service's NATS user may call; creating and updating
/// are for the migrate job's user).
async fn ensure_stream(
    context: &async_nats::jetstream::Context,
    config: stream::Config,
) -> Result<(), BusError> {
    let stream = config.name.clone();
    if let Ok(Ok(existing)) = timeout(REQUEST_TIMEOUT + GRACE, context.get_stream(&stream)).await {
        if same_settings(&existing.cached_info().config, &config) {
            return Ok(());
        }
    }
    timeout(
        REQUEST_TIMEOUT + GRACE,
        context.create_or_update_stream(config),
    )
    .await
    .map_err(|_| {
        BusError::Unavailable(format!(
            "creating stream {stream}: timed out (a NATS user without the right to create or update it waits here: run `agriportal migrate` with the migrate job's NATS user and the same --bus-* settings first)"
        ))
    })?
    .map_err(|e| match e.kind() {
        CreateStreamErrorKind::JetStream(_) => {
            BusError::Other(format!("creating stream {stream}: {e}"))
        }
        _ => BusError::Unavailable(format!("creating stream {stream}: {e}")),
    })?;
    Ok(())
}

/// Whether a stored stream has every setting this bus would give it.
fn same_settings(stored: &stream::Config, wanted: &stream::Config) -> bool {
    stored.subjects == wanted.subjects
        && stored.storage == wanted.storage
        && stored.retention == wanted.retention
        && stored.discard == wanted.discard
        && stored.max_bytes == wanted.max_bytes
        && stored.duplicate_window == wanted.duplicate_window
        && stored.max_age == wanted.max_age
        && stored.num_replicas == wanted.num_replicas
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("prefix", &self.prefix)
            .field("stream", &self.stream)
            .finish()
    }
}

#[async_trait]
impl Bus for JetStreamBus {
    async fn publish(&self, message: Message) -> Result<PublishAck, BusError> {
        check_message(&message)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &message.headers {
            // Parsed rather than converted: async-nats' conversions panic on invalid input.
            let name = HeaderName::from_str(name)
                .map_err(|e| BusError::Other(format!("header {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| BusError::Other(format!("header value: {e}")))?;
            headers.append(name, value);
        }
        let id = HeaderValue::from_str(&message.id)
            .map_err(|e| BusError::Other(format!("message id: {e}")))?;
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let subject = format!("{}.{}", self.prefix, message.subject);
        let publish = PublishMessage::build()
            .payload(message.payload)
            .headers(headers);
        let acked = timeout(REQUEST_TIMEOUT + GRACE, async {
            let ack = self.context.send_publish(subject, publish).await?;
            ack.await
        })
        .await
        .map_err(|_| BusError::Unavailable("publishing: timed out waiting for JetStream".into()))?
        .map_err(|e| match e.kind() {
            // JetStream's refusal of a full stream (error 10054, "maximum bytes exceeded") has
            // no kind of its own in async-nats.
            _ if e.to_string().contains("maximum bytes exceeded") => {
                BusError::Full(format!("publishing: {e}"))
            }
            PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
            | PublishErrorKind::MaxPayloadExceeded => BusError::Other(format!("publishing: {e}")),
            _ => BusError::Unavailable(format!("publishing: {e}")),
        })?;
        Ok(PublishAck {
            duplicate: acked.duplicate,
        })
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError> {
        check_spec(&spec)?;
        let mut config = pull::Config {
            durable_name: Some(spec.durable.clone()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let mut full: Vec<String> = spec
            .subjects
            .iter()
            .map(|s| format!("{}.{s}", self.prefix))
            .collect();
        if full.len() == 1 {
            config.filter_subject = full.remove(0);
        } else {
            config.filter_subjects = full;
        }
        let several = spec.subjects.len() > 1;
        let durable = spec.durable.clone();
        // Create-or-update: a restarted service rebinds to its durable and keeps its position.
        let consumer: PullConsumer = timeout(
            REQUEST_TIMEOUT + GRACE,
            self.context.create_consumer_on_stream(config, &self.stream),
        )
        .await
        .map_err(|_| BusError::Unavailable(format!("creating consumer {durable}: timed out")))?
        .map_err(|e| match e.kind() {
            ConsumerErrorKind::JetStream(_)
            | ConsumerErrorKind::InvalidName
            | ConsumerErrorKind::InvalidConsumerType => {
                BusError::Other(format!("creating consumer {durable}: {e}"))
            }
            _ => BusError::Unavailable(format!("creating consumer {durable}: {e}")),
        })?;
        let client_filter = if several && consumer.cached_info().config.filter_subjects.is_empty() {
            tracing::warn!(
                %durable,
                "NATS before 2.10 ignores filter_subjects: this consumer receives the whole stream and filters itself"
            );
            Some(spec.subjects)
        } else {
            None
        };
        Ok(Box::new(JetStreamConsumer {
            consumer,
            prefix: format!("{}.", self.prefix),
            client_filter,
        }))
    }

    fn kind(&self) -> BusKind {
        BusKind::JetStream
    }
}

/// A handle on a durable pull consumer.
struct JetStreamConsumer {
    consumer: PullConsumer,
    /// `<prefix>.`, stripped from delivered subjects.
    prefix: String,
    /// Relative subjects to keep, when the server could not filter (NATS 2.9).
    client_filter: Option<Vec<String>>,
}

#[async_trait]
impl Consumer for JetStreamConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + wait;
        loop {
            // A waiting pull request for the whole batch would only complete once the batch is
            // full or expired; instead take what is there now, else wait for one message and
            // then take what came with it. No request is left behind to swallow messages.
            let mut got = self.pull(max, None).await?;
            if got.is_empty() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining < MIN_EXPIRES {
                    return Ok(Vec::new());
                }
                got = self.pull(1, Some(remaining)).await?;
                if !got.is_empty() && max > 1 {
                    // The first message is already delivered to us: a failure to top up the
                    // batch must not make the caller drop it and wait out `ack_wait`.
                    got.extend(self.pull(max - 1, None).await.unwrap_or_default());
                }
            }
            let got = self.keep_wanted(got).await?;
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }

    async fn backlog(&mut self) -> Result<u64, BusError> {
        let info = timeout(REQUEST_TIMEOUT, self.consumer.info())
            .await
            .map_err(|_| BusError::Unavailable("consumer info: timed out".into()))?
            .map_err(|e| BusError::Unavailable(format!("consumer info: {e}")))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

impl JetStreamConsumer {
    /// One pull request: `no_wait` without `expires`, else waiting up to `expires`.
    async fn pull(
        &self,
        batch: usize,
        expires: Option<Duration>,
    ) -> Result<Vec<Delivery>, BusError> {
        let limit = expires.unwrap_or_default() + REQUEST_TIMEOUT;
        let pulling = async {
            let messages = match expires {
                None => self.consumer.fetch().max_messages(batch).messages().await,
                Some(expires) => {
                    self.consumer
                        .batch()
                        .max_messages(batch)
                        .expires(expires)
                        .messages()
                        .await
                }
            };
            let mut messages =
                messages.map_err(|e| BusError::Unavailable(format!("pulling messages: {e}")))?;
            let mut out = Vec::new();
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => out.push(self.delivery(message)?),
                    // Keep what arrived; the next fetch meets the error again if it lasts.
                    Err(_) if !out.is_empty() => break,
                    Err(e) => return Err(BusError::Unavailable(format!("pulling messages: {e}"))),
                }
            }
            Ok(out)
        };
        timeout(limit, pulling)
            .await
            .map_err(|_| BusError::Unavailable("pulling messages: timed out".into()))?
    }

    fn delivery(&self, message: async_nats::jetstream::Message) -> Result<Delivery, BusError> {
        let (delivered, seq) = {
            let info = message
                .info()
                .map_err(|e| BusError::Other(format!("not a JetStream message: {e}")))?;
            (
                u64::try_from(info.delivered).unwrap_or(1),
                info.stream_sequence,
            )
        };
        let (message, acker) = message.split();
        let subject = message.subject.as_str();
        let subject = subject
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(subject)
            .to_string();
        let mut id = None;
        let mut headers = Vec::new();
        if let Some(map) = &message.headers {
            for (name, values) in map.iter() {
                let name = name.to_string();
                if name.eq_ignore_ascii_case("Nats-Msg-Id") {
                    id = values.last().map(|v| v.as_str().to_string());
                } else if !(name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")) {
                    headers.extend(
                        values
                            .iter()
                            .map(|v| (name.clone(), v.as_str().to_string())),
                    );
                }
            }
        }
        // The header map is a hash map; sorting by name gives callers a stable order (values
        // of one name keep theirs, the sort being stable).
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        // Only a message published around this bus lacks an id; the stream sequence keeps
        // consumers' inboxes from taking it for another.
        let id = id.unwrap_or_else(|| format!("{}-{seq}", self.consumer.cached_info().stream_name));
        let message = Message {
            subject,
            id,
            headers,
            payload: message.payload,
        };
        Ok(Delivery::new(
            message,
            delivered,
            Box::new(JetStreamAcker { acker }),
        ))
    }

    /// Acks and drops the messages the consumer does not want (only when filtering here).
    async fn keep_wanted(&self, got: Vec<Delivery>) -> Result<Vec<Delivery>, BusError> {
        let Some(filter) = &self.client_filter else {
            return Ok(got);
        };
        let mut kept = Vec::with_capacity(got.len());
        for delivery in got {
            if filter
                .iter()
                .any(|p| subject_matches(p, &delivery.message.subject))
            {
                kept.push(delivery);
            } else {
                delivery.ack().await?;
            }
        }
        Ok(kept)
    }
}

struct JetStreamAcker {
    acker: async_nats::jetstream::message::Acker,
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<(), BusError> {
        // A double ack waits for the server's confirmation, so that an acked message is
        // known not to come back.
        timeout(REQUEST_TIMEOUT + GRACE, self.acker.double_ack())
            .await
            .map_err(|_| BusError::Unavailable("acking: timed out".into()))?
            .map_err(|e| BusError::Unavailable(format!("acking: {e}")))
    }
}
