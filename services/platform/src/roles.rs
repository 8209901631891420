//! Least privilege in PostgreSQL: the migrate job runs as the owner role (DDL), and each
//! service runs as a role of its own that may read and write the tables and sequences of its
//! own schema, read the platform's (token revocations), and nothing else: no `CREATE`, no other
//! service's schema. [`grant_runtime_role`] sets that up, idempotently, after the migrations.

use anyhow::Context as _;
use sqlx::{Connection, PgConnection};

/// The platform's schema, which every service reads (revoked tokens) and only tools write.
pub const PLATFORM_SCHEMA: &str = "platform";

/// Default prefix of the services' runtime roles (`agriportal_gateway`, ...).
pub const DEFAULT_ROLE_PREFIX: &str = "agriportal_";

/// A PostgreSQL identifier we write into statements ourselves (roles and schemas cannot be
/// bound as parameters): lower-case letters, digits and `_`, starting with a letter or `_`.
fn check_identifier(what: &str, name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    anyhow::ensure!(
        valid,
        "invalid {what} {name:?}: use lower-case letters, digits and _ (at most 63)"
    );
    Ok(())
}

/// The statements that give `role` read-write use of `schema` (tables and sequences, present
/// and future ones created by the role running them, the owner) and read use of the platform
/// schema. `CREATE ROLE` only when the role is missing (CloudNativePG's managed roles create
/// them with a password; one created here cannot log in until given `LOGIN` and a password).
pub fn runtime_role_statements(schema: &str, role: &str) -> anyhow::Result<Vec<String>> {
    check_identifier("schema", schema)?;
    check_identifier("role", role)?;
    let rw = "SELECT, INSERT, UPDATE, DELETE";
    let seq = "USAGE, SELECT";
    let p = PLATFORM_SCHEMA;
    Ok(vec![
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') \
             THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
        ),
        // Whatever was granted before (a role reused for another schema) does not linger.
        format!("REVOKE CREATE ON SCHEMA {schema} FROM {role}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT {rw} ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT {seq} ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {rw} ON TABLES TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT {seq} ON SEQUENCES TO {role}"),
        format!("GRANT USAGE ON SCHEMA {p} TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA {p} TO {role}"),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA {p} GRANT SELECT ON TABLES TO {role}"),
    ])
}

/// Runs [`runtime_role_statements`] on the database of `url` (as the owner role, after the
/// migrations created `schema` and the platform's), in one transaction.
pub async fn grant_runtime_role(url: &str, schema: &str, role: &str) -> anyhow::Result<()> {
    let statements = runtime_role_statements(schema, role)?;
    let mut conn = PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL to grant the runtime roles")?;
    let mut tx = conn.begin().await?;
    for statement in &statements {
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .with_context(|| format!("granting {role} the use of schema {schema}"))?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_reach_sql() {
        assert!(runtime_role_statements("gateway", "agriportal_gateway").is_ok());
        for bad in ["", "Gateway", "a;drop", "x y", "1abc", "a\"b"] {
            let err = runtime_role_statements("gateway", bad).unwrap_err();
            assert!(err.to_string().contains("invalid role"), "{bad}: {err}");
            assert!(runtime_role_statements(bad, "r").is_err(), "{bad}");
        }
    }

    #[test]
    fn the_role_gets_no_create_and_only_its_schema_to_write() {
        let sql = runtime_role_statements("gateway", "agriportal_gateway")
            .unwrap()
            .join(";\n");
        assert!(
            !sql.contains("GRANT CREATE") && !sql.contains("GRANT ALL"),
            "{sql}"
        );
        assert!(sql.contains("INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA gateway"));
        assert!(!sql.contains("INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA platform"));
    }
}
