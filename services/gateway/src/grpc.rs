//! The tonic adapter of `agriportal.gateway.v1.Dashboard`: maps requests to the shared
//! dashboard queries and their answers to protobuf.

use agriportal_platform::reference::{Partner, HOUSEHOLD_TARGET};
use agriportal_proto::gateway::v1 as pb;
use agriportal_proto::gateway::v1::dashboard_server;
use tonic::{Request, Response, Status};

use crate::domain::{Figure, HouseholdsView, ProvinceView, SalesWithPartners, SeriesParams};
use crate::service::{CommunesView, Dashboard, PlaceFigure};

/// Implements the gRPC service over the shared queries.
pub struct GrpcAdapter {
    dashboard: Dashboard,
}

impl GrpcAdapter {
    /// An adapter over `dashboard`.
    pub fn new(dashboard: Dashboard) -> Self {
        GrpcAdapter { dashboard }
    }
}

fn households(view: &HouseholdsView) -> pb::Households {
    let by = |p: Partner| view.by_partner.get(p.code()).copied().unwrap_or(0);
    pb::Households {
        onboarded: view.onboarded,
        active: view.active,
        target: view.target.unwrap_or(0),
        progress_pct: view.progress_pct.unwrap_or(0.0),
        postmart: by(Partner::Postmart),
        voso: by(Partner::Voso),
    }
}

fn sales(view: &SalesWithPartners) -> (pb::Sales, pb::SalesByPartner) {
    let of = |p: Partner| {
        let s = view.by_partner.get(p.code()).copied().unwrap_or_default();
        pb::Sales {
            grams: s.grams,
            value_vnd: s.value_vnd,
            orders: s.orders,
        }
    };
    (
        pb::Sales {
            grams: view.total.grams,
            value_vnd: view.total.value_vnd,
            orders: view.total.orders,
        },
        pb::SalesByPartner {
            postmart: Some(of(Partner::Postmart)),
            voso: Some(of(Partner::Voso)),
        },
    )
}

fn province(view: &ProvinceView) -> pb::ProvinceSummary {
    let (total, by_partner) = sales(&view.sales);
    pb::ProvinceSummary {
        code: view.code.clone(),
        name: view.name.clone(),
        region: view.region.clone(),
        households: Some(households(&view.households)),
        sales: Some(total),
        sales_by_partner: Some(by_partner),
    }
}

fn figure(f: &Figure) -> pb::Figure {
    pb::Figure {
        has_value: f.value.is_some(),
        value: f.value.map(|v| v.to_string()).unwrap_or_default(),
        target: f.target.map(|v| v.to_string()).unwrap_or_default(),
        progress_pct: f.progress_pct.unwrap_or(0.0),
        has_progress: f.progress_pct.is_some(),
        missing_reason: f
            .missing
            .map(|m| m.as_str().to_string())
            .unwrap_or_default(),
    }
}

fn place(p: &PlaceFigure) -> pb::ProvinceFigure {
    pb::ProvinceFigure {
        code: p.code.clone(),
        name: p.name.clone(),
        figure: Some(figure(&p.figure)),
        state: p.state.clone().unwrap_or_default(),
        region: p.region.clone(),
    }
}

#[tonic::async_trait]
impl dashboard_server::Dashboard for GrpcAdapter {
    async fn list_indicator_progress(
        &self,
        request: Request<pb::ListIndicatorProgressRequest>,
    ) -> Result<Response<pb::ListIndicatorProgressResponse>, Status> {
        let r = request.get_ref();
        let list = self.dashboard.indicators(&r.period, &r.province).await?;
        Ok(Response::new(pb::ListIndicatorProgressResponse {
            indicators: list
                .into_iter()
                .map(|i| pb::IndicatorSummary {
                    national: Some(figure(&i.national)),
                    period: i.period.to_string(),
                    province: i.province.as_ref().map(place),
                    indicator: Some(i.indicator),
                })
                .collect(),
        }))
    }

    async fn get_indicator_progress(
        &self,
        request: Request<pb::GetIndicatorProgressRequest>,
    ) -> Result<Response<pb::IndicatorProgress>, Status> {
        let r = request.get_ref();
        let view = self
            .dashboard
            .indicator(&r.code, &r.period, &r.province)
            .await?;
        Ok(Response::new(pb::IndicatorProgress {
            period: view.period.to_string(),
            national: Some(figure(&view.national)),
            provinces: view.provinces.iter().map(place).collect(),
            series: view
                .series
                .iter()
                .map(|(p, f)| pb::PeriodFigure {
                    period: p.to_string(),
                    figure: Some(figure(f)),
                })
                .collect(),
            regions: view.regions.iter().map(place).collect(),
            indicator: Some(view.indicator),
        }))
    }

