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
        if is_transient(&err) {
            tracing::warn!(error = %err, "database unavailable");
            return Error::unavailable("the database is unavailable; retry later");
        }
        Error::internal(err)
    }
}

/// Whether a database error says "try again" rather than "this cannot work": the server is
/// unreachable, starting, shutting down or full of connections, or a transaction lost a
/// serialization or deadlock race. Callers retry those (an event consumer never parks an event
/// for them); anything else is a bug or bad data.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 40001/40P01: serialization failure, deadlock;
            // 53300: too many connections; 57P01-57P03: shutdown, crash, starting up.
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (another writer, after busy_timeout).
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03" | "5" | "6"
                )
        }),
        _ => false,
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
