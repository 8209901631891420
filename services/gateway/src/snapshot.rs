//! The read model in memory: the national, regional, provincial and per-partner figures as one
//! immutable [`Snapshot`], with its JSON bodies serialised once and their `ETag`s, so the
//! dashboards' most read answers (`/api/v1/national`, `/api/v1/provinces[/{code}]`, the gRPC
//! `Dashboard`'s summaries) cost a pointer load, not a query; and beside it the indicators'
//! views ([`IndicatorsSnapshot`]: the list, each indicator's default view, a bounded cache of
//! the other queries), which follow the same version.
//!
//! Freshness: the figures carry a version (`meta.figures_version`), bumped in every
//! transaction that changes them (the consumers' applies, the indicators' too, and the
//! reconciler's repairs). A commit in this process wakes the rebuild at once
//! ([`Snapshots::changed`], from the consumers' `committed`); every [`Snapshots::poll`]
//! interval the version is read, so a replica sees what another replica applied. A burst of
//! commits rebuilds once (one waiting permit), and the figures' rebuild reads the version and
//! every figure in one statement, so a snapshot is always one committed state.
//!
//! Two phases: the totals first (one cheap statement), made current at once, then the
//! indicators (a few queries per indicator), in a loop of their own, so a slow indicators
//! rebuild never holds back the national figures; the indicators' views are at least as new
//! as the version read before them, and a commit during their read makes the next round
//! read them again.
//!
//! Pacing (`--gateway-snapshot-min-interval-ms`): under a continuous stream of commits the
//! figures rebuild at most once per interval, and wait out the last rebuild's duration before
//! the next (busy at most half the time); the indicators at most once per ten intervals, and
//! busy at most a quarter of the time; the first change after a quiet interval rebuilds at
//! once. So two replicas' figures differ by at most one poll interval
//! (`--gateway-snapshot-poll-ms`) plus one pacing interval plus one rebuild (a read of ~300
//! small rows), and their indicators by that plus ten pacing intervals plus two indicators
//! rebuilds (one waited out, one run).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::reference::Reference;
use agriportal_platform::{http, Error, Result};
use arc_swap::{ArcSwap, ArcSwapOption};
use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, NationalView, ProvinceView};
use crate::error::unknown_province;
use crate::indicator_snapshot::IndicatorsSnapshot;
use crate::indicators::{today, StoreReads};
use crate::store::{Figures, GatewayStore, Store};

/// A JSON answer serialised once, with the strong `ETag` of its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonBody {
    /// The bytes, exactly as the answer carries them.
    pub bytes: Bytes,
    /// `platform::http::entity_tag` of the bytes.
    pub etag: String,
}

impl JsonBody {
    /// `value` serialised as the handlers' `Json` serialises it.
    pub fn of<T: serde::Serialize>(value: &T) -> Result<JsonBody> {
        let bytes = Bytes::from(serde_json::to_vec(value).map_err(Error::internal)?);
        let etag = http::entity_tag(&bytes);
        Ok(JsonBody { bytes, etag })
    }
}

impl IntoResponse for JsonBody {
    /// `200` with the JSON and its tag (the HTTP layer answers `304` from the tag alone).
    fn into_response(self) -> Response {
        let mut response = self.bytes.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(tag) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, tag);
        }
        response
    }
}

/// The figures as of one committed state of the store.
#[derive(Debug)]
pub struct Snapshot {
    /// `meta.figures_version` the figures were read at; `-1` before the first read.
    pub version: i64,
    /// National figures (`GET /api/v1/national`).
    pub national: NationalView,
    /// Every province, in code order.
    pub provinces: Vec<ProvinceView>,
    /// `GET /api/v1/national`'s body.
    pub national_json: JsonBody,
    /// `GET /api/v1/provinces`'s body.
    pub provinces_json: JsonBody,
    /// `GET /api/v1/provinces/{code}`'s body, by (2025) province code.
    pub province_json: BTreeMap<String, JsonBody>,
}

