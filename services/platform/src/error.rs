//! The one error type that crosses service boundaries, and its single mapping to gRPC and HTTP.

use std::fmt;
use std::time::Duration;

/// What went wrong, in the small vocabulary callers can act on. Mapped once to `tonic::Code`
/// and to an HTTP status; services never build a `tonic::Status` themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range.
    InvalidArgument,
    /// The thing asked for does not exist (or belongs to someone else).
    NotFound,
    /// The request conflicts with what was done before (for example a reused batch id).
    FailedPrecondition,
    /// No valid credential.
    Unauthenticated,
    /// A valid credential that may not do this.
    PermissionDenied,
    /// A size or rate limit was hit; the message names it.
    ResourceExhausted,
    /// A dependency (database, bus) is down; retry later.
    Unavailable,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// A bug or an unexpected failure; details are logged, not returned.
    Internal,
}

/// An error with a code and a message meant for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The category.
    pub code: ErrorCode,
    /// A message a person can act on.
    pub message: String,
    /// When retrying makes sense, how long to wait first (a rate or concurrency limit). Sent as
    /// gRPC metadata `retry-after-ms` and `grpc-retry-pushback-ms` (which gRPC clients with a
    /// retry policy obey), and as the HTTP `Retry-After` header.
    pub retry_after: Option<Duration>,
    /// The operation can never succeed with this input, whatever the state it meets (figures
    /// whose sum would overflow): the kit's consumer parks such an event at once instead of
    /// retrying it. Not sent to callers.
    pub permanent: bool,
}

/// Result with the platform error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an error.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            retry_after: None,
            permanent: false,
        }
    }
    /// The same error with a retry hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
    /// `ResourceExhausted`: a size or rate limit, named in `message`.
    pub fn exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceExhausted, message)
    }
    /// `InvalidArgument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    /// `NotFound`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// `InvalidArgument` for figures whose sum would not fit in 64 bits: never wrapped, and
    /// [`Error::permanent`], so the kit's consumer parks an event carrying them at once
    /// instead of retrying it.
    pub fn overflow(what: impl fmt::Display) -> Self {
        tracing::warn!(what = %what, "refused figures that would overflow");
        let mut err = Self::new(
            ErrorCode::InvalidArgument,
            format!("figures would overflow: {what}"),
        );
        err.permanent = true;
        err
    }
    /// `Unavailable`, for a dependency that failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    /// `Internal`: logs the cause and returns a generic message, so internals never leak.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; it has been logged")
    }
    /// The HTTP status for this error.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self.code {
            ErrorCode::InvalidArgument => S::BAD_REQUEST,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::FailedPrecondition => S::CONFLICT,
            ErrorCode::Unauthenticated => S::UNAUTHORIZED,
            ErrorCode::PermissionDenied => S::FORBIDDEN,
            ErrorCode::ResourceExhausted => S::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorCode::DeadlineExceeded => S::GATEWAY_TIMEOUT,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl From<ErrorCode> for tonic::Code {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }
}

/// gRPC metadata key of the retry hint in milliseconds, for people and simple clients.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// The standard gRPC key for the same hint, which clients with a retry policy obey.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let mut status = tonic::Status::new(err.code.into(), err.message);
        if let Some(after) = err.retry_after {
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX).max(1);
            let value = tonic::metadata::MetadataValue::from(ms);
            status.metadata_mut().insert(RETRY_AFTER_MS, value.clone());
            status.metadata_mut().insert(GRPC_RETRY_PUSHBACK_MS, value);
        }
        status
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        match classify(&err) {
            Some(Transient::Unreachable) => {
                tracing::warn!(error = %err, "database unavailable");
                Error::unavailable("the database is unavailable; retry later")
                    .with_retry_after(DATABASE_RETRY_AFTER)
            }
            Some(Transient::OutOfSpace) => {
                // Loud: an operator must act (grow the volume, prune), and until then every
                // write fails. Nothing was committed, so nothing acknowledged is lost.
                tracing::error!(error = %err, "database out of space or failing to write");
                Error::unavailable(
                    "the database cannot store this now (out of space or failing to write); \
                     nothing was stored: retry later",
                )
                .with_retry_after(DATABASE_FULL_RETRY_AFTER)
            }
            None => Error::internal(err),
        }
    }
}

