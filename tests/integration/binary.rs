//! The real binary, as a user and Kubernetes run it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agriportal::client::partner_client;
use agriportal_platform::testing;
use agriportal_proto::marketplace::v1 as pb;

use crate::support::{free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_agriportal");

fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL")
        .env_remove("NATS_URL")
        .env_remove("AGRIPORTAL_TOKEN_PUBLIC_KEYS")
        .env_remove("AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE")
        .env_remove("AGRIPORTAL_SERVICE_TOKEN_FILE")
        .env("AGRIPORTAL_LOG", "warn")
        .arg("--data-dir")
        .arg(dir);
    c
}

async fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn mint(dir: &std::path::Path, partner: &str, extra_env: &[(&str, &str)]) -> String {
    mint_as(dir, &["--partner", partner], extra_env)
}

/// `agriportal token mint <who>`: the token it prints.
fn mint_as(dir: &std::path::Path, who: &[&str], extra_env: &[(&str, &str)]) -> String {
    let mut c = command(dir);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c
        .args(["token", "mint"])
        .args(who)
        .output()
        .expect("run token mint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "token mint prints the token alone: {stdout:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("token id"));
    lines[0].to_string()
}

#[test]
fn token_mint_prints_only_the_token_and_refuses_unknown_scopes() {
    let dir = tempfile::tempdir().expect("dir");
    let token = mint(dir.path(), "voso", &[]);
    assert!(token.starts_with("ap2."), "{token}");
    let out = command(dir.path())
        .args(["token", "mint", "--role", "province", "--province", "99"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown province code"));
}

/// Runs a `bench` command, which must succeed, and returns its standard output and the JSON
/// report on its last line.
fn bench_report(command: &mut Command) -> (String, serde_json::Value) {
    let out = command.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("JSON report");
    (stdout, report)
}

/// What a failed `agriportal <args>` said on standard error (it must fail).
fn refusal(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = command(dir);
    c.envs(env.iter().copied());
    let out = c.args(args).output().expect("run");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn keygen_keys_mint_within_their_caps_and_private_keys_stay_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("keys").join("mint_key");
    let key_arg = key.display().to_string();
    let out = command(dir.path())
        .args(["token", "keygen", "--kid", "k-test", "--out", &key_arg])
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).expect("utf8");
    assert!(public.trim().starts_with("k-test:"), "{public}");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = refusal(dir.path(), &["token", "keygen", "--out", &key_arg], &[]);
    assert!(again.contains("never replaces"), "{again}");
    // The key file mints; the caps hold at minting; a service token only for a declared call.
    let env = [("AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE", key_arg.as_str())];
    let token = mint_as(dir.path(), &["--role", "admin"], &env);
    assert!(token.starts_with("ap2.k-test."), "{token}");
    let service = [
        "--service",
        "gateway",
        "--audience",
        "marketplace",
        "--days",
        "30",
    ];
    assert!(mint_as(dir.path(), &service, &env).starts_with("ap2.k-test."));
    let long = refusal(
        dir.path(),
        &["token", "mint", "--role", "admin", "--days", "2"],
        &env,
    );
    assert!(long.contains("at most 1 days"), "{long}");
    let undeclared = [
        "token",
        "mint",
        "--service",
        "gateway",
        "--audience",
        "indicators",
    ];
    let undeclared = refusal(dir.path(), &undeclared, &env);
    assert!(
        undeclared.contains("does not call `indicators`"),
        "{undeclared}"
    );
    // With public keys only, nothing can be minted.
    let public_only = [("AGRIPORTAL_TOKEN_PUBLIC_KEYS", public.trim())];
    let err = refusal(
        dir.path(),
        &["token", "mint", "--role", "admin"],
        &public_only,
    );
    assert!(err.contains("no token private key"), "{err}");
    // A private key others may read is refused, here and in the embedded data directory.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = refusal(dir.path(), &["token", "mint", "--role", "admin"], &env);
    assert!(err.contains("readable by others"), "{err}");
    mint(dir.path(), "voso", &[]);
    let embedded = dir.path().join("token_key");
    std::fs::set_permissions(&embedded, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = refusal(dir.path(), &["token", "mint", "--partner", "voso"], &[]);
    assert!(
        err.contains("readable by others") && err.contains("token_key"),
        "{err}"
    );
}

#[test]
fn serve_refuses_the_in_process_bus_and_says_what_to_set() {
    let dir = tempfile::tempdir().expect("dir");
    let out = command(dir.path())
        .args(["serve", "--target", "gateway"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NATS_URL") && stderr.contains("agriportal up"),
        "{stderr}"
    );
}

/// Starts `agriportal up` on free ports with its data in `dir` and waits until it is ready:
/// the process, its gRPC port and its public HTTP port (the admin port is its own, so tests
/// running at once never share the default 9090).
async fn start_up(dir: &std::path::Path) -> (Running, u16, u16) {
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let up = Running(
        command(dir)
            .args([
                "--grpc",
                &format!("127.0.0.1:{grpc}"),
                "--http",
                &format!("127.0.0.1:{http}"),
                "--admin-http",
                &format!("127.0.0.1:{admin}"),
                "up",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start up"),
    );
    wait_http(&format!("http://127.0.0.1:{admin}/readyz")).await;
    (up, grpc, http)
}

#[tokio::test]
async fn up_serves_a_partner_push_made_with_a_cli_token() {
    let dir = tempfile::tempdir().expect("dir");
    let (up, grpc, http) = start_up(dir.path()).await;
    // Minted by another process while `up` runs: works at once.
    let token = mint(dir.path(), "postmart", &[]);
    let mut client = partner_client(&format!("127.0.0.1:{grpc}"), Some(&token))
        .await
        .expect("connect");
    let record = pb::SalesRecord {
        record_id: "cli-1".into(),
        sale_date: "2023-05-01".into(),
        province_code: "79".into(),
        category: "seafood".into(),
        quantity_grams: 123_456,
        value_vnd: 7_000_000,
        orders: 3,
        ..Default::default()
    };
    client
        .push_sales(pb::PushSalesRequest {
            batch_id: "cli".into(),
            records: vec![record],
        })
        .await
        .expect("push");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{http}/api/v1/national"))
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
        if body["sales"]["grams"] == 123_456 {
            break;
        }
        assert!(Instant::now() < deadline, "push never showed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up.terminate().success(), "up exits cleanly on SIGTERM");
}

#[tokio::test]
async fn serve_targets_run_as_separate_processes_on_postgres_and_jetstream() {
    let Some(database_url) = testing::fresh_postgres("serve_targets").await else {
        return;
    };
    let Some(nats_url) = testing::nats_url("serve_targets").await else {
        return;
    };
    let prefix = testing::unique_prefix("serve_targets");
    let dir = tempfile::tempdir().expect("dir");
    // As in a deployment: the services hold the public key only; the private key stays with
    // `token mint`; the gateway calls the marketplace with its own service token from a file.
    let key = dir.path().join("mint_key").display().to_string();
    let out = command(dir.path())
        .args(["token", "keygen", "--out", &key])
        .output()
        .expect("keygen");
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string();
    let env = [
        ("DATABASE_URL", database_url.as_str()),
        ("NATS_URL", nats_url.as_str()),
        ("AGRIPORTAL_BUS_PREFIX", prefix.as_str()),
        ("AGRIPORTAL_TOKEN_PUBLIC_KEYS", public.as_str()),
    ];
    let minting = [("AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE", key.as_str())];
    let service = ["--service", "gateway", "--audience", "marketplace"];
    let service_token_file = dir.path().join("service_token");
    std::fs::write(&service_token_file, mint_as(dir.path(), &service, &minting)).expect("write");
    let service_token_file = service_token_file.display().to_string();
    let with_env = |c: &mut Command| {
        for (k, v) in env {
            c.env(k, v);
        }
    };
    let mut migrate = command(dir.path());
    with_env(&mut migrate);
    assert!(migrate.arg("migrate").status().expect("migrate").success());
    let mut children = Vec::new();
    let mut ports: Vec<(u16, u16)> = Vec::new();
    for target in ["marketplace", "gateway"] {
        let (grpc, http, admin) = (free_port(), free_port(), free_port());
        let mut c = command(dir.path());
        with_env(&mut c);
        if target == "gateway" {
            // Reconciliation on: the gateway starts only with a service token for it.
            let marketplace = format!("http://127.0.0.1:{}", ports[0].0);
            c.env("AGRIPORTAL_MARKETPLACE_URL", marketplace)
                .env("AGRIPORTAL_SERVICE_TOKEN_FILE", &service_token_file);
        }
        c.args([
            "--grpc",
            &format!("127.0.0.1:{grpc}"),
            "--http",
            &format!("127.0.0.1:{http}"),
            "--admin-http",
            &format!("127.0.0.1:{admin}"),
            "serve",
            "--target",
            target,
        ]);
        children.push(Running(c.stdout(Stdio::null()).spawn().expect("serve")));
        ports.push((grpc, http));
        wait_http(&format!("http://127.0.0.1:{admin}/readyz")).await;
    }
    let minting: Vec<(&str, &str)> = env.iter().copied().chain(minting).collect();
    let token = mint(dir.path(), "voso", &minting);
    let mut client = partner_client(&format!("127.0.0.1:{}", ports[0].0), Some(&token))
        .await
        .expect("connect");
    let record = pb::SalesRecord {
        record_id: "dist-1".into(),
        sale_date: "2024-02-02".into(),
        province_code: "91".into(),
        category: "rice_grains".into(),
        quantity_grams: 5_000_000,
        value_vnd: 90_000_000,
        orders: 7,
        ..Default::default()
    };
    let batch = pb::PushSalesRequest {
        batch_id: "dist".into(),
        records: vec![record],
    };
    client.push_sales(batch.clone()).await.expect("push");
    client.push_sales(batch).await.expect("re-send");
    let national = format!("http://127.0.0.1:{}/api/v1/national", ports[1].1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body: serde_json::Value = reqwest::get(&national)
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if body["sales"]["by_partner"]["voso"]["grams"] == 5_000_000 {
            assert_eq!(body["sales"]["orders"], 7);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "push never reached the gateway process: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for child in children {
        assert!(child.terminate().success());
    }
}

/// `bench ingest --rate` paces its pushes and reports both COPY baselines beside our rate (the
/// keyed, logged, committed one as the ceiling). No timing is asserted beyond what pacing
/// guarantees by construction: a batch is never sent before its slot, so the acknowledged rate
/// cannot pass the rate asked by more than one slot's worth.
#[test]
fn bench_ingest_paces_at_its_rate_and_reports_both_copy_baselines() {
    let required = std::env::var_os("AGRIPORTAL_REQUIRE_SERVERS").is_some();
    if std::net::TcpStream::connect("127.0.0.1:5432").is_err() {
        assert!(!required, "PostgreSQL is required for the COPY baselines");
        println!("SKIPPED bench ingest: no PostgreSQL on 127.0.0.1:5432");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let (stdout, report) = bench_report(command(dir.path()).args([
        "bench",
        "ingest",
        "--records",
        "2000",
        "--batch-size",
        "100",
        "--rate",
        "4000",
        "--copy-url",
        "postgres://postgres@127.0.0.1:5432/postgres",
    ]));
    assert_eq!(report["records"], 2000);
    assert_eq!(report["target_rate"], 4000.0);
    for field in [
        "ack_rate",
        "copy_rate",
        "keyed_copy_rate",
        "ratio_to_copy",
        "ratio_to_keyed_copy",
    ] {
        let v = report[field].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{field}: {report}");
    }
    // 10 batches per partner, one every 100 / 2000 s: the last no earlier than 9 slots in.
    let ack_rate = report["ack_rate"].as_f64().unwrap();
    assert!(ack_rate <= 4000.0 * 10.0 / 9.0, "{report}");
    assert!(stdout.contains("keyed (partner, record_id)"), "{stdout}");
}

/// `bench read` measures every endpoint against the bare handler and reports the shape the
/// README shows: no timing is asserted (performance is measured, not tested), only that both
/// servers answered every request with 200 and each figure is a positive finite number.
#[test]
fn bench_read_compares_each_endpoint_with_the_bare_handler() {
    let dir = tempfile::tempdir().expect("dir");
    let (stdout, report) = bench_report(command(dir.path()).args([
        "bench",
        "read",
        "--seconds",
        "1",
        "--latency-seconds",
        "1",
        "--rate",
        "20",
        "--connections",
        "2",
        "--warmup-seconds",
        "1",
    ]));
    assert_eq!(report["rate"], 20);
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    let paths: Vec<&str> = endpoints
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 7, "{paths:?}");
    assert_eq!(paths[0], "/api/v1/national");
    assert!(paths[3].contains("granularity=day") && paths[4].contains("granularity=month"));
    assert_eq!(paths[5], "/api/v1/indicators");
    assert_eq!(paths[6], "/api/v1/indicators/HH_ONBOARDED");
    // The per-client limit is off: the figures are the handlers', not the limiter's.
    assert_eq!(report["rate_limited"], 0, "{report}");
    for e in endpoints {
        // Two connections and 20 requests in flight at most: far under every limit, so any
        // failure is a bug (a path the bare handler does not know, a refused read).
        // On failure the kinds say what failed (a status, a reset connection, …).
        assert_eq!(e["errors"], 0, "{e}");
        assert_eq!(e["open_loop_errors"], 0, "{e}");
        assert!(e["open_loop_error_kinds"].is_object(), "{e}");
        assert!(e["bytes"].as_u64().unwrap() > 0, "{e}");
        for field in ["gateway_rps", "bare_rps", "ratio", "p50_ms", "p99_ms"] {
            let v = e[field].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite() && v > 0.0, "{field}: {e}");
        }
        assert!(e["p50_ms"].as_f64() <= e["p99_ms"].as_f64(), "{e}");
    }
    assert!(stdout.contains("gateway/s"), "{stdout}");
}

/// `bench overload` runs its three phases with the flooding client as a child process, and
/// its report says what happened (no latency is asserted: performance is measured, not tested).
#[test]
fn bench_overload_runs_its_phases_and_refuses_the_flood() {
    use agriportal_platform::config::{
        DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS,
    };
    const { assert!(2 * DEFAULT_PARTNER_MAX_CONCURRENT_REQUESTS <= DEFAULT_MAX_CONCURRENT_REQUESTS) };
    let dir = tempfile::tempdir().expect("dir");
    let (_, report) = bench_report(command(dir.path()).args([
        "bench",
        "overload",
        "--seconds",
        "1",
        "--rounds",
        "1",
    ]));
    assert_eq!(report["flood_process_nice"], 10);
    let phases = report["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3);
    for phase in phases {
        // Whatever the machine's load: the steady partner, within its quota, is never rate
        // limited, and never shed at the process's limit. That holds by construction, not by
        // timing: each partner's cap (--partner-max-concurrent-requests) is checked from the
        // headers in front of the process's limit, and two caps fit in it, so neither partner
        // can take a slot the other needs; the flood is refused as busy or rate limited, never
        // shed. On a slow machine the steady partner may meet its own in-flight cap (busy):
        // that is its own load, and says nothing of the flood.
        let steady = &phase["steady"];
        let sent = steady["sent"].as_u64().unwrap();
        assert!(sent > 0, "{phase}");
        assert_eq!(steady["rate_limited"], 0, "{phase}");
        assert_eq!(steady["shed"], 0, "{phase}");
        assert_eq!(phase["flood"]["shed"], 0, "{phase}");
        assert_eq!(steady["failed"], 0, "{phase}");
        assert_eq!(
            steady["accepted"].as_u64().unwrap() + steady["busy"].as_u64().unwrap(),
            sent,
            "{phase}"
        );
    }
    assert_eq!(phases[0]["flood"]["sent"], 0);
    let flood = &phases[2];
    assert_eq!(flood["flood"]["failed"], 0, "{flood}");
    // The flood gets no more than its quota: at most a burst plus the quota over the phase's
    // time. How much of it is refused depends on how fast this machine lets it send (a busy
    // one answers calls in seconds, so the server sees it offer less, and refuses less); this
    // bound does not (ten times the quota on a quiet machine goes far past it).
    let taken =
        flood["flood"]["accepted"].as_u64().unwrap() * report["batch_size"].as_u64().unwrap();
    let allowed = report["burst"].as_f64().unwrap()
        + report["quota"].as_f64().unwrap() * flood["wall_seconds"].as_f64().unwrap()
        + report["batch_size"].as_f64().unwrap();
    assert!(
        taken as f64 <= allowed,
        "the flood got {taken} records, more than its quota allows ({allowed}): {flood}"
    );
    assert!(
        flood["flood_client_cpu_cores"].as_f64().is_some(),
        "{flood}"
    );
    let interval = report["p99_rise_vs_quota_interval"]
        .as_array()
        .expect("interval");
    assert!(interval[0].as_f64().unwrap() <= interval[1].as_f64().unwrap());
}

/// `bench scale` at a tiny size: two steps, each of whose figures the bench itself checked
/// against the sums it pushed (it fails on any difference; `bench_scale::expected`'s unit tests
/// show a figure one off fails it), and a report whose counts agree with each other. No latency
/// is asserted: performance is measured, not tested.
#[test]
fn bench_scale_checks_every_figure_at_each_step_and_reports_consistent_counts() {
    let dir = tempfile::tempdir().expect("dir");
    let (stdout, report) = bench_report(command(dir.path()).args([
        "bench",
        "scale",
        "--lines",
        "20000,40000",
        "--households",
        "5000",
        "--write-rate",
        "500",
        "--read-rate",
        "50",
        "--latency-seconds",
        "1",
        "--throughput-seconds",
        "1",
        "--connections",
        "2",
    ]));
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{report}");
    let n = |step: &serde_json::Value, field: &str| step[field].as_u64().expect(field);
    // The writes while reading (about 4,000 lines) stay under a step, so each step lands on
    // its size exactly, and the second loads what the first and its writes left.
    assert_eq!(n(&steps[0], "lines"), 20_000, "{report}");
    assert_eq!(n(&steps[0], "loaded"), 20_000, "{report}");
    assert_eq!(n(&steps[1], "lines"), 40_000, "{report}");
    let written = n(&steps[0], "written_while_reading");
    assert!(written > 0, "{report}");
    assert_eq!(
        n(&steps[1], "loaded"),
        40_000 - 20_000 - written,
        "{report}"
    );
    for step in steps {
        assert_eq!(n(step, "households"), 5_000, "{step}");
        assert_eq!(step["national"][0], 5_000, "{step}");
        // national (26 figures), the province (13), a year by day (a count and 365 days) and
        // by month (a count and the 12 or 13 months the year touches).
        let path = step["endpoints"][3]["path"].as_str().expect("path");
        let month = |key: &str| {
            let date = path.split(key).nth(1).expect(key);
            let year: u64 = date[0..4].parse().expect("year");
            let month: u64 = date[5..7].parse().expect("month");
            year * 12 + month
        };
        let months = month("&to=") - month("&from=") + 1;
        assert_eq!(
            n(step, "figures_checked"),
            26 + 13 + 366 + 1 + months,
            "{step}"
        );
        let endpoints = step["endpoints"].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 4, "{step}");
        for e in endpoints {
            assert_eq!(e["errors"], 0, "{e}");
            for field in ["p50_ms", "p99_ms", "answered_rps", "max_rps"] {
                let v = e[field].as_f64().unwrap_or(f64::NAN);
                assert!(v.is_finite() && v > 0.0, "{field}: {e}");
            }
            assert!(e["p50_ms"].as_f64() <= e["p99_ms"].as_f64(), "{e}");
        }
        assert!(
            step["rss_mib"].as_f64() <= step["peak_rss_mib"].as_f64(),
            "{step}"
        );
        assert!(n(step, "data_bytes") > 0, "{step}");
    }
    let grams = |i: usize| steps[i]["national"][1].as_i64().expect("grams");
    assert!(grams(1) > grams(0) && grams(0) > 0, "{report}");
    let growth = report["growth"].as_array().expect("growth");
    assert_eq!(growth.len(), 4, "{report}");
    for (i, g) in growth.iter().enumerate() {
        let p99 = |s: usize| steps[s]["endpoints"][i]["p99_ms"].as_f64().expect("p99");
        assert_eq!(g["ratio"].as_f64(), Some(p99(1) / p99(0)), "{g}");
    }
    assert!(stdout.contains("all exact"), "{stdout}");
}

/// An embedded benchmark keeps its store under `--data-dir`, in a directory of its own that
/// it removes afterwards: `bench scale`'s 10 M lines take about 9 GB, more than many machines'
/// /tmp holds, so the operator chooses the disk. A data dir that cannot hold directories
/// makes the run fail naming it (the store really is there), and a run that can leaves nothing.
#[test]
fn embedded_benchmarks_keep_their_store_under_the_data_dir_and_remove_it() {
    let dir = tempfile::tempdir().expect("dir");
    let run = [
        "bench",
        "ingest",
        "--records",
        "200",
        "--batch-size",
        "100",
        "--no-copy",
    ];
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").expect("file");
    let stderr = refusal(&file, &run, &[]);
    assert!(
        stderr.contains(&format!("{}/bench-", file.display())),
        "{stderr}"
    );
    let out = command(dir.path()).args(run).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("bench-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bench_scale_refuses_sizes_out_of_order() {
    let dir = tempfile::tempdir().expect("dir");
    let stderr = refusal(
        dir.path(),
        &["bench", "scale", "--lines", "40000,20000"],
        &[],
    );
    assert!(stderr.contains("--lines must be ascending"), "{stderr}");
}

/// The kit's tools through the binary: `targets` says what each service is, `migrate
/// --target` migrates one store, `events parked` lists nothing on a fresh system and `events
/// replay` names what it cannot find, `config` shows each service's own settings.
#[test]
fn targets_migrate_and_events_work_through_the_binary() {
    let dir = tempfile::tempdir().expect("dir");
    let out = command(dir.path()).arg("targets").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let targets: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["marketplace", "gateway", "indicators", "web"]);
    let gateway = &targets["targets"][1];
    assert_eq!(gateway["calls"][0], "marketplace");
    assert_eq!(gateway["consumes"][0], "marketplace.sales_recorded");
    assert!(gateway["env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|e| e == "AGRIPORTAL_RECONCILE_INTERVAL_SECONDS"));
    assert!(targets["shared"]["env"]
        .as_array()
        .expect("shared env")
        .iter()
        .any(|e| e == "DATABASE_URL"));

    let out = command(dir.path())
        .args(["migrate", "--target", "gateway"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("migrated platform") && stderr.contains("migrated gateway"),
        "{stderr}"
    );
    assert!(!stderr.contains("migrated marketplace"), "{stderr}");

    let out = command(dir.path())
        .args(["events", "parked"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 parked event(s)"));
    let out = command(dir.path())
        .args(["events", "replay", "gateway:7", "--wait-seconds", "1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no parked event gateway:7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = command(dir.path())
        .args(["config", "--partner-burst-records", "12345"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        config["services"]["marketplace"]["partner_burst_records"],
        12345
    );
    assert!(config.get("token_secret").is_none(), "secrets are left out");
    // Token settings are paths and public keys only.
    assert_eq!(config["token_public_keys"], serde_json::json!([]));
    assert!(config.get("token_private_key_file").is_some());
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// The attack: a `PushSales` message of `bytes` made of empty records (two bytes each
/// on the wire), so prost would allocate one record per two bytes.
fn empty_records_message(bytes: usize) -> Vec<u8> {
    let mut message = vec![0x0a, 0x01, b'x'];
    while message.len() + 2 <= bytes {
        message.extend_from_slice(&[0x12, 0x00]);
    }
    message
}

/// A 16 MB `PushSales` of empty records, four at once, unauthenticated and then with a
/// partner's token, against the real binary: the process's peak memory grows by a small
/// multiple of the requests' size (it grew by over 1 GiB per request when records were decoded
/// before the token and the record limit were checked). Both are refused by name.
#[tokio::test]
async fn sixteen_megabytes_of_empty_records_cost_a_small_multiple_of_their_size() {
    use crate::abuse::RawCodec;
    const ATTACK: usize = 16 * 1000 * 1000;
    const AT_ONCE: usize = 4;
    let dir = tempfile::tempdir().expect("dir");
    let (up, grpc, _http) = start_up(dir.path()).await;
    let token = mint(dir.path(), "postmart", &[]);
    let message = empty_records_message(ATTACK);
    let call = |token: Option<String>, message: Vec<u8>| async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
            .expect("uri")
            .timeout(Duration::from_secs(120))
            .connect()
            .await
            .expect("connect");
        let mut client = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
        client.ready().await.expect("ready");
        let mut request = tonic::Request::new(message);
        if let Some(token) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/agriportal.marketplace.v1.MarketplaceIngest/PushSales",
        );
        client
            .unary(request, path, RawCodec)
            .await
            .expect_err("the attack is refused")
    };
    // Warm up the paths the attack takes (a refused call of each kind), then measure.
    call(None, vec![0x0a, 0x01, b'w']).await;
    call(Some(token.clone()), empty_records_message(20_010)).await;
    let pid = up.0.id();
    let before = peak_rss(pid);
    let mut growth = Vec::new();
    let under_the_size_limit = empty_records_message(4 * 1024 * 1024 - 16);
    // Who sends it, their token, the message, and the refusal expected (code, words).
    type Attack<'a> = (
        &'a str,
        Option<String>,
        &'a Vec<u8>,
        tonic::Code,
        &'a [&'a str],
    );
    let attacks: [Attack<'_>; 3] = [
        (
            "unauthenticated",
            None,
            &message,
            tonic::Code::Unauthenticated,
            &["authorization"],
        ),
        (
            "a partner",
            Some(token.clone()),
            &message,
            tonic::Code::ResourceExhausted,
            &["4194304"],
        ),
        (
            "a partner, 4 MiB",
            Some(token),
            &under_the_size_limit,
            tonic::Code::ResourceExhausted,
            &["records", "10000"],
        ),
    ];
    for (who, token, message, code, words) in attacks {
        let start = peak_rss(pid);
        let calls: Vec<_> = (0..AT_ONCE)
            .map(|_| tokio::spawn(call(token.clone(), message.clone())))
            .collect();
        for call in calls {
            let status = call.await.expect("call");
            assert_eq!(status.code(), code, "{who}: {status:?}");
            for word in words {
                assert!(status.message().contains(word), "{who}: {status:?}");
            }
        }
        let grew = peak_rss(pid).saturating_sub(start);
        eprintln!(
            "{who}: {AT_ONCE} × {} bytes of empty records: peak RSS +{} MiB",
            message.len(),
            grew >> 20
        );
        growth.push((who, grew));
    }
    let total = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "peak RSS before the attacks {} MiB, growth {} MiB",
        before >> 20,
        total >> 20
    );
    // Each request may be buffered whole once (tonic reads a message before decoding it);
    // nothing beyond a small multiple of that.
    let bound = (2 * AT_ONCE * ATTACK) as u64;
    for (who, grew) in growth {
        assert!(
            grew <= bound,
            "{who}: peak RSS grew by {grew} bytes (bound {bound})"
        );
    }
    assert!(up.terminate().success());
}
