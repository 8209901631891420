//! The indicators service's errors, in the platform's one error type.

use agriportal_platform::auth::{Claims, Role};
use agriportal_platform::reference::Reference;
use agriportal_platform::{Error, ErrorCode};

fn province_name(code: &str) -> String {
    Reference::get()
        .province(code)
        .map(|p| format!("{code} ({})", p.name))
        .unwrap_or_else(|| code.to_string())
}

/// A service's own credential on an rpc of the reporting workflow (the access gate already
/// refuses it; this is the handler's second check).
pub fn service_denied(rpc: &str) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        format!("{rpc} is for officials; a service's own credential may not call it"),
    )
}

/// A partner token on an rpc of the reporting workflow.
pub fn partner_denied(rpc: &str) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        format!(
            "{rpc} is for provincial departments and the central working group (admin); a \
             partner token may only read the catalogue, targets and org units (ListIndicators, \
             ListTargets, ListOrgUnits)"
        ),
    )
}

/// A non-admin token on an admin-only rpc.
pub fn admin_only(rpc: &str, claims: &Claims) -> Error {
    let who = match &claims.role {
        Role::Province { province } => format!("province {}'s", province_name(province)),
        Role::Partner { .. } => "a partner's".to_string(),
        Role::Admin => "an admin's".to_string(),
        Role::Service { service } => format!("service {service}'s"),
    };
    Error::new(
        ErrorCode::PermissionDenied,
        format!("{rpc} is for the central working group; the token is {who}, not an admin's"),
    )
}

/// A province token acting on another province's report.
pub fn other_province(own: &str, asked: &str) -> Error {
    Error::new(
        ErrorCode::PermissionDenied,
        format!(
            "the token is for province {}; it cannot read or write the reports of province {}",
            province_name(own),
            province_name(asked)
        ),
    )
}

/// A refused workflow transition.
pub fn refused(why: String) -> Error {
    Error::new(ErrorCode::FailedPrecondition, why)
}

/// The report does not exist.
pub fn no_report(key: &str) -> Error {
    Error::not_found(format!(
        "there is no report {key}: nothing has been saved for that province and period"
    ))
}
