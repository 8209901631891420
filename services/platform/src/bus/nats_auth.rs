//! How a process proves who it is to NATS and which TLS it speaks: the connection options
//! built from [`NatsSecurity`], with every misconfiguration refused by name before connecting.

use async_nats::ConnectOptions;

use super::BusError;
use crate::config::NatsSecurity;

/// The first characters of a user nkey seed (a file holding only the seed, not a `.creds`).
const USER_SEED_PREFIX: &str = "SU";

/// Checks `url` and `security` and returns the options to connect with (name, credentials,
/// TLS, inbox prefix); timeouts and reconnection are the caller's.
pub(super) async fn connect_options(
    url: &str,
    security: &NatsSecurity,
) -> Result<ConnectOptions, BusError> {
    check(url, security)?;
    let mut options = ConnectOptions::new().custom_inbox_prefix(&security.inbox_prefix);
    match (&security.user, &security.password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        (None, None) => {}
        (Some(_), None) => return Err(config_error("--nats-user needs --nats-password")),
        (None, Some(_)) => return Err(config_error("--nats-password needs --nats-user")),
    }
    if let Some(path) = &security.creds {
        let contents = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| config_error(&format!("reading --nats-creds {}: {e}", path.display())))?;
        let seed = contents.trim();
        options = if seed.starts_with(USER_SEED_PREFIX) && !seed.contains('\n') {
            options.nkey(seed.to_string())
        } else {
            options.credentials(&contents).map_err(|e| {
                config_error(&format!(
                    "--nats-creds {} is neither a .creds file nor a user nkey seed: {e}",
                    path.display()
                ))
            })?
        };
    }
    if let Some(ca) = &security.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// Refuses settings that cannot work together, and credentials in the URL (which is logged
/// and printed by `agriportal config`, where a password must never appear).
fn check(url: &str, security: &NatsSecurity) -> Result<(), BusError> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(config_error(
            "NATS_URL must not hold credentials: set --nats-user and --nats-password (or --nats-creds) instead",
        ));
    }
    if security.creds.is_some() && security.user.is_some() {
        return Err(config_error(
            "set either --nats-user/--nats-password or --nats-creds, not both",
        ));
    }
    if security.tls_cert.is_some() != security.tls_key.is_some() {
        return Err(config_error(
            "--nats-tls-cert and --nats-tls-key go together (mutual TLS)",
        ));
    }
    for (flag, path) in [
        ("--nats-tls-ca", &security.tls_ca),
        ("--nats-tls-cert", &security.tls_cert),
        ("--nats-tls-key", &security.tls_key),
        ("--nats-creds", &security.creds),
    ] {
        if let Some(path) = path {
            if !path.is_file() {
                return Err(config_error(&format!(
                    "{flag} {}: no such file",
                    path.display()
                )));
            }
        }
    }
    if security.inbox_prefix.is_empty()
        || security.inbox_prefix.ends_with('.')
        || security
            .inbox_prefix
            .contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
    {
        return Err(config_error(&format!(
            "--nats-inbox-prefix {:?} must be a subject without wildcards, such as _INBOX.gateway",
            security.inbox_prefix
        )));
    }
    Ok(())
}

fn config_error(message: &str) -> BusError {
    BusError::Other(format!("NATS settings: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn security() -> NatsSecurity {
        NatsSecurity::default()
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let err = check("nats://gateway:secret@nats:4222", &security()).unwrap_err();
        assert!(
            err.to_string().contains("must not hold credentials"),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
        check("tls://nats:4222", &security()).unwrap();
        check("nats://nats:4222/path@x", &security()).unwrap();
    }

    #[test]
    fn settings_that_do_not_go_together_are_refused_by_name() {
        let mut both = security();
        both.user = Some("gateway".into());
        both.creds = Some("/etc/hosts".into());
        assert!(check("nats://n:4222", &both)
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let mut half = security();
        half.tls_cert = Some("/etc/hosts".into());
        assert!(check("nats://n:4222", &half)
            .unwrap_err()
            .to_string()
            .contains("--nats-tls-key"));
        let mut missing = security();
        missing.tls_ca = Some("/nonexistent/ca.pem".into());
        assert!(check("nats://n:4222", &missing)
            .unwrap_err()
            .to_string()
            .contains("--nats-tls-ca /nonexistent/ca.pem: no such file"));
        let mut wild = security();
        wild.inbox_prefix = "_INBOX.>".into();
        assert!(check("nats://n:4222", &wild)
            .unwrap_err()
            .to_string()
            .contains("--nats-inbox-prefix"));
    }

    #[tokio::test]
    async fn a_user_needs_a_password() {
        let mut user = security();
        user.user = Some("gateway".into());
        let err = connect_options("nats://n:4222", &user).await.unwrap_err();
        assert!(err.to_string().contains("--nats-password"), "{err}");
    }

    #[test]
    fn the_password_stays_out_of_debug_and_the_printed_config() {
        let mut secret = security();
        secret.user = Some("gateway".into());
        secret.password = Some("hunter2-very-secret".into());
        let debug = format!("{secret:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("hunter2"),
            "{debug}"
        );
        let json = serde_json::to_string(&secret).unwrap();
        assert!(
            !json.contains("hunter2") && json.contains("gateway"),
            "{json}"
        );
    }
}
