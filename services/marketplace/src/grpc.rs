//! The tonic adapters: authenticate, then delegate to [`Ingest`]. No rule lives here.

use std::sync::Arc;

use agriportal_platform::auth::{Authenticator, Claims};
use agriportal_platform::grpc::MAX_DECODED_BYTES;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_audit_server::{
    MarketplaceAudit, MarketplaceAuditServer,
};
use agriportal_proto::marketplace::v1::marketplace_ingest_server::MarketplaceIngest;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::codec::BoundedIngest;
use crate::service::Ingest;

/// `MarketplaceIngest` behind [`EarlyThrottle`], ready to mount.
pub fn ingest_server(
    ingest: Arc<Ingest>,
    auth: Arc<Authenticator>,
) -> InterceptedService<BoundedIngest<GrpcAdapter>, EarlyThrottle> {
    let throttle = EarlyThrottle {
        ingest: ingest.clone(),
    };
    let limits = ingest.limits();
    // The push rpcs decode through the bounded codec: a batch over its limits is refused
    // from a scan of its wire format, before any record is allocated. Nothing this service
    // accepts is larger than a batch, so the transport buffers no more than one either: a
    // frame announcing more is refused from its 5-byte header, before its body is read (with
    // the platform's 16 MiB, a partner at its cap of calls in flight could hold 256 MiB).
    let max_message = limits.max_bytes.min(MAX_DECODED_BYTES);
    let server = BoundedIngest::new(GrpcAdapter { ingest, auth }, limits, max_message);
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
/// empty, so a partner flooding at many times its quota costs the server a header check per
/// call rather than the decoding of every batch it sends. The caller was authenticated at the
/// edge ([`agriportal_platform::access`], which also holds it to its share of the request
/// slots); its claims come with the request. A call it lets through is authenticated, sized and
/// throttled in full by the handler and [`Ingest`].
#[derive(Clone)]
pub struct EarlyThrottle {
    ingest: Arc<Ingest>,
}

impl tonic::service::Interceptor for EarlyThrottle {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(partner) = request
            .extensions()
            .get::<Claims>()
            .and_then(Claims::partner)
        else {
            return Ok(request);
        };
        if let Some(refusal) = self.ingest.early_refusal(partner) {
            return Err(refusal.into());
        }
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
        request: Request<pb::PushSalesRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .push_sales(partner, request.into_inner())
            .await?;
        Ok(Response::new(result))
    }

    async fn push_onboarding(
        &self,
        request: Request<pb::PushOnboardingRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .push_onboarding(partner, request.into_inner())
            .await?;
        Ok(Response::new(result))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        let result = self
            .ingest
            .get_batch(partner, &request.get_ref().batch_id)
            .await?;
        Ok(Response::new(result))
    }
}

/// Implements `agriportal.marketplace.v1.MarketplaceAudit`: admin tokens, and services' own
/// credentials addressed to the marketplace (the gateway's reconciliation).
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
        self.auth
            .require_internal(request.metadata(), crate::config::SCHEMA)
            .await?;
        let response = self.ingest.rollup_cells(request.get_ref()).await?;
        Ok(Response::new(response))
    }
}
