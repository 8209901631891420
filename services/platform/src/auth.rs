//! Bearer tokens: who is calling, and what they may do.
//!
//! A token is `ap2.<kid>.<claims>.<signature>`: the id of the key that signed it, base64url
//! JSON claims, and an Ed25519 signature over `ap2.<kid>.<claims>`. The key id comes first so
//! the verifier finds its public key without decoding anything the signature does not yet
//! cover. Services verify with public keys only ([`crate::keys`]), several at once for
//! rotation; only a holder of a private key ([`Signer`]) can mint. Tokens are verified without
//! a database round trip, so a token minted while the system runs works at once; each carries
//! an id so it can be revoked, and revocations are read from the `platform` store and
//! refreshed every [`REVOCATION_REFRESH`]. Each role's lifetime is capped ([`max_ttl`]), at
//! minting and again at verification, and every token names its audience (`aud`): the portal
//! for people and partners, the one service called for a service's own credential.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::error::{Error, ErrorCode, Result};
use crate::keys::{valid_kid, PublicKey, Signer};
use crate::reference::{Partner, Reference};
use crate::retention::Prune;
use crate::storage::{now_ms, Database};
use crate::with_db;

/// How often the revocation list is re-read; a revoked token stops working within this time.
pub const REVOCATION_REFRESH: Duration = Duration::from_secs(2);

/// The audience of every token but a service's: any service of the portal.
pub const PORTAL_AUDIENCE: &str = "portal";

/// The longest lifetime of any token (a partner's), also how long a revocation of a token
/// whose expiry is not known is kept.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

/// How far past its token's expiry a revocation is kept before it is pruned: clocks of the
/// machines that mint and verify may differ by this much without a revoked token coming back.
pub const REVOCATION_PRUNE_LEEWAY: Duration = Duration::from_secs(3_600);

/// How far in the future a token's `iat` may be (clock skew between minting and verifying).
const IAT_LEEWAY_SECS: i64 = 300;

/// Revocations, prunable once past their token's expiry ([`crate::retention::run`]).
pub const REVOCATIONS: Prune = Prune {
    table: "revoked_tokens",
    key: "id",
    time_column: "expires_at_ms",
};

const PREFIX: &str = "ap2";

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
    /// A service of the portal calling another one (the gateway's reconciliation calling the
    /// marketplace's audit rpcs); accepted only by [`crate::access::Access::Internal`] rpcs
    /// of the service its audience names.
    Service {
        /// The calling service's target name (`gateway`).
        service: String,
    },
}

/// The longest lifetime a token of `role` may have: partners' clients are configured once a
/// year; a province's officials sign in for a quarter; an admin token (every province's
/// figures, the audit rpcs) lives a day; a service's own credential, mounted from a secret
/// and rotated with the keys, 90 days.
pub fn max_ttl(role: &Role) -> Duration {
    let days = match role {
        Role::Partner { .. } => 366,
        Role::Province { .. } => 90,
        Role::Admin => 1,
        Role::Service { .. } => 90,
    };
    Duration::from_secs(days * 86_400)
}

/// The verified content of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Token id, for revocation.
    pub id: String,
    /// Role and scope.
    #[serde(flatten)]
    pub role: Role,
    /// Whom the token may be shown to: [`PORTAL_AUDIENCE`], or the called service's target
    /// name for a service's own credential.
    pub aud: String,
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

    /// Whether this token may call the internal rpcs of `target`: an admin's, or a service's
    /// own credential addressed to `target`.
    pub fn admits_internal(&self, target: &str) -> Result<()> {
        match &self.role {
            Role::Admin => Ok(()),
            Role::Service { .. } if self.aud == target => Ok(()),
            Role::Service { service } => Err(Error::new(
                ErrorCode::PermissionDenied,
                format!(
                    "service `{service}`'s token is addressed to `{}`, not to `{target}`",
                    self.aud
                ),
            )),
            _ => Err(Error::new(
                ErrorCode::PermissionDenied,
                "this rpc is for the central working group (an admin token) or a service's own \
                 credential; the token is neither",
            )),
        }
    }
}

/// The claims of a token, decoded without checking its signature or expiry: for revoking a
/// token by its text (its id and expiry), never for admitting anyone.
pub fn unverified_claims(token: &str) -> Result<Claims> {
    let mut parts = token.trim().split('.');
    let (Some(PREFIX), Some(_), Some(body), Some(_), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Error::invalid(
            "not a token (`ap2.<kid>.<claims>.<signature>`)",
        ));
    };
    B64.decode(body)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| Error::invalid("the token's claims cannot be read"))
}

