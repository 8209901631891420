//! NATS over TLS with one user per service, on the permissions we ship (`deploy/nats-auth.conf`,
//! copied unchanged next to the test server's own configuration): each service runs with its
//! own credential and the system works end to end; the gateway's credential cannot publish a
//! marketplace event; a wrong password and a plain (non-TLS) client are refused. And the file
//! matches what `agriportal targets` declares, so a new event cannot be forgotten in it. The
//! services run as their own PostgreSQL roles too (`--db-runtime-roles`), as deployed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agriportal::client::partner_client;
use agriportal_gateway::Gateway;
use agriportal_platform::auth::Role;
use agriportal_platform::bus::{Bus, JetStreamBus, Message};
use agriportal_platform::config::NatsSecurity;
use agriportal_platform::context::token_authenticator;
use agriportal_platform::kit::{self, Listeners, Settings};
use agriportal_platform::testing;
use agriportal_proto::marketplace::v1 as pb;
use agriportal_web::Web;
use serde_json::Value;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{config_on, Mode};

/// The shipped permissions, relative to the repository.
const AUTH_FILE: &str = "deploy/nats-auth.conf";

/// The users of the shipped file and the environment variable of each one's password.
const USERS: [(&str, &str); 5] = [
    ("migrate", "NATS_MIGRATE_PASSWORD"),
    ("marketplace", "NATS_MARKETPLACE_PASSWORD"),
    ("indicators", "NATS_INDICATORS_PASSWORD"),
    ("gateway", "NATS_GATEWAY_PASSWORD"),
    ("web", "NATS_WEB_PASSWORD"),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn password(user: &str) -> String {
    format!("test-password-of-{user}-0123456789")
}

/// A test CA and a server certificate for `localhost` and 127.0.0.1, written under `dir`.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn test_ca(dir: &Path) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "agriportal test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let tls = Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    std::fs::write(&tls.ca, ca.pem()).unwrap();
    std::fs::write(&tls.cert, server.pem()).unwrap();
    std::fs::write(&tls.key, key.serialize_pem()).unwrap();
    tls
}

/// The test's own nats-server (TLS, the shipped users), killed when dropped.
struct NatsServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    fn url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }
}

/// A plain-text client of the server on `port`, logging in as `user` with `pass`, is told TLS
/// is required and never served (no PONG to its PING).
pub(crate) async fn assert_plain_text_refused(port: u16, user: &str, pass: &str) {
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let connect = format!(
        "CONNECT {{\"user\":\"{user}\",\"pass\":\"{pass}\",\"verbose\":false}}\r\nPING\r\n"
    );
    let _ = plain.write_all(connect.as_bytes()).await;
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = plain.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("\"tls_required\":true"), "{seen}");
    assert!(
        !seen.contains("PONG"),
        "a plain-text client was served: {seen}"
    );
}

/// `nats-server`: `AGRIPORTAL_TEST_NATS_SERVER`, `/usr/sbin/nats-server` or the `PATH`'s.
pub(crate) fn nats_server_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("AGRIPORTAL_TEST_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let fixed = PathBuf::from("/usr/sbin/nats-server");
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    })
}

