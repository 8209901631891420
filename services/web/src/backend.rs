//! The figures the pages show, read from the gateway's `Dashboard` over gRPC with the kit's
//! client (the web's own credential, trace context, a short deadline). A failed call is a
//! `platform::Error`, which a page shows as "these figures are unavailable" while serving the
//! rest of itself.

use agriportal_platform::client::{self, PeerChannel};
use agriportal_platform::Result;
use agriportal_proto::gateway::v1 as pb;
use agriportal_proto::gateway::v1::dashboard_client::DashboardClient;

/// The gateway, as the pages read it.
#[derive(Clone, Debug)]
pub struct Backend {
    dashboard: DashboardClient<PeerChannel>,
}

/// A time series as asked for by the dashboard's filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    /// `sales_grams`, `sales_value_vnd`, `orders` or `households_onboarded`.
    pub metric: String,
    /// `day`, `week` or `month`.
    pub granularity: String,
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`.
    pub to: String,
    /// A 2025 province code, or empty for the nation.
    pub province: String,
    /// `postmart`, `voso`, or empty for both.
    pub partner: String,
}

impl Backend {
    /// The gateway over `channel`.
    pub fn new(channel: PeerChannel) -> Self {
        Backend {
            dashboard: DashboardClient::new(channel),
        }
    }

    /// National figures.
    pub async fn national(&self) -> Result<pb::NationalSummary> {
        let mut client = self.dashboard.clone();
        Ok(client
            .get_national_summary(pb::GetNationalSummaryRequest {})
            .await
            .map_err(client::error("gateway"))?
            .into_inner())
    }

    /// Every province's figures.
    pub async fn provinces(&self) -> Result<Vec<pb::ProvinceSummary>> {
        let mut client = self.dashboard.clone();
        Ok(client
            .list_provinces(pb::ListProvincesRequest {})
            .await
            .map_err(client::error("gateway"))?
            .into_inner()
            .provinces)
    }

    /// A time series.
    pub async fn series(&self, query: &SeriesQuery) -> Result<pb::GetTimeSeriesResponse> {
        let mut client = self.dashboard.clone();
        Ok(client
            .get_time_series(pb::GetTimeSeriesRequest {
                metric: query.metric.clone(),
                granularity: query.granularity.clone(),
                from: query.from.clone(),
                to: query.to.clone(),
                province: query.province.clone(),
                partner: query.partner.clone(),
            })
            .await
            .map_err(client::error("gateway"))?
            .into_inner())
    }
}
