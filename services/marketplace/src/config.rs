//! The marketplace service's settings (flags and environment variables of its own, flattened
//! into the command line beside the shared `agriportal_platform::Config`), names and limits.

use clap::Args;
use serde::Serialize;

/// Schema (PostgreSQL) or file stem (SQLite) of this service's store, and its target name.
pub const SCHEMA: &str = "marketplace";

/// Fully qualified gRPC service name, as reported by gRPC health.
pub const GRPC_SERVICE: &str = "agriportal.marketplace.v1.MarketplaceIngest";

/// Fully qualified name of the audit service (recomputed rollups, for reconciliation).
pub const AUDIT_GRPC_SERVICE: &str = "agriportal.marketplace.v1.MarketplaceAudit";

/// The marketplace's own settings.
#[derive(Args, Clone, Debug, Serialize)]
pub struct MarketplaceConfig {
    /// Records per second each partner may push (token bucket refill rate, per process);
    /// calls over it get RESOURCE_EXHAUSTED with a retry hint. Every call counts at least one
    /// record. `0` turns the limit off.
    #[arg(
        long,
        env = "AGRIPORTAL_PARTNER_RECORDS_PER_SECOND",
        default_value_t = DEFAULT_PARTNER_RECORDS_PER_SECOND
    )]
    pub partner_records_per_second: u32,

    /// Records a partner may push at once above its rate (token bucket size). A batch larger
    /// than this can never pass, so keep it at least the batch limit (10,000 records).
    #[arg(
        long,
        env = "AGRIPORTAL_PARTNER_BURST_RECORDS",
        default_value_t = DEFAULT_PARTNER_BURST_RECORDS
    )]
    pub partner_burst_records: u32,

    /// Days a batch's row (its raw request, content hash and result) is kept, from when it was
    /// received; older rows are pruned every `--prune-interval-seconds`. Within this time a
    /// batch id sent again answers its first result and changes nothing; after it, the batch
    /// is applied as a new one (see the README). `0` keeps batches forever.
    #[arg(
        long,
        env = "AGRIPORTAL_MARKETPLACE_BATCH_RETENTION_DAYS",
        default_value_t = DEFAULT_BATCH_RETENTION_DAYS
    )]
    pub marketplace_batch_retention_days: u64,
}

/// Default of `--marketplace-batch-retention-days`: long enough for any partner's retries
/// and for an audit of last month's figures.
pub const DEFAULT_BATCH_RETENTION_DAYS: u64 = 30;

/// Default of `--partner-records-per-second`: well above what a partner sends in normal
/// operation and what `up --demo` backfills, so only a runaway client meets it.
pub const DEFAULT_PARTNER_RECORDS_PER_SECOND: u32 = 20_000;

/// Default of `--partner-burst-records`: ten full batches, so a partner catching up after an
/// outage (or the demo's backfill) is not slowed down.
pub const DEFAULT_PARTNER_BURST_RECORDS: u32 = 100_000;

/// Limits on what one request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Records in one batch.
    pub max_records: usize,
    /// Encoded size of one request, in bytes.
    pub max_bytes: usize,
    /// Length of a batch id, record id or household reference.
    pub max_key_len: usize,
    /// Grams in one sales line (1,000 tonnes).
    pub max_grams: i64,
    /// Đồng in one sales line (100 billion).
    pub max_value_vnd: i64,
    /// Orders in one sales line (one million: a line is one commune, category and day).
    pub max_orders: i64,
    /// Length of a sales line's optional household reference (the partner protocol's 64).
    pub max_household_ref_len: usize,
    /// Products one household may report as listed (100,000).
    pub max_listed_products: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_records: 10_000,
            max_bytes: 4 * 1024 * 1024,
            max_key_len: 128,
            max_grams: 1_000_000_000,
            max_value_vnd: 100_000_000_000,
            max_orders: 1_000_000,
            max_household_ref_len: 64,
            max_listed_products: 100_000,
        }
    }
}
