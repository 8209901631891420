//! The in-process bus of the embedded mode, with the JetStream semantics the services rely on.
//!
//! Everything lives in one [`State`] behind one async mutex: the messages, the de-duplication
//! ids of the window, and every durable's position. A persisted bus writes each change to a
//! SQLite file (WAL, `synchronous = FULL`) *before* applying it in memory and while holding the
//! mutex, so memory never runs ahead of the file and a `kill -9` at any point loses nothing
//! that was acknowledged to a caller: a publish returns after its row is committed, an ack after
//! the durable's row is. The file is opened in exclusive locking mode because two processes
//! sharing it would each keep their own in-memory view and silently diverge.
//!
//! Memory holds the payloads only of messages some durable has not acked yet. A persisted
//! bus keeps a message every durable has acked in its file until the de-duplication window
//! has passed (so that a restart still knows its id), but drops its payload from memory at
//! once, keeping only its sequence and publish time: otherwise `up` held every event of the
//! last two minutes in memory, hundreds of MiB while partners push. A durable created while
//! such messages are retained reads them back from the file, so it sees what it would have
//! seen before. A message's payload leaves memory as soon as every durable has acked it or
//! does not want its subject, whatever the durables' floors.
//!
//! Deliberate differences from JetStream: no payload size limit, and a durable created after
//! its messages were pruned (see [`InProcessBus::prune`]) does not see them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteLockingMode, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use super::{Acker, Bus, BusError, BusKind, Consumer, ConsumerSpec, Delivery, Message, PublishAck};

/// Default de-duplication window, the same as the JetStream stream's `duplicate_window`.
const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(2 * 60);

/// Default maximum age of a message, the same as the JetStream stream's `max_age`.
const DEFAULT_MAX_AGE: Duration = super::MAX_AGE;

/// Automatic pruning runs at most this often, piggybacking on publishes and acks, so that
/// neither needs a background task nor pays for a scan every time.
const PRUNE_INTERVAL: Duration = Duration::from_secs(30);

/// How long opening the file waits for a previous holder (such as a handle of this process
/// that is still closing) to release it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version stored in `PRAGMA user_version`; a file from a newer version is refused
/// rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY,
    subject      TEXT    NOT NULL,
    msg_id       TEXT    NOT NULL,
    headers      TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    published_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS durables (
    name        TEXT    PRIMARY KEY,
    subjects    TEXT    NOT NULL,
    ack_wait_ms INTEGER NOT NULL,
    ack_floor   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    durable   TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    acked     INTEGER NOT NULL,
    PRIMARY KEY (durable, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// An in-process bus: only services in the same process see its messages.
///
/// [`InProcessBus::memory`] keeps everything in memory (tests); [`InProcessBus::open`] also
/// keeps it in a SQLite file so that the embedded mode survives crashes and restarts.
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// Woken after every stored publish; fetches wait on it instead of polling.
    published: Notify,
    dedup_window_ms: AtomicU64,
    max_age_ms: AtomicU64,
}

struct State {
    /// `None` for the volatile bus.
    db: Option<SqliteConnection>,
    closed: bool,
    /// Highest sequence ever assigned; never reused, even after pruning, because durables'
    /// positions are sequences.
    last_seq: u64,
    /// Publish times only move forward, which keeps pruning a prefix of the sequence even if
    /// the wall clock steps back.
    last_published_ms: i64,
    messages: BTreeMap<u64, Stored>,
    /// Messages acked by every durable whose payloads were dropped from memory while their
    /// rows stay in the file for the de-duplication window (persisted bus only): sequence to
    /// publish time. Every key is below every key of `messages`.
    retained: BTreeMap<u64, i64>,
    /// Message ids of the de-duplication window, with their publish time.
    recent_ids: HashMap<String, i64>,
    /// The same ids in publish order, to expire them cheaply.
    recent_order: VecDeque<(i64, String)>,
    durables: HashMap<String, Durable>,
    last_prune: Instant,
}

struct Stored {
    message: Message,
    published_ms: i64,
}

struct Durable {
    subjects: Vec<String>,
    ack_wait: Duration,
    /// Every message at or below this sequence is acked or not for this durable (persisted).
    ack_floor: u64,
    /// Highest sequence examined for a first delivery (memory only: after a restart the
    /// durable starts again from its floor, which redelivers whatever was not acked).
    cursor: u64,
    /// Acked sequences above the floor.
    acked: BTreeSet<u64>,
    /// Delivered, not yet acked.
    in_flight: BTreeMap<u64, InFlight>,
    /// Delivery counts from before a restart, so `delivered` keeps counting.
    earlier_deliveries: HashMap<u64, u64>,
}

struct InFlight {
    delivered: u64,
    deadline: Instant,
}

impl Durable {
    fn new(spec: &ConsumerSpec) -> Self {
        Durable {
            subjects: spec.subjects.clone(),
            ack_wait: spec.ack_wait,
            ack_floor: 0,
            cursor: 0,
            acked: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            earlier_deliveries: HashMap::new(),
        }
    }

    fn wants(&self, subject: &str) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|p| subject_matches(p, subject))
    }

    /// The highest floor the durable can have: up to the first stored message it wants and
    /// has not acked (`also_acked` counts as acked).
    fn reachable_floor(
        &self,
        messages: &BTreeMap<u64, Stored>,
        last_seq: u64,
        also_acked: Option<u64>,
    ) -> u64 {
        let from = self.ack_floor.saturating_add(1);
        for (&seq, stored) in messages.range(from..) {
            if self.wants(&stored.message.subject)
                && !self.acked.contains(&seq)
                && also_acked != Some(seq)
            {
                return seq - 1;
            }
        }
        last_seq.max(self.ack_floor)
    }

    fn advance_floor(&mut self, floor: u64) {
        if floor > self.ack_floor {
            self.ack_floor = floor;
            self.cursor = self.cursor.max(floor);
            self.acked = self.acked.split_off(&(floor + 1));
            self.in_flight = self.in_flight.split_off(&(floor + 1));
            self.earlier_deliveries.retain(|&seq, _| seq > floor);
        }
    }
}