/// How long a caller is told to wait when the database is unreachable or busy.
pub const DATABASE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a caller is told to wait when the database is out of space: an operator has to
/// act, so retrying at once only adds load.
pub const DATABASE_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a database error may succeed on retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transient {
    /// Unreachable, starting, shutting down, full of connections, or a lost serialization
    /// race: retrying soon is expected to work.
    Unreachable,
    /// Out of disk, memory or failing I/O: retrying works once an operator has acted.
    OutOfSpace,
}

/// Whether a database error says "try again" rather than "this cannot work": the server is
/// unreachable, starting, shutting down or full of connections, a transaction lost a
/// serialization or deadlock race, or the disk is full. Callers retry those (an event consumer
/// never parks an event for them); anything else is a bug or bad data.
pub fn is_transient(err: &sqlx::Error) -> bool {
    classify(err).is_some()
}

fn classify(err: &sqlx::Error) -> Option<Transient> {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            Some(Transient::Unreachable)
        }
        sqlx::Error::Database(db) => db.code().and_then(|code| classify_code(&code)),
        _ => None,
    }
}

/// A PostgreSQL SQLSTATE or a SQLite (extended) result code, classified.
fn classify_code(code: &str) -> Option<Transient> {
    // PostgreSQL: 08 connection exception; 40001/40P01 serialization failure, deadlock; 53300
    // too many connections; 57P01-57P03 shutdown, crash, starting up. 53100 disk full, 53200
    // out of memory, 53000 insufficient resources, 58030 I/O error.
    if code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
        )
    {
        return Some(Transient::Unreachable);
    }
    if matches!(code, "53000" | "53100" | "53200" | "58030") {
        return Some(Transient::OutOfSpace);
    }
    // SQLite reports extended codes (sqlite3_extended_errcode): the primary code is the low
    // byte, so SQLITE_BUSY_TIMEOUT (773) is a BUSY (5). 5 BUSY, 6 LOCKED: another writer,
    // after busy_timeout. 13 FULL: the disk (or max_page_count) is full; 10 IOERR: a write
    // failed; 7 NOMEM.
    let primary = code.parse::<i32>().ok()? & 0xff;
    match primary {
        5 | 6 => Some(Transient::Unreachable),
        7 | 10 | 13 => Some(Transient::OutOfSpace),
        _ => None,
    }
}

