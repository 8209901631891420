//! Periodic reconciliation: the gateway's rollup cells against the same cells recomputed by
//! the marketplace service from the records it holds.
//!
//! Why: a bus that acknowledges before its fsync (JetStream's default) can lose an event on
//! power loss after the marketplace marked it sent; nothing would ever re-send it, and the
//! national figures would stay short. Each round compares, per partner and kind, one digest
//! per province; only a province whose digest differs is compared cell by cell.
//!
//! A difference is repaired only when it is a gap and not an event still on its way: the
//! marketplace's outbox must be empty, the consumer must have drained the stream moments
//! before, and two consecutive rounds must see the same difference in the same cell. The
//! repair is a compare-and-set on the cell as last seen (so a replica repairing at the same
//! time, or an event applied meanwhile, makes it step back), moves the province total by the
//! same amount, and is recorded in the `repairs` table, a metric and a warning in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use std::sync::OnceLock;

use agriportal_platform::client::{self, PeerChannel};
use agriportal_platform::consumer::ConsumerHealth;
use agriportal_platform::metrics::{self, Counter, EncodeLabelSet, Family, Gauge};
use agriportal_platform::reconcile::{is_empty, province_digests};
use agriportal_platform::reference::Partner;
use agriportal_platform::storage::now_ms;
use agriportal_platform::Result;
use agriportal_proto::marketplace::v1::marketplace_audit_client::MarketplaceAuditClient;
use agriportal_proto::marketplace::v1::{self as pb, RollupKind};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::{RECONCILE_DRAINED_WITHIN, RECONCILE_MAX_MESSAGE_BYTES};
use crate::snapshot::Snapshots;
use crate::store::{CellRepair, GatewayStore};

/// Repairs committed together (see [`Reconciler::round`]).
const REPAIRS_PER_COMMIT: usize = 500;

/// Where the authoritative cells come from: the marketplace service's audit rpc.
#[async_trait]
pub trait CellSource: Send + Sync + 'static {
    /// Answers one `GetRollupCells` request.
    async fn get(&self, request: pb::GetRollupCellsRequest) -> Result<pb::GetRollupCellsResponse>;
}

/// [`CellSource`] over gRPC, through the kit's client (the gateway's own credential, trace
/// context, a deadline).
pub struct GrpcCellSource {
    client: MarketplaceAuditClient<PeerChannel>,
}

impl GrpcCellSource {
    /// A source calling the marketplace service over `channel`.
    pub fn new(channel: PeerChannel) -> Self {
        let client = MarketplaceAuditClient::new(channel)
            .max_decoding_message_size(RECONCILE_MAX_MESSAGE_BYTES);
        GrpcCellSource { client }
    }
}

#[async_trait]
impl CellSource for GrpcCellSource {
    async fn get(&self, request: pb::GetRollupCellsRequest) -> Result<pb::GetRollupCellsResponse> {
        let mut client = self.client.clone();
        let response = client
            .get_rollup_cells(request)
            .await
            .map_err(client::error("marketplace"))?;
        Ok(response.into_inner())
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Cells compared one by one (in provinces whose digests differed).
    pub compared_cells: usize,
    /// Cells that differ in this round.
    pub mismatched_cells: usize,
    /// Cells repaired in this round (seen with the same difference in the round before).
    pub repaired_cells: usize,
    /// Why the round compared nothing, when it did not.
    pub deferred: Option<&'static str>,
}

/// A cell's identity across rounds.
type CellId = (Partner, RollupKind, String, String, String, i32);

/// A difference seen in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gap {
    found: pb::RollupCell,
    wanted: pb::RollupCell,
}

impl Gap {
    fn difference(&self) -> [i64; 4] {
        [
            self.wanted.quantity_grams - self.found.quantity_grams,
            self.wanted.value_vnd - self.found.value_vnd,
            self.wanted.orders - self.found.orders,
            self.wanted.count - self.found.count,
        ]
    }
}

/// Compares and repairs, one round at a time; remembers the last round's differences.
pub struct Reconciler {
    store: Arc<dyn GatewayStore>,
    source: Arc<dyn CellSource>,
    health: Arc<ConsumerHealth>,
    seen: HashMap<CellId, Gap>,
    snapshots: Option<Arc<Snapshots>>,
}

const KINDS: [RollupKind; 2] = [RollupKind::Sales, RollupKind::Households];

impl Reconciler {
    /// A reconciler of `store` against `source`, trusting differences only while `health`
    /// says the consumer is caught up.
    pub fn new(
        store: Arc<dyn GatewayStore>,
        source: Arc<dyn CellSource>,
        health: Arc<ConsumerHealth>,
    ) -> Self {
        Reconciler {
            store,
            source,
            health,
            seen: HashMap::new(),
            snapshots: None,
        }
    }

