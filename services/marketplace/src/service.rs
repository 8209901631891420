//! The marketplace's logic, as the adapters call it: check a batch's envelope, take the
//! partner's records from its rate limit, validate, hash, store, and count the outcome. The
//! gRPC adapter only authenticates and delegates here.

use std::sync::{Arc, OnceLock};

use agriportal_platform::limits::RateLimiter;
use agriportal_platform::metrics::{self, Counter, EncodeLabelSet, Family};
use agriportal_platform::reconcile;
use agriportal_platform::reference::Partner;
use agriportal_platform::{Error, Result};
use agriportal_proto::marketplace::v1 as pb;
use prost::Message;

use crate::config::Limits;
use crate::domain::{self, check_envelope, content_hash_of_encoded};
use crate::error;
use crate::store::{Batch, MarketplaceStore};

/// Each partner's token bucket of records per second (`None`: no limit).
pub type PartnerRates = Option<Arc<RateLimiter<Partner>>>;

/// Partner ingest and the audit of what it holds.
pub struct Ingest {
    store: Arc<dyn MarketplaceStore>,
    limits: Limits,
    /// One set of partner buckets per process, shared by every adapter built over this
    /// service, so mounting it twice cannot double a partner's quota.
    rates: PartnerRates,
}

impl Ingest {
    /// Ingest into `store` within `limits`, throttling each partner with `rates`. (Each
    /// partner's calls in flight are capped at the edge, before the body is read:
    /// [`agriportal_platform::access`].)
    pub fn new(store: Arc<dyn MarketplaceStore>, limits: Limits, rates: PartnerRates) -> Self {
        Ingest {
            store,
            limits,
            rates,
        }
    }

    /// The limits batches are checked against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// When `partner`'s bucket is empty, the refusal for any call of theirs, decided without
    /// reading the call's body (no call of any size could pass now).
    pub fn early_refusal(&self, partner: Partner) -> Option<Error> {
        let rates = self.rates.as_ref()?;
        let after = rates.empty_for(&partner)?;
        count_rate_limited(partner);
        Some(error::rate_limited_early(
            &format!("partner `{}`", partner.code()),
            rates.rate(),
            rates.burst(),
            after,
        ))
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
            count_rate_limited(partner);
            error::rate_limited(
                &format!("partner `{}`", partner.code()),
                rates.rate(),
                rates.burst(),
                cost,
                refusal,
            )
        })
    }

    /// The checks every batch passes before it is validated record by record: its envelope
    /// (id, record count, size), then the partner's rate limit.
    fn admit(&self, partner: Partner, batch_id: &str, records: usize, bytes: usize) -> Result<()> {
        check_envelope(batch_id, records, bytes, &self.limits)?;
        self.throttle(partner, records)
    }

    /// Applies a sales batch of `partner`.
    pub async fn push_sales(
        &self,
        partner: Partner,
        request: pb::PushSalesRequest,
    ) -> Result<pb::PushResult> {
        self.admit(
            partner,
            &request.batch_id,
            request.records.len(),
            request.encoded_len(),
        )?;
        let validated = domain::validate_sales(&request.records, &self.limits);
        // Encoded once: the hash and the stored copy are of the same bytes.
        let encoded = request.encode_to_vec();
        let batch = Batch {
            content_hash: content_hash_of_encoded("sales", &encoded),
            batch_id: request.batch_id.clone(),
            request: encoded,
            validated,
        };
        let result = self.store.push_sales(partner, batch).await?;
        count_records(partner, "sales", &result);
        Ok(result)
    }

    /// Applies an onboarding batch of `partner`.
    pub async fn push_onboarding(
        &self,
        partner: Partner,
        request: pb::PushOnboardingRequest,
    ) -> Result<pb::PushResult> {
        self.admit(
            partner,
            &request.batch_id,
            request.records.len(),
            request.encoded_len(),
        )?;
        let validated = domain::validate_onboarding(&request.records, &self.limits);
        // Encoded once: the hash and the stored copy are of the same bytes.
        let encoded = request.encode_to_vec();
        let batch = Batch {
            content_hash: content_hash_of_encoded("onboarding", &encoded),
            batch_id: request.batch_id.clone(),
            request: encoded,
            validated,
        };
        let result = self.store.push_onboarding(partner, batch).await?;
        count_records(partner, "onboarding", &result);
        Ok(result)
    }

    /// The result of `partner`'s earlier batch `batch_id`.
    pub async fn get_batch(&self, partner: Partner, batch_id: &str) -> Result<pb::PushResult> {
        // The same checks as on push: an id no push could have used is a mistake to name, and
        // a huge one must not be echoed back in a NOT_FOUND message.
        check_envelope(batch_id, 0, 0, &self.limits)?;
        self.throttle(partner, 1)?;
        self.store
            .get_batch(partner, batch_id)
            .await?
            .ok_or_else(|| error::batch_not_found(batch_id))
    }

    /// A partner's records folded into the gateway's rollup cells: per-province digests, or
    /// one province's cells, with the outbox backlog read after them.
    pub async fn rollup_cells(
        &self,
        request: &pb::GetRollupCellsRequest,
    ) -> Result<pb::GetRollupCellsResponse> {
        let (partner, kind, province) = domain::check_rollup_request(request)?;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartnerLabels {
    partner: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    partner: &'static str,
    kind: &'static str,
    outcome: &'static str,
}

/// The marketplace's metrics, declared once.
struct IngestMetrics {
    rate_limited: Family<PartnerLabels, Counter>,
    records: Family<RecordLabels, Counter>,
}

fn ingest_metrics() -> &'static IngestMetrics {
    static METRICS: OnceLock<IngestMetrics> = OnceLock::new();
    METRICS.get_or_init(|| IngestMetrics {
        rate_limited: metrics::counter_family(
            "agriportal_marketplace_rate_limited",
            "Partner calls refused by the per-partner rate limit",
        ),
        records: metrics::counter_family(
            "agriportal_marketplace_records",
            "Records received from partners, by outcome",
        ),
    })
}

fn count_rate_limited(partner: Partner) {
    ingest_metrics()
        .rate_limited
        .get_or_create(&PartnerLabels {
            partner: partner.code(),
        })
        .inc();
}

fn count_records(partner: Partner, kind: &'static str, result: &pb::PushResult) {
    for (outcome, n) in [
        ("accepted", result.accepted),
        ("unchanged", result.unchanged),
        ("corrected", result.corrected),
        ("rejected", result.rejected),
    ] {
        let labels = RecordLabels {
            partner: partner.code(),
            kind,
            outcome,
        };
        ingest_metrics()
            .records
            .get_or_create(&labels)
            .inc_by(u64::from(n));
    }
}
