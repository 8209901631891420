//! Bearer tokens: who is calling, and what they may do.
//!
//! A token is `ap1.<claims>.<signature>`: base64url JSON claims signed with HMAC-SHA256 under
//! the configured secret. Tokens are verified without a database round trip, so a token minted
//! while the system runs works at once; each carries an id so it can be revoked, and revocations
//! are read from the `platform` store and refreshed every [`REVOCATION_REFRESH`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::RwLock;

use crate::error::{Error, ErrorCode, Result};
use crate::reference::{Partner, Reference};
use crate::storage::Database;
use crate::with_db;

/// How often the revocation list is re-read; a revoked token stops working within this time.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(2);

const PREFIX: &str = "ap1";

/// Who a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// A partner marketplace pushing its statistics.
    Partner {
        /// The partner's code.
        partner: String,
    },
    /// The central working group.
    Admin,
    /// A provincial department reporting for one province.
    Province {
        /// The province's 2025 code.
        province: String,
    },
}

/// The verified content of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Token id, for revocation.
    pub id: String,
    /// Role and scope.
    #[serde(flatten)]
    pub role: Role,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
}

impl Claims {
    /// The partner this token speaks for, if it is a partner token.
    pub fn partner(&self) -> Option<Partner> {
        match &self.role {
            Role::Partner { partner } => Partner::from_code(partner),
            _ => None,
        }
    }
}

/// Signs and verifies tokens, and knows which ones are revoked.
pub struct Authenticator {
    key: Vec<u8>,
    store: Option<Database>,
    revoked: RwLock<(Option<Instant>, HashSet<String>)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Authenticator {
    /// An authenticator with a secret and the `platform` store holding revocations
    /// (`None` for tools and tests that never revoke).
    pub fn new(secret: &[u8], store: Option<Database>) -> Result<Arc<Self>> {
        if secret.len() < 32 {
            return Err(Error::invalid("the token secret must be at least 32 bytes"));
        }
        Ok(Arc::new(Authenticator {
            key: secret.to_vec(),
            store,
            revoked: RwLock::new((None, HashSet::new())),
        }))
    }

    /// Mints a token for `role`, valid for `ttl`. Returns the token and its claims.
    pub fn mint(&self, role: Role, ttl: Duration) -> Result<(String, Claims)> {
        validate_role(&role)?;
        let now = now_secs();
        let claims = Claims {
            id: uuid::Uuid::new_v4().simple().to_string(),
            role,
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let body = B64.encode(serde_json::to_vec(&claims).map_err(Error::internal)?);
        let signature = B64.encode(self.sign(&body)?);
        Ok((format!("{PREFIX}.{body}.{signature}"), claims))
    }

    fn sign(&self, body: &str) -> Result<Vec<u8>> {
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(Error::internal)?;
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Verifies a token: signature, expiry and revocation.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let claims = self.verify_signed(token)?;
        if self.is_revoked(&claims.id).await? {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                "bearer token has been revoked",
            ));
        }
        Ok(claims)
    }