    /// Tells `snapshots` of every repair, so the in-memory figures are rebuilt at once rather
    /// than at the next poll of the figures' version.
    pub fn notifying(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Runs one round: compares every partner's cells of both kinds and repairs the gaps
    /// that the previous round saw unchanged.
    pub async fn round(&mut self) -> Result<Report> {
        let mut report = Report::default();
        if !self.health.caught_up(RECONCILE_DRAINED_WITHIN) {
            return Ok(self.defer(report, "the rollup consumer is behind or failing"));
        }
        let mut gaps: HashMap<CellId, Gap> = HashMap::new();
        for partner in Partner::ALL {
            for kind in KINDS {
                let theirs = self.source.get(request(partner, kind, "")).await?;
                if theirs.unsent_events > 0 {
                    return Ok(self.defer(report, "the marketplace's outbox is not empty"));
                }
                let ours = self.store.rollup_cells(partner, kind, None).await?;
                let ours: HashMap<String, pb::ProvinceDigest> = province_digests(&ours)
                    .into_iter()
                    .map(|d| (d.province_code.clone(), d))
                    .collect();
                let theirs: HashMap<String, pb::ProvinceDigest> = theirs
                    .provinces
                    .into_iter()
                    .map(|d| (d.province_code.clone(), d))
                    .collect();
                let mut provinces: Vec<&String> = ours
                    .keys()
                    .chain(theirs.keys())
                    .filter(|p| ours.get(*p) != theirs.get(*p))
                    .collect();
                provinces.sort();
                provinces.dedup();
                for province in provinces {
                    let wanted = self.source.get(request(partner, kind, province)).await?;
                    if wanted.unsent_events > 0 {
                        return Ok(self.defer(report, "the marketplace's outbox is not empty"));
                    }
                    let found = self
                        .store
                        .rollup_cells(partner, kind, Some(province))
                        .await?;
                    report.compared_cells += wanted.cells.len().max(found.len());
                    for (id, gap) in differences(partner, kind, found, wanted.cells) {
                        gaps.insert(id, gap);
                    }
                }
            }
        }
        if !self.health.caught_up(RECONCILE_DRAINED_WITHIN) {
            return Ok(self.defer(report, "the rollup consumer is behind or failing"));
        }
        report.mismatched_cells = gaps.len();
        let previous = std::mem::take(&mut self.seen);
        let mut confirmed = Vec::new();
        for (id, gap) in gaps {
            if previous
                .get(&id)
                .is_some_and(|before| before.difference() == gap.difference())
            {
                confirmed.push((id, gap));
            } else {
                self.seen.insert(id, gap);
            }
        }
        // In chunks, one transaction each: a lost stretch of the stream leaves thousands of
        // gaps, which one commit per cell took minutes to close on a busy machine, while one
        // transaction for all would hold the write lock against the consumer as long.
        for chunk in confirmed.chunks(REPAIRS_PER_COMMIT) {
            let cells: Vec<CellRepair<'_>> = chunk
                .iter()
                .map(|(id, gap)| CellRepair {
                    partner: id.0,
                    kind: id.1,
                    found: &gap.found,
                    wanted: &gap.wanted,
                })
                .collect();
            let done = self.store.repair_all(&cells).await?;
            for ((id, gap), took) in chunk.iter().zip(done) {
                if took {
                    report.repaired_cells += 1;
                    log_repair(id.0, id.1, gap);
                } else {
                    self.seen.insert(id.clone(), gap.clone());
                }
            }
        }
        if report.repaired_cells > 0 {
            if let Some(snapshots) = &self.snapshots {
                snapshots.changed();
            }
        }
        Ok(report)
    }

    fn defer(&mut self, mut report: Report, why: &'static str) -> Report {
        // Confirmation needs two comparable rounds in a row.
        self.seen.clear();
        report.deferred = Some(why);
        report
    }
}

fn request(partner: Partner, kind: RollupKind, province: &str) -> pb::GetRollupCellsRequest {
    pb::GetRollupCellsRequest {
        partner: partner.to_proto() as i32,
        kind: kind as i32,
        province_code: province.to_string(),
    }
}

fn cell_id(partner: Partner, kind: RollupKind, cell: &pb::RollupCell) -> CellId {
    (
        partner,
        kind,
        cell.day.clone(),
        cell.province_code.clone(),
        cell.category.clone(),
        cell.status,
    )
}

/// The cells that differ between what the gateway `found` and what the records say is
/// `wanted`; a cell missing on one side counts as zeros there.
fn differences(
    partner: Partner,
    kind: RollupKind,
    found: Vec<pb::RollupCell>,
    wanted: Vec<pb::RollupCell>,
) -> Vec<(CellId, Gap)> {
    let zero = |cell: &pb::RollupCell| pb::RollupCell {
        day: cell.day.clone(),
        province_code: cell.province_code.clone(),
        category: cell.category.clone(),
        status: cell.status,
        ..Default::default()
    };
    let mut found: HashMap<CellId, pb::RollupCell> = found
        .into_iter()
        .filter(|c| !is_empty(c))
        .map(|c| (cell_id(partner, kind, &c), c))
        .collect();
    let mut out = Vec::new();
    for cell in wanted.into_iter().filter(|c| !is_empty(c)) {
        let id = cell_id(partner, kind, &cell);
        let ours = found.remove(&id).unwrap_or_else(|| zero(&cell));
        if ours != cell {
            out.push((
                id,
                Gap {
                    found: ours,
                    wanted: cell,
                },
            ));
        }
    }
    for (id, ours) in found {
        let wanted = zero(&ours);
        out.push((
            id,
            Gap {
                found: ours,
                wanted,
            },
        ));
    }
    out
}

fn log_repair(partner: Partner, kind: RollupKind, gap: &Gap) {
    let [grams, value_vnd, orders, count] = gap.difference();
    tracing::warn!(
        partner = partner.code(),
        kind = kind.as_str_name(),
        day = %gap.found.day,
        province = %gap.found.province_code,
        category = %gap.found.category,
        status = gap.found.status,
        grams,
        value_vnd,
        orders,
        count,
        "reconciliation repaired a gap between the rollups and the marketplace's records"
    );
    reconcile_metrics()
        .repaired
        .get_or_create(&RepairLabels {
            partner: partner.code(),
            kind: if kind == RollupKind::Sales {
                "sales"
            } else {
                "households"
            },
        })
        .inc();
}

fn record_round(outcome: &Result<Report>) {
    let m = reconcile_metrics();
    let outcome_label = match outcome {
        Ok(report) if report.deferred.is_some() => "deferred",
        Ok(_) => "compared",
        Err(_) => "failed",
    };
    m.rounds
        .get_or_create(&RoundLabels {
            outcome: outcome_label,
        })
        .inc();
    if let Ok(report) = outcome {
        if report.deferred.is_none() {
            m.mismatched
                .set(i64::try_from(report.mismatched_cells).unwrap_or(i64::MAX));
            m.last_compared_ms.set(now_ms());
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    partner: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    outcome: &'static str,
}

/// Reconciliation's metrics, declared once.
struct ReconcileMetrics {
    repaired: Family<RepairLabels, Counter>,
    rounds: Family<RoundLabels, Counter>,
    mismatched: Gauge,
    last_compared_ms: Gauge,
}

fn reconcile_metrics() -> &'static ReconcileMetrics {
    static METRICS: OnceLock<ReconcileMetrics> = OnceLock::new();
    METRICS.get_or_init(|| ReconcileMetrics {
        repaired: metrics::counter_family(
            "agriportal_gateway_reconcile_repaired_cells",
            "Rollup cells repaired by reconciliation (each one a gap, such as a lost event)",
        ),
        rounds: metrics::counter_family(
            "agriportal_gateway_reconcile_rounds",
            "Reconciliation rounds, by outcome",
        ),
        mismatched: metrics::gauge(
            "agriportal_gateway_reconcile_mismatched_cells",
            "Rollup cells that differed from the records in the last compared round",
        ),
        last_compared_ms: metrics::gauge(
            "agriportal_gateway_reconcile_last_compared_ms",
            "When the last reconciliation round compared the rollups, ms since the epoch",
        ),
    })
}

/// Runs a round every `interval` until `shutdown`.
pub async fn run(mut reconciler: Reconciler, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        let outcome = tokio::select! {
            r = reconciler.round() => r,
            _ = shutdown.cancelled() => return,
        };
        record_round(&outcome);
        match &outcome {
            Ok(report) if report.mismatched_cells > 0 => tracing::warn!(
                mismatched = report.mismatched_cells,
                repaired = report.repaired_cells,
                compared = report.compared_cells,
                "reconciliation found rollup cells that differ from the marketplace's records"
            ),
            Ok(report) => tracing::debug!(?report, "reconciliation round"),
            Err(err) => tracing::warn!(error = %err, "reconciliation round failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(day: &str, category: &str, grams: i64) -> pb::RollupCell {
        pb::RollupCell {
            day: day.into(),
            province_code: "01".into(),
            category: category.into(),
            quantity_grams: grams,
            value_vnd: grams,
            orders: 1,
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn differences_cover_missing_extra_and_changed_cells() {
        let found = vec![cell("2026-01-01", "rau", 5), cell("2026-01-02", "rau", 9)];
        let wanted = vec![cell("2026-01-01", "rau", 7), cell("2026-01-03", "qua", 1)];
        let mut diffs = differences(Partner::Voso, RollupKind::Sales, found, wanted);
        diffs.sort_by(|a, b| a.0.cmp(&b.0));
        let got: Vec<(String, [i64; 4])> = diffs
            .iter()
            .map(|(id, gap)| (id.2.clone(), gap.difference()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("2026-01-01".to_string(), [2, 2, 0, 0]),
                ("2026-01-02".to_string(), [-9, -9, -1, -1]),
                ("2026-01-03".to_string(), [1, 1, 1, 1]),
            ]
        );
        let same = differences(
            Partner::Voso,
            RollupKind::Sales,
            vec![cell("2026-01-01", "rau", 5)],
            vec![cell("2026-01-01", "rau", 5)],
        );
        assert!(same.is_empty());
    }
}
