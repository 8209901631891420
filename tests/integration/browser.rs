//! The portal's pages in a real browser: starts the binary with `up --demo` and runs the
//! Playwright tests of `tests/browser/` (Node's own test runner driving Debian's Chromium)
//! against it. Without Chromium, Node or the npm packages the test says SKIPPED loudly on
//! stderr and passes, unless `AGRIPORTAL_REQUIRE_SERVERS=1` (CI), where it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agriportal_platform::testing;

use crate::support::{free_port, Running};

const BIN: &str = env!("CARGO_BIN_EXE_agriportal");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How long the whole browser suite may take before it counts as hung.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `name` on PATH, if it runs.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// What the browser tests need, or why they cannot run.
struct Tools {
    chromium: PathBuf,
    node: PathBuf,
}

fn find_tools(browser_dir: &Path) -> Result<Tools, String> {
    let chromium = std::env::var_os("AGRIPORTAL_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set AGRIPORTAL_CHROMIUM)",
            chromium.display()
        ));
    }
    let node = on_path("node").ok_or("node not found on PATH")?;
    let installed = |dir: &Path| {
        dir.join("node_modules/playwright-core/package.json")
            .is_file()
            && dir
                .join("node_modules/@axe-core/playwright/package.json")
                .is_file()
    };
    if !installed(browser_dir) {
        let npm = on_path("npm").ok_or("tests/browser/node_modules missing and npm not found")?;
        let line = "browser tests: tests/browser/node_modules missing, running `npm ci`\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        let status = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(browser_dir)
            .stdin(Stdio::null())
            .status()
            .map_err(|e| format!("could not run npm ci: {e}"))?;
        if !status.success() || !installed(browser_dir) {
            return Err(format!(
                "`npm ci` in tests/browser failed ({status}); run it by hand to see why"
            ));
        }
    }
    Ok(Tools { chromium, node })
}

/// Waits until `/readyz` answers and the demo's households show in `/api/v1/national`.
/// Waits until `up --demo` serves households and has seeded its indicator reports (its log
/// says so), so that no page is read, and no report written by a test, before the demo's own
/// reports exist: the seeding waits for the partners' backfill, which takes longer on a busy
/// machine, and skips itself once any report exists.
async fn wait_for_demo(base: &str, admin: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(240);
    let seeded = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains("demo reports not seeded"),
            "the demo could not seed its indicator reports:\n{text}"
        );
        text.contains("demo indicator reports seeded")
            || text.contains("demo reports already seeded")
    };
    let mut last = String::from("no answer");
    loop {
        assert!(
            Instant::now() < deadline,
            "the demo never became ready (households > 0, reports seeded) at {base}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        match reqwest::get(format!("{admin}/readyz")).await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                last = format!("/readyz answered {}", r.status());
                continue;
            }
            Err(e) => {
                last = format!("/readyz: {e}");
                continue;
            }
        }
        let national: serde_json::Value = match reqwest::get(format!("{base}/api/v1/national"))
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                last = format!("/api/v1/national: {e}");
                continue;
            }
        };
        if national["households"]["onboarded"]
            .as_u64()
            .is_none_or(|n| n == 0)
        {
            last = format!("/api/v1/national: {national}");
            continue;
        }
        if seeded() {
            return;
        }
        last = format!("indicator reports not seeded yet (log: {})", log.display());
    }
}

#[test]
fn pages_in_chromium() {
    let root = Path::new(ROOT);
    let browser_dir = root.join("tests/browser");
    let tools = match find_tools(&browser_dir) {
        Ok(tools) => tools,
        Err(why) => {
            assert!(
                !testing::require_servers(),
                "browser tests: {why}, and {}=1 requires them (.ci/run installs Chromium and runs npm ci)",
                testing::REQUIRE_SERVERS_ENV
            );
            let line = format!(
                "\n!!!!!!!!\nSKIPPED browser tests: {why}; set {}=1 to make this a failure\n!!!!!!!!\n",
                testing::REQUIRE_SERVERS_ENV
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            return;
        }
    };

    let dir = tempfile::tempdir().expect("data dir");
    // The demo's log, read to know when its reports are seeded (warnings stay in it too).
    let log = dir.path().join("up.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let base = format!("http://127.0.0.1:{http}");
    let admin_base = format!("http://127.0.0.1:{admin}");
    let up = Running(
        Command::new(BIN)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env_remove("AGRIPORTAL_TOKEN_PUBLIC_KEYS")
            .env_remove("AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE")
            .env("AGRIPORTAL_LOG", "warn,agriportal::demo=info")
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "--grpc",
                &format!("127.0.0.1:{grpc}"),
                "--http",
                &format!("127.0.0.1:{http}"),
                "--admin-http",
                &format!("127.0.0.1:{admin}"),
                "up",
                "--demo",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start agriportal up --demo"),
    );
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(wait_for_demo(&base, &admin_base, &log));

    let screenshots = root.join("target/browser-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).expect("screenshot dir");
    let line = format!(
        "browser tests: {} against {base}, screenshots in {}\n",
        tools.chromium.display(),
        screenshots.display()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    // Output goes straight to the terminal (inherited), so it streams as the tests run.
    let mut node = Running(
        Command::new(&tools.node)
            .args(["--test", "--test-reporter=spec", "tests/browser/"])
            .current_dir(root)
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .env_remove("AGRIPORTAL_TOKEN_PUBLIC_KEYS")
            .env_remove("AGRIPORTAL_TOKEN_PRIVATE_KEY_FILE")
            .env("AGRIPORTAL_LOG", "warn")
            .env("AGRIPORTAL_URL", &base)
            .env("AGRIPORTAL_BIN", BIN)
            .env("AGRIPORTAL_DATA_DIR", dir.path())
            .env("AGRIPORTAL_SCREENSHOTS", &screenshots)
            .env("AGRIPORTAL_CHROMIUM", &tools.chromium)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node --test"),
    );
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("wait for node") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the browser tests did not finish within {SUITE_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let up_log = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: String = up_log
        .chars()
        .rev()
        .take(4_000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        status.success(),
        "the browser tests failed ({status}): see their output above, and the screenshots in {}; \
         the end of up's log:\n{tail}",
        screenshots.display()
    );
    assert!(up.terminate().success(), "up exits cleanly on SIGTERM");
}
