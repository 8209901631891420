//! The marketplace service's errors, expressed in the platform's one error type so they map to
//! gRPC and HTTP in one place.

use std::time::Duration;

use agriportal_platform::limits::Refusal;
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

/// The batch's records carry too many entries of a repeated field (categories) together.
pub fn too_many_entries(count: usize, max: usize) -> Error {
    Error::new(
        ErrorCode::ResourceExhausted,
        format!(
            "batch's records list {count} entries of a repeated field (categories) together; \
             the limit is {max} per batch: split it"
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

/// The error for a call refused by a per-partner rate limiter, naming the limit and the flags.
pub fn rate_limited(
    who: &str,
    limiter_rate: u32,
    burst: u32,
    cost: u32,
    refusal: Refusal,
) -> Error {
    match refusal {
        Refusal::RetryAfter(after) => Error::exhausted(format!(
            "{who} is over its rate limit of {limiter_rate} records per second (bursts up to {burst}; \
             --partner-records-per-second, --partner-burst-records): retry this call of {cost} records after {} ms",
            after.as_millis().max(1)
        ))
        .with_retry_after(after),
        Refusal::OverBurst => Error::exhausted(format!(
            "this call of {cost} records is larger than {who}'s rate-limit burst of {burst} records \
             (--partner-burst-records) and can never pass: split it"
        )),
    }
}

/// The error for a call refused before its body was read, because the partner's bucket is
/// empty: no call of it could pass now, whatever its size.
pub fn rate_limited_early(who: &str, limiter_rate: u32, burst: u32, after: Duration) -> Error {
    Error::exhausted(format!(
        "{who} is over its rate limit of {limiter_rate} records per second (bursts up to {burst}; \
         --partner-records-per-second, --partner-burst-records): retry after {} ms",
        after.as_millis().max(1)
    ))
    .with_retry_after(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_limit_and_carry_a_hint() {
        let err = rate_limited(
            "partner `voso`",
            10,
            20,
            15,
            Refusal::RetryAfter(Duration::from_millis(1500)),
        );
        assert_eq!(err.code, ErrorCode::ResourceExhausted);
        assert!(
            err.message.contains("10 records per second"),
            "{}",
            err.message
        );
        assert!(err.message.contains("1500 ms"), "{}", err.message);
        assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
        let status = tonic::Status::from(err);
        assert_eq!(
            status
                .metadata()
                .get("retry-after-ms")
                .map(|v| v.to_str().ok()),
            Some(Some("1500"))
        );
        assert_eq!(
            status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .map(|v| v.to_str().ok()),
            Some(Some("1500"))
        );
        let err = rate_limited("partner `voso`", 10, 20, 30, Refusal::OverBurst);
        assert!(err.message.contains("split"), "{}", err.message);
        assert_eq!(err.retry_after, None);
    }
}