impl InProcessBus {
    /// A volatile bus: nothing survives the process. For tests.
    pub fn memory(prefix: &str) -> Arc<Self> {
        Arc::new(InProcessBus {
            inner: Arc::new(Inner::new(prefix, None, State::empty(None))),
        })
    }

    /// Opens (or creates, with its directory) a bus persisted in the SQLite file at `path`.
    ///
    /// Messages not acked by a durable before the process stopped (or was killed) are
    /// delivered to it again. Fails if another process has the file open.
    pub async fn open(path: &Path, prefix: &str) -> Result<Arc<Self>, BusError> {
        // Like the stores' SQLite files: `up` on a fresh data directory must create it, and
        // the bus is the first thing opened there.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                BusError::Other(format!("creating the bus directory {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .locking_mode(SqliteLockingMode::Exclusive)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .disable_statement_logging();
        let in_path = |e: BusError| match e {
            BusError::Unavailable(m) if m.contains("locked") => BusError::Unavailable(format!(
                "the bus file {} is in use by another process (or by a bus of this process \
                 that is not closed yet): {m}",
                path.display()
            )),
            BusError::Unavailable(m) => {
                BusError::Unavailable(format!("opening the bus file {}: {m}", path.display()))
            }
            other => other,
        };
        let mut db = options
            .connect()
            .await
            .map_err(store_error)
            .map_err(in_path)?;
        prepare_schema(&mut db).await.map_err(in_path)?;
        let state = State::load(db).await.map_err(in_path)?;
        let inner = Inner::new(prefix, Some(path.to_path_buf()), state);
        tracing::debug!(path = %path.display(), "opened the in-process bus");
        let bus = Arc::new(InProcessBus {
            inner: Arc::new(inner),
        });
        bus.prune().await?;
        Ok(bus)
    }

    /// The subject prefix given at construction. In-process, it only labels the bus: each
    /// bus (or file) is already its own namespace.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The file the bus is persisted in, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Sets the de-duplication window (default 2 minutes, as the JetStream stream).
    pub fn set_dedup_window(&self, window: Duration) {
        self.inner
            .dedup_window_ms
            .store(duration_ms(window), Ordering::Relaxed);
    }

    /// The de-duplication window.
    pub fn dedup_window(&self) -> Duration {
        Duration::from_millis(self.inner.dedup_window_ms.load(Ordering::Relaxed))
    }

    /// Sets the maximum age of a message (default 30 days, as the JetStream stream); older
    /// messages are pruned even if a durable has not acked them, as JetStream's `max_age` does.
    pub fn set_max_age(&self, max_age: Duration) {
        self.inner
            .max_age_ms
            .store(duration_ms(max_age), Ordering::Relaxed);
    }

    /// Removes the messages every known durable has acked (or does not want) that are older
    /// than the de-duplication window, and those older than the maximum age. Returns how many
    /// were removed. Runs by itself every 30 s or so during publishes and acks.
    ///
    /// Durables are remembered in the file, so a service that is stopped still holds back the
    /// messages it has not acked. While no durable exists at all, only the maximum age applies:
    /// on a first start, consumers are created just after the first publishes.
    pub async fn prune(&self) -> Result<u64, BusError> {
        let mut state = self.inner.state.lock().await;
        state.ensure_open()?;
        state.prune(&self.inner).await
    }

