//! Test support shared by every crate's tests: finding the servers (NATS, PostgreSQL) or
//! skipping loudly, and unique names so that tests sharing one server never see each other's
//! streams or databases.
//!
//! A test needing a server that is not running is skipped with a `SKIPPED …` line on stderr,
//! so that `cargo test` works on a bare machine; CI sets `AGRIPORTAL_REQUIRE_SERVERS=1` to
//! turn that skip into a failure, so that a broken CI setup cannot pass by skipping.
//!
//! Compiled into the library (not behind `cfg(test)`) because other crates' tests use it.
//! Its helpers fail a test by panicking, as assertions do, so the workspace's ban on panics
//! outside tests does not apply to this module.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use sqlx::Connection;

use crate::config::Config;
use crate::service::Service;
use crate::storage::Database;

/// Set to `1` to make a missing server fail the test instead of skipping it.
pub const REQUIRE_SERVERS_ENV: &str = "AGRIPORTAL_REQUIRE_SERVERS";

/// NATS URL for tests.
pub const NATS_URL_ENV: &str = "AGRIPORTAL_TEST_NATS_URL";

/// NATS URL for tests when [`NATS_URL_ENV`] is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// PostgreSQL URL for tests: a database the test user can connect to, as a role allowed to
/// create databases.
pub const DATABASE_URL_ENV: &str = "AGRIPORTAL_TEST_DATABASE_URL";

/// PostgreSQL URL for tests when [`DATABASE_URL_ENV`] is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How long a server may take to answer before it counts as unreachable.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a missing server must fail the test (`AGRIPORTAL_REQUIRE_SERVERS=1`, set by CI).
pub fn require_servers() -> bool {
    std::env::var(REQUIRE_SERVERS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// The URL of a reachable NATS server ([`NATS_URL_ENV`] or [`DEFAULT_NATS_URL`]), or `None`
/// after printing why `test` is skipped.
///
/// # Panics
///
/// When NATS is unreachable and [`require_servers`] is true.
pub async fn nats_url(test: &str) -> Option<String> {
    let url = std::env::var(NATS_URL_ENV).unwrap_or_else(|_| DEFAULT_NATS_URL.to_string());
    let connecting = async_nats::ConnectOptions::new()
        .connection_timeout(REACH_TIMEOUT)
        .connect(url.as_str());
    let why = match tokio::time::timeout(REACH_TIMEOUT + Duration::from_secs(1), connecting).await {
        Ok(Ok(_client)) => return Some(url),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    unreachable(test, "NATS", &url, &why)
}

/// Creates a new, empty PostgreSQL database for `test` on the server of [`DATABASE_URL_ENV`]
/// (or [`DEFAULT_DATABASE_URL`]) and returns its URL, or `None` after printing why `test` is
/// skipped. The database is named `t_<test>_<random>` and is left behind for inspection.
///
/// # Panics
///
/// When PostgreSQL is unreachable and [`require_servers`] is true, and whenever the server is
/// reachable but refuses to create the database (a misconfiguration, not a missing server).
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let url = std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let mut conn =
        match tokio::time::timeout(REACH_TIMEOUT, sqlx::PgConnection::connect(&url)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return unreachable(test, "PostgreSQL", &url, &e.to_string()),
            Err(_) => return unreachable(test, "PostgreSQL", &url, "timed out"),
        };
    let name = unique_name(test, 63);
    // The name is made of `[a-z0-9_]` only, so quoting it is enough.
    if let Err(e) = sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
    {
        panic!(
            "{test}: cannot create database {name} on {}: {e}",
            redact(&url)
        );
    }
    let _ = conn.close().await;
    Some(with_database(&url, &name))
}

/// Runs `body` on `S`'s store on each backend in turn: SQLite in a fresh directory, then
/// PostgreSQL in a fresh database (skipped, loudly, when no server is reachable; a failure
/// under [`REQUIRE_SERVERS_ENV`]). The store is opened in `S`'s schema and migrated as the kit
/// does (the service's migrations and the kit's tables), so one contract test body covers
/// both implementations.
///
/// # Panics
///
/// When `body` panics (a failed assertion), naming the backend, and as [`fresh_postgres`].
pub async fn each_backend<S, F, Fut>(test: &str, body: F)
where
    S: Service,
    F: Fn(Database) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{test}: no temporary directory: {e}"));
    {
        let _on = Backend(test, "SQLite");
        let sqlite = open::<S>(&Config::embedded(dir.path()), test, "SQLite").await;
        body(sqlite.clone()).await;
        sqlite.close().await;
    }
    let Some(url) = fresh_postgres(test).await else {
        return;
    };
    let _on = Backend(test, "PostgreSQL");
    let mut config = Config::embedded(dir.path());
    config.database_url = Some(url);
    let postgres = open::<S>(&config, test, "PostgreSQL").await;
    body(postgres.clone()).await;
    postgres.close().await;
}

/// Names the backend when a test body fails on it (dropped while unwinding).
struct Backend<'a>(&'a str, &'a str);

impl Drop for Backend<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::io::stderr()
                .write_all(format!("{}: failed on {}\n", self.0, self.1).as_bytes());
        }
    }
}