fn rfc3339(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

impl Snapshot {
    /// The snapshot of `figures`: the same views, and byte for byte the same JSON, as the
    /// queries on the totals answered before.
    pub fn of(figures: &Figures) -> Result<Snapshot> {
        let national = domain::national(
            &figures.sales,
            &figures.households,
            figures.as_of_ms.and_then(rfc3339),
        );
        let provinces = domain::provinces(&figures.sales, &figures.households);
        let province_json = provinces
            .iter()
            .map(|p| Ok((p.code.clone(), JsonBody::of(p)?)))
            .collect::<Result<_>>()?;
        Ok(Snapshot {
            version: figures.version,
            national_json: JsonBody::of(&national)?,
            provinces_json: JsonBody::of(&serde_json::json!({ "provinces": provinces }))?,
            province_json,
            national,
            provinces,
        })
    }

    fn unbuilt() -> Snapshot {
        let empty = JsonBody {
            bytes: Bytes::new(),
            etag: String::new(),
        };
        Snapshot {
            version: -1,
            national: NationalView::default(),
            provinces: Vec::new(),
            national_json: empty.clone(),
            provinces_json: empty,
            province_json: BTreeMap::new(),
        }
    }

    /// The province of `code` (a pre-2025 code is mapped to its province).
    pub fn province(&self, code: &str) -> Result<(&ProvinceView, &JsonBody)> {
        let found = Reference::get()
            .resolve_province(code)
            .ok_or_else(|| unknown_province(code))?;
        let wanted = &found.province().code;
        let view = self
            .provinces
            .iter()
            .find(|p| &p.code == wanted)
            .ok_or_else(|| unknown_province(code))?;
        let body = self
            .province_json
            .get(wanted)
            .ok_or_else(|| unknown_province(code))?;
        Ok((view, body))
    }
}

/// The snapshot's metrics: rebuilds, failed reads, the version served (compare it across
/// replicas to see how far apart they are), and how long each phase takes.
struct SnapshotMetrics {
    rebuilds: agriportal_platform::metrics::Counter,
    failures: agriportal_platform::metrics::Counter,
    version: agriportal_platform::metrics::Gauge,
    figures_seconds: agriportal_platform::metrics::Histogram,
    indicators_seconds: agriportal_platform::metrics::Histogram,
}

fn metrics() -> &'static SnapshotMetrics {
    static METRICS: std::sync::OnceLock<SnapshotMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        use agriportal_platform::metrics::{counter, gauge, histogram, DURATION_BUCKETS};
        SnapshotMetrics {
            rebuilds: counter(
                "agriportal_gateway_snapshot_rebuilds",
                "In-memory snapshots of the national and provincial figures built from the store",
            ),
            failures: counter(
                "agriportal_gateway_snapshot_failures",
                "Failed reads of the figures or indicators for the snapshot (the last snapshot is served meanwhile)",
            ),
            version: gauge(
                "agriportal_gateway_snapshot_version",
                "figures_version of the snapshot served",
            ),
            figures_seconds: histogram(
                "agriportal_gateway_snapshot_figures_seconds",
                "Seconds to read the totals and build the figures' snapshot (the first phase)",
                &DURATION_BUCKETS,
            ),
            indicators_seconds: histogram(
                "agriportal_gateway_snapshot_indicators_seconds",
                "Seconds to read and serialise every indicator's default view (the second phase)",
                &DURATION_BUCKETS,
            ),
        }
    })
}

/// The current snapshot, replaced whole after each change.
pub struct Snapshots {
    store: Arc<Store>,
    reads: StoreReads,
    current: ArcSwap<Snapshot>,
    indicators: ArcSwapOption<IndicatorsSnapshot>,
    changed: Notify,
    indicators_wanted: Notify,
}

