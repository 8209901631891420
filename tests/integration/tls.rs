//! TLS on every public listener, with a test CA made here: a partner's push over gRPC, the
//! gateway's API and the web's pages over https (the web reading the gateway over TLS itself),
//! plain text refused, a stalled handshake that holds no one up, and the certificate reloaded
//! from its files (a bad replacement keeps the old one).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agriportal_platform::auth::Role;
use agriportal_platform::client::{self, ClientOptions, Credential};
use agriportal_platform::tls::ClientTls;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_proto::marketplace::v1::marketplace_ingest_client::MarketplaceIngestClient;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::{spawn_app_with, Mode};

/// A test CA, and server certificates it signs.
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub(crate) pem: String,
}

/// A server certificate (PEM) with its key (PEM) and DER.
pub(crate) struct Leaf {
    pub(crate) cert: String,
    pub(crate) key: String,
    der: Vec<u8>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agriportal test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for localhost and 127.0.0.1 named `cn`, with a key of its own.
    pub(crate) fn leaf(&self, cn: &str) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Writes `contents` to `path` as a secret mount changes it: whole, by a rename.
fn replace(path: &Path, contents: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The leaf certificate a TLS handshake with `addr` offering `alpn` gets, checked against
/// the test CA (and the ALPN the server chose).
async fn served(addr: &str, ca: &str, alpn: &[u8]) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the test CA");
    let (_, connection) = stream.get_ref();
    assert_eq!(connection.alpn_protocol(), Some(alpn), "ALPN");
    connection.peer_certificates().unwrap()[0].to_vec()
}

/// Polls until a new connection to `addr` gets `want`, or fails after a minute.
async fn until_served(addr: &str, ca: &str, alpn: &[u8], want: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while served(addr, ca, alpn).await != want {
        assert!(Instant::now() < deadline, "{what}: never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn https(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// A counter's value on the admin listener's `/metrics` (0 while it was never counted).
async fn metric(admin: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn every_public_listener_serves_tls_and_reloads_its_certificate() {
    let ca = TestCa::new();
    let first = ca.leaf("portal, first");
    let files = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = (
        files.path().join("tls.crt"),
        files.path().join("tls.key"),
        files.path().join("ca.crt"),
    );
    replace(&cert, &first.cert);
    replace(&key, &first.key);
    replace(&ca_file, &ca.pem);
    let Some(app) = spawn_app_with(Mode::Embedded, "tls", |s| {
        s.platform.tls_cert = Some(cert.clone());
        s.platform.tls_key = Some(key.clone());
        s.platform.tls_ca = Some(ca_file.clone());
        s.platform.tls_reload_seconds = 1;
        s.platform.tls_handshake_timeout_seconds = 3;
    })
    .await
    else {
        return;
    };

    // Clients that open a connection and never finish (or start) their handshake, on both
    // listeners, while a partner pushes and a reader reads.
    let mut stalled = Vec::new();
    for addr in [&app.grpc, &app.http] {
        for _ in 0..10 {
            stalled.push(TcpStream::connect(addr.as_str()).await.unwrap());
        }
    }

    // A partner's push over TLS, trusting the test CA.
    let tls = ClientTls {
        ca_pem: ca.pem.clone().into_bytes(),
        server_name: None,
    };
    let token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let channel = client::connect_now_via(
        &format!("https://{}", app.grpc),
        Credential::Bearer(token.clone()),
        ClientOptions {
            deadline: Duration::from_secs(60),
            ..ClientOptions::default()
        },
        Some(&tls),
    )
    .await
    .expect("connect over TLS");
    let today = agriportal_marketplace::domain::today_in_vietnam();
    let result = MarketplaceIngestClient::new(channel)
        .push_sales(pb::PushSalesRequest {
            batch_id: "tls-1".into(),
            records: vec![pb::SalesRecord {
                record_id: "s1".into(),
                sale_date: today.to_string(),
                province_code: "79".into(),
                commune_code: String::new(),
                category: "fruit".into(),
                quantity_grams: 1_000,
                value_vnd: 50_000,
                orders: 7,
                household_ref: String::new(),
            }],
        })
        .await
        .expect("push over TLS")
        .into_inner();
    assert_eq!(result.accepted, 1, "{result:?}");

    // The gateway's API over https, with the figures the push made.
    let reader = https(&ca.pem);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body: serde_json::Value = reader
            .get(format!(
                "https://localhost:{}/api/v1/national",
                port(&app.http)
            ))
            .send()
            .await
            .expect("https to the gateway")
            .json()
            .await
            .unwrap();
        if body["sales"]["orders"] == 7 {
            break;
        }
        assert!(Instant::now() < deadline, "figures never arrived: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The web's page over https, with figures the web read from the gateway over TLS.
    let page = reader
        .get(format!("https://localhost:{}/", port(&app.http)))
        .send()
        .await
        .expect("https to the web");
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        !page.contains("Số liệu tạm thời chưa hiển thị được"),
        "the web could not read the gateway over TLS: {page}"
    );

    // Plain text on the TLS ports gets nothing.
    let plain = async {
        let channel = client::connect_now(
            &format!("http://{}", app.grpc),
            Credential::Bearer(token.clone()),
            ClientOptions::default(),
        )
        .await?;
        MarketplaceIngestClient::new(channel)
            .push_sales(pb::PushSalesRequest {
                batch_id: "tls-plain".into(),
                records: vec![],
            })
            .await?;
        anyhow::Ok(())
    };
    assert!(plain.await.is_err(), "a plain-text gRPC call succeeded");
    assert!(
        reqwest::get(format!("http://{}/", app.http)).await.is_err(),
        "a plain-text HTTP request got an answer"
    );

    // The stalled clients are disconnected once the handshake timeout is over.
    for mut socket in stalled {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a stalled handshake kept its connection: {closed:?}"
        );
    }

    // Both listeners serve the first certificate, with their ALPN.
    assert_eq!(served(&app.grpc, &ca.pem, b"h2").await, first.der);
    assert_eq!(served(&app.http, &ca.pem, b"http/1.1").await, first.der);

    // Renewed: new connections get the new certificate, without a restart.
    let second = ca.leaf("portal, second");
    replace(&key, &second.key);
    replace(&cert, &second.cert);
    until_served(
        &app.grpc,
        &ca.pem,
        b"h2",
        &second.der,
        "the renewed gRPC certificate",
    )
    .await;
    until_served(
        &app.http,
        &ca.pem,
        b"http/1.1",
        &second.der,
        "the renewed HTTP certificate",
    )
    .await;

    // A bad replacement (a certificate without its key) is refused; the second one stays.
    let failures = "agriportal_tls_reload_failures_total";
    let before = metric(&app.admin, failures).await;
    let third = ca.leaf("portal, third");
    replace(&cert, &third.cert);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&app.admin, failures).await <= before {
        assert!(
            Instant::now() < deadline,
            "the bad pair was never looked at"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served(&app.grpc, &ca.pem, b"h2").await, second.der);
    assert_eq!(served(&app.http, &ca.pem, b"http/1.1").await, second.der);
    // And a good pair after it is served again.
    replace(&key, &third.key);
    until_served(&app.grpc, &ca.pem, b"h2", &third.der, "the fixed pair").await;
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_binary_takes_tls_from_its_environment_and_its_demo_and_health_use_it() {
    let ca = TestCa::new();
    let leaf = ca.leaf("binary");
    let files = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = (
        files.path().join("tls.crt"),
        files.path().join("tls.key"),
        files.path().join("ca.crt"),
    );
    replace(&cert, &leaf.cert);
    replace(&key, &leaf.key);
    replace(&ca_file, &ca.pem);
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let command = |tls: &[(&str, &Path)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_agriportal"));
        c.env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env_remove("AGRIPORTAL_TOKEN_SECRET")
            .env("AGRIPORTAL_LOG", "warn")
            .args(["--data-dir", data.path().to_str().unwrap()])
            .args(["--grpc", &format!("127.0.0.1:{grpc}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--admin-http", &format!("127.0.0.1:{admin}")]);
        for (name, value) in tls {
            c.env(name, value);
        }
        c
    };

    // A certificate without its key is a configuration error that names what is missing.
    let out = command(&[("AGRIPORTAL_TLS_CERT", &cert)])
        .arg("up")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("AGRIPORTAL_TLS_KEY"),
        "{stderr}"
    );

    let tls = [
        ("AGRIPORTAL_TLS_CERT", cert.as_path()),
        ("AGRIPORTAL_TLS_KEY", key.as_path()),
        ("AGRIPORTAL_TLS_CA", ca_file.as_path()),
    ];
    let _up = Child(
        command(&tls)
            .args(["up", "--demo"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "up never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // `health` reaches the TLS listener with the same settings.
    let out = command(&tls).arg("health").output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SERVING"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The demo's partners push over TLS: their households show on the https API.
    let reader = https(&ca.pem);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let body: serde_json::Value = reader
            .get(format!("https://localhost:{http}/api/v1/national"))
            .send()
            .await
            .expect("https")
            .json()
            .await
            .unwrap();
        if body["households"]["onboarded"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's pushes never arrived: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With `--tls-max-handshakes` at N, N + k clients open connections and stall their
/// handshakes on both listeners: the k beyond the cap (one budget for the process) are
/// closed at once, long before the handshake timeout, and counted; the N keep theirs until
/// that timeout; a partner whose connection was established before pushes through all of it;
/// and once the stalled clients go, their slots serve a new connection.
#[tokio::test]
async fn tls_handshakes_beyond_the_cap_are_closed_at_once_and_hold_no_partner_up() {
    const CAP: u32 = 4;
    const EXTRA: usize = 6;
    let ca = TestCa::new();
    let leaf = ca.leaf("portal");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    let ca_file = files.path().join("ca.crt");
    replace(&cert, &leaf.cert);
    replace(&key, &leaf.key);
    replace(&ca_file, &ca.pem);
    let Some(app) = spawn_app_with(Mode::Embedded, "tls_cap", |s| {
        s.platform.tls_cert = Some(cert.clone());
        s.platform.tls_key = Some(key.clone());
        s.platform.tls_ca = Some(ca_file.clone());
        s.platform.tls_max_handshakes = CAP;
        // Far longer than the test waits: a stalled client closed here was closed by the cap.
        s.platform.tls_handshake_timeout_seconds = 600;
    })
    .await
    else {
        return;
    };
    let tls = ClientTls {
        ca_pem: ca.pem.clone().into_bytes(),
        server_name: None,
    };
    let token = app.token(Role::Partner {
        partner: "postmart".into(),
    });
    let url = format!("https://{}", app.grpc);
    let connect = || {
        client::connect_now_via(
            &url,
            Credential::Bearer(token.clone()),
            ClientOptions {
                deadline: Duration::from_secs(60),
                ..ClientOptions::default()
            },
            Some(&tls),
        )
    };
    let push = |channel, id: &str| {
        let request = pb::PushSalesRequest {
            batch_id: id.to_string(),
            records: vec![pb::SalesRecord {
                record_id: id.to_string(),
                sale_date: agriportal_marketplace::domain::today_in_vietnam().to_string(),
                province_code: "79".into(),
                commune_code: String::new(),
                category: "fruit".into(),
                quantity_grams: 1_000,
                value_vnd: 50_000,
                orders: 1,
                household_ref: String::new(),
            }],
        };
        async move {
            MarketplaceIngestClient::new(channel)
                .push_sales(request)
                .await
        }
    };
    let partner = connect().await.expect("connect over TLS");
    let first = push(partner.clone(), "cap-1")
        .await
        .expect("push")
        .into_inner();
    assert_eq!(first.accepted, 1, "{first:?}");

    let refused = "agriportal_tls_handshakes_refused_total";
    let before = metric(&app.admin, refused).await;
    let mut stalled = Vec::new();
    for i in 0..CAP as usize + EXTRA {
        let addr = if i.is_multiple_of(2) {
            &app.grpc
        } else {
            &app.http
        };
        stalled.push(TcpStream::connect(addr.as_str()).await.unwrap());
    }
    let closed = |stalled: &[TcpStream]| {
        stalled
            .iter()
            .filter(|s| {
                let mut byte = [0u8; 1];
                match s.try_read(&mut byte) {
                    Ok(n) => n == 0,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while closed(&stalled) < EXTRA {
        assert!(
            Instant::now() < deadline,
            "{} of {} stalled handshakes beyond a cap of {CAP} closed",
            closed(&stalled),
            EXTRA
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The ones within the cap keep their slot (their timeout is ten minutes away).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        closed(&stalled),
        EXTRA,
        "only those beyond the cap are closed"
    );
    assert_eq!(metric(&app.admin, refused).await - before, EXTRA as f64);

    // The partner's established connection is not held up by any of it.
    let second = push(partner.clone(), "cap-2")
        .await
        .expect("push")
        .into_inner();
    assert_eq!(second.accepted, 1, "{second:?}");

    // The stalled clients go: their slots come back, and a new connection is served.
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(fresh) = connect().await {
            if let Ok(third) = push(fresh, "cap-3").await {
                assert_eq!(third.into_inner().accepted, 1);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new TLS connection after the stalled ones closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