    /// How many messages are stored (acked or not, until pruned).
    pub async fn stored_messages(&self) -> usize {
        let state = self.inner.state.lock().await;
        state.messages.len() + state.retained.len()
    }

    /// How many messages' payloads are held in memory: those some durable has not acked
    /// (all of them on the volatile bus, until pruned).
    pub async fn messages_in_memory(&self) -> usize {
        self.inner.state.lock().await.messages.len()
    }

    /// Stores checked `messages` in one transaction (file first, then memory, under the lock):
    /// an id seen within the window, or earlier in `messages`, is a duplicate and not stored.
    /// All or nothing: on a failed write none is stored.
    async fn store(&self, messages: Vec<Message>) -> Result<Vec<PublishAck>, BusError> {
        let inner = &self.inner;
        let mut state = inner.state.lock().await;
        state.ensure_open()?;
        let now_ms = unix_ms().max(state.last_published_ms);
        let window_ms = ms_i64(inner.dedup_window_ms.load(Ordering::Relaxed));
        state.expire_ids(now_ms, window_ms);
        let mut acks = Vec::with_capacity(messages.len());
        let mut fresh: Vec<(u64, Message)> = Vec::with_capacity(messages.len());
        let mut ids: HashSet<&str> = HashSet::new();
        let mut seq = state.last_seq;
        for message in &messages {
            let seen = state
                .recent_ids
                .get(&message.id)
                .is_some_and(|&at| now_ms - at < window_ms);
            if seen || !ids.insert(message.id.as_str()) {
                acks.push(PublishAck { duplicate: true });
            } else {
                seq += 1;
                acks.push(PublishAck { duplicate: false });
            }
        }
        drop(ids);
        let mut next = state.last_seq;
        for (message, ack) in messages.into_iter().zip(&acks) {
            if !ack.duplicate {
                next += 1;
                fresh.push((next, message));
            }
        }
        if fresh.is_empty() {
            return Ok(acks);
        }
        if let Some(db) = state.db.as_mut() {
            let mut tx = db.begin().await.map_err(store_error)?;
            for (seq, message) in &fresh {
                let headers = serde_json::to_string(&message.headers)
                    .map_err(|e| BusError::Other(format!("encoding headers: {e}")))?;
                sqlx::query(
                    "INSERT INTO messages (seq, subject, msg_id, headers, payload, published_ms) \
                     VALUES (?, ?, ?, ?, ?, ?)",
                )
                .bind(seq_i64(*seq)?)
                .bind(&message.subject)
                .bind(&message.id)
                .bind(headers)
                .bind(message.payload.as_ref())
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)?;
        }
        state.last_seq = seq;
        state.last_published_ms = now_ms;
        for (seq, message) in fresh {
            state.recent_ids.insert(message.id.clone(), now_ms);
            state.recent_order.push_back((now_ms, message.id.clone()));
            state.messages.insert(
                seq,
                Stored {
                    message,
                    published_ms: now_ms,
                },
            );
        }
        state.maybe_prune(inner).await;
        drop(state);
        inner.published.notify_waiters();
        Ok(acks)
    }

    /// Closes the file (waiting for SQLite to release it) so that it can be opened again,
    /// by this process or another. Every later operation fails with `Unavailable`.
    pub async fn close(&self) {
        let mut state = self.inner.state.lock().await;
        state.closed = true;
        if let Some(db) = state.db.take() {
            if let Err(e) = db.close().await {
                tracing::warn!(error = %e, "closing the in-process bus file");
            }
        }
        drop(state);
        self.inner.published.notify_waiters();
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("prefix", &self.inner.prefix)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, message: Message) -> Result<PublishAck, BusError> {
        check_message(&message)?;
        let mut acks = self.store(vec![message]).await?;
        acks.pop()
            .ok_or_else(|| BusError::Other("a publish stored nothing".into()))
    }

