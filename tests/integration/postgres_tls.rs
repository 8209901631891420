//! `sslmode` in DATABASE_URL is honoured: a PostgreSQL of the test's own with `ssl=on` and a
//! test CA is reached with `verify-full` (through the kit's own `Database::connect`), a CA that
//! did not sign its certificate is refused, and `require` against a server without TLS fails
//! naming TLS rather than going on in the clear.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agriportal_platform::storage::Database;
use agriportal_platform::{testing, with_db, Config};
use sqlx::Connection;

use crate::tls::TestCa;

/// A PostgreSQL cluster of the test's own, stopped on drop.
struct SslPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for SslPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["-D", path(&self.data), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `program` run as the `postgres` user (the tests run as root, which PostgreSQL refuses).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--", path(program)]);
    command
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server binaries (Debian's `/usr/lib/postgresql/<version>/bin`), or `None` after saying
/// why the test is skipped (a failure under AGRIPORTAL_REQUIRE_SERVERS=1).
fn server_binaries(test: &str) -> Option<PathBuf> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|versions| {
            versions
                .filter_map(|v| Some(v.ok()?.path().join("bin")))
                .filter(|bin| bin.join("initdb").exists())
                .max()
        });
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let user = Command::new("id")
        .arg("postgres")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = match (&bin, root && user) {
        (Some(bin), true) => return Some(bin.clone()),
        (None, _) => "no /usr/lib/postgresql/*/bin/initdb (Debian package postgresql)",
        (Some(_), false) => "not root, or no `postgres` user to run a server as",
    };
    assert!(
        !testing::require_servers(),
        "{test}: {why}, and AGRIPORTAL_REQUIRE_SERVERS=1 requires it"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

impl SslPostgres {
    /// initdb, the CA's certificate for localhost and 127.0.0.1, `ssl=on`, started.
    fn start(bin: PathBuf, ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        run(
            {
                let mut c = Command::new("chown");
                c.args(["postgres:postgres", path(dir.path())]);
                c
            },
            "chown",
        );
        let data = dir.path().join("data");
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.args([
            "-D",
            path(&data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        let leaf = ca.leaf("postgres under test");
        for (name, contents) in [("server.crt", &leaf.cert), ("server.key", &leaf.key)] {
            let file = data.join(name);
            std::fs::write(&file, contents).unwrap();
            let mut chown = Command::new("chown");
            chown.args(["postgres:postgres", path(&file)]);
            run(chown, "chown");
            let mut chmod = Command::new("chmod");
            chmod.args(["600", path(&file)]);
            run(chmod, "chmod");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off",
            path(dir.path())
        );
        let mut start = as_postgres(&bin.join("pg_ctl"));
        start.args([
            "-D",
            path(&data),
            "-l",
            path(&dir.path().join("log")),
            "-o",
            &options,
            "-w",
            "-t",
            "120",
            "start",
        ]);
        let server = SslPostgres {
            bin,
            data,
            port,
            _dir: dir,
        };
        run(start, "pg_ctl start");
        server
    }
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    tokio::time::timeout(Duration::from_secs(60), sqlx::PgConnection::connect(url))
        .await
        .expect("connecting took over a minute")
}

#[tokio::test]
async fn postgres_sslmode_verify_full_and_require_are_honoured() {
    let test = "postgres_tls";
    let Some(bin) = server_binaries(test) else {
        return;
    };
    // `require` against a server without TLS: refused, and for TLS (without sqlx's TLS
    // feature the error would be that TLS is not compiled in). The server is a stand-in that
    // answers PostgreSQL's SSLRequest as a server with `ssl = off` does: `N`.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let answering = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = plain.accept().await.unwrap();
        let mut request = [0u8; 8];
        socket.read_exact(&mut request).await.unwrap();
        assert_eq!(
            request,
            [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f],
            "an SSLRequest"
        );
        socket.write_all(b"N").await.unwrap();
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        rest
    });
    let err = connect(&format!(
        "postgres://postgres@127.0.0.1:{plain_port}/postgres?sslmode=require"
    ))
    .await
    .expect_err("sslmode=require connected to a server without TLS");
    let text = err.to_string();
    assert!(
        text.contains("TLS") && !text.contains("without TLS support"),
        "{text}"
    );
    let sent_in_clear = answering.await.unwrap();
    assert!(
        sent_in_clear.is_empty(),
        "the client went on in the clear: {sent_in_clear:?}"
    );

    let ca = TestCa::new();
    let server = SslPostgres::start(bin, &ca);
    let files = tempfile::tempdir().unwrap();
    let ca_file = files.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = |mode: &str, root: &Path| {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode={mode}&sslrootcert={}",
            server.port,
            path(root)
        )
    };

    // verify-full with the CA that signed the server's certificate, through the kit.
    let mut config = Config::embedded(files.path());
    config.database_url = Some(url("verify-full", &ca_file));
    let db = Database::connect(&config, "tls_check")
        .await
        .expect("verify-full with the right CA");
    let ssl: bool = with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pool)
            .await
    })
    .unwrap();
    assert!(ssl, "the kit's connection is not encrypted");
    db.close().await;

    // verify-full with a CA that did not sign it: refused.
    let stranger = files.path().join("other-ca.crt");
    std::fs::write(&stranger, TestCa::new().pem).unwrap();
    let err = connect(&url("verify-full", &stranger))
        .await
        .expect_err("verify-full accepted a certificate of another CA");
    let text = err.to_string();
    assert!(
        text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"),
        "{text}"
    );
}