impl Snapshots {
    /// Snapshots of `store`'s figures; none is built until [`Self::refresh`].
    pub fn new(store: Arc<Store>) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            reads: StoreReads::new(store.clone()),
            store,
            current: ArcSwap::from_pointee(Snapshot::unbuilt()),
            indicators: ArcSwapOption::empty(),
            changed: Notify::new(),
            indicators_wanted: Notify::new(),
        })
    }

    /// The current snapshot; an error until the first one is built (the service is not ready
    /// before it is).
    pub fn current(&self) -> Result<Arc<Snapshot>> {
        let snapshot = self.current.load_full();
        if snapshot.version < 0 {
            return Err(Error::unavailable(
                "the figures are being loaded; try again",
            ));
        }
        Ok(snapshot)
    }

    /// The version of the current snapshot (`-1` before the first).
    pub fn version(&self) -> i64 {
        self.current.load().version
    }

    /// The indicators' snapshot, if one was built today (Vietnam's date: the default periods
    /// follow it, so yesterday's views are not answered from).
    pub fn indicators(&self) -> Option<Arc<IndicatorsSnapshot>> {
        self.indicators
            .load_full()
            .filter(|snapshot| snapshot.day == today())
    }

    /// Says that a commit changed the figures: the rebuild task reads them again (once for
    /// any number of calls before it runs).
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Reads the figures, then the indicators, from the store and makes each current (unless
    /// a newer one is current already): both phases, in order, at once (at start and in
    /// tests; the rebuild task runs them apart).
    pub async fn refresh(&self) -> Result<()> {
        self.refresh_figures().await?;
        self.refresh_indicators().await
    }

    /// The first phase: reads the figures from the store and makes them current, unless a
    /// newer snapshot is current already.
    pub async fn refresh_figures(&self) -> Result<()> {
        let started = Instant::now();
        let figures = self.store.figures().await?;
        let fresh = Arc::new(Snapshot::of(&figures)?);
        let before = self.current.rcu(|current| {
            if current.version > fresh.version {
                Arc::clone(current)
            } else {
                Arc::clone(&fresh)
            }
        });
        let m = metrics();
        m.rebuilds.inc();
        m.version.set(before.version.max(fresh.version));
        m.figures_seconds.observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The second phase: reads every indicator's default view and makes them current, unless
    /// a newer snapshot of them is current already.
    pub async fn refresh_indicators(&self) -> Result<()> {
        let started = Instant::now();
        let day = today();
        // The version before the views: what they hold is at least that new.
        let version = self.store.figures_version().await?;
        let views = self.reads.default_views().await?;
        let fresh = Arc::new(IndicatorsSnapshot::of(version, day, views)?);
        self.indicators.rcu(|current| match current {
            Some(current) if (current.version, current.day) > (fresh.version, fresh.day) => {
                Some(Arc::clone(current))
            }
            _ => Some(Arc::clone(&fresh)),
        });
        metrics()
            .indicators_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// True when the indicators' snapshot is older than the figures' version, of another
    /// day, or not built.
    fn indicators_behind(&self, version: i64) -> bool {
        match self.indicators.load().as_ref() {
            Some(snapshot) => snapshot.version != version || snapshot.day != today(),
            None => true,
        }
    }

    /// Rebuilds whichever phase is behind the store's figures' version: what a replica polls
    /// to see the changes another replica applied. True when the figures were rebuilt.
    pub async fn refresh_if_changed(&self) -> Result<bool> {
        let version = self.store.figures_version().await?;
        let figures = version != self.version();
        if figures {
            self.refresh_figures().await?;
        }
        if self.indicators_behind(version) {
            self.refresh_indicators().await?;
        }
        Ok(figures)
    }

    /// Keeps the snapshot fresh until `shutdown`: at once after a commit of this process
    /// (paced to one rebuild per `min_interval` under a stream of commits), and within `poll`
    /// of another replica's. The indicators are rebuilt in a loop of their own, woken after
    /// each rebuild of the figures. A failed read keeps the last snapshot and is tried again
    /// at the next poll.
    pub async fn run(
        self: Arc<Self>,
        poll: Duration,
        min_interval: Duration,
        shutdown: CancellationToken,
    ) {
        // The first indicators' snapshot is built here, not before the service is ready:
        // until it is, their queries are read from the store as before.
        self.indicators_wanted.notify_one();
        let figures = {
            let this = self.clone();
            paced(
                &self.changed,
                Pacing::figures(min_interval),
                Some(poll),
                &shutdown,
                move |woken| {
                    let this = this.clone();
                    async move { this.figures_round(woken).await }
                },
            )
        };
        let indicators = {
            let this = self.clone();
            paced(
                &self.indicators_wanted,
                Pacing::indicators(min_interval),
                None,
                &shutdown,
                move |_| {
                    let this = this.clone();
                    async move {
                        if let Err(err) = this.refresh_indicators().await {
                            metrics().failures.inc();
                            tracing::warn!(error = %err, "reading the indicators for the snapshot failed; serving the last ones");
                        }
                    }
                },
            )
        };
        tokio::join!(figures, indicators);
    }

    /// One round of the figures' loop: a rebuild after a commit of this process, else a look
    /// at the version; then the indicators are woken if they are behind.
    async fn figures_round(&self, woken: bool) {
        let outcome = async {
            let version = if woken {
                self.refresh_figures().await?;
                self.version()
            } else {
                let version = self.store.figures_version().await?;
                if version != self.version() {
                    self.refresh_figures().await?;
                }
                version
            };
            Ok::<_, Error>(version)
        }
        .await;
        match outcome {
            Ok(version) if self.indicators_behind(version) => self.indicators_wanted.notify_one(),
            Ok(_) => {}
            Err(err) => {
                metrics().failures.inc();
                tracing::warn!(error = %err, "reading the figures for the snapshot failed; serving the last one");
            }
        }
    }
}

/// How far apart [`paced`] starts its rounds: at least `min_interval`, and at least `spacing`
/// times the last round's duration (so a round is busy at most `1 / spacing` of the time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pacing {
    min_interval: Duration,
    spacing: u32,
}

/// How many figures' intervals apart the indicators are rebuilt under a stream of commits.
const INDICATORS_INTERVALS: u32 = 10;

impl Pacing {
    /// The figures' phase: one cheap statement, `--gateway-snapshot-min-interval-ms` apart and
    /// busy at most half the time.
    fn figures(min_interval: Duration) -> Self {
        Pacing {
            min_interval,
            spacing: 2,
        }
    }

    /// The indicators' phase: [`INDICATORS_INTERVALS`] times the figures' interval apart (1 s
    /// by default) and busy at most a quarter of the time. Their rebuild is a few grouped
    /// queries per indicator over the monthly rollups; run after every figures' rebuild, its
    /// reads took about a fifth of the process's CPU in `bench ingest` (release, `perf`: the
    /// read pool's SQLite threads), CPU the consumer's folds need, while the indicators move by
    /// month and nobody reads them to the second. The first change after a quiet interval is
    /// still rebuilt at once.
    fn indicators(min_interval: Duration) -> Self {
        Pacing {
            min_interval: min_interval * INDICATORS_INTERVALS,
            spacing: 4,
        }
    }

    /// When the next round may start after one that started at `at` and took `took`.
    fn next(self, at: Instant, took: Duration) -> Instant {
        at + self.min_interval.max(took * self.spacing)
    }
}

/// Runs `round` each time `wake` is notified (with `true`) or `poll` passes without it (with
/// `false`), until `shutdown`, but starts rounds at least `pacing.min_interval` apart, and at
/// least `pacing.spacing` times the last round's duration apart: a wake-up within that time
/// after a round's start waits for its end, and the wake-ups that came meanwhile are spent by
/// that one round (it reads the store after them). After a quiet interval a wake-up starts a
/// round at once. The second bound keeps a slow rebuild (the indicators' took about 2 s each
/// in a debug build with the demo writing) from running back to back under a stream of
/// commits.
async fn paced<F, Fut>(
    wake: &Notify,
    pacing: Pacing,
    poll: Option<Duration>,
    shutdown: &CancellationToken,
    mut round: F,
) where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = ()>,
{
    // The last round's start and how long it took.
    let mut last: Option<(Instant, Duration)> = None;
    loop {
        let woken = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => true,
            _ = sleep_or_never(poll) => false,
        };
        if let Some(next) = last.map(|(at, took)| pacing.next(at, took)) {
            if Instant::now() < next {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => {}
                }
            }
        }
        // A permit stored while waiting is spent here: this round reads what it announced.
        let spent = tokio::select! {
            biased;
            _ = wake.notified() => true,
            _ = std::future::ready(()) => false,
        };
        let started = Instant::now();
        round(woken || spent).await;
        last = Some((started, started.elapsed()));
    }
}

