//! Sign-in for officials: a server-side session in a cookie, and CSRF protection for every form
//! that changes state.
//!
//! The pages only ever see a [`Principal`] (who is signed in, their role and province). Today a
//! principal comes from a bearer token pasted into `/signin` ([`principal_from_token`]); an
//! OpenID Connect provider (a government SSO, Keycloak) would be a second way to make the same
//! `Principal` (a redirect and a callback route) and the pages would not change.
//!
//! - The cookie (`ap_session`) holds 32 random bytes; the store keeps only their SHA-256, so a
//!   copy of the table cannot be replayed. `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure`
//!   behind TLS (`--web-secure`).
//! - Idle expiry (`--web-session-idle-minutes`) and absolute expiry (`--web-session-max-hours`,
//!   never past the token's own expiry); a revoked token ends its sessions within seconds.
//! - The official's bearer token is kept in the session row, encrypted ([`seal`]) under a key
//!   derived from the cookie value, which the store never holds: the web calls the indicators
//!   service *as the official* (`Credential::Bearer`), so that service alone decides what a
//!   province officer may read or change, and the web mints nothing and holds no power of its
//!   own over reports. The token never goes back to the browser; a copy of the table opens
//!   no token, and a session ends when its token is revoked or expires.
//! - CSRF: a signed-in form carries the session's token; the sign-in form, before any session,
//!   carries a token that must equal the `ap_csrf` cookie (double submit). Either way the
//!   request's `Origin`, when sent, must be this site. No GET changes state.

use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::storage::{now_ms, Database, Tx};
use agriportal_platform::{with_db, with_tx, Error, ErrorCode, Result};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Cookie of the session.
pub const SESSION_COOKIE: &str = "ap_session";
/// Cookie of the pre-session CSRF token of the sign-in form.
pub const CSRF_COOKIE: &str = "ap_csrf";
/// Cookie of the reader's language choice.
pub const LANG_COOKIE: &str = "ap_lang";

/// How often a session's last use is written back (each request would be a write).
const TOUCH_EVERY_MS: i64 = 60_000;

/// Who is signed in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Who it is, for the log and the account page (the token id for token sign-in).
    pub subject: String,
    /// `admin` (central working group) or `province`.
    pub role: String,
    /// The province of a provincial official (2025 code).
    pub province: Option<String>,
    /// The token the session was opened with, whose revocation ends the session.
    pub token_id: Option<String>,
}

impl Principal {
    /// Whether it is of the central working group.
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// The bearer token a session was opened with, to call other services on the official's
/// behalf. Its `Debug` never shows the token (sessions reach logs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bearer(pub String);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Bearer(none)"
        } else {
            "Bearer(…)"
        })
    }
}

impl Bearer {
    /// Whether the session has no token (opened before tokens were kept): the official signs
    /// in again to reach the reporting pages.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Who.
    pub principal: Principal,
    /// The official's own token (server-side only).
    pub bearer: Bearer,
    /// The token every state-changing form of this session must carry.
    pub csrf: String,
    /// When it ends at the latest (ms since the epoch).
    pub expires_at_ms: i64,
}

/// What a request's session cookie led to.
#[derive(Clone, Debug)]
pub enum Found {
    /// A live session.
    Live(Session),
    /// A cookie whose session expired, was signed out or was revoked: the page says so and
    /// the cookie is cleared.
    Expired,
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cipher that seals a session's bearer token: ChaCha20-Poly1305 (an AEAD, so a row that
/// was tampered with opens to nothing) keyed by SHA-256 of the cookie value (32 random bytes,
/// unique per session, never stored: the store holds only its hash), so a copy of the table
/// opens no token.
fn cipher(id: &str) -> ChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"agriportal-web-session-bearer\0");
    h.update(id.as_bytes());
    ChaCha20Poly1305::new(&h.finalize())
}