    /// Checks a token's signature and expiry only, without waiting for anything. Enough to
    /// refuse a call early (before its body is read); never enough to admit one.
    pub fn verify_signed(&self, token: &str) -> Result<Claims> {
        let unauthenticated = |why: &str| Error::new(ErrorCode::Unauthenticated, why.to_string());
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthenticated("malformed bearer token"));
        };
        let signature = B64
            .decode(signature)
            .map_err(|_| unauthenticated("malformed bearer token"))?;
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(Error::internal)?;
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(body.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| unauthenticated("bearer token signature is not valid"))?;
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| unauthenticated("malformed bearer token"))?;
        if claims.exp <= now_secs() {
            return Err(unauthenticated("bearer token has expired"));
        }
        Ok(claims)
    }

    /// The partner a request's bearer token speaks for, if the token is well signed, unexpired
    /// and not known to be revoked (the revocation list as last read; nothing is awaited).
    /// For early refusals only: the handler still authenticates the call in full.
    pub fn partner_hint(&self, authorization: Option<&str>) -> Option<Partner> {
        let token = authorization?
            .strip_prefix("Bearer ")
            .or_else(|| authorization?.strip_prefix("bearer "))?;
        let claims = self.verify_signed(token.trim()).ok()?;
        let revoked = self.revoked.try_read().ok()?;
        if revoked.1.contains(&claims.id) {
            return None;
        }
        claims.partner()
    }

    /// Verifies the `authorization: Bearer …` value of a request.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Claims> {
        let header = authorization.ok_or_else(|| {
            Error::new(
                ErrorCode::Unauthenticated,
                "missing `authorization: Bearer <token>`",
            )
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::Unauthenticated,
                    "authorization must be `Bearer <token>`",
                )
            })?;
        self.verify(token.trim()).await
    }

    /// Authenticates a gRPC request and requires a partner token; returns the partner.
    pub async fn require_partner(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Partner> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self.authenticate(header).await?;
        claims.partner().ok_or_else(|| {
            Error::new(
                ErrorCode::PermissionDenied,
                "this rpc is for partner marketplaces; the token is not a partner's",
            )
        })
    }

    /// Authenticates a gRPC request and requires an admin token (the central working group,
    /// or a service acting for it, such as the gateway's reconciliation).
    pub async fn require_admin(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Claims> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self.authenticate(header).await?;
        if claims.role != Role::Admin {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                "this rpc is for the central working group; the token is not an admin's",
            ));
        }
        Ok(claims)
    }

    /// Revokes a token id (idempotent).
    pub async fn revoke(&self, id: &str) -> Result<()> {
        let Some(db) = &self.store else {
            return Err(Error::unavailable("no revocation store configured"));
        };
        let now = now_secs();
        with_db!(&db.pool, |pool| {
            sqlx::query(
                "INSERT INTO revoked_tokens (id, revoked_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?;
        });
        self.revoked.write().await.0 = None;
        Ok(())
    }

    /// Whether token `id` was revoked (the list is re-read at most every
    /// [`REVOCATION_REFRESH`]), for callers that keep a verified token's claims, such as the
    /// web front end's sessions.
    pub async fn is_revoked(&self, id: &str) -> Result<bool> {
        let Some(db) = &self.store else {
            return Ok(false);
        };
        {
            let guard = self.revoked.read().await;
            if guard.0.is_some_and(|at| at.elapsed() < REVOCATION_REFRESH) {
                return Ok(guard.1.contains(id));
            }
        }
        let ids: Vec<String> = with_db!(&db.pool, |pool| {
            sqlx::query_scalar("SELECT id FROM revoked_tokens")
                .fetch_all(pool)
                .await?
        });
        let mut guard = self.revoked.write().await;
        *guard = (Some(Instant::now()), ids.into_iter().collect());
        Ok(guard.1.contains(id))
    }
}

fn validate_role(role: &Role) -> Result<()> {
    match role {
        Role::Partner { partner } if Partner::from_code(partner).is_none() => {
            Err(Error::invalid(format!("unknown partner `{partner}`; expected postmart or voso")))
        }
        Role::Province { province } if Reference::get().province(province).is_none() => Err(Error::invalid(
            format!("unknown province code `{province}`; expected one of the 34 codes since 1 July 2025"),
        )),
        _ => Ok(()),
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Arc<Authenticator> {
        Authenticator::new(&[7u8; 32], None).unwrap()
    }

    #[tokio::test]
    async fn minted_token_verifies_and_names_its_partner() {
        let a = auth();
        let (token, claims) = a
            .mint(
                Role::Partner {
                    partner: "voso".into(),
                },
                Duration::from_secs(60),
            )
            .unwrap();
        let got = a.verify(&token).await.unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.partner(), Some(Partner::Voso));
    }

    #[tokio::test]
    async fn tampered_foreign_and_expired_tokens_are_refused() {
        let a = auth();
        let (token, _) = a.mint(Role::Admin, Duration::from_secs(60)).unwrap();
        let other = Authenticator::new(&[8u8; 32], None).unwrap();
        assert_eq!(
            other.verify(&token).await.unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let mut forged = token.clone();
        forged.insert(10, 'x');
        assert_eq!(
            a.verify(&forged).await.unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let (expired, _) = a.mint(Role::Admin, Duration::ZERO).unwrap();
        assert!(a
            .verify(&expired)
            .await
            .unwrap_err()
            .message
            .contains("expired"));
        assert!(a.verify("garbage").await.is_err());
        assert!(a.authenticate(None).await.is_err());
        assert!(a.authenticate(Some("Basic abc")).await.is_err());
    }

    #[test]
    fn unknown_partner_or_province_cannot_be_minted() {
        let a = auth();
        assert!(a
            .mint(
                Role::Partner {
                    partner: "shopee".into()
                },
                Duration::from_secs(1)
            )
            .is_err());
        assert!(a
            .mint(
                Role::Province {
                    province: "99".into()
                },
                Duration::from_secs(1)
            )
            .is_err());
        assert!(a
            .mint(
                Role::Province {
                    province: "79".into()
                },
                Duration::from_secs(1)
            )
            .is_ok());
    }
}