async fn open<S: Service>(config: &Config, test: &str, backend: &str) -> Database {
    let name = S::DESCRIPTOR.name;
    let db = Database::connect(config, name)
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot open the {name} store on {backend}: {e:#}"));
    db.migrate(&S::migrations())
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot migrate the {name} store on {backend}: {e:#}"));
    db
}

/// Checks a Prometheus exposition with `promtool check metrics` (Debian package `prometheus`),
/// printing what promtool says. Without promtool the check is skipped with a `SKIPPED …` line,
/// or fails under [`REQUIRE_SERVERS_ENV`] (CI installs it).
///
/// # Panics
///
/// When promtool rejects `exposition`, or is missing while required.
pub fn promtool_check(test: &str, exposition: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !require_servers(),
                "{test}: promtool not found, and {REQUIRE_SERVERS_ENV}=1 requires it (Debian package `prometheus`)"
            );
            let line = format!("SKIPPED {test}: promtool not found (apt-get install prometheus)\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            return;
        }
        Err(err) => panic!("{test}: could not run promtool: {err}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .unwrap_or_else(|err| panic!("{test}: writing to promtool: {err}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|err| panic!("{test}: waiting for promtool: {err}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{test}: promtool rejected the exposition ({}): {report}\n--- exposition ---\n{exposition}",
        output.status
    );
}

/// A bus subject prefix unique to this run of `test` (`t_<test>_<random>`, NATS token
/// characters only), so that tests sharing a NATS server never see each other's streams.
pub fn unique_prefix(test: &str) -> String {
    unique_name(test, 48)
}

/// `t_<sanitized test>_<random>`, at most `max_len` characters, of `[a-z0-9_]` only: valid as
/// a NATS token, a JetStream stream name (once upper-cased), and a PostgreSQL identifier.
fn unique_name(test: &str, max_len: usize) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    let random = &random[..10];
    let mut name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(max_len.saturating_sub(random.len() + 3));
    format!("t_{name}_{random}")
}

/// `url` with its database (the path) replaced by `name`, keeping any query parameters.
fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let query_start = url[authority_start..]
        .find('?')
        .map_or(url.len(), |i| authority_start + i);
    let path_start = url[authority_start..query_start]
        .find('/')
        .map_or(query_start, |i| authority_start + i);
    format!("{}/{name}{}", &url[..path_start], &url[query_start..])
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    let Some(authority_start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!(
                "{}***{}",
                &url[..authority_start + colon + 1],
                &url[authority_start + at..]
            )
        }
        _ => url.to_string(),
    }
}

fn unreachable<T>(test: &str, server: &str, url: &str, why: &str) -> Option<T> {
    let url = redact(url);
    if require_servers() {
        panic!("{test}: {server} not reachable at {url} ({why}), and {REQUIRE_SERVERS_ENV}=1 requires it");
    }
    // Written to the real stderr: the test harness captures `eprintln!` of passing tests,
    // which would make the skip silent.
    let line = format!(
        "SKIPPED {test}: {server} not reachable at {url} ({why}); set {REQUIRE_SERVERS_ENV}=1 to make this a failure\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_unique() {
        let a = unique_prefix("bus_contract::jetstream::Headers survive!");
        let b = unique_prefix("bus_contract::jetstream::Headers survive!");
        assert_ne!(a, b);
        assert!(
            a.starts_with("t_bus_contract__jetstream__headers_su"),
            "{a}"
        );
        assert!(a
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        assert!(a.len() <= 48, "{a}");
        assert!(unique_name(&"x".repeat(200), 63).len() <= 63);
    }

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "t_x"),
            "postgres://u@h:5432/t_x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "t_x"),
            "postgres://u@h/t_x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "t_x"), "postgres://u@h/t_x");
        assert_eq!(
            with_database("postgres:///test?host=/run/pg", "t_x"),
            "postgres:///t_x?host=/run/pg"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }
}