/// Sleeps for `duration`, or forever without one.
async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// When each round started, and whether a wake-up started it.
    type Rounds = Arc<Mutex<Vec<(Instant, bool)>>>;

    /// `paced` over `wake` in a task of its own, each round taking `takes`.
    fn spawn_paced(
        wake: &Arc<Notify>,
        pacing: Pacing,
        poll: Option<Duration>,
        takes: Duration,
    ) -> (Rounds, CancellationToken, tokio::task::JoinHandle<()>) {
        let rounds: Rounds = Arc::default();
        let shutdown = CancellationToken::new();
        let (wake, stop, seen) = (wake.clone(), shutdown.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            paced(&wake, pacing, poll, &stop, move |woken| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((Instant::now(), woken));
                    tokio::time::sleep(takes).await;
                }
            })
            .await;
        });
        (rounds, shutdown, task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_commits_rebuilds_at_most_once_per_interval() {
        let interval = Duration::from_millis(100);
        let wake = Arc::new(Notify::new());
        let (rounds, shutdown, task) = spawn_paced(
            &wake,
            Pacing::figures(interval),
            Some(Duration::from_secs(3600)),
            Duration::from_millis(30),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The first change after a quiet time: rebuilt at once.
        let first = Instant::now();
        wake.notify_one();
        // Then a commit every 10 ms for two seconds.
        let mut last_commit = first;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            last_commit = Instant::now();
            wake.notify_one();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let seen = rounds.lock().unwrap().clone();
        assert_eq!(seen[0], (first, true), "the first change is not held back");
        for pair in seen.windows(2) {
            assert!(
                pair[1].0 - pair[0].0 >= interval,
                "rounds {:?} apart",
                pair[1].0 - pair[0].0
            );
        }
        // Two seconds of commits: about one round per interval, never more.
        assert!((19..=21).contains(&seen.len()), "{} rounds", seen.len());
        // The last commit is read by a round that started after it, within one interval.
        let (last_round, woken) = seen[seen.len() - 1];
        assert!(woken && last_round >= last_commit, "{seen:?}");
        assert!(last_round - last_commit <= interval);
        // Quiet again: the next change is rebuilt at once.
        let again = Instant::now();
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(rounds.lock().unwrap().last(), Some(&(again, true)));
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_rebuild_under_a_stream_of_commits_is_busy_at_most_half_the_time() {
        let interval = Duration::from_millis(100);
        let takes = Duration::from_millis(300);
        let wake = Arc::new(Notify::new());
        let (rounds, shutdown, task) = spawn_paced(&wake, Pacing::figures(interval), None, takes);
        for _ in 0..300 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = rounds.lock().unwrap().clone();
        // Three seconds of commits, rounds of 300 ms started 600 ms apart: five or six.
        assert!((5..=6).contains(&seen.len()), "{seen:?}");
        for pair in seen.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= takes * 2, "{seen:?}");
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_indicators_rebuild_a_tenth_as_often_as_the_figures_under_a_stream_of_commits() {
        let interval = Duration::from_millis(100);
        let pacing = Pacing::indicators(interval);
        let wake = Arc::new(Notify::new());
        let (rounds, shutdown, task) = spawn_paced(&wake, pacing, None, Duration::from_millis(50));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = Instant::now();
        // A commit every 10 ms for five seconds.
        for _ in 0..500 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = rounds.lock().unwrap().clone();
        assert_eq!(seen[0], (first, true), "the first change is not held back");
        for pair in seen.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= interval * 10, "{seen:?}");
        }
        assert!((5..=6).contains(&seen.len()), "{seen:?}");
        // A slow one (300 ms) is busy at most a quarter of the time.
        assert_eq!(
            pacing.next(first, Duration::from_millis(300)),
            first + Duration::from_millis(1_200)
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_interval_every_commit_rebuilds_and_the_poll_looks_meanwhile() {
        let wake = Arc::new(Notify::new());
        let poll = Duration::from_millis(250);
        let (rounds, shutdown, task) = spawn_paced(
            &wake,
            Pacing::figures(Duration::ZERO),
            Some(poll),
            Duration::from_millis(1),
        );
        for _ in 0..10 {
            wake.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(rounds.lock().unwrap().len(), 10);
        assert!(rounds.lock().unwrap().iter().all(|(_, woken)| *woken));
        // A second with no commit: the poll's rounds, four of them.
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let polled: Vec<bool> = rounds.lock().unwrap()[10..].iter().map(|r| r.1).collect();
        assert_eq!(polled, vec![false; 4]);
        shutdown.cancel();
        task.await.unwrap();
    }
}
