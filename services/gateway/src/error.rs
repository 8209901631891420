//! The gateway's errors, expressed in the platform's one error type so they map to gRPC and
//! HTTP in one place.

use agriportal_platform::Error;

/// A query parameter is missing or malformed.
pub fn bad_parameter(name: &str, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("parameter `{name}` {why}"))
}

/// No province has that code.
pub fn unknown_province(code: &str) -> Error {
    let shown: String = code.chars().take(20).collect();
    Error::not_found(format!(
        "no province has code `{shown}`; use one of the 34 codes since 1 July 2025"
    ))
}