/// The token encrypted for the row of session `id`: hex of a random nonce and the ciphertext.
pub fn seal(id: &str, token: &str) -> String {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let Ok(sealed) = cipher(id).encrypt(Nonce::from_slice(&nonce), token.as_bytes()) else {
        // Encryption of a short token cannot fail; an empty seal opens to no token.
        return String::new();
    };
    nonce
        .iter()
        .chain(sealed.iter())
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token back from [`seal`]; empty when the row has none, it is not ours or it was
/// altered.
pub fn unseal(id: &str, sealed: &str) -> String {
    if !sealed.len().is_multiple_of(2) || !sealed.is_ascii() || sealed.len() < 24 {
        return String::new();
    }
    let bytes: Option<Vec<u8>> = (0..sealed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sealed[i..i + 2], 16).ok())
        .collect();
    let Some(bytes) = bytes else {
        return String::new();
    };
    let (nonce, body) = bytes.split_at(12);
    cipher(id)
        .decrypt(Nonce::from_slice(nonce), body)
        .ok()
        .and_then(|plain| String::from_utf8(plain).ok())
        .unwrap_or_default()
}

fn hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a pasted token and makes the principal it signs in; refusals name the problem.
pub async fn principal_from_token(auth: &Authenticator, token: &str) -> Result<(Principal, i64)> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::invalid("paste your access token into the field"));
    }
    if token.len() > 4096 {
        return Err(Error::invalid(
            "that is not an access token: it is far too long",
        ));
    }
    let claims = auth.verify(token).await?;
    let (role, province) = match &claims.role {
        Role::Admin => ("admin", None),
        Role::Province { province } => ("province", Some(province.clone())),
        Role::Partner { .. } => return Err(Error::new(
            ErrorCode::PermissionDenied,
            "this is a marketplace's token: sign-in is for officials (working group or province)",
        )),
        Role::Service { .. } => return Err(Error::new(
            ErrorCode::PermissionDenied,
            "this is a service's own credential: sign-in is for officials (working group or province)",
        )),
    };
    let principal = Principal {
        subject: claims.id.clone(),
        role: role.into(),
        province,
        token_id: Some(claims.id.clone()),
    };
    Ok((principal, claims.exp.saturating_mul(1000)))
}

