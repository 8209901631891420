//! The dashboard queries, shared by the gRPC and HTTP adapters so both answer alike.

use std::sync::Arc;

use agriportal_platform::Result;

use crate::domain::{self, NationalView, Point, ProvinceView, SeriesParams, SeriesQuery};
use crate::indicator_snapshot::{Answer, Cached, Query};
use crate::series::SeriesCache;
use crate::snapshot::{JsonBody, Snapshots};
use crate::store::{GatewayStore, Store};

// The indicator queries and their views live in `indicators`; re-exported here, where the
// adapters have always found them.
pub use crate::indicators::{
    period_type, vietnam_time, CommuneFigure, CommunesNote, CommunesView, CompletenessView,
    IndicatorCommunesView, IndicatorProgressView, IndicatorSummaryView, PlaceFigure, ReportingView,
    StoreReads, BY_COMMUNE,
};

/// Read side of the gateway.
#[derive(Clone)]
pub struct Dashboard {
    store: Arc<Store>,
    snapshots: Arc<Snapshots>,
    series: Arc<SeriesCache<SeriesQuery, Series>>,
    reads: StoreReads,
}

/// A checked series and its points.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Series {
    /// Metric name.
    pub metric: &'static str,
    /// Granularity name.
    pub granularity: &'static str,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// Province filter.
    pub province: Option<String>,
    /// Partner filter.
    pub partner: Option<&'static str>,
    /// Points, oldest first.
    pub points: Vec<Point>,
}

impl Dashboard {
    /// Queries over `store`, with snapshots of their own (built by [`Self::refresh`]).
    pub fn new(store: Arc<Store>) -> Self {
        let snapshots = Snapshots::new(store.clone());
        Dashboard::with_snapshots(store, snapshots)
    }

    /// Queries over `store`, answering the summaries from `snapshots` (which the service's
    /// consumer tells of its commits).
    pub fn with_snapshots(store: Arc<Store>, snapshots: Arc<Snapshots>) -> Self {
        Dashboard {
            reads: StoreReads::new(store.clone()),
            store,
            snapshots,
            series: Arc::new(SeriesCache::default()),
        }
    }

    /// The in-memory figures this dashboard answers from.
    pub fn snapshots(&self) -> &Arc<Snapshots> {
        &self.snapshots
    }

    /// Reads the figures from the store into a new snapshot (at start, and in tests where no
    /// rebuild task runs).
    pub async fn refresh(&self) -> Result<()> {
        self.snapshots.refresh().await
    }

    /// National figures (from the snapshot).
    pub async fn national(&self) -> Result<NationalView> {
        Ok(self.snapshots.current()?.national.clone())
    }

    /// `GET /api/v1/national`'s body, serialised once per change.
    pub async fn national_json(&self) -> Result<JsonBody> {
        Ok(self.snapshots.current()?.national_json.clone())
    }

    /// Every province's figures (from the snapshot).
    pub async fn provinces(&self) -> Result<Vec<ProvinceView>> {
        Ok(self.snapshots.current()?.provinces.clone())
    }

    /// `GET /api/v1/provinces`'s body, serialised once per change.
    pub async fn provinces_json(&self) -> Result<JsonBody> {
        Ok(self.snapshots.current()?.provinces_json.clone())
    }

    /// One province (a pre-2025 code is mapped to its province).
    pub async fn province(&self, code: &str) -> Result<ProvinceView> {
        let snapshot = self.snapshots.current()?;
        let (view, _) = snapshot.province(code)?;
        Ok(view.clone())
    }

    /// `GET /api/v1/provinces/{code}`'s body, serialised once per change.
    pub async fn province_json(&self, code: &str) -> Result<JsonBody> {
        let snapshot = self.snapshots.current()?;
        let (_, body) = snapshot.province(code)?;
        Ok(body.clone())
    }

