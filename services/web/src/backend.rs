//! The figures the pages show, read from the gateway's `Dashboard` over gRPC with the kit's
//! client (the web's own credential, trace context, a short deadline), and the reporting
//! workflow of the indicators service, called on behalf of the signed-in official with their
//! own bearer token. A failed call is a `platform::Error`, which a page shows as "these
//! figures are unavailable" (or a 403/404) while serving the rest of itself.

use agriportal_platform::client::{self, PeerChannel};
use agriportal_platform::{Error, ErrorCode, Result};
use agriportal_proto::gateway::v1 as pb;
use agriportal_proto::gateway::v1::dashboard_client::DashboardClient;
use agriportal_proto::indicators::v1 as ipb;
use agriportal_proto::indicators::v1::indicators_client::IndicatorsClient;
use tonic::metadata::MetadataValue;

use crate::session::Bearer;

/// The services the pages read.
#[derive(Clone, Debug)]
pub struct Backend {
    dashboard: DashboardClient<PeerChannel>,
    /// The indicators service over a channel without a credential of its own: each call
    /// carries the official's token (see [`Backend::as_official`]).
    indicators: Option<IndicatorsClient<PeerChannel>>,
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

/// `message` as a request carrying `bearer` as its `authorization`: the channel's own
/// interceptor adds trace context and the deadline and, having no credential, leaves it.
fn as_official<T>(bearer: &Bearer, message: T) -> Result<tonic::Request<T>> {
    if bearer.is_empty() {
        // A session opened before tokens were kept: the official signs in again.
        return Err(Error::new(
            ErrorCode::Unauthenticated,
            "sign in again to reach the reports",
        ));
    }
    let value: MetadataValue<_> = format!("Bearer {}", bearer.0)
        .parse()
        .map_err(|_| Error::new(ErrorCode::Unauthenticated, "the token is not valid"))?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

/// The message of a call's answer, or the call's failure as a `platform::Error` naming the
/// service (`gateway` or `indicators`) the page could not reach.
fn answer<T>(
    call: std::result::Result<tonic::Response<T>, tonic::Status>,
    service: &'static str,
) -> Result<T> {
    call.map(tonic::Response::into_inner)
        .map_err(client::error(service))
}

impl Backend {
    /// The gateway over `channel`, and the indicators service over `indicators` if the web
    /// knows where it is.
    pub fn new(channel: PeerChannel, indicators: Option<PeerChannel>) -> Self {
        Backend {
            dashboard: DashboardClient::new(channel),
            indicators: indicators.map(IndicatorsClient::new),
        }
    }

    /// National figures.
    pub async fn national(&self) -> Result<pb::NationalSummary> {
        let mut client = self.dashboard.clone();
        answer(
            client
                .get_national_summary(pb::GetNationalSummaryRequest {})
                .await,
            "gateway",
        )
    }

    /// Every province's figures.
    pub async fn provinces(&self) -> Result<Vec<pb::ProvinceSummary>> {
        let mut client = self.dashboard.clone();
        Ok(answer(
            client.list_provinces(pb::ListProvincesRequest {}).await,
            "gateway",
        )?
        .provinces)
    }

    /// A time series.
    pub async fn series(&self, query: &SeriesQuery) -> Result<pb::GetTimeSeriesResponse> {
        let mut client = self.dashboard.clone();
        answer(
            client
                .get_time_series(pb::GetTimeSeriesRequest {
                    metric: query.metric.clone(),
                    granularity: query.granularity.clone(),
                    from: query.from.clone(),
                    to: query.to.clone(),
                    province: query.province.clone(),
                    partner: query.partner.clone(),
                })
                .await,
            "gateway",
        )
    }

    /// The catalogue with each indicator's public national figure (gateway) at its latest
    /// period; with `period`, the indicators of its type at that period; with `province`, each
    /// with that province's figure too (the entry form's context, in one call).
    pub async fn indicator_list(
        &self,
        period: &str,
        province: &str,
    ) -> Result<Vec<pb::IndicatorSummary>> {
        let mut client = self.dashboard.clone();
        Ok(answer(
            client
                .list_indicator_progress(pb::ListIndicatorProgressRequest {
                    period: period.to_string(),
                    province: province.to_string(),
                })
                .await,
            "gateway",
        )?
        .indicators)
    }

    /// One indicator's public figures for `period` (empty: its latest), the series of
    /// `province` (empty: the nation's).
    pub async fn indicator(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<pb::IndicatorProgress> {
        let mut client = self.dashboard.clone();
        answer(
            client
                .get_indicator_progress(pb::GetIndicatorProgressRequest {
                    code: code.to_string(),
                    period: period.to_string(),
                    province: province.to_string(),
                })
                .await,
            "gateway",
        )
    }

    /// One indicator in one province by commune (`GetIndicatorCommunes`).
    pub async fn indicator_communes(
        &self,
        code: &str,
        period: &str,
        province: &str,
    ) -> Result<pb::IndicatorCommunes> {
        let mut client = self.dashboard.clone();
        answer(
            client
                .get_indicator_communes(pb::GetIndicatorCommunesRequest {
                    code: code.to_string(),
                    period: period.to_string(),
                    province: province.to_string(),
                })
                .await,
            "gateway",
        )
    }

    fn indicators(&self) -> Result<IndicatorsClient<PeerChannel>> {
        self.indicators.clone().ok_or_else(|| {
            Error::new(
                ErrorCode::Unavailable,
                "the web does not know the indicators service's address",
            )
        })
    }

    /// The catalogue, as the official may read it.
    pub async fn catalogue(&self, who: &Bearer) -> Result<Vec<ipb::Indicator>> {
        let request = as_official(who, ipb::ListIndicatorsRequest {})?;
        Ok(answer(
            self.indicators()?.list_indicators(request).await,
            "indicators",
        )?
        .indicators)
    }

    /// Reports of `province` (empty: the official's own, or all for an admin), by state and
    /// period.
    pub async fn reports(
        &self,
        who: &Bearer,
        province: &str,
        state: ipb::ReportState,
        period: &str,
    ) -> Result<Vec<ipb::ReportSummary>> {
        let request = as_official(
            who,
            ipb::ListReportsRequest {
                province_code: province.to_string(),
                state: state as i32,
                period: period.to_string(),
            },
        )?;
        Ok(answer(self.indicators()?.list_reports(request).await, "indicators")?.reports)
    }

    /// One report, with values and history.
    pub async fn report(&self, who: &Bearer, province: &str, period: &str) -> Result<ipb::Report> {
        let request = as_official(who, report_ref(province, period))?;
        answer(self.indicators()?.get_report(request).await, "indicators")
    }

    /// Saves values into a draft.
    pub async fn save(
        &self,
        who: &Bearer,
        request: ipb::SaveReportRequest,
    ) -> Result<ipb::SaveReportResponse> {
        let request = as_official(who, request)?;
        answer(self.indicators()?.save_report(request).await, "indicators")
    }

    /// Submits a report for review.
    pub async fn submit(&self, who: &Bearer, province: &str, period: &str) -> Result<ipb::Report> {
        let request = as_official(who, report_ref(province, period))?;
        answer(
            self.indicators()?.submit_report(request).await,
            "indicators",
        )
    }

    /// A review decision: approve, return or reopen.
    pub async fn review(
        &self,
        who: &Bearer,
        decision: Decision,
        request: ipb::ReviewRequest,
    ) -> Result<ipb::Report> {
        let request = as_official(who, request)?;
        let mut client = self.indicators()?;
        let answer = match decision {
            Decision::Approve => client.approve_report(request).await,
            Decision::Return => client.return_report(request).await,
            Decision::Reopen => client.reopen_report(request).await,
        };
        self::answer(answer, "indicators")
    }

    /// Every province's reporting for `period` (empty: the latest past deadline).
    pub async fn completeness(
        &self,
        who: &Bearer,
        period: &str,
    ) -> Result<ipb::GetCompletenessResponse> {
        let request = as_official(
            who,
            ipb::GetCompletenessRequest {
                period: period.to_string(),
            },
        )?;
        answer(
            self.indicators()?.get_completeness(request).await,
            "indicators",
        )
    }

    /// Imports a CSV file.
    pub async fn import(
        &self,
        who: &Bearer,
        request: ipb::ImportReportRequest,
    ) -> Result<ipb::ImportReportResponse> {
        let request = as_official(who, request)?;
        answer(
            self.indicators()?.import_report(request).await,
            "indicators",
        )
    }

    /// A report as CSV.
    pub async fn export(
        &self,
        who: &Bearer,
        province: &str,
        period: &str,
    ) -> Result<ipb::ExportReportResponse> {
        let request = as_official(who, report_ref(province, period))?;
        answer(
            self.indicators()?.export_report(request).await,
            "indicators",
        )
    }
}

/// A review decision of the central working group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Approve a submitted report (locks it).
    Approve,
    /// Return a submitted report with a comment.
    Return,
    /// Reopen an approved report with a reason.
    Reopen,
}

impl Decision {
    /// From the form's `action`.
    pub fn parse(text: &str) -> Option<Decision> {
        match text {
            "approve" => Some(Decision::Approve),
            "return" => Some(Decision::Return),
            "reopen" => Some(Decision::Reopen),
            _ => None,
        }
    }

    /// The form's `action`.
    pub fn code(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Return => "return",
            Decision::Reopen => "reopen",
        }
    }

    /// Whether the decision needs a comment (return and reopen say why).
    pub fn needs_comment(self) -> bool {
        !matches!(self, Decision::Approve)
    }
}

fn report_ref(province: &str, period: &str) -> ipb::ReportRef {
    ipb::ReportRef {
        province_code: province.to_string(),
        period: period.to_string(),
    }
}
