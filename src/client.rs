//! A partner's gRPC client, as the demo, the benchmark and the tests use it: the kit's client
//! (`agriportal_platform::client`) with the partner's bearer token, the W3C trace context and a
//! deadline on every call.

use std::net::SocketAddr;
use std::time::Duration;

use agriportal_platform::client::{self, ClientOptions, Credential, PeerChannel};
use agriportal_platform::tls::ClientTls;
use agriportal_platform::Config;
use agriportal_proto::marketplace::v1::marketplace_ingest_client::MarketplaceIngestClient;

/// A partner's client of `MarketplaceIngest`.
pub type PartnerClient = MarketplaceIngestClient<PeerChannel>;

/// Deadline of a partner's call: long enough for a 10,000-record batch on a busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Largest message either way (the server refuses above 16 MiB itself, with a clear error;
/// tests send such messages on purpose).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The credential of `token`, or none.
fn credential(token: Option<&str>) -> Credential {
    token.map_or(Credential::None, |t| Credential::Bearer(t.to_string()))
}

fn options(deadline: Duration) -> ClientOptions {
    ClientOptions {
        deadline,
        ..ClientOptions::default()
    }
}

fn partner(channel: PeerChannel) -> PartnerClient {
    MarketplaceIngestClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE)
        .max_decoding_message_size(MAX_MESSAGE)
}

/// Connects now to the gRPC server at `addr` (`host:port`) with `token`.
pub async fn partner_client(addr: &str, token: Option<&str>) -> anyhow::Result<PartnerClient> {
    let channel = client::connect_now(addr, credential(token), options(DEADLINE)).await?;
    Ok(partner(channel))
}

/// A client of `addr` with `token` and a per-call `deadline` that connects on its first call
/// (a server that is down, or restarting, is then an error of calls, not of building).
pub fn partner_client_lazy(
    addr: &str,
    token: Option<&str>,
    deadline: Duration,
) -> anyhow::Result<PartnerClient> {
    let channel = client::connect(addr, credential(token), options(deadline))?;
    Ok(partner(channel))
}

/// This process's own gRPC server as its tools (the demo, `health`) reach it: `http://`, or
/// with TLS on (`--tls-cert`) `https://`, trusting `--tls-ca` (or the certificate itself) and
/// checking `--tls-server-name` when set.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// What an `https://` URL trusts.
    pub tls: Option<ClientTls>,
}

impl Target {
    /// The server at `addr` (an unspecified address is reached on loopback) as `config` serves it.
    pub fn of(config: &Config, addr: SocketAddr) -> anyhow::Result<Target> {
        let addr = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        Ok(match config.tls()? {
            Some(_) => Target {
                url: format!("https://{addr}"),
                tls: ClientTls::from_config(config)?,
            },
            None => Target {
                url: format!("http://{addr}"),
                tls: None,
            },
        })
    }

    /// A channel that connects on its first call, with `credential` and `options`.
    pub fn channel(
        &self,
        credential: Credential,
        options: ClientOptions,
    ) -> anyhow::Result<PeerChannel> {
        client::connect_via(&self.url, credential, options, self.tls.as_ref())
    }

    /// A channel connected now.
    pub async fn channel_now(
        &self,
        credential: Credential,
        options: ClientOptions,
    ) -> anyhow::Result<PeerChannel> {
        client::connect_now_via(&self.url, credential, options, self.tls.as_ref()).await
    }

    /// A partner's client with `token`, connected now.
    pub async fn partner(&self, token: Option<&str>) -> anyhow::Result<PartnerClient> {
        let channel = self
            .channel_now(credential(token), options(DEADLINE))
            .await?;
        Ok(partner(channel))
    }
}