async fn start_nats(binary: &Path, dir: &Path, tls: &Tls) -> NatsServer {
    std::fs::copy(repo().join(AUTH_FILE), dir.join("nats-auth.conf")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {store:?} }}\n\
             tls {{ cert_file: {cert:?}, key_file: {key:?}, timeout: 5 }}\n\
             include ./nats-auth.conf\n",
            store = dir.join("store").display().to_string(),
            cert = tls.cert.display().to_string(),
            key = tls.key.display().to_string(),
        ),
    )
    .unwrap();
    let log = dir.join("nats-server.log");
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("nats-server.err")).unwrap());
    for (user, var) in USERS {
        command.env(var, password(user));
    }
    let server = NatsServer {
        child: command.spawn().expect("start nats-server"),
        port,
        log,
    };
    // Ready once the migrate user gets through TLS and authentication.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .user_and_password("migrate".into(), password("migrate"))
            .add_root_certificates(tls.ca.clone())
            .custom_inbox_prefix("_INBOX.migrate")
            .connection_timeout(Duration::from_secs(5))
            .connect(server.url());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(10), attempt).await {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not start: {}{}",
            std::fs::read_to_string(&server.log).unwrap_or_default(),
            std::fs::read_to_string(dir.join("nats-server.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn security(user: &str, ca: &Path) -> NatsSecurity {
    NatsSecurity {
        user: Some(user.into()),
        password: Some(password(user)),
        tls_ca: Some(ca.to_path_buf()),
        inbox_prefix: format!("_INBOX.{user}"),
        ..NatsSecurity::default()
    }
}

/// `settings` with this NATS server and `user`'s credential, and the service's own database
/// role (`<role_prefix><user>`; the migrate user stays the owner).
fn as_user(settings: &Settings, nats: &NatsServer, user: &str, ca: &Path) -> Settings {
    let mut settings = settings.clone();
    if user != "migrate" {
        let url = settings.platform.database_url.clone().unwrap();
        let role = format!("{}{user}", settings.platform.db_role_prefix);
        settings.platform.database_url = Some(crate::db_roles::as_role(&url, &role));
    }
    settings.platform.nats_url = Some(nats.url());
    // The shipped permissions name the production prefix and its stream.
    settings.platform.bus_prefix = "agriportal".into();
    settings.platform.nats = security(user, ca);
    settings
}

/// One target served alone (`serve --target`), on port 0.
struct Served {
    grpc: String,
    http: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn serve(target: &'static str, settings: Settings) -> Served {
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (grpc_addr, http_addr) = (
        grpc.local_addr().unwrap().to_string(),
        http.local_addr().unwrap().to_string(),
    );
    let admin_addr = admin.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let registry = agriportal::app::registry();
            let listeners = Listeners { grpc, http, admin };
            kit::serve(&registry, target, settings, listeners, shutdown).await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{admin_addr}/readyz")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(!handle.is_finished(), "{target} stopped while starting");
        assert!(Instant::now() < deadline, "{target} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Served {
        grpc: grpc_addr,
        http: http_addr,
        shutdown,
        handle,
    }
}

impl Served {
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

fn sale(id: &str, grams: i64) -> pb::SalesRecord {
    pb::SalesRecord {
        record_id: id.into(),
        sale_date: "2026-03-10".into(),
        province_code: "01".into(),
        commune_code: String::new(),
        category: "fruit".into(),
        quantity_grams: grams,
        value_vnd: 1000,
        orders: 1,
        household_ref: String::new(),
    }
}

async fn national_grams(http: &str) -> Option<i64> {
    let body: Value = reqwest::get(format!("http://{http}/api/v1/national"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["sales"]["grams"].as_i64()
}

async fn wait_grams(http: &str, grams: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = national_grams(http).await;
        if now == Some(grams) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "national grams never reached {grams}; last {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A well-formed marketplace event adding `grams` in province 01 (the gateway would count it).
fn forged_event(id: &str, grams: i64) -> Message {
    let event = pb::SalesRecorded {
        event_id: id.into(),
        partner: agriportal_proto::common::v1::Partner::Postmart as i32,
        batch_id: format!("batch-{id}"),
        recorded_at_ms: 1_770_000_000_000,
        changes: vec![pb::SalesChange {
            record_id: format!("record-{id}"),
            previous: None,
            current: Some(pb::SalesFigures {
                sale_date: "2026-03-10".into(),
                province_code: "01".into(),
                commune_code: String::new(),
                category: "fruit".into(),
                quantity_grams: grams,
                value_vnd: 1,
                orders: 1,
                household_ref: String::new(),
            }),
        }],
    };
    Message {
        subject: pb::SALES_RECORDED.subject().to_string(),
        id: id.into(),
        headers: vec![],
        payload: pb::SALES_RECORDED.encode(&event).into(),
    }
}

/// Marketplace events stored in the stream (the indicators' catalogue events come and go on
/// their own), read with the migrate user, which may read the stream's info.
async fn stored_marketplace_events(nats: &NatsServer, ca: &Path) -> usize {
    use futures::TryStreamExt;
    let client = async_nats::ConnectOptions::new()
        .user_and_password("migrate".into(), password("migrate"))
        .add_root_certificates(ca.to_path_buf())
        .custom_inbox_prefix("_INBOX.migrate")
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("AGRIPORTAL").await.unwrap();
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects("agriportal.marketplace.>")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    subjects.iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn each_service_has_its_own_nats_user_and_the_gateway_cannot_forge_marketplace_events() {
    let Some(binary) = nats_server_binary() else {
        assert!(
            !testing::require_servers(),
            "nats-server not found (AGRIPORTAL_TEST_NATS_SERVER)"
        );
        println!("SKIPPED nats_security: no nats-server binary");
        return;
    };
    let registry = agriportal::app::registry();
    let Some((settings, dir)) = config_on(&registry, Mode::Distributed, "nats_security").await
    else {
        return;
    };
    let tls = test_ca(dir.path());
    let nats = start_nats(&binary, dir.path(), &tls).await;
    // And each service as its own PostgreSQL role, as deployed (roles are cluster-wide: unique
    // names, dropped at the end).
    let mut settings = settings;
    settings.platform.db_role_prefix = format!("{}_", testing::unique_prefix("nats_role"));
    settings.platform.db_runtime_roles = true;
    let url = settings.platform.database_url.clone().unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let roles: Vec<String> = registry
        .names()
        .iter()
        .map(|t| format!("{}{t}", settings.platform.db_role_prefix))
        .collect();
    for role in &roles {
        sqlx::raw_sql(&format!("CREATE ROLE {role} LOGIN"))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    // The migrate job creates the stream (only its user may) and the schemas.
    let migrated = kit::migrate(
        &registry,
        &as_user(&settings, &nats, "migrate", &tls.ca).platform,
        None,
    )
    .await
    .unwrap();
    assert!(
        migrated.contains(&"stream AGRIPORTAL".to_string()),
        "{migrated:?}"
    );

    // Each service with its own user: they start (stream info, consumers) and work together.
    let marketplace = serve(
        "marketplace",
        as_user(&settings, &nats, "marketplace", &tls.ca),
    )
    .await;
    let mut gateway_settings = as_user(&settings, &nats, "gateway", &tls.ca);
    let gateway_config = gateway_settings.section_mut::<Gateway>().unwrap();
    gateway_config.marketplace_url = Some(format!("http://{}", marketplace.grpc));
    gateway_config.reconcile_interval_seconds = 0;
    let gateway = serve("gateway", gateway_settings).await;
    let indicators = serve(
        "indicators",
        as_user(&settings, &nats, "indicators", &tls.ca),
    )
    .await;
    let mut web_settings = as_user(&settings, &nats, "web", &tls.ca);
    let web_config = web_settings.section_mut::<Web>().unwrap();
    web_config.gateway_url = Some(format!("http://{}", gateway.grpc));
    web_config.web_indicators_url = Some(format!("http://{}", indicators.grpc));
    let web = serve("web", web_settings).await;

    // Every service is connected as its own role, none as the owner.
    let connected: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT usename::text FROM pg_stat_activity \
         WHERE datname = current_database() AND usename::text LIKE $1 ORDER BY 1",
    )
    .bind(format!("{}%", settings.platform.db_role_prefix))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    let mut expected = roles.clone();
    expected.sort();
    assert_eq!(connected, expected);

    let auth = token_authenticator(&settings.platform).unwrap();
    let token = auth
        .mint(
            Role::Partner {
                partner: "postmart".into(),
            },
            Duration::from_secs(3600),
        )
        .unwrap()
        .0;
    let mut postmart = partner_client(&marketplace.grpc, Some(&token))
        .await
        .unwrap();
    postmart
        .push_sales(pb::PushSalesRequest {
            batch_id: "first".into(),
            records: vec![sale("a", 1_000)],
        })
        .await
        .unwrap();
    wait_grams(&gateway.http, 1_000).await;
    let stored = stored_marketplace_events(&nats, &tls.ca).await;

    // The gateway's credential publishing a marketplace event: NATS refuses it, no ack comes.
    let as_gateway = JetStreamBus::connect_with(
        &nats.url(),
        &security("gateway", &tls.ca),
        "agriportal",
        1,
        0,
    )
    .await
    .expect("the gateway's user may connect and read the stream's settings");
    let refused = as_gateway.publish(forged_event("forged-1", 777_000)).await;
    assert!(refused.is_err(), "the forged event was acked: {refused:?}");
    // async-nats reports the server's refusal, naming the subject.
    let (events, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let raw = async_nats::ConnectOptions::new()
        .user_and_password("gateway".into(), password("gateway"))
        .add_root_certificates(tls.ca.clone())
        .custom_inbox_prefix("_INBOX.gateway")
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = events.send(e.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    raw.publish("agriportal.marketplace.sales_recorded", "forged".into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let violation = tokio::time::timeout(Duration::from_secs(30), violations.recv())
        .await
        .expect("no permissions violation reported")
        .unwrap();
    assert!(
        violation.to_lowercase().contains("permissions violation")
            && violation.contains("agriportal.marketplace.sales_recorded"),
        "{violation}"
    );
    // Nor may it read another service's replies or the events of the stream directly.
    raw.subscribe("_INBOX.marketplace.>").await.unwrap();
    raw.flush().await.unwrap();
    let violation = tokio::time::timeout(Duration::from_secs(30), violations.recv())
        .await
        .expect("no subscription violation reported")
        .unwrap();
    assert!(violation.contains("_INBOX.marketplace.>"), "{violation}");

    // Nothing was stored, and the figures stay: a later legitimate push is all that arrives
    // (events apply in stream order, so a stored forgery would have been applied before it).
    assert_eq!(stored_marketplace_events(&nats, &tls.ca).await, stored);
    postmart
        .push_sales(pb::PushSalesRequest {
            batch_id: "second".into(),
            records: vec![sale("b", 2_000)],
        })
        .await
        .unwrap();
    wait_grams(&gateway.http, 3_000).await;
    assert_eq!(stored_marketplace_events(&nats, &tls.ca).await, stored + 1);

    // The control: the same forged bytes under the marketplace's credential are stored and
    // counted, so the refusal above is the permissions' doing, not a malformed event's.
    let as_marketplace = JetStreamBus::connect_with(
        &nats.url(),
        &security("marketplace", &tls.ca),
        "agriportal",
        1,
        0,
    )
    .await
    .unwrap();
    as_marketplace
        .publish(forged_event("forged-1", 777_000))
        .await
        .expect("the marketplace's user may publish its events");
    wait_grams(&gateway.http, 780_000).await;

    // A wrong password is refused.
    let mut wrong = security("gateway", &tls.ca);
    wrong.password = Some("not-the-password".into());
    let err = JetStreamBus::connect_with(&nats.url(), &wrong, "agriportal", 1, 0)
        .await
        .expect_err("a wrong password connected");
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    // A client that does not trust the CA is refused (no plain-text fallback)...
    let mut untrusted = security("gateway", &tls.ca);
    untrusted.tls_ca = None;
    JetStreamBus::connect_with(
        &format!("nats://127.0.0.1:{}", nats.port),
        &untrusted,
        "agriportal",
        1,
        0,
    )
    .await
    .expect_err("connected without trusting the server's CA");
    // ...and a plain-text client never gets to speak: the server wants TLS first.
    assert_plain_text_refused(nats.port, "gateway", &password("gateway")).await;

    for served in [web, indicators, gateway, marketplace] {
        served.stop().await;
    }
    for role in &roles {
        sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    drop(nats);
}

/// The user blocks of the shipped file: name → quoted subjects of its block.
fn users_of(file: &str) -> Vec<(String, BTreeSet<String>)> {
    file.split("user: ")
        .skip(1)
        .map(|block| {
            let name = block
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let quoted = block
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            (name, quoted)
        })
        .collect()
}

/// Every target has a user whose event subjects are exactly the ones it declares, and whose
/// consumers are its durables; every user reads only its own replies.
#[test]
fn the_shipped_permissions_match_what_the_targets_declare() {
    let file = std::fs::read_to_string(repo().join(AUTH_FILE)).unwrap();
    let users = users_of(&file);
    let names: BTreeSet<_> = users.iter().map(|(n, _)| n.clone()).collect();
    let expected: BTreeSet<_> = USERS.iter().map(|(u, _)| u.to_string()).collect();
    assert_eq!(names, expected, "users of {AUTH_FILE}");
    for (user, var) in USERS {
        assert!(
            file.contains(&format!("password: ${var}")),
            "{user}: ${var}"
        );
    }
    let registry = agriportal::app::registry();
    let targets = kit::targets(&registry, &agriportal_platform::Config::embedded("unused"));
    let targets = targets["targets"].as_array().unwrap();
    assert_eq!(
        targets.len() + 1,
        users.len(),
        "one user per target, and migrate"
    );
    for (user, subjects) in &users {
        let inbox = format!("_INBOX.{user}.>");
        assert!(
            subjects.contains(&inbox),
            "{user} may read its replies {inbox}"
        );
        for s in subjects.iter().filter(|s| s.starts_with("_INBOX")) {
            assert_eq!(s, &inbox, "{user} may read only its own replies");
        }
        let stream_admin = subjects.iter().any(|s| {
            s.starts_with("$JS.API.STREAM.CREATE") || s.starts_with("$JS.API.STREAM.UPDATE")
        });
        assert_eq!(stream_admin, user == "migrate", "{user}: stream management");
        if user == "migrate" {
            continue;
        }
        let target = targets
            .iter()
            .find(|t| t["name"] == user.as_str())
            .unwrap_or_else(|| panic!("user {user} is not a target"));
        let declared: BTreeSet<String> = target["publishes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("agriportal.{}", s.as_str().unwrap()))
            .collect();
        let allowed: BTreeSet<String> = subjects
            .iter()
            .filter(|s| s.starts_with("agriportal."))
            .cloned()
            .collect();
        assert_eq!(allowed, declared, "{user}: events it may publish");
        let consumes = !target["consumes"].as_array().unwrap().is_empty();
        let consumer_calls = subjects.iter().any(|s| s.starts_with("$JS.API.CONSUMER"));
        assert_eq!(consumer_calls, consumes, "{user}: consumer API calls");
    }
    let (_, gateway) = users.iter().find(|(n, _)| n == "gateway").unwrap();
    for durable in [
        agriportal_gateway::config::CONSUMER,
        agriportal_gateway::config::INDICATORS_CONSUMER,
    ] {
        for subject in [
            format!("$JS.API.CONSUMER.CREATE.AGRIPORTAL.{durable}"),
            format!("$JS.API.CONSUMER.CREATE.AGRIPORTAL.{durable}.>"),
            format!("$JS.API.CONSUMER.INFO.AGRIPORTAL.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.AGRIPORTAL.{durable}"),
            format!("$JS.ACK.AGRIPORTAL.{durable}.>"),
        ] {
            assert!(gateway.contains(&subject), "gateway: {subject}");
        }
    }
}
