//! The tonic adapter: authenticates, checks the envelope, applies the partner's rate limit,
//! validates, and hands over to the store. No business rule lives here.

use std::sync::Arc;

use agriportal_platform::auth::Authenticator;
use agriportal_platform::http::metrics;
use agriportal_platform::limits::{rate_limited, rate_limited_early, RateLimiter};
use agriportal_platform::reconcile;
use agriportal_platform::reference::Partner;
use agriportal_platform::Result;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_audit_server::MarketplaceAudit;
use agriportal_proto::marketplace::v1::marketplace_ingest_server::MarketplaceIngest;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::domain::{self, check_envelope, content_hash};
use crate::error;
use crate::store::{Batch, MarketplaceStore};

/// Each partner's token bucket of records per second (`None`: no limit).
pub type PartnerRates = Option<Arc<RateLimiter<Partner>>>;

/// Refuses a partner's call before its body is read or decoded while the partner's bucket is
/// empty, so a partner flooding at many times its quota costs the server a header check per
/// call rather than the decoding of every batch it sends. It only ever refuses: a call it lets
/// through is authenticated, sized and throttled in full by [`GrpcAdapter`].
#[derive(Clone)]
pub struct EarlyThrottle {
    auth: Arc<Authenticator>,
    rates: PartnerRates,
}

impl EarlyThrottle {
    /// The check for `rates` (none when `None`), reading tokens with `auth`.
    pub fn new(auth: Arc<Authenticator>, rates: PartnerRates) -> Self {
        EarlyThrottle { auth, rates }
    }
}

impl tonic::service::Interceptor for EarlyThrottle {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(rates) = &self.rates else {
            return Ok(request);
        };
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some(partner) = self.auth.partner_hint(header) else {
            return Ok(request);
        };
        let Some(after) = rates.empty_for(&partner) else {
            return Ok(request);
        };
        metrics().add(
            "agriportal_marketplace_rate_limited_total",
            &format!("partner=\"{}\"", partner.code()),
            "Partner calls refused by the per-partner rate limit",
            1,
        );
        Err(rate_limited_early(
            &format!("partner `{}`", partner.code()),
            rates.rate(),
            rates.burst(),
            after,
        )
        .into())
    }
}

/// Implements `agriportal.marketplace.v1.MarketplaceIngest` over a store.
pub struct GrpcAdapter {
    store: Arc<dyn MarketplaceStore>,
    auth: Arc<Authenticator>,
    limits: Limits,
    rates: PartnerRates,
}

impl GrpcAdapter {
    /// An adapter over `store`, authenticating with `auth`, without a rate limit.
    pub fn new(store: Arc<dyn MarketplaceStore>, auth: Arc<Authenticator>, limits: Limits) -> Self {
        GrpcAdapter {
            store,
            auth,
            limits,
            rates: None,
        }
    }

    /// The same adapter, throttling each partner with `rates`.
    pub fn with_rates(mut self, rates: PartnerRates) -> Self {
        self.rates = rates;
        self
    }

    /// Takes `records` from the partner's bucket, or refuses the call before anything is read
    /// or stored. Every call counts at least one record: empty batches and `GetBatch` cost the
    /// database a round trip too, and must not be free to flood.
    fn throttle(&self, partner: Partner, records: usize) -> Result<()> {
        let Some(rates) = &self.rates else {
            return Ok(());
        };
        let cost = u32::try_from(records.max(1)).unwrap_or(u32::MAX);
        rates.try_acquire(&partner, cost).map_err(|refusal| {
            metrics().add(
                "agriportal_marketplace_rate_limited_total",
                &format!("partner=\"{}\"", partner.code()),
                "Partner calls refused by the per-partner rate limit",
                1,
            );
            rate_limited(
                &format!("partner `{}`", partner.code()),
                rates.rate(),
                rates.burst(),
                cost,
                refusal,
            )
        })
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
        self.throttle(partner, request.records.len())?;
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
        self.throttle(partner, request.records.len())?;
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
        // The same checks as on push: an id no push could have used is a mistake to name, and
        // a huge one must not be echoed back in a NOT_FOUND message.
        check_envelope(batch_id, 0, 0, &self.limits)?;
        self.throttle(partner, 1)?;
        match self.store.get_batch(partner, batch_id).await? {
            Some(result) => Ok(Response::new(result)),
            None => Err(error::batch_not_found(batch_id).into()),
        }
    }
}

/// Implements `agriportal.marketplace.v1.MarketplaceAudit` over a store: admin tokens only.
pub struct AuditAdapter {
    store: Arc<dyn MarketplaceStore>,
    auth: Arc<Authenticator>,
}

impl AuditAdapter {
    /// An adapter over `store`, authenticating with `auth`.
    pub fn new(store: Arc<dyn MarketplaceStore>, auth: Arc<Authenticator>) -> Self {
        AuditAdapter { store, auth }
    }

    async fn get_rollup_cells(
        &self,
        request: pb::GetRollupCellsRequest,
    ) -> Result<pb::GetRollupCellsResponse> {
        let (partner, kind, province) = domain::check_rollup_request(&request)?;
        let held = self.store.rollup_cells(partner, kind, province).await?;
        let mut response = pb::GetRollupCellsResponse {
            unsent_events: held.unsent_events,
            ..Default::default()
        };
        if province.is_some() {
            response.cells = held.cells;
        } else {
            response.provinces = reconcile::province_digests(&held.cells);
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl MarketplaceAudit for AuditAdapter {
    async fn get_rollup_cells(
        &self,
        request: Request<pb::GetRollupCellsRequest>,
    ) -> Result<Response<pb::GetRollupCellsResponse>, Status> {
        self.auth.require_admin(request.metadata()).await?;
        Ok(Response::new(
            self.get_rollup_cells(request.into_inner()).await?,
        ))
    }
}