impl Error {
    /// The error a call to another service (`peer`, a target name) failed with, in the
    /// platform's vocabulary: the one mapping of `tonic::Status` back to [`Error`]. The peer's
    /// own message is kept (it was written for callers), prefixed with who answered; a retry
    /// hint in its metadata is kept too. Codes the platform does not use become the nearest
    /// one it does: what may succeed on retry (`CANCELLED`, `ABORTED`, `UNKNOWN` transport
    /// failures) is `Unavailable`, a broken contract (`UNIMPLEMENTED`, `DATA_LOSS`) `Internal`.
    pub fn from_status(peer: &str, status: &tonic::Status) -> Error {
        use tonic::Code;
        let code = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::NotFound => ErrorCode::NotFound,
            Code::FailedPrecondition | Code::AlreadyExists => ErrorCode::FailedPrecondition,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            Code::Unavailable | Code::Cancelled | Code::Aborted | Code::Unknown => {
                ErrorCode::Unavailable
            }
            Code::Ok | Code::Internal | Code::Unimplemented | Code::DataLoss => ErrorCode::Internal,
        };
        let retry_after = status
            .metadata()
            .get(RETRY_AFTER_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        let message = format!(
            "the {peer} service answered {:?}: {}",
            status.code(),
            status.message()
        );
        if code == ErrorCode::Internal {
            tracing::error!(peer, code = ?status.code(), message = status.message(), "a peer service failed");
        }
        Error {
            code,
            message,
            retry_after,
            permanent: false,
        }
    }
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({
            "error": { "code": format!("{:?}", self.code), "message": self.message }
        });
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // `Retry-After` counts whole seconds; round up so a client never retries too early.
            let secs = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = http::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn database_codes_are_classified_by_what_a_retry_can_do() {
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "5", "6", "517", "773",
        ] {
            assert_eq!(classify_code(code), Some(Transient::Unreachable), "{code}");
        }
        for code in ["53100", "53200", "58030", "13", "10", "778", "7"] {
            assert_eq!(classify_code(code), Some(Transient::OutOfSpace), "{code}");
        }
        // Bad data and bugs are not retried: unique violation, syntax error, SQLITE_CONSTRAINT
        // (and its extended UNIQUE 2067), SQLITE_ERROR.
        for code in ["23505", "42601", "19", "2067", "1", ""] {
            assert_eq!(classify_code(code), None, "{code}");
        }
    }

    #[tokio::test]
    async fn a_full_disk_reaches_the_caller_as_unavailable_with_a_retry_hint() {
        use sqlx::{Connection, Executor};
        // A real SQLITE_FULL: a database capped at a few pages, filled past them.
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        conn.execute("CREATE TABLE t (b BLOB)").await.unwrap();
        conn.execute("PRAGMA max_page_count = 8").await.unwrap();
        let mut failure = None;
        for _ in 0..64 {
            if let Err(err) = sqlx::query("INSERT INTO t VALUES (zeroblob(4096))")
                .execute(&mut conn)
                .await
            {
                failure = Some(err);
                break;
            }
        }
        let failure = failure.expect("the capped database fills up");
        // The kit's consumer retries such an event rather than parks it.
        assert!(is_transient(&failure), "{failure}");
        let err = Error::from(failure);
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert_eq!(err.retry_after, Some(DATABASE_FULL_RETRY_AFTER));
        assert!(
            err.message.contains("nothing was stored"),
            "{}",
            err.message
        );
        assert!(!err.permanent);
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_MS)
                .and_then(|v| v.to_str().ok()),
            Some("30000")
        );
    }

    #[test]
    fn a_retry_hint_reaches_grpc_metadata_and_http_retry_after() {
        let err = Error::exhausted("over the limit").with_retry_after(Duration::from_millis(1200));
        let status = tonic::Status::from(err.clone());
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER_MS)
                .and_then(|v| v.to_str().ok()),
            Some("1200")
        );
        let response = err.into_response();
        assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
        // Whole seconds, rounded up.
        assert_eq!(
            response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let plain = tonic::Status::from(Error::invalid("no hint"));
        assert!(plain.metadata().get(RETRY_AFTER_MS).is_none());
    }

    #[test]
    fn a_peer_s_status_maps_back_with_its_message_and_hint() {
        let sent = Error::exhausted("over the limit").with_retry_after(Duration::from_millis(700));
        let back = Error::from_status("marketplace", &tonic::Status::from(sent));
        assert_eq!(back.code, ErrorCode::ResourceExhausted);
        assert_eq!(back.retry_after, Some(Duration::from_millis(700)));
        assert!(back.message.contains("marketplace") && back.message.contains("over the limit"));
        for (code, want) in [
            (tonic::Code::Cancelled, ErrorCode::Unavailable),
            (tonic::Code::AlreadyExists, ErrorCode::FailedPrecondition),
            (tonic::Code::Unimplemented, ErrorCode::Internal),
            (tonic::Code::NotFound, ErrorCode::NotFound),
        ] {
            let got = Error::from_status("gateway", &tonic::Status::new(code, "x"));
            assert_eq!(got.code, want, "{code:?}");
        }
    }
}
