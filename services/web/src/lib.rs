//! The portal's pages (web front end): server-rendered HTML for ministry teams, provincial
//! officials and farming households, Vietnamese first, light enough for a cheap phone on a slow
//! network, working without JavaScript. It owns no business data: every figure comes from the
//! other services over gRPC (the gateway's `Dashboard` today); its own store holds only the
//! sessions of signed-in officials.
//!
//! Files, as in every service crate: `config` (settings), `backend` (the services it reads,
//! through the kit's client), `session` (sign-in and CSRF), `http` (routes, headers, caching),
//! `reader` (what each handler starts from: the `Reader` and `Official` extractors, the error
//! pages), `pages` (handlers and their templates, `templates/`), `view` and `series` (what the
//! pages show, formatted), `format` and `chart` (numbers and dates in the reader's language,
//! inline SVG charts; downloads are written by `platform::csv`), `indicators` (the plan's
//! indicators and reports, formatted, and the entry form's parsing), `reporting/` (the
//! indicator and reporting pages, a file each), `communes` (an indicator's communes in one
//! province), `i18n` (messages, `locales/`), `assets`
//! (`static/`), and this file (the declaration for the kit).

pub mod assets;
pub mod backend;
pub mod chart;
pub mod communes;
pub mod config;
pub mod format;
pub mod http;
pub mod i18n;
pub mod indicators;
pub mod pages;
pub mod reader;
pub mod reporting;
pub mod series;
pub mod session;
pub mod view;

use std::sync::Arc;

use agriportal_platform::client::{ClientOptions, Credential};
use agriportal_platform::storage::Migrations;
use agriportal_platform::{Descriptor, HttpApi, Running, Service, ServiceContext};

pub use config::WebConfig;

/// The web front end, as registered in the binary.
pub struct Web;

/// The web's migrations (sessions only); the kit appends its own tables.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/postgres"),
        sqlx::migrate!("./migrations/sqlite"),
    )
}

#[async_trait::async_trait]
impl Service for Web {
    type Config = WebConfig;

    const DESCRIPTOR: Descriptor = Descriptor {
        name: config::NAME,
        about: "Web front end: the portal's pages (HTTP), reading the other services over gRPC",
        grpc: &[],
        http: Some(HttpApi { prefix: "/" }),
        publishes: &[],
        consumes: &[],
        calls: &["gateway", "indicators"],
    };

    fn migrations() -> Migrations {
        migrations()
    }

    async fn start(ctx: ServiceContext<WebConfig>) -> anyhow::Result<Running> {
        let url = ctx
            .peer_url("gateway", ctx.config.gateway_url.as_deref())?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the web front end reads every figure from the gateway: set AGRIPORTAL_GATEWAY_URL \
                     (--gateway-url, e.g. http://gateway:50051)"
                )
            })?;
        let options = ClientOptions {
            deadline: config::BACKEND_DEADLINE,
            ..ClientOptions::default()
        };
        // The reporting pages call the indicators service with the signed-in official's own
        // token (set per call, see `backend`), never the web's: so the channel carries no
        // credential of its own. Without an address (and outside `up`) those pages say the
        // service is unavailable and the public pages work as before.
        let indicators = ctx
            .peer_url("indicators", ctx.config.web_indicators_url.as_deref())?
            .map(|url| ctx.peer_as(&url, Credential::None, options))
            .transpose()?;
        let web = Arc::new(http::Web {
            // The gateway's dashboard rpcs are public: the web sends them no credential (it
            // used to send a minted admin token it never needed).
            backend: backend::Backend::new(
                ctx.peer_as(&url, Credential::None, options)?,
                indicators,
            ),
            sessions: session::Sessions::new(
                ctx.db.clone(),
                ctx.config.idle(),
                ctx.config.max_age(),
            ),
            auth: ctx.shared.auth.clone(),
            config: ctx.config.clone(),
        });
        Ok(Running::new().http(http::router(web)))
    }
}