    async fn get_indicator_communes(
        &self,
        request: Request<pb::GetIndicatorCommunesRequest>,
    ) -> Result<Response<pb::IndicatorCommunes>, Status> {
        let r = request.get_ref();
        let view = self
            .dashboard
            .indicator_communes(&r.code, &r.period, &r.province)
            .await?;
        let (communes, unassigned, communes_note) = match &view.communes {
            CommunesView::Figures {
                communes,
                unassigned,
            } => (
                communes
                    .iter()
                    .map(|c| pb::CommuneFigure {
                        code: c.code.clone(),
                        name: c.name.clone(),
                        value: c.value.to_string(),
                    })
                    .collect(),
                unassigned.to_string(),
                String::new(),
            ),
            CommunesView::None(note) => (Vec::new(), String::new(), note.as_str().to_string()),
        };
        Ok(Response::new(pb::IndicatorCommunes {
            code: view.indicator.code.clone(),
            period: view.period.to_string(),
            province: Some(place(&view.province)),
            communes,
            unassigned,
            communes_note,
            indicator: Some(view.indicator),
        }))
    }

    async fn get_completeness(
        &self,
        request: Request<pb::GetCompletenessRequest>,
    ) -> Result<Response<pb::Completeness>, Status> {
        let view = self
            .dashboard
            .completeness(&request.get_ref().period)
            .await?;
        let c = view.counts;
        Ok(Response::new(pb::Completeness {
            period: view.period.to_string(),
            deadline: view.deadline.to_string(),
            provinces: view
                .provinces
                .into_iter()
                .map(|p| pb::ProvinceReporting {
                    code: p.code,
                    name: p.name,
                    state: p.state,
                    submitted_at_ms: p.submitted_at_ms,
                    approved_at_ms: p.approved_at_ms,
                    on_time: p.on_time,
                    overdue: p.overdue,
                })
                .collect(),
            counts: Some(pb::CompletenessCounts {
                missing: c.missing,
                draft: c.draft,
                submitted: c.submitted,
                returned: c.returned,
                approved: c.approved,
                on_time: c.on_time,
                overdue: c.overdue,
            }),
        }))
    }

    async fn get_national_summary(
        &self,
        _request: Request<pb::GetNationalSummaryRequest>,
    ) -> Result<Response<pb::NationalSummary>, Status> {
        let view = self.dashboard.national().await?;
        let (total, by_partner) = sales(&view.sales);
        let mut hh = households(&view.households);
        hh.target = HOUSEHOLD_TARGET;
        Ok(Response::new(pb::NationalSummary {
            as_of: view.as_of.unwrap_or_default(),
            households: Some(hh),
            sales: Some(total),
            sales_by_partner: Some(by_partner),
            by_region: view
                .by_region
                .iter()
                .map(|r| pb::RegionFigures {
                    region: r.region.to_string(),
                    grams: r.grams,
                    value_vnd: r.value_vnd,
                    orders: r.orders,
                    households_onboarded: r.households_onboarded,
                })
                .collect(),
        }))
    }

    async fn list_provinces(
        &self,
        _request: Request<pb::ListProvincesRequest>,
    ) -> Result<Response<pb::ListProvincesResponse>, Status> {
        let provinces = self.dashboard.provinces().await?;
        Ok(Response::new(pb::ListProvincesResponse {
            provinces: provinces.iter().map(province).collect(),
        }))
    }

    async fn get_province(
        &self,
        request: Request<pb::GetProvinceRequest>,
    ) -> Result<Response<pb::ProvinceSummary>, Status> {
        let view = self.dashboard.province(&request.get_ref().code).await?;
        Ok(Response::new(province(&view)))
    }

    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<Response<pb::GetTimeSeriesResponse>, Status> {
        let r = request.into_inner();
        let params = SeriesParams {
            metric: Some(r.metric),
            granularity: Some(r.granularity),
            from: Some(r.from),
            to: Some(r.to),
            province: Some(r.province),
            partner: Some(r.partner),
        };
        let series = self.dashboard.series(&params).await?;
        Ok(Response::new(pb::GetTimeSeriesResponse {
            metric: series.metric.to_string(),
            granularity: series.granularity.to_string(),
            points: series
                .points
                .iter()
                .map(|p| pb::TimePoint {
                    period_start: p.period_start.clone(),
                    value: p.value,
                })
                .collect(),
        }))
    }
}
