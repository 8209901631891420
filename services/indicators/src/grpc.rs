//! The tonic adapter of `agriportal.indicators.v1.Indicators`: authenticate, delegate to
//! [`Reports`]. No rule lives here.

use std::sync::Arc;

use agriportal_platform::auth::{Authenticator, Claims};
use agriportal_platform::grpc::MAX_DECODED_BYTES;
use agriportal_proto::indicators::v1 as pb;
use agriportal_proto::indicators::v1::indicators_server::{
    Indicators as IndicatorsApi, IndicatorsServer,
};
use tonic::{Request, Response, Status};

use crate::domain::Action;
use crate::service::Reports;

/// The gRPC service, ready to mount.
pub fn server(reports: Arc<Reports>, auth: Arc<Authenticator>) -> IndicatorsServer<Adapter> {
    IndicatorsServer::new(Adapter { reports, auth }).max_decoding_message_size(MAX_DECODED_BYTES)
}

/// Delegates to [`Reports`] with the caller's verified claims.
pub struct Adapter {
    reports: Arc<Reports>,
    auth: Arc<Authenticator>,
}

impl Adapter {
    async fn claims<T>(&self, request: &Request<T>) -> Result<Claims, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.auth.authenticate(header).await?)
    }
}

#[tonic::async_trait]
impl IndicatorsApi for Adapter {
    async fn list_indicators(
        &self,
        request: Request<pb::ListIndicatorsRequest>,
    ) -> Result<Response<pb::ListIndicatorsResponse>, Status> {
        let claims = self.claims(&request).await?;
        let indicators = self.reports.list_indicators(&claims).await?;
        Ok(Response::new(pb::ListIndicatorsResponse { indicators }))
    }

    async fn list_org_units(
        &self,
        request: Request<pb::ListOrgUnitsRequest>,
    ) -> Result<Response<pb::ListOrgUnitsResponse>, Status> {
        let claims = self.claims(&request).await?;
        let org_units = self.reports.list_org_units(&claims, request.get_ref())?;
        Ok(Response::new(pb::ListOrgUnitsResponse { org_units }))
    }

    async fn save_indicator(
        &self,
        request: Request<pb::SaveIndicatorRequest>,
    ) -> Result<Response<pb::Indicator>, Status> {
        let claims = self.claims(&request).await?;
        let saved = self
            .reports
            .save_indicator(&claims, request.into_inner())
            .await?;
        Ok(Response::new(saved))
    }

    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::Target>, Status> {
        let claims = self.claims(&request).await?;
        let target = self
            .reports
            .set_target(&claims, request.into_inner())
            .await?;
        Ok(Response::new(target))
    }

    async fn list_targets(
        &self,
        request: Request<pb::ListTargetsRequest>,
    ) -> Result<Response<pb::ListTargetsResponse>, Status> {
        let claims = self.claims(&request).await?;
        let targets = self
            .reports
            .list_targets(&claims, request.get_ref())
            .await?;
        Ok(Response::new(pb::ListTargetsResponse { targets }))
    }

    async fn save_report(
        &self,
        request: Request<pb::SaveReportRequest>,
    ) -> Result<Response<pb::SaveReportResponse>, Status> {
        let claims = self.claims(&request).await?;
        let saved = self
            .reports
            .save_report(&claims, request.into_inner())
            .await?;
        Ok(Response::new(saved))
    }

    async fn submit_report(
        &self,
        request: Request<pb::ReportRef>,
    ) -> Result<Response<pb::Report>, Status> {
        let claims = self.claims(&request).await?;
        let r = request.get_ref();
        let report = self
            .reports
            .review(&claims, &r.province_code, &r.period, "", Action::Submit)
            .await?;
        Ok(Response::new(report))
    }

    async fn approve_report(
        &self,
        request: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        self.review(request, Action::Approve).await
    }

    async fn return_report(
        &self,
        request: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        self.review(request, Action::Return).await
    }

    async fn reopen_report(
        &self,
        request: Request<pb::ReviewRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        self.review(request, Action::Reopen).await
    }

    async fn get_report(
        &self,
        request: Request<pb::ReportRef>,
    ) -> Result<Response<pb::Report>, Status> {
        let claims = self.claims(&request).await?;
        let report = self.reports.get_report(&claims, request.get_ref()).await?;
        Ok(Response::new(report))
    }

    async fn list_reports(
        &self,
        request: Request<pb::ListReportsRequest>,
    ) -> Result<Response<pb::ListReportsResponse>, Status> {
        let claims = self.claims(&request).await?;
        let list = self
            .reports
            .list_reports(&claims, request.get_ref())
            .await?;
        Ok(Response::new(list))
    }

    async fn get_completeness(
        &self,
        request: Request<pb::GetCompletenessRequest>,
    ) -> Result<Response<pb::GetCompletenessResponse>, Status> {
        let claims = self.claims(&request).await?;
        let list = self
            .reports
            .completeness(&claims, request.get_ref())
            .await?;
        Ok(Response::new(list))
    }

    async fn import_report(
        &self,
        request: Request<pb::ImportReportRequest>,
    ) -> Result<Response<pb::ImportReportResponse>, Status> {
        let claims = self.claims(&request).await?;
        let result = self.reports.import(&claims, request.into_inner()).await?;
        Ok(Response::new(result))
    }

    async fn export_report(
        &self,
        request: Request<pb::ReportRef>,
    ) -> Result<Response<pb::ExportReportResponse>, Status> {
        let claims = self.claims(&request).await?;
        let file = self.reports.export(&claims, request.get_ref()).await?;
        Ok(Response::new(file))
    }
}

impl Adapter {
    async fn review(
        &self,
        request: Request<pb::ReviewRequest>,
        action: Action,
    ) -> Result<Response<pb::Report>, Status> {
        let claims = self.claims(&request).await?;
        let r = request.get_ref();
        let report = self
            .reports
            .review(&claims, &r.province_code, &r.period, &r.comment, action)
            .await?;
        Ok(Response::new(report))
    }
}
