//! The dashboard queries, shared by the gRPC and HTTP adapters so both answer alike.

use std::sync::Arc;

use agriportal_platform::reference::Reference;
use agriportal_platform::Result;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::domain::{self, NationalView, Point, ProvinceView, SeriesParams, SeriesQuery};
use crate::error::unknown_province;
use crate::store::GatewayStore;

/// Read side of the gateway.
#[derive(Clone)]
pub struct Dashboard {
    store: Arc<dyn GatewayStore>,
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
    /// Queries over `store`.
    pub fn new(store: Arc<dyn GatewayStore>) -> Self {
        Dashboard { store }
    }

    /// National figures.
    pub async fn national(&self) -> Result<NationalView> {
        let (sales, households, as_of) = tokio::try_join!(
            self.store.sales_totals(),
            self.store.household_totals(),
            self.store.as_of_ms()
        )?;
        Ok(domain::national(
            &sales,
            &households,
            as_of.and_then(rfc3339),
        ))
    }

    /// Every province's figures.
    pub async fn provinces(&self) -> Result<Vec<ProvinceView>> {
        let (sales, households) =
            tokio::try_join!(self.store.sales_totals(), self.store.household_totals())?;
        Ok(domain::provinces(&sales, &households))
    }

    /// One province (a pre-2025 code is mapped to its province).
    pub async fn province(&self, code: &str) -> Result<ProvinceView> {
        let found = Reference::get()
            .resolve_province(code)
            .ok_or_else(|| unknown_province(code))?;
        let wanted = &found.province().code;
        self.provinces()
            .await?
            .into_iter()
            .find(|p| &p.code == wanted)
            .ok_or_else(|| unknown_province(code))
    }

    /// A time series.
    pub async fn series(&self, params: &SeriesParams) -> Result<Series> {
        let query: SeriesQuery = params.check()?;
        let daily = self.store.daily(&query).await?;
        Ok(Series {
            metric: query.metric.name(),
            granularity: query.granularity.name(),
            from: query.from.to_string(),
            to: query.to.to_string(),
            province: query.province.clone(),
            partner: query.partner.map(|p| p.code()),
            points: domain::bucket(&query, &daily),
        })
    }
}

fn rfc3339(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}
