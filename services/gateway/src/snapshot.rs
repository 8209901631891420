//! The read model in memory: the national, regional, provincial and per-partner figures as one
//! immutable [`Snapshot`], with its JSON bodies serialised once and their `ETag`s, so the
//! dashboards' most read answers (`/api/v1/national`, `/api/v1/provinces[/{code}]`, the gRPC
//! `Dashboard`'s summaries) cost a pointer load, not a query.
//!
//! Freshness: the figures carry a version (`meta.figures_version`), bumped in every
//! transaction that changes them (the consumer's applies and the reconciler's repairs). A
//! commit in this process wakes the rebuild at once ([`Snapshots::changed`], from the
//! consumer's `committed`); every [`Snapshots::poll`] interval the version is read, so a
//! replica sees what another replica applied. A burst of commits rebuilds once (one waiting
//! permit), and the rebuild reads the version and every figure in one statement, so a
//! snapshot is always one committed state. Two replicas' snapshots differ by at most one poll
//! interval plus one rebuild (a read of ~300 small rows).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agriportal_platform::reference::Reference;
use agriportal_platform::{http, Error, Result};
use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{self, NationalView, ProvinceView};
use crate::error::unknown_province;
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
    fn of<T: serde::Serialize>(value: &T) -> Result<JsonBody> {
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

/// The snapshot's metrics: rebuilds, failed reads, and the version served (compare it across
/// replicas to see how far apart they are).
struct SnapshotMetrics {
    rebuilds: agriportal_platform::metrics::Counter,
    failures: agriportal_platform::metrics::Counter,
    version: agriportal_platform::metrics::Gauge,
}

fn metrics() -> &'static SnapshotMetrics {
    static METRICS: std::sync::OnceLock<SnapshotMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        use agriportal_platform::metrics::{counter, gauge};
        SnapshotMetrics {
            rebuilds: counter(
                "agriportal_gateway_snapshot_rebuilds",
                "In-memory snapshots of the national and provincial figures built from the store",
            ),
            failures: counter(
                "agriportal_gateway_snapshot_failures",
                "Failed reads of the figures for the snapshot (the last snapshot is served meanwhile)",
            ),
            version: gauge(
                "agriportal_gateway_snapshot_version",
                "figures_version of the snapshot served",
            ),
        }
    })
}

/// The current snapshot, replaced whole after each change.
pub struct Snapshots {
    store: Arc<Store>,
    current: ArcSwap<Snapshot>,
    changed: Notify,
}

impl Snapshots {
    /// Snapshots of `store`'s figures; none is built until [`Self::refresh`].
    pub fn new(store: Arc<Store>) -> Arc<Snapshots> {
        Arc::new(Snapshots {
            store,
            current: ArcSwap::from_pointee(Snapshot::unbuilt()),
            changed: Notify::new(),
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

    /// Says that a commit changed the figures: the rebuild task reads them again (once for
    /// any number of calls before it runs).
    pub fn changed(&self) {
        self.changed.notify_one();
    }

    /// Reads the figures from the store and makes them current, unless a newer snapshot is
    /// current already.
    pub async fn refresh(&self) -> Result<()> {
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
        Ok(())
    }

    /// Rebuilds if the store's figures' version differs from the current snapshot's: what a
    /// replica polls to see the changes another replica applied.
    pub async fn refresh_if_changed(&self) -> Result<bool> {
        if self.store.figures_version().await? == self.version() {
            return Ok(false);
        }
        self.refresh().await?;
        Ok(true)
    }

    /// Keeps the snapshot fresh until `shutdown`: at once after a commit of this process,
    /// and within `poll` of another replica's. A failed read keeps the last snapshot and is
    /// tried again at the next poll.
    pub async fn run(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => self.refresh().await.map(|_| true),
                _ = tokio::time::sleep(poll) => self.refresh_if_changed().await,
            };
            if let Err(err) = outcome {
                metrics().failures.inc();
                tracing::warn!(error = %err, "reading the figures for the snapshot failed; serving the last one");
            }
        }
    }
}
