//! The service kit, proved by a service that exists only in the tests (`tests/probe`): with
//! nothing added to the binary but the registry line below, it migrates, serves gRPC with
//! health and an HTTP route in `up` and in `serve --target`, publishes through the outbox and
//! consumes through the kit's consumer with the inbox, parks a poison event and replays it, and
//! shows up in `targets`.

use std::time::Duration;

use agriportal_platform::bus::Message;
use agriportal_platform::kit::{self, Listeners, ReplayOutcome};
use agriportal_platform::storage::Database;
use agriportal_platform::{with_db, Registry};
use agriportal_probe::Probe;
use agriportal_proto::probe::v1 as pb;
use agriportal_proto::probe::v1::probe_client::ProbeClient;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::{config_on, eventually, spawn_app_on, Mode, TestApp};

/// The binary's services and the probe: the one line a new service needs.
fn registry() -> Registry {
    agriportal::app::registry().with::<Probe>()
}

const PROBE: &str = "agriportal.probe.v1.Probe";

async fn probe_client(grpc: &str) -> ProbeClient<tonic::transport::Channel> {
    ProbeClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect")
}

async fn serving(grpc: &str, service: &str) -> bool {
    use tonic_health::pb::health_client::HealthClient;
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .expect("endpoint")
        .connect()
        .await
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

async fn tallies(http: &str) -> Value {
    let response = reqwest::get(format!("http://{http}/probe/v1/tallies"))
        .await
        .expect("GET tallies");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

fn count(tallies: &Value, text: &str) -> i64 {
    tallies["tallies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["text"] == text)
        .and_then(|t| t["count"].as_i64())
        .unwrap_or(0)
}

/// Notes in, tallies out, through outbox, bus, consumer and inbox.
async fn notes_are_tallied(grpc: &str, http: &str) {
    let mut client = probe_client(grpc).await;
    for text in ["hello", "hello", "world"] {
        client
            .note(pb::NoteRequest { text: text.into() })
            .await
            .expect("note");
    }
    let empty = client
        .note(pb::NoteRequest { text: " ".into() })
        .await
        .expect_err("an empty note is refused");
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("empty"), "{}", empty.message());
    let seen = eventually(
        "the notes' tally",
        || tallies(http),
        |t| count(t, "hello") == 2 && count(t, "world") == 1,
    )
    .await;
    assert_eq!(seen["tallies"].as_array().map(Vec::len), Some(2), "{seen}");
}

async fn the_probe_runs_on_the_kit_in_up(mode: Mode, name: &str) {
    let Some(app) = spawn_app_on(registry(), mode, name).await else {
        return;
    };
    assert!(serving(&app.grpc, PROBE).await, "gRPC health of the probe");
    assert!(
        serving(&app.grpc, agriportal_gateway::GRPC_SERVICE).await,
        "the binary's own services run beside it"
    );
    notes_are_tallied(&app.grpc, &app.http).await;
    // The route lives under the probe's prefix only.
    let (status, _) = app.get("/v1/tallies").await;
    assert_eq!(status, 404);

    poison_is_parked_and_replayed(&app).await;
    app.stop().await;
}

async fn parked(app: &TestApp) -> Vec<kit::Parked> {
    kit::parked(&app.registry, &app.config, Some("probe"))
        .await
        .expect("parked")
}

async fn poison_is_parked_and_replayed(app: &TestApp) {
    let mut client = probe_client(&app.grpc).await;
    // A note whose apply fails (its word is blocked): retried alone, then parked, and the
    // consumer goes on with what follows.
    client
        .note(pb::NoteRequest {
            text: "poison".into(),
        })
        .await
        .expect("note");
    client
        .note(pb::NoteRequest {
            text: "after".into(),
        })
        .await
        .expect("note");
    let rows = eventually("parking the poison note", || parked(app), |p| !p.is_empty()).await;
    let poison = &rows[0];
    assert_eq!(poison.service, "probe");
    assert_eq!(poison.row.consumer, "probe-tally");
    assert_eq!(poison.row.subject, "probe.noted");
    assert_eq!(poison.row.attempts, 2);
    assert!(
        poison.row.reason.contains("`poison` is blocked"),
        "{}",
        poison.row.reason
    );
    eventually(
        "the note after the poison",
        || tallies(&app.http),
        |t| count(t, "after") == 1,
    )
    .await;
    assert_eq!(count(&tallies(&app.http).await, "poison"), 0);

    // A payload that cannot be decoded is parked at once, with the reason.
    app.ctx
        .bus
        .publish(Message {
            subject: "probe.noted".into(),
            id: "not-protobuf".into(),
            headers: vec![],
            payload: bytes::Bytes::from_static(&[0xff, 0xff, 0xff]),
        })
        .await
        .expect("publish");
    let rows = eventually("parking the garbage", || parked(app), |p| p.len() == 2).await;
    let garbage = rows
        .iter()
        .find(|p| p.row.message_id == "not-protobuf")
        .expect("parked");
    assert!(
        garbage
            .row
            .reason
            .contains("not a valid probe.noted payload"),
        "{}",
        garbage.row.reason
    );
    assert_eq!(garbage.row.event_id, "");
    let metrics = reqwest::get(format!("http://{}/metrics", app.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("agriportal_consumer_events_parked_total{consumer=\"probe-tally\"}")),
        "{metrics}"
    );

    // Replay: refused by name while the cause is there, applied once it is gone.
    let id = format!("probe:{}", poison.row.id);
    let again = kit::replay(&app.registry, &app.config, &id, Duration::from_secs(20))
        .await
        .expect("replay");
    assert!(
        matches!(&again, ReplayOutcome::FailedAgain(reason) if reason.contains("blocked")),
        "{again:?}"
    );
    let db = Database::connect(&app.config, "probe").await.expect("db");
    with_db!(&db.pool, |pool| {
        sqlx::query("DELETE FROM blocked_words")
            .execute(pool)
            .await
            .expect("unblock");
    });
    db.close().await;
    let replayed = kit::replay(&app.registry, &app.config, &id, Duration::from_secs(20))
        .await
        .expect("replay");
    assert_eq!(replayed, ReplayOutcome::Replayed);
    assert_eq!(count(&tallies(&app.http).await, "poison"), 1);
    let left = parked(app).await;
    assert_eq!(left.len(), 1, "only the garbage stays parked: {left:?}");
    let garbage_id = format!("probe:{}", left[0].row.id);
    let still = kit::replay(
        &app.registry,
        &app.config,
        &garbage_id,
        Duration::from_secs(20),
    )
    .await
    .expect("replay");
    assert!(matches!(still, ReplayOutcome::FailedAgain(_)), "{still:?}");
    let unknown = kit::replay(
        &app.registry,
        &app.config,
        "probe:999999",
        Duration::from_secs(1),
    )
    .await;
    assert!(unknown.is_err_and(|e| e.to_string().contains("no parked event")));
    let malformed = kit::replay(&app.registry, &app.config, "probe", Duration::from_secs(1)).await;
    assert!(malformed.is_err_and(|e| e.to_string().contains("<service>:<number>")));

    // A permanent error (figures that would overflow) is parked at once, after one attempt,
    // and what follows is applied.
    for text in ["overflow", "after-overflow"] {
        client
            .note(pb::NoteRequest { text: text.into() })
            .await
            .expect("note");
    }
    let rows = eventually("parking the overflow", || parked(app), |p| p.len() == 2).await;
    let overflow = rows
        .iter()
        .find(|p| p.row.reason.contains("overflow"))
        .expect("parked");
    assert_eq!(overflow.row.attempts, 1, "{overflow:?}");
    eventually(
        "the note after the overflow",
        || tallies(&app.http),
        |t| count(t, "after-overflow") == 1,
    )
    .await;
}

#[tokio::test]
async fn the_probe_runs_on_the_kit_in_up_embedded() {
    the_probe_runs_on_the_kit_in_up(Mode::Embedded, "kit_probe_up").await;
}

#[tokio::test]
async fn the_probe_runs_on_the_kit_in_up_on_postgres_and_jetstream() {
    the_probe_runs_on_the_kit_in_up(Mode::Distributed, "kit_probe_up_pg").await;
}

/// `serve --target probe` runs the probe alone, through the same assembly path.
#[tokio::test]
async fn the_probe_serves_alone_as_its_own_target() {
    let registry = registry();
    let Some((settings, _dir)) = config_on(&registry, Mode::Distributed, "kit_probe_serve").await
    else {
        return;
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (grpc_addr, http_addr, admin_addr) = (
        grpc.local_addr().expect("addr").to_string(),
        http.local_addr().expect("addr").to_string(),
        admin.local_addr().expect("addr").to_string(),
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let (registry, shutdown) = (registry.clone(), shutdown.clone());
        async move {
            kit::serve(
                &registry,
                "probe",
                settings,
                Listeners { grpc, http, admin },
                shutdown,
            )
            .await
        }
    });
    eventually("the probe serving", || serving(&grpc_addr, PROBE), |s| *s).await;
    assert!(
        !serving(&grpc_addr, agriportal_gateway::GRPC_SERVICE).await,
        "only the probe runs in its own process"
    );
    notes_are_tallied(&grpc_addr, &http_addr).await;
    let ready = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let public = reqwest::get(format!("http://{http_addr}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(public.status(), 404, "readiness is on the admin port only");
    let unknown = reqwest::get(format!("http://{http_addr}/nope"))
        .await
        .expect("get");
    assert_eq!(
        unknown.status(),
        404,
        "the kit's JSON 404 where no service answers `/`"
    );
    shutdown.cancel();
    server.await.expect("join").expect("serve");
}

/// What `agriportal targets` says of a service comes from its declaration alone.
#[tokio::test]
async fn the_probe_shows_up_in_targets_and_migrates() {
    let registry = registry();
    let Some((settings, _dir)) = config_on(&registry, Mode::Embedded, "kit_probe_targets").await
    else {
        return;
    };
    let targets = kit::targets(&registry, &settings.platform);
    let probe = targets["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "probe"))
        .expect("probe in targets");
    assert_eq!(probe["grpc_services"][0]["name"], PROBE);
    assert_eq!(probe["grpc_services"][0]["public"], false);
    assert_eq!(probe["http_prefix"], "/probe");
    assert_eq!(probe["publishes"][0], "probe.noted");
    assert_eq!(probe["consumes"][0], "probe.noted");
    assert_eq!(probe["env"][0], "AGRIPORTAL_PROBE_MAX_NOTE_CHARS");
    assert_eq!(probe["flags"][0], "--probe-max-note-chars");
    assert_eq!(probe["ports"]["grpc"], 50051);
    let migrations: Vec<&str> = probe["migrations"]
        .as_array()
        .expect("migrations")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        migrations.iter().any(|m| m.ends_with("init")),
        "{migrations:?}"
    );
    assert!(
        migrations.iter().any(|m| m.contains("kit ")),
        "{migrations:?}"
    );
    // Its settings reach the command line: a flag the probe declares parses, and is shown.
    let matches = registry
        .augment(clap::Command::new("agriportal").arg(clap::Arg::new("x").long("x")))
        .try_get_matches_from(["agriportal", "--probe-max-note-chars", "7"])
        .expect("parse");
    let parsed = registry
        .settings(settings.platform.clone(), &matches)
        .expect("settings");
    assert_eq!(
        parsed.section::<Probe>().map(|c| c.probe_max_note_chars),
        Some(7)
    );
    assert_eq!(
        parsed.to_json()["services"]["probe"]["probe_max_note_chars"],
        7
    );

    let migrated = kit::migrate(&registry, &settings.platform, Some("probe"))
        .await
        .expect("migrate");
    assert_eq!(migrated, ["platform", "probe"]);
    let unknown = kit::migrate(&registry, &settings.platform, Some("nope")).await;
    assert!(unknown.is_err_and(|e| e.to_string().contains("unknown target `nope`")));
}