    /// A time series, from the series rollups; answers are kept until the figures change.
    pub async fn series(&self, params: &SeriesParams) -> Result<Arc<Series>> {
        let query: SeriesQuery = params.check()?;
        // The version before the read: what is read is at least that new, so the answer may
        // be kept under it (and is dropped when the version moves). Before the first
        // snapshot there is no version to keep it under.
        let version = self.snapshots.version();
        if let Some(hit) = self.series.get(version, &query) {
            return Ok(hit);
        }
        let values = self.store.series_values(&query).await?;
        let series = Arc::new(Series {
            metric: query.metric.name(),
            granularity: query.granularity.name(),
            from: query.from.to_string(),
            to: query.to.to_string(),
            province: query.province.clone(),
            partner: query.partner.map(|p| p.code()),
            points: domain::bucket(&query, &values),
        });
        if version >= 0 {
            self.series.put(version, query, series.clone());
        }
        Ok(series)
    }

    /// The catalogue with each indicator's national figure (see [`StoreReads::indicators`]).
    pub async fn indicators(
        &self,
        period: &str,
        province: &str,
    ) -> Result<Vec<IndicatorSummaryView>> {
        Ok(self.indicators_answer(period, province).await?.view.clone())
    }

    /// [`Self::indicators`] and its JSON body: the default list (no period, no province) from
    /// the snapshot, any other from its cache (per snapshot version), else read and kept.
    pub async fn indicators_answer(
        &self,
        period: &str,
        province: &str,
    ) -> Result<Arc<Answer<Vec<IndicatorSummaryView>>>> {
        // Without a snapshot of today's (none built yet, or the date has just changed, which
        // moves the default periods) every answer is read, as before the snapshot.
        let Some(snapshot) = self.snapshots.indicators() else {
            return Ok(Arc::new(Answer::list(
                self.reads.indicators(period, province).await?,
            )?));
        };
        if period.trim().is_empty() && province.trim().is_empty() {
            return Ok(snapshot.list.clone());
        }
        let key = Query::List {
            period: period.trim().to_string(),
            province: province.trim().to_string(),
        };
        if let Some(Cached::List(hit)) = snapshot.cache.get(&key) {
            return Ok(hit);
        }
        let answer = Arc::new(Answer::list(
            self.reads.indicators(period, province).await?,
        )?);
        snapshot.cache.put(key, Cached::List(answer.clone()));
        Ok(answer)
    }

    /// One indicator (see [`StoreReads::indicator`]).
    pub async fn indicator(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<IndicatorProgressView> {
        Ok(self
            .indicator_answer(code, period, province)
            .await?
            .view
            .clone())
    }

    /// [`Self::indicator`] and its JSON body: an indicator's default view (its latest period,
    /// national series) from the snapshot, any other from its cache, else read and kept.
    pub async fn indicator_answer(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<Arc<Answer<IndicatorProgressView>>> {
        let Some(snapshot) = self.snapshots.indicators() else {
            return Ok(Arc::new(Answer::one(
                self.reads.indicator(code, period, province).await?,
            )?));
        };
        if period.trim().is_empty() && province.trim().is_empty() {
            return snapshot.view(code);
        }
        let key = Query::One {
            code: code.trim().to_string(),
            period: period.trim().to_string(),
            province: province.trim().to_string(),
        };
        if let Some(Cached::One(hit)) = snapshot.cache.get(&key) {
            return Ok(hit);
        }
        let answer = Arc::new(Answer::one(
            self.reads.indicator(code, period, province).await?,
        )?);
        snapshot.cache.put(key, Cached::One(answer.clone()));
        Ok(answer)
    }

    /// One indicator in one province, by commune (read on each call).
    pub async fn indicator_communes(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<IndicatorCommunesView> {
        self.reads.indicator_communes(code, period, province).await
    }

    /// Who has reported for `period` (read on each call).
    pub async fn completeness(&self, period: &str) -> Result<CompletenessView> {
        self.reads.completeness(period).await
    }
}