    async fn publish_all(&self, messages: Vec<Message>) -> Vec<Result<PublishAck, BusError>> {
        // Checked one by one: a malformed message fails alone, as its own publish would; the
        // others are stored in one transaction (one fsync for the lot instead of one each).
        let mut results: Vec<Option<Result<PublishAck, BusError>>> = Vec::new();
        let mut valid = Vec::with_capacity(messages.len());
        for message in messages {
            match check_message(&message) {
                Ok(()) => {
                    results.push(None);
                    valid.push(message);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        let mut stored = match self.store(valid).await {
            Ok(acks) => acks.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(err) => vec![Err(err); results.iter().filter(|r| r.is_none()).count()],
        }
        .into_iter();
        results
            .into_iter()
            .map(|r| match r {
                Some(refused) => refused,
                None => stored
                    .next()
                    .unwrap_or_else(|| Err(BusError::Other("a publish stored nothing".into()))),
            })
            .collect()
    }

    async fn consumer(&self, spec: ConsumerSpec) -> Result<Box<dyn Consumer>, BusError> {
        check_spec(&spec)?;
        let mut state = self.inner.state.lock().await;
        state.ensure_open()?;
        let changed = match state.durables.get(&spec.durable) {
            Some(d) => d.subjects != spec.subjects || d.ack_wait != spec.ack_wait,
            None => true,
        };
        if changed {
            if let Some(db) = state.db.as_mut() {
                let subjects = serde_json::to_string(&spec.subjects)
                    .map_err(|e| BusError::Other(format!("encoding subjects: {e}")))?;
                // A durable that exists keeps its floor: re-creating it only rebinds, as a
                // JetStream create-or-update does.
                sqlx::query(
                    "INSERT INTO durables (name, subjects, ack_wait_ms, ack_floor) VALUES (?, ?, ?, 0) \
                     ON CONFLICT (name) DO UPDATE SET subjects = excluded.subjects, ack_wait_ms = excluded.ack_wait_ms",
                )
                .bind(&spec.durable)
                .bind(subjects)
                .bind(ms_i64(duration_ms(spec.ack_wait)))
                .execute(&mut *db)
                .await
                .map_err(store_error)?;
            }
            match state.durables.get_mut(&spec.durable) {
                Some(d) => {
                    d.subjects = spec.subjects.clone();
                    d.ack_wait = spec.ack_wait;
                }
                None => {
                    // A new durable starts at the first message kept: give it back the
                    // payloads only the file still has.
                    state.restore_retained().await?;
                    state
                        .durables
                        .insert(spec.durable.clone(), Durable::new(&spec));
                }
            }
        }
        Ok(Box::new(InProcessConsumer {
            inner: Arc::clone(&self.inner),
            durable: spec.durable,
        }))
    }

    fn kind(&self) -> BusKind {
        BusKind::InProcess
    }
}

/// A handle on a durable of an [`InProcessBus`]; handles of one durable share its state.
struct InProcessConsumer {
    inner: Arc<Inner>,
    durable: String,
}

#[async_trait]
impl Consumer for InProcessConsumer {
    async fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let deadline = Instant::now() + wait;
        loop {
            let published = self.inner.published.notified();
            tokio::pin!(published);
            let next_redelivery = {
                let mut state = self.inner.state.lock().await;
                state.ensure_open()?;
                // Registered before looking, under the lock, so that a publish landing right
                // after we look still wakes us.
                published.as_mut().enable();
                let taken = state.take(&self.durable, max).await?;
                if !taken.is_empty() || max == 0 {
                    return Ok(taken
                        .into_iter()
                        .map(|(seq, delivered, message)| {
                            let acker = InProcessAcker {
                                inner: Arc::clone(&self.inner),
                                durable: self.durable.clone(),
                                seq,
                            };
                            Delivery::new(message, delivered, Box::new(acker))
                        })
                        .collect());
                }
                state
                    .durables
                    .get(&self.durable)
                    .and_then(|d| d.in_flight.values().map(|f| f.deadline).min())
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_redelivery.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                () = &mut published => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn backlog(&mut self) -> Result<u64, BusError> {
        let state = self.inner.state.lock().await;
        state.ensure_open()?;
        let Some(d) = state.durables.get(&self.durable) else {
            return Ok(0);
        };
        let waiting = state
            .messages
            .range(d.ack_floor.saturating_add(1)..)
            .filter(|(seq, stored)| d.wants(&stored.message.subject) && !d.acked.contains(seq))
            .count();
        Ok(waiting as u64)
    }
}

struct InProcessAcker {
    inner: Arc<Inner>,
    durable: String,
    seq: u64,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(&self) -> Result<(), BusError> {
        let mut state = self.inner.state.lock().await;
        state.ensure_open()?;
        state.ack(&self.durable, self.seq).await?;
        state.maybe_prune(&self.inner).await;
        Ok(())
    }
}

impl Inner {
    fn new(prefix: &str, path: Option<PathBuf>, state: State) -> Self {
        Inner {
            prefix: prefix.to_string(),
            path,
            state: Mutex::new(state),
            published: Notify::new(),
            dedup_window_ms: AtomicU64::new(duration_ms(DEFAULT_DEDUP_WINDOW)),
            max_age_ms: AtomicU64::new(duration_ms(DEFAULT_MAX_AGE)),
        }
    }
}

impl State {
    fn empty(db: Option<SqliteConnection>) -> Self {
        State {
            db,
            closed: false,
            last_seq: 0,
            last_published_ms: 0,
            messages: BTreeMap::new(),
            retained: BTreeMap::new(),
            recent_ids: HashMap::new(),
            recent_order: VecDeque::new(),
            durables: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    async fn load(mut db: SqliteConnection) -> Result<Self, BusError> {
        let meta_last: Option<i64> =
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'last_seq'")
                .fetch_optional(&mut db)
                .await
                .map_err(store_error)?;
        let messages = read_messages(&mut db, u64::MAX).await?;
        let mut durables = HashMap::new();
        let rows = sqlx::query("SELECT name, subjects, ack_wait_ms, ack_floor FROM durables")
            .fetch_all(&mut db)
            .await
            .map_err(store_error)?;
        for row in rows {
            let name: String = row.try_get("name").map_err(store_error)?;
            let subjects: String = row.try_get("subjects").map_err(store_error)?;
            let subjects: Vec<String> = serde_json::from_str(&subjects)
                .map_err(|e| BusError::Other(format!("corrupt subjects of durable {name}: {e}")))?;
            let ack_wait_ms: i64 = row.try_get("ack_wait_ms").map_err(store_error)?;
            let floor = seq_u64(row.try_get("ack_floor").map_err(store_error)?)?;
            let mut durable = Durable::new(&ConsumerSpec {
                durable: name.clone(),
                subjects,
                ack_wait: Duration::from_millis(u64::try_from(ack_wait_ms).unwrap_or(0)),
            });
            durable.ack_floor = floor;
            durable.cursor = floor;
            durables.insert(name, durable);
        }
        let rows = sqlx::query("SELECT durable, seq, delivered, acked FROM deliveries")
            .fetch_all(&mut db)
            .await
            .map_err(store_error)?;
        for row in rows {
            let name: String = row.try_get("durable").map_err(store_error)?;
            let seq = seq_u64(row.try_get("seq").map_err(store_error)?)?;
            let delivered: i64 = row.try_get("delivered").map_err(store_error)?;
            let acked: bool = row.try_get("acked").map_err(store_error)?;
            if let Some(d) = durables.get_mut(&name) {
                if seq <= d.ack_floor {
                    continue;
                }
                if acked {
                    d.acked.insert(seq);
                } else {
                    d.earlier_deliveries
                        .insert(seq, u64::try_from(delivered).unwrap_or(0));
                }
            }
        }
        let last_seq = [
            meta_last.map(seq_u64).transpose()?.unwrap_or(0),
            messages.keys().next_back().copied().unwrap_or(0),
            durables.values().map(|d| d.ack_floor).max().unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let mut state = State::empty(Some(db));
        state.last_seq = last_seq;
        state.last_published_ms = messages.values().map(|s| s.published_ms).max().unwrap_or(0);
        for stored in messages.values() {
            state
                .recent_ids
                .insert(stored.message.id.clone(), stored.published_ms);
            state
                .recent_order
                .push_back((stored.published_ms, stored.message.id.clone()));
        }
        state.messages = messages;
        state.durables = durables;
        state.evict_acked();
        Ok(state)
    }

    /// Moves the messages no durable still needs from `messages` to `retained`, dropping
    /// their payloads (persisted bus only: the volatile bus has no file to read them back
    /// from): a prefix of messages each durable has acked or does not want. A durable's floor
    /// moves over the messages it does not want only at its own acks and at prune time, so
    /// waiting for the floors held, for up to 30 s, every marketplace event in memory for a
    /// durable that reads only other subjects (hundreds of MiB while partners push at full
    /// rate). While no durable exists nothing is acked, so nothing moves.
    fn evict_acked(&mut self) {
        if self.db.is_none() || self.durables.is_empty() {
            return;
        }
        while let Some(entry) = self.messages.first_entry() {
            let (seq, stored) = (*entry.key(), entry.get());
            let needed = self.durables.values().any(|d| {
                seq > d.ack_floor && !d.acked.contains(&seq) && d.wants(&stored.message.subject)
            });
            if needed {
                break;
            }
            let (seq, stored) = entry.remove_entry();
            self.retained.insert(seq, stored.published_ms);
        }
    }

    /// Reads the retained messages' payloads back from the file into `messages`.
    async fn restore_retained(&mut self) -> Result<(), BusError> {
        let Some(&upto) = self.retained.keys().next_back() else {
            return Ok(());
        };
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let mut restored = read_messages(db, upto).await?;
        self.messages.append(&mut restored);
        self.retained.clear();
        Ok(())
    }

    fn ensure_open(&self) -> Result<(), BusError> {
        if self.closed {
            Err(BusError::Unavailable("the in-process bus is closed".into()))
        } else {
            Ok(())
        }
    }

    fn expire_ids(&mut self, now_ms: i64, window_ms: i64) {
        while let Some((at, _)) = self.recent_order.front() {
            if now_ms - *at < window_ms {
                break;
            }
            if let Some((at, id)) = self.recent_order.pop_front() {
                // The id may have been published again after expiring; only drop our entry.
                if self.recent_ids.get(&id) == Some(&at) {
                    self.recent_ids.remove(&id);
                }
            }
        }
    }

    /// Picks up to `max` deliveries for `durable`: expired ones first, then new ones in
    /// sequence order; records them (file first) and returns them.
    async fn take(
        &mut self,
        durable: &str,
        max: usize,
    ) -> Result<Vec<(u64, u64, Message)>, BusError> {
        let now = Instant::now();
        let Some(d) = self.durables.get(durable) else {
            return Err(BusError::Other(format!("unknown durable {durable}")));
        };
        let mut picks: Vec<(u64, u64)> = Vec::new();
        let mut vanished = Vec::new();
        for (&seq, flight) in &d.in_flight {
            if picks.len() >= max {
                break;
            }
            if flight.deadline <= now {
                if self.messages.contains_key(&seq) {
                    picks.push((seq, flight.delivered + 1));
                } else {
                    vanished.push(seq);
                }
            }
        }
        let mut cursor = d.cursor;
        for (&seq, stored) in self.messages.range(d.cursor.saturating_add(1)..) {
            if picks.len() >= max {
                break;
            }
            cursor = seq;
            if d.wants(&stored.message.subject)
                && !d.acked.contains(&seq)
                && !d.in_flight.contains_key(&seq)
            {
                picks.push((
                    seq,
                    d.earlier_deliveries.get(&seq).copied().unwrap_or(0) + 1,
                ));
            }
        }
        if !picks.is_empty() {
            if let Some(db) = self.db.as_mut() {
                let mut tx = db.begin().await.map_err(store_error)?;
                for &(seq, delivered) in &picks {
                    sqlx::query(
                        "INSERT INTO deliveries (durable, seq, delivered, acked) VALUES (?, ?, ?, 0) \
                         ON CONFLICT (durable, seq) DO UPDATE SET delivered = excluded.delivered",
                    )
                    .bind(durable)
                    .bind(seq_i64(seq)?)
                    .bind(seq_i64(delivered)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                }
                tx.commit().await.map_err(store_error)?;
            }
        }
        let Some(d) = self.durables.get_mut(durable) else {
            return Err(BusError::Other(format!("unknown durable {durable}")));
        };
        for seq in vanished {
            d.in_flight.remove(&seq);
        }
        d.cursor = cursor;
        let deadline = now + d.ack_wait;
        let mut out = Vec::with_capacity(picks.len());
        for (seq, delivered) in picks {
            d.in_flight.insert(
                seq,
                InFlight {
                    delivered,
                    deadline,
                },
            );
            d.earlier_deliveries.remove(&seq);
            if let Some(stored) = self.messages.get(&seq) {
                out.push((seq, delivered, stored.message.clone()));
            }
        }
        Ok(out)
    }

    async fn ack(&mut self, durable: &str, seq: u64) -> Result<(), BusError> {
        let last_seq = self.last_seq;
        let Some(d) = self.durables.get(durable) else {
            return Ok(());
        };
        if seq <= d.ack_floor || d.acked.contains(&seq) {
            return Ok(());
        }
        if !self.messages.contains_key(&seq) {
            // Pruned for age: nothing left to acknowledge.
            if let Some(d) = self.durables.get_mut(durable) {
                d.in_flight.remove(&seq);
            }
            return Ok(());
        }
        let floor = d.reachable_floor(&self.messages, last_seq, Some(seq));
        let floor_moved = floor > d.ack_floor;
        let delivered = d.in_flight.get(&seq).map_or(1, |f| f.delivered);
        if let Some(db) = self.db.as_mut() {
            let mut tx = db.begin().await.map_err(store_error)?;
            if floor_moved {
                sqlx::query("UPDATE durables SET ack_floor = ? WHERE name = ?")
                    .bind(seq_i64(floor)?)
                    .bind(durable)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query("DELETE FROM deliveries WHERE durable = ? AND seq <= ?")
                    .bind(durable)
                    .bind(seq_i64(floor)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
            if seq > floor {
                sqlx::query(
                    "INSERT INTO deliveries (durable, seq, delivered, acked) VALUES (?, ?, ?, 1) \
                     ON CONFLICT (durable, seq) DO UPDATE SET acked = 1",
                )
                .bind(durable)
                .bind(seq_i64(seq)?)
                .bind(seq_i64(delivered)?)
                .execute(&mut *tx)
                .await
                .map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)?;
        }
        if let Some(d) = self.durables.get_mut(durable) {
            d.in_flight.remove(&seq);
            d.earlier_deliveries.remove(&seq);
            if seq > floor {
                d.acked.insert(seq);
            }
            d.advance_floor(floor);
        }
        // Any ack may free the first message (the others that need it have acked it already).
        self.evict_acked();
        Ok(())
    }

    async fn maybe_prune(&mut self, inner: &Inner) {
        if self.last_prune.elapsed() < PRUNE_INTERVAL {
            return;
        }
        // The operation that got us here is committed; a failed prune is retried next time.
        if let Err(e) = self.prune(inner).await {
            tracing::warn!(error = %e, "pruning the in-process bus");
        }
    }

    async fn prune(&mut self, inner: &Inner) -> Result<u64, BusError> {
        self.last_prune = Instant::now();
        let now_ms = unix_ms().max(self.last_published_ms);
        let window_ms = ms_i64(inner.dedup_window_ms.load(Ordering::Relaxed));
        let max_age_ms = ms_i64(inner.max_age_ms.load(Ordering::Relaxed));
        // Floors also move over messages a durable does not want, which acks alone never do.
        let mut floors = Vec::new();
        let mut min_floor = u64::MAX;
        for (name, d) in &self.durables {
            let floor = d.reachable_floor(&self.messages, self.last_seq, None);
            min_floor = min_floor.min(floor);
            if floor > d.ack_floor {
                floors.push((name.clone(), floor));
            }
        }
        if self.durables.is_empty() {
            min_floor = 0;
        }
        // Publish times grow with the sequence, so what can go is a prefix.
        let mut upto = 0;
        let mut count = 0u64;
        let kept = self.retained.iter().map(|(&seq, &at)| (seq, at));
        let held = self.messages.iter().map(|(&seq, s)| (seq, s.published_ms));
        for (seq, published_ms) in kept.chain(held) {
            let acked_and_old = seq <= min_floor && now_ms - published_ms >= window_ms;
            let expired = now_ms - published_ms >= max_age_ms;
            if !(acked_and_old || expired) {
                break;
            }
            upto = seq;
            count += 1;
        }
        if count == 0 && floors.is_empty() {
            return Ok(0);
        }
        if let Some(db) = self.db.as_mut() {
            let mut tx = db.begin().await.map_err(store_error)?;
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(seq_i64(self.last_seq)?)
            .execute(&mut *tx)
            .await
            .map_err(store_error)?;
            for (name, floor) in &floors {
                sqlx::query("UPDATE durables SET ack_floor = ? WHERE name = ?")
                    .bind(seq_i64(*floor)?)
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query("DELETE FROM deliveries WHERE durable = ? AND seq <= ?")
                    .bind(name)
                    .bind(seq_i64(*floor)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
            if count > 0 {
                sqlx::query("DELETE FROM messages WHERE seq <= ?")
                    .bind(seq_i64(upto)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                sqlx::query("DELETE FROM deliveries WHERE seq <= ?")
                    .bind(seq_i64(upto)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
            }
            tx.commit().await.map_err(store_error)?;
        }
        for (name, floor) in floors {
            if let Some(d) = self.durables.get_mut(&name) {
                d.advance_floor(floor);
            }
        }
        if count > 0 {
            self.retained = self.retained.split_off(&(upto + 1));
            self.messages = self.messages.split_off(&(upto + 1));
            for d in self.durables.values_mut() {
                // Only messages pruned for age can still be pending here.
                d.in_flight = d.in_flight.split_off(&(upto + 1));
                d.earlier_deliveries.retain(|&seq, _| seq > upto);
            }
            tracing::debug!(pruned = count, upto, "pruned the in-process bus");
        }
        // Floors that moved over unwanted messages free those payloads too.
        self.evict_acked();
        Ok(count)
    }
}

/// The messages of the file up to sequence `upto`, in order.
async fn read_messages(
    db: &mut SqliteConnection,
    upto: u64,
) -> Result<BTreeMap<u64, Stored>, BusError> {
    let rows = sqlx::query(
        "SELECT seq, subject, msg_id, headers, payload, published_ms FROM messages \
         WHERE seq <= ? ORDER BY seq",
    )
    .bind(i64::try_from(upto).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await
    .map_err(store_error)?;
    let mut messages = BTreeMap::new();
    for row in rows {
        let seq = seq_u64(row.try_get("seq").map_err(store_error)?)?;
        let headers: String = row.try_get("headers").map_err(store_error)?;
        let headers: Vec<(String, String)> = serde_json::from_str(&headers)
            .map_err(|e| BusError::Other(format!("corrupt headers of message {seq}: {e}")))?;
        let payload: Vec<u8> = row.try_get("payload").map_err(store_error)?;
        let message = Message {
            subject: row.try_get("subject").map_err(store_error)?,
            id: row.try_get("msg_id").map_err(store_error)?,
            headers,
            payload: Bytes::from(payload),
        };
        messages.insert(
            seq,
            Stored {
                message,
                published_ms: row.try_get("published_ms").map_err(store_error)?,
            },
        );
    }
    Ok(messages)
}

async fn prepare_schema(db: &mut SqliteConnection) -> Result<(), BusError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *db)
        .await
        .map_err(store_error)?;
    if version > SCHEMA_VERSION {
        return Err(BusError::Other(format!(
            "the bus file has schema version {version}, newer than this program's {SCHEMA_VERSION}"
        )));
    }
    // One write transaction, which also takes the exclusive lock for the life of the
    // connection.
    let mut tx = db.begin().await.map_err(store_error)?;
    sqlx::Executor::execute(&mut *tx, SCHEMA)
        .await
        .map_err(store_error)?;
    sqlx::Executor::execute(&mut *tx, "PRAGMA user_version = 1")
        .await
        .map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    Ok(())
}

/// Whether a subject matches a pattern: `*` matches one token, a final `>` one or more.
pub(super) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Checks a subject (relative, or a prefix) the way NATS would, so that both buses accept
/// and refuse the same things. With `wildcards`, `*` tokens and a final `>` are allowed.
pub(super) fn check_subject(subject: &str, wildcards: bool) -> Result<(), BusError> {
    let invalid = |why: &str| {
        Err(BusError::Other(format!(
            "invalid subject {subject:?}: {why}"
        )))
    };
    if subject.is_empty() {
        return invalid("empty");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return invalid("empty token");
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("whitespace or control character");
        }
        let wildcard = *token == "*" || (*token == ">" && i + 1 == tokens.len());
        if wildcard && !wildcards {
            return invalid("wildcards are only for consumers");
        }
        if !wildcard && token.contains(['*', '>']) {
            return invalid("`*` and `>` must be whole tokens, `>` the last");
        }
    }
    Ok(())
}

/// Checks a message before publishing: subject, id, and headers NATS would accept.
/// Headers named `Nats-*` are refused because JetStream gives them meaning.
pub(super) fn check_message(message: &Message) -> Result<(), BusError> {
    check_subject(&message.subject, false)?;
    if message.id.is_empty() || message.id.contains(['\r', '\n']) {
        return Err(BusError::Other(format!(
            "invalid message id {:?}",
            message.id
        )));
    }
    for (name, value) in &message.headers {
        if name.is_empty() || name.chars().any(|c| !c.is_ascii_graphic() || c == ':') {
            return Err(BusError::Other(format!("invalid header name {name:?}")));
        }
        if name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-") {
            return Err(BusError::Other(format!(
                "header {name:?} is reserved by NATS"
            )));
        }
        if value.contains(['\r', '\n']) {
            return Err(BusError::Other(format!("invalid value of header {name:?}")));
        }
    }
    Ok(())
}

/// Checks a consumer's settings: a durable name JetStream accepts, valid subject patterns,
/// and a non-zero `ack_wait`.
pub(super) fn check_spec(spec: &ConsumerSpec) -> Result<(), BusError> {
    if spec.durable.is_empty()
        || !spec
            .durable
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(BusError::Other(format!(
            "invalid durable name {:?}: use ASCII letters, digits, `-` and `_`",
            spec.durable
        )));
    }
    for subject in &spec.subjects {
        check_subject(subject, true)?;
    }
    if spec.ack_wait.is_zero() {
        return Err(BusError::Other("ack_wait must be more than zero".into()));
    }
    Ok(())
}

fn store_error(e: sqlx::Error) -> BusError {
    BusError::Unavailable(format!("in-process bus file: {e}"))
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn seq_i64(seq: u64) -> Result<i64, BusError> {
    i64::try_from(seq).map_err(|_| BusError::Other(format!("sequence {seq} out of range")))
}

fn seq_u64(seq: i64) -> Result<u64, BusError> {
    u64::try_from(seq)
        .map_err(|_| BusError::Other(format!("corrupt sequence {seq} in the bus file")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        assert!(subject_matches(
            "marketplace.>",
            "marketplace.sales_recorded"
        ));
        assert!(subject_matches("marketplace.>", "marketplace.a.b"));
        assert!(!subject_matches("marketplace.>", "marketplace"));
        assert!(!subject_matches("marketplace.>", "content.x"));
        assert!(subject_matches("*.x", "content.x"));
        assert!(!subject_matches("*.x", "content.y.x"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn subjects_are_checked() {
        assert!(check_subject("a.b", false).is_ok());
        assert!(check_subject("a.>", true).is_ok());
        assert!(check_subject("a.*.c", true).is_ok());
        assert!(check_subject("a.>", false).is_err());
        assert!(check_subject("a.>.c", true).is_err());
        assert!(check_subject("a..b", false).is_err());
        assert!(check_subject("a b", false).is_err());
        assert!(check_subject("a.b*", true).is_err());
        assert!(check_subject("", false).is_err());
    }
}
