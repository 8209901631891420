//! The tonic adapters: authenticate, then delegate to [`Ingest`]. No rule lives here.

use std::sync::Arc;

use agriportal_platform::auth::Authenticator;
use agriportal_platform::grpc::MAX_DECODED_BYTES;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_audit_server::{
    MarketplaceAudit, MarketplaceAuditServer,
};
use agriportal_proto::marketplace::v1::marketplace_ingest_server::{
    MarketplaceIngest, MarketplaceIngestServer,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::service::{Ingest, PartnerSlot};

/// Holds the call's partner slot (if the early check took one) while the handler runs:
/// `Request::into_inner` would drop it with the extensions.
fn hold_slot<T>(request: &mut Request<T>) -> Option<PartnerSlot> {
    request.extensions_mut().remove::<PartnerSlot>()
}

/// `MarketplaceIngest` behind [`EarlyThrottle`], ready to mount.
pub fn ingest_server(
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
) -> InterceptedService<MarketplaceIngestServer<GrpcAdapter>, EarlyThrottle> {
    let throttle = EarlyThrottle {
        auth: auth.clone(),
        ingest: ingest.clone(),
    };
    let server = MarketplaceIngestServer::new(GrpcAdapter { ingest, auth })
        .max_decoding_message_size(MAX_DECODED_BYTES);
    InterceptedService::new(server, throttle)
}

/// `MarketplaceAudit`, ready to mount.
pub fn audit_server(
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
) -> MarketplaceAuditServer<AuditAdapter> {
    MarketplaceAuditServer::new(AuditAdapter { ingest, auth })
}

/// Refuses a partner's call before its body is read or decoded while the partner's bucket is
/// empty or it has its maximum of calls in flight, so a partner flooding at many times its
/// quota costs the server a header check per call rather than the decoding of every batch it
/// sends, and never holds more of the process's request slots than its own cap. A call it lets
/// through carries its partner slot (released when the handler is done) and is authenticated,
/// sized and throttled in full by [`Ingest`].
#[derive(Clone)]
pub struct EarlyThrottle {
    auth: Arc<Authenticator>,
    ingest: Arc<Ingest>,
}

impl tonic::service::Interceptor for EarlyThrottle {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some(partner) = self.auth.partner_hint(header) else {
            return Ok(request);
        };
        if let Some(refusal) = self.ingest.early_refusal(partner) {
            return Err(refusal.into());
        }
        let slot = self.ingest.take_slot(partner)?;
        request.extensions_mut().insert(slot);
        Ok(request)
    }
}

/// Implements `agriportal.marketplace.v1.MarketplaceIngest`: partner tokens only.
pub struct GrpcAdapter {
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl MarketplaceIngest for GrpcAdapter {
    async fn push_sales(
        &self,
        mut request: Request<pb::PushSalesRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let _slot = hold_slot(&mut request);
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .push_sales(partner, request.into_inner())
            .await?;
        Ok(Response::new(result))
    }

    async fn push_onboarding(
        &self,
        mut request: Request<pb::PushOnboardingRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let _slot = hold_slot(&mut request);
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .push_onboarding(partner, request.into_inner())
            .await?;
        Ok(Response::new(result))
    }

    async fn get_batch(
        &self,
        mut request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let _slot = hold_slot(&mut request);
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .get_batch(partner, &request.get_ref().batch_id)
            .await?;
        Ok(Response::new(result))
    }
}

/// Implements `agriportal.marketplace.v1.MarketplaceAudit`: admin tokens only.
pub struct AuditAdapter {
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
}

#[tonic::async_trait]
impl MarketplaceAudit for AuditAdapter {
    async fn get_rollup_cells(
        &self,
        request: Request<pb::GetRollupCellsRequest>,
    ) -> Result<Response<pb::GetRollupCellsResponse>, Status> {
        self.auth.require_admin(request.metadata()).await?;
        let response = self.ingest.rollup_cells(request.get_ref()).await?;
        Ok(Response::new(response))
    }
}
