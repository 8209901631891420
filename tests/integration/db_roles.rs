//! Least privilege in PostgreSQL, on the real server: the owner migrates and grants; the
//! gateway's runtime role then opens its store as `serve` does (nothing to migrate), reads and
//! writes its own tables, and is refused DDL, the marketplace's schema and writes to the
//! platform's. Roles are cluster-wide, so their names are unique per run and dropped after.

use std::str::FromStr;

use agriportal_gateway::Gateway;
use agriportal_platform::kit;
use agriportal_platform::service::Service;
use agriportal_platform::storage::{platform_database, Database};
use agriportal_platform::testing;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use crate::support::{config_on, Mode};

/// `url` with `role` as its user (the test server trusts local connections).
pub(crate) fn as_role(url: &str, role: &str) -> String {
    let options = PgConnectOptions::from_str(url).unwrap();
    format!(
        "postgres://{role}@{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap()
    )
}

/// The SQLSTATE of a refused statement, or `None` when it ran.
async fn refused(conn: &mut PgConnection, sql: &str) -> Option<String> {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.to_string()),
        Err(e) => panic!("{sql}: {e}"),
    }
}

const DENIED: &str = "42501";

#[tokio::test]
async fn a_service_role_reads_and_writes_its_own_schema_and_is_refused_ddl_and_other_schemas() {
    let registry = agriportal::app::registry();
    let Some((settings, _dir)) = config_on(&registry, Mode::Distributed, "db_roles").await else {
        return;
    };
    let mut owner = settings.platform.clone();
    // The shared NATS is not what this test is about; the stores are.
    owner.nats_url = None;
    let url = owner.database_url.clone().unwrap();
    let prefix = format!("{}_", testing::unique_prefix("role"));
    owner.db_role_prefix = prefix.clone();
    let gateway_role = format!("{prefix}gateway");
    let mut admin = PgConnection::connect(&url).await.unwrap();
    // As CloudNativePG's managed roles do: the role exists, may log in, owns nothing.
    sqlx::raw_sql(&format!("CREATE ROLE {gateway_role} LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();

    // Migrated without the grants, the role may not even read its service's tables.
    kit::migrate(&registry, &owner, None).await.unwrap();
    let mut gateway = PgConnection::connect(&as_role(&url, &gateway_role))
        .await
        .unwrap();
    assert_eq!(
        refused(&mut gateway, "SELECT count(*) FROM gateway.inbox").await,
        Some(DENIED.into()),
        "without the grants"
    );

    // The migrate job with --db-runtime-roles grants them (twice: idempotent).
    owner.db_runtime_roles = true;
    kit::migrate(&registry, &owner, None).await.unwrap();
    let migrated = kit::migrate(&registry, &owner, None).await.unwrap();
    assert!(
        migrated.contains(&format!("runtime role {gateway_role}")),
        "{migrated:?}"
    );

    // Its own schema: read, write (a sequence too), delete.
    for sql in [
        "INSERT INTO gateway.inbox (event_id, applied_at_ms) VALUES ('e1', 1)",
        "UPDATE gateway.inbox SET applied_at_ms = 2 WHERE event_id = 'e1'",
        "SELECT count(*) FROM gateway.inbox",
        "DELETE FROM gateway.inbox WHERE event_id = 'e1'",
        "INSERT INTO gateway.outbox (event_id, subject, headers, payload, created_at_ms) \
         VALUES ('o1', 's', '[]', '\\x00', 1)",
        "SELECT count(*) FROM platform.revoked_tokens",
    ] {
        assert_eq!(refused(&mut gateway, sql).await, None, "{sql}");
    }
    // No DDL, no other schema, no writes to the platform's revocations.
    for sql in [
        "CREATE TABLE gateway.forged (x int)",
        "CREATE SCHEMA forged",
        "DROP TABLE gateway.inbox",
        "ALTER TABLE gateway.inbox ADD COLUMN x int",
        "SELECT count(*) FROM marketplace.outbox",
        "INSERT INTO marketplace.outbox (event_id, subject, headers, payload, created_at_ms) \
         VALUES ('forged', 'marketplace.sales_recorded', '[]', '\\x00', 1)",
        "SELECT count(*) FROM indicators.outbox",
        "DELETE FROM platform.revoked_tokens",
    ] {
        assert_eq!(
            refused(&mut gateway, sql).await,
            Some(DENIED.into()),
            "{sql}"
        );
    }

    // A table a later migration adds (as the owner) is the role's through default privileges.
    sqlx::raw_sql("CREATE TABLE gateway.later (x int)")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        refused(&mut gateway, "INSERT INTO gateway.later VALUES (1)").await,
        None
    );

    // The store opens as `serve` opens it: migrations all applied, so nothing is run.
    let mut runtime = owner.clone();
    runtime.database_url = Some(as_role(&url, &gateway_role));
    runtime.db_runtime_roles = false;
    let db = Database::connect(&runtime, "gateway").await.unwrap();
    db.migrate(&Gateway::migrations()).await.unwrap();
    assert!(db.ping().await);
    db.close().await;
    platform_database(&runtime).await.unwrap().close().await;

    gateway.close().await.unwrap();
    for target in registry.names() {
        let role = format!("{prefix}{target}");
        sqlx::raw_sql(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    admin.close().await.unwrap();
}
