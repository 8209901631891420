//! Assembly: the one registry of the binary's services. Everything else (`up`, `serve
//! --target`, `migrate`, `targets`, `events`) is the kit's (`agriportal_platform::kit`), so a
//! new service is one line below.

use agriportal_platform::kit::{self, Listeners, Settings};
use agriportal_platform::{Config, Context, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Every service of the binary, in start order.
pub fn registry() -> Registry {
    Registry::new()
        .with::<agriportal_marketplace::Marketplace>()
        .with::<agriportal_gateway::Gateway>()
        .with::<agriportal_indicators::Indicators>()
        .with::<agriportal_web::Web>()
}

/// Every service's defaults beside `config` (no command line, no environment), for tests and
/// tools.
pub fn default_settings(config: Config) -> anyhow::Result<Settings> {
    registry().default_settings(config)
}

/// Runs every service in one process until `shutdown` fires (`agriportal up`).
pub async fn run_up(
    settings: Settings,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    kit::up(
        &registry(),
        settings,
        Listeners { grpc, http, admin },
        shutdown,
    )
    .await
}

/// [`run_up`] with an opened context (tests pass one whose bus they hold or wrap).
pub async fn run_context(
    settings: Settings,
    ctx: Context,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
) -> anyhow::Result<()> {
    kit::up_with_context(&registry(), settings, ctx, Listeners { grpc, http, admin }).await
}
