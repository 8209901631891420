//! The marketplace service's errors, expressed in the platform's one error type so they map to
//! gRPC and HTTP in one place.

use agriportal_platform::{Error, ErrorCode};

use crate::config::Limits;

/// The batch id was used before for different content.
pub fn batch_conflict(batch_id: &str) -> Error {
    Error::new(
        ErrorCode::FailedPrecondition,
        format!("batch_id `{batch_id}` was already used for a batch with different content; use a new batch_id"),
    )
}

/// The batch has too many records.
pub fn too_many_records(count: usize, limits: &Limits) -> Error {
    Error::new(
        ErrorCode::ResourceExhausted,
        format!(
            "batch has {count} records; the limit is {} records per batch: split it",
            limits.max_records
        ),
    )
}

/// The request is too large.
pub fn too_large(bytes: usize, limits: &Limits) -> Error {
    Error::new(
        ErrorCode::ResourceExhausted,
        format!(
            "batch is {bytes} bytes; the limit is {} bytes (4 MiB) per request: split it",
            limits.max_bytes
        ),
    )
}

/// The batch id is missing or malformed.
pub fn bad_batch_id(why: &str) -> Error {
    Error::invalid(format!("batch_id {why}"))
}

/// No batch of this partner has that id.
pub fn batch_not_found(batch_id: &str) -> Error {
    Error::not_found(format!(
        "no batch `{batch_id}` was received from this partner"
    ))
}
