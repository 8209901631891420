//! The marketplace service's settings and names. Process-wide settings live in
//! `agriportal_platform::Config`; these are the service's own limits and identifiers.

/// Schema (PostgreSQL) or file stem (SQLite) of this service's store.
pub const SCHEMA: &str = "marketplace";

/// Fully qualified gRPC service name, as reported by gRPC health.
pub const GRPC_SERVICE: &str = "agriportal.marketplace.v1.MarketplaceIngest";

/// Fully qualified name of the audit service (recomputed rollups, for reconciliation).
pub const AUDIT_GRPC_SERVICE: &str = "agriportal.marketplace.v1.MarketplaceAudit";

/// Subject of the event a sales batch emits.
pub const SALES_SUBJECT: &str = "marketplace.sales_recorded";
/// Subject of the event an onboarding batch emits.
pub const HOUSEHOLDS_SUBJECT: &str = "marketplace.households_recorded";

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
        }
    }
}
