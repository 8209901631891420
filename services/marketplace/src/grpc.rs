//! The tonic adapter: authenticates, checks the envelope, validates, and hands over to the
//! store. No business rule lives here.

use std::sync::Arc;

use agriportal_platform::auth::Authenticator;
use agriportal_platform::http::metrics;
use agriportal_platform::reference::Partner;
use agriportal_platform::Result;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_ingest_server::MarketplaceIngest;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::domain::{self, check_envelope, content_hash};
use crate::error;
use crate::store::{Batch, MarketplaceStore};

/// Implements `agriportal.marketplace.v1.MarketplaceIngest` over a store.
pub struct GrpcAdapter {
    store: Arc<dyn MarketplaceStore>,
    auth: Arc<Authenticator>,
    limits: Limits,
}

impl GrpcAdapter {
    /// An adapter over `store`, authenticating with `auth`.
    pub fn new(store: Arc<dyn MarketplaceStore>, auth: Arc<Authenticator>, limits: Limits) -> Self {
        GrpcAdapter {
            store,
            auth,
            limits,
        }
    }

    async fn push_sales(
        &self,
        partner: Partner,
        request: pb::PushSalesRequest,
    ) -> Result<pb::PushResult> {
        let encoded = request.encoded_len();
        check_envelope(
            &request.batch_id,
            request.records.len(),
            encoded,
            &self.limits,
        )?;
        let validated = domain::validate_sales(&request.records, &self.limits);
        let batch = Batch {
            content_hash: content_hash("sales", &request),
            batch_id: request.batch_id.clone(),
            request: request.encode_to_vec(),
            validated,
        };
        let result = self.store.push_sales(partner, batch).await?;
        record_metrics(partner, "sales", &result);
        Ok(result)
    }

    async fn push_onboarding(
        &self,
        partner: Partner,
        request: pb::PushOnboardingRequest,
    ) -> Result<pb::PushResult> {
        let encoded = request.encoded_len();
        check_envelope(
            &request.batch_id,
            request.records.len(),
            encoded,
            &self.limits,
        )?;
        let validated = domain::validate_onboarding(&request.records, &self.limits);
        let batch = Batch {
            content_hash: content_hash("onboarding", &request),
            batch_id: request.batch_id.clone(),
            request: request.encode_to_vec(),
            validated,
        };
        let result = self.store.push_onboarding(partner, batch).await?;
        record_metrics(partner, "onboarding", &result);
        Ok(result)
    }
}

fn record_metrics(partner: Partner, kind: &str, result: &pb::PushResult) {
    let m = metrics();
    let help = "Records received from partners, by outcome";
    for (outcome, n) in [
        ("accepted", result.accepted),
        ("unchanged", result.unchanged),
        ("corrected", result.corrected),
        ("rejected", result.rejected),
    ] {
        let labels = format!(
            "partner=\"{}\",kind=\"{kind}\",outcome=\"{outcome}\"",
            partner.code()
        );
        m.add(
            "agriportal_marketplace_records_total",
            &labels,
            help,
            i64::from(n),
        );
    }
}

#[tonic::async_trait]
impl MarketplaceIngest for GrpcAdapter {
    async fn push_sales(
        &self,
        request: Request<pb::PushSalesRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        Ok(Response::new(
            self.push_sales(partner, request.into_inner()).await?,
        ))
    }

    async fn push_onboarding(
        &self,
        request: Request<pb::PushOnboardingRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        Ok(Response::new(
            self.push_onboarding(partner, request.into_inner()).await?,
        ))
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::PushResult>, Status> {
        let partner = self.auth.require_partner(request.metadata()).await?;
        let batch_id = &request.get_ref().batch_id;
        if batch_id.is_empty() {
            return Err(error::bad_batch_id("is empty").into());
        }
        match self.store.get_batch(partner, batch_id).await? {
            Some(result) => Ok(Response::new(result)),
            None => Err(error::batch_not_found(batch_id).into()),
        }
    }
}