/// The sessions of the web's store.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: Database,
    idle_ms: i64,
    max_ms: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    principal: String,
    csrf: String,
    last_seen_ms: i64,
    expires_at_ms: i64,
    bearer: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Sessions {
    /// Sessions in `db`, ending after `idle` without use or `max` after sign-in.
    pub fn new(db: Database, idle: Duration, max: Duration) -> Self {
        Sessions {
            db,
            idle_ms: ms(idle),
            max_ms: ms(max),
        }
    }

    /// Opens a session for `principal` signed in with `token` (ending by `not_after_ms` at the
    /// latest: the token's expiry); returns the cookie value. The token is kept sealed.
    pub async fn open(
        &self,
        principal: &Principal,
        token: &str,
        not_after_ms: i64,
    ) -> Result<String> {
        let id = random_token();
        let now = now_ms();
        let expires = (now + self.max_ms).min(not_after_ms);
        let encoded = serde_json::to_string(principal).map_err(Error::internal)?;
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query(
                "INSERT INTO sessions (id_hash, principal, csrf, created_at_ms, last_seen_ms, expires_at_ms, bearer) \
                 VALUES ($1, $2, $3, $4, $4, $5, $6)",
            )
            .bind(hash(&id))
            .bind(encoded)
            .bind(random_token())
            .bind(now)
            .bind(expires)
            .bind(seal(&id, token.trim()))
            .execute(&mut *conn)
            .await?;
        });
        prune(&mut tx, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The session of cookie value `id`, checked for idle and absolute expiry and for the
    /// revocation of its token; an ended one is deleted.
    pub async fn find(&self, id: &str, auth: &Authenticator) -> Result<Found> {
        let key = hash(id);
        let row: Option<Row> = with_db!(&self.db.pool, |pool| {
            sqlx::query_as(
                "SELECT principal, csrf, last_seen_ms, expires_at_ms, bearer FROM sessions WHERE id_hash = $1",
            )
            .bind(&key)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else {
            return Ok(Found::Expired);
        };
        let now = now_ms();
        let principal: Principal = serde_json::from_str(&row.principal).map_err(Error::internal)?;
        let revoked = match &principal.token_id {
            Some(token) => auth.is_revoked(token).await?,
            None => false,
        };
        if revoked || now >= row.expires_at_ms || now - row.last_seen_ms >= self.idle_ms {
            self.close(id).await?;
            return Ok(Found::Expired);
        }
        if now - row.last_seen_ms >= TOUCH_EVERY_MS {
            let mut tx = self.db.begin().await?;
            with_tx!(&mut tx, |conn| {
                sqlx::query("UPDATE sessions SET last_seen_ms = $1 WHERE id_hash = $2")
                    .bind(now)
                    .bind(&key)
                    .execute(&mut *conn)
                    .await?;
            });
            tx.commit().await?;
        }
        Ok(Found::Live(Session {
            principal,
            bearer: Bearer(unseal(id, &row.bearer)),
            csrf: row.csrf,
            expires_at_ms: row.expires_at_ms,
        }))
    }

    /// Ends the session of cookie value `id` (sign-out).
    pub async fn close(&self, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        with_tx!(&mut tx, |conn| {
            sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
                .bind(hash(id))
                .execute(&mut *conn)
                .await?;
        });
        tx.commit().await?;
        Ok(())
    }
}

/// Deletes sessions past their absolute expiry, so the table holds only what can still be used.
async fn prune(tx: &mut Tx, now: i64) -> Result<()> {
    with_tx!(tx, |conn| {
        sqlx::query("DELETE FROM sessions WHERE expires_at_ms <= $1")
            .bind(now)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Whether a form's CSRF token is the expected one (compared in constant time, so its bytes
/// cannot be guessed one by one from response times).
pub fn csrf_matches(sent: &str, expected: &str) -> bool {
    if sent.is_empty() || sent.len() != expected.len() {
        return false;
    }
    sent.bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, `Secure` when `secure`; `max_age`
/// `Some(0)` deletes it, `None` makes it last the browser session.
pub fn set_cookie(name: &str, value: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_written_safely() {
        let header = "a=1; ap_session=abc ; ap_lang=en";
        assert_eq!(cookie(header, "ap_session"), Some("abc"));
        assert_eq!(cookie(header, "ap_lang"), Some("en"));
        assert_eq!(cookie(header, "nope"), None);
        assert_eq!(cookie("garbage", "a"), None);
        let set = set_cookie("ap_session", "x", None, true);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.ends_with("Secure")
        );
        assert!(set_cookie("a", "", Some(Duration::ZERO), false).contains("Max-Age=0"));
    }

    #[test]
    fn bearer_tokens_are_sealed_per_session_and_never_shown() {
        let id = random_token();
        let sealed = seal(&id, "ap1.secret-token");
        assert!(!sealed.contains("secret"));
        assert_eq!(unseal(&id, &sealed), "ap1.secret-token");
        assert_ne!(unseal(&random_token(), &sealed), "ap1.secret-token");
        assert_eq!(unseal(&id, ""), "");
        assert_eq!(unseal(&id, "zz"), "");
        // Sealed twice, the same token reads differently (a fresh nonce), and one altered
        // byte opens to nothing.
        assert_ne!(seal(&id, "ap1.secret-token"), sealed);
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(unseal(&id, &String::from_utf8(altered).unwrap()), "");
        assert_eq!(format!("{:?}", Bearer("ap1.x".into())), "Bearer(…)");
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let token = random_token();
        assert_eq!(token.len(), 64);
        assert!(csrf_matches(&token, &token));
        assert!(!csrf_matches("", ""));
        assert!(!csrf_matches(&token[..63], &token));
        assert!(!csrf_matches(&random_token(), &token));
    }
}