/// The keys a process holds: public keys to verify with, and perhaps a private one to mint.
#[derive(Debug, Default)]
pub struct Keys {
    /// The signing key, only in the processes that mint (`token mint`, embedded `up`).
    pub signer: Option<Signer>,
    /// Every public key tokens may be signed with (the signer's is added to them).
    pub public: Vec<PublicKey>,
}

/// Signs and verifies tokens, and knows which ones are revoked.
pub struct Authenticator {
    signer: Option<Signer>,
    verifiers: HashMap<String, PublicKey>,
    store: Option<Database>,
    revoked: RwLock<(Option<Instant>, HashSet<String>)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.verifiers.keys().collect();
        kids.sort();
        f.debug_struct("Authenticator")
            .field("signer", &self.signer)
            .field("verifier_kids", &kids)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator with `keys` and the `platform` store holding revocations (`None` for
    /// tools and tests that never revoke). Refuses keys with nothing to verify by, and two
    /// different public keys under one key id.
    pub fn new(keys: Keys, store: Option<Database>) -> Result<Arc<Self>> {
        let mut verifiers: HashMap<String, PublicKey> = HashMap::new();
        for key in keys
            .public
            .into_iter()
            .chain(keys.signer.as_ref().map(Signer::public))
        {
            match verifiers.get(key.kid()) {
                Some(held) if *held != key => {
                    return Err(Error::invalid(format!(
                        "two different token public keys have the key id `{}`",
                        key.kid()
                    )))
                }
                _ => {
                    verifiers.insert(key.kid().to_string(), key);
                }
            }
        }
        if verifiers.is_empty() {
            return Err(Error::invalid(
                "no token public key: set AGRIPORTAL_TOKEN_PUBLIC_KEYS (`<kid>:<base64>`, \
                 printed by `agriportal token keygen`) or a private key file",
            ));
        }
        Ok(Arc::new(Authenticator {
            signer: keys.signer,
            verifiers,
            store,
            revoked: RwLock::new((None, HashSet::new())),
        }))
    }

    /// An authenticator that mints with `signer` and verifies its tokens only (tools, tests).
    pub fn signing(signer: Signer, store: Option<Database>) -> Result<Arc<Self>> {
        Self::new(
            Keys {
                signer: Some(signer),
                public: Vec::new(),
            },
            store,
        )
    }

    /// Whether this process holds a private key (can mint).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// The revocation store, if any (its pruning task needs it).
    pub fn store(&self) -> Option<&Database> {
        self.store.as_ref()
    }

    /// Mints a token for `role` (not a service: see [`Authenticator::mint_service`]) with the
    /// portal as audience, valid for `ttl`. Returns the token and its claims.
    pub fn mint(&self, role: Role, ttl: Duration) -> Result<(String, Claims)> {
        if let Role::Service { service } = &role {
            return Err(Error::invalid(format!(
                "a token of service `{service}` needs the service it calls as audience"
            )));
        }
        self.mint_for(role, PORTAL_AUDIENCE, ttl)
    }

    /// Mints `service`'s own credential for calls to `audience` (a target name).
    pub fn mint_service(
        &self,
        service: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<(String, Claims)> {
        if !valid_kid(audience) || audience == PORTAL_AUDIENCE {
            return Err(Error::invalid(format!(
                "`{audience}` is not a service's target name"
            )));
        }
        let role = Role::Service {
            service: service.to_string(),
        };
        self.mint_for(role, audience, ttl)
    }

    fn mint_for(&self, role: Role, aud: &str, ttl: Duration) -> Result<(String, Claims)> {
        validate_role(&role)?;
        let Some(signer) = &self.signer else {
            return Err(Error::invalid(
                "this process holds no token private key (--token-private-key-file): \
                 it verifies tokens but cannot mint them",
            ));
        };
        let cap = max_ttl(&role);
        if ttl > cap {
            return Err(Error::invalid(format!(
                "a {} token may live at most {} days; asked for {} s",
                role_name(&role),
                cap.as_secs() / 86_400,
                ttl.as_secs()
            )));
        }
        let now = now_secs();
        let claims = Claims {
            id: uuid::Uuid::new_v4().simple().to_string(),
            role,
            aud: aud.to_string(),
            iat: now,
            exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        };
        let body = B64.encode(serde_json::to_vec(&claims).map_err(Error::internal)?);
        let signed = format!("{PREFIX}.{}.{body}", signer.kid());
        let signature = B64.encode(signer.sign(signed.as_bytes()));
        Ok((format!("{signed}.{signature}"), claims))
    }

    /// Verifies a token: signature, expiry, lifetime, audience and revocation.
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

    /// Checks a token's signature, expiry, lifetime and audience only, without waiting for
    /// anything. Enough to refuse a call early (before its body is read); never enough to
    /// admit one.
    pub fn verify_signed(&self, token: &str) -> Result<Claims> {
        let unauthenticated = |why: String| Error::new(ErrorCode::Unauthenticated, why);
        let malformed = || unauthenticated("malformed bearer token".into());
        let mut parts = token.split('.');
        let (Some(prefix), Some(kid), Some(body), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            if token.starts_with("ap1.") {
                return Err(unauthenticated(
                    "bearer token of the retired HMAC format (ap1): ask for a new token".into(),
                ));
            }
            return Err(malformed());
        };
        // The kid is checked before it is echoed in a message: it is the caller's text.
        if prefix != PREFIX || !valid_kid(kid) {
            return Err(malformed());
        }
        let Some(key) = self.verifiers.get(kid) else {
            return Err(unauthenticated(format!(
                "bearer token signed with an unknown key id `{kid}` (retired, or not yet \
                 given to this service)"
            )));
        };
        let signature = B64.decode(signature).map_err(|_| malformed())?;
        let signed_len = prefix.len() + kid.len() + body.len() + 2;
        let signed = token.get(..signed_len).ok_or_else(malformed)?;
        if !key.verifies(signed.as_bytes(), &signature) {
            return Err(unauthenticated(
                "bearer token signature is not valid".into(),
            ));
        }
        let claims: Claims = B64
            .decode(body)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(malformed)?;
        let now = now_secs();
        if claims.exp <= now {
            return Err(unauthenticated("bearer token has expired".into()));
        }
        if claims.iat > now.saturating_add(IAT_LEEWAY_SECS) {
            return Err(unauthenticated(
                "bearer token is issued in the future".into(),
            ));
        }
        let cap = i64::try_from(max_ttl(&claims.role).as_secs()).unwrap_or(i64::MAX);
        if claims.exp.saturating_sub(claims.iat) > cap {
            return Err(unauthenticated(format!(
                "bearer token lives longer than a {} token may ({} days)",
                role_name(&claims.role),
                cap / 86_400
            )));
        }
        let audience_ok = match claims.role {
            Role::Service { .. } => valid_kid(&claims.aud) && claims.aud != PORTAL_AUDIENCE,
            _ => claims.aud == PORTAL_AUDIENCE,
        };
        if !audience_ok {
            return Err(unauthenticated(format!(
                "bearer token has a wrong audience for a {} token",
                role_name(&claims.role)
            )));
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

    /// Authenticates a gRPC request and requires an admin token (the central working group).
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

    /// Authenticates a call to an internal rpc of `target`: an admin token, or a service's own
    /// credential addressed to `target` (the gateway's reconciliation).
    pub async fn require_internal(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        target: &str,
    ) -> Result<Claims> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let claims = self.authenticate(header).await?;
        claims.admits_internal(target)?;
        Ok(claims)
    }

    /// Revokes token `id` (idempotent). `exp`, the token's expiry (seconds), lets the
    /// revocation be pruned once the token could no longer be used anyway; unknown, it is
    /// kept for [`MAX_TTL`], past which no token minted before now can live.
    pub async fn revoke(&self, id: &str, exp: Option<i64>) -> Result<()> {
        let Some(db) = &self.store else {
            return Err(Error::unavailable("no revocation store configured"));
        };
        let now = now_secs();
        let max_ttl = i64::try_from(MAX_TTL.as_secs()).unwrap_or(i64::MAX);
        let expires_at_ms = exp
            .unwrap_or_else(|| now.saturating_add(max_ttl))
            .saturating_mul(1_000);
        with_db!(&db.pool, |pool| {
            sqlx::query(
                "INSERT INTO revoked_tokens (id, revoked_at, expires_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(now)
            .bind(expires_at_ms)
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
        // Revocations of expired tokens are useless (verification refuses them anyway) and
        // may wait for the pruning task: leave them out of the list held in memory.
        let cutoff = now_ms();
        let ids: Vec<String> = with_db!(&db.pool, |pool| {
            sqlx::query_scalar("SELECT id FROM revoked_tokens WHERE expires_at_ms >= $1")
                .bind(cutoff)
                .fetch_all(pool)
                .await?
        });
        let mut guard = self.revoked.write().await;
        *guard = (Some(Instant::now()), ids.into_iter().collect());
        Ok(guard.1.contains(id))
    }
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Partner { .. } => "partner",
        Role::Admin => "admin",
        Role::Province { .. } => "province",
        Role::Service { .. } => "service",
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
        Role::Service { service } if !valid_kid(service) => {
            Err(Error::invalid(format!("`{service}` is not a service's target name")))
        }
        _ => Ok(()),
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests;
