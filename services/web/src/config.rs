//! The web front end's settings (its own flags and environment variables, flattened into the
//! command line beside the shared ones) and names.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

/// Target name, schema and SQLite file (the web's store holds only sessions, never figures).
pub const NAME: &str = "web";

/// The web front end's own settings.
#[derive(Args, Clone, Debug, Serialize)]
pub struct WebConfig {
    /// The gateway's gRPC address (`http://gateway:50051`), which every figure on the pages
    /// comes from. `up` uses its own gRPC listener.
    #[arg(long, env = "AGRIPORTAL_GATEWAY_URL")]
    pub gateway_url: Option<String>,

    /// The indicators service's gRPC address (`http://indicators:50051`), which the reporting
    /// pages call on behalf of the signed-in official. `up` uses its own gRPC listener. Named
    /// `web-…` so it cannot clash with another service's flag in `up`; the environment
    /// variable is the shared one.
    #[arg(long, env = "AGRIPORTAL_INDICATORS_URL")]
    pub web_indicators_url: Option<String>,

    /// Minutes a signed-in official's session lasts without a request.
    #[arg(
        long,
        env = "AGRIPORTAL_WEB_SESSION_IDLE_MINUTES",
        default_value_t = 30
    )]
    pub web_session_idle_minutes: u64,

    /// Hours a session lasts at most, however active.
    #[arg(long, env = "AGRIPORTAL_WEB_SESSION_MAX_HOURS", default_value_t = 12)]
    pub web_session_max_hours: u64,

    /// Cookies are `Secure` and responses carry HSTS: set it when the portal is reached over
    /// HTTPS (behind the ingress's TLS). Off by default so that `up` works on plain HTTP.
    #[arg(long, env = "AGRIPORTAL_WEB_SECURE", default_value_t = false)]
    pub web_secure: bool,

    /// The portal's public address (`https://nongsan.gov.vn`), used in the embed snippets;
    /// without it the snippets use the address the page was asked for.
    #[arg(long, env = "AGRIPORTAL_WEB_PUBLIC_URL")]
    pub web_public_url: Option<String>,
}

impl WebConfig {
    /// Idle expiry of a session.
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.web_session_idle_minutes.max(1) * 60)
    }

    /// Absolute expiry of a session.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.web_session_max_hours.max(1) * 3600)
    }
}

/// Deadline of one call to the gateway: a page waits this long for its figures, then says
/// they are unavailable and serves the rest.
pub const BACKEND_DEADLINE: Duration = Duration::from_secs(3);
