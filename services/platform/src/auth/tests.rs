use super::*;
use crate::{testing, Config};

fn signer(kid: &str, seed: u8) -> Signer {
    Signer::from_seed(kid, &[seed; 32]).unwrap()
}

fn auth() -> Arc<Authenticator> {
    Authenticator::signing(signer("k1", 7), None).unwrap()
}

fn voso() -> Role {
    Role::Partner {
        partner: "voso".into(),
    }
}

/// A token over arbitrary claims, signed by `signer` (what a holder of the key could make).
fn sign(signer: &Signer, claims: &Claims) -> String {
    let body = B64.encode(serde_json::to_vec(claims).unwrap());
    let signed = format!("{PREFIX}.{}.{body}", signer.kid());
    format!("{signed}.{}", B64.encode(signer.sign(signed.as_bytes())))
}

fn refusal(a: &Authenticator, token: &str) -> String {
    let err = a.verify_signed(token).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated, "{}", err.message);
    err.message
}

#[tokio::test]
async fn minted_token_verifies_and_names_its_partner() {
    let a = auth();
    let (token, claims) = a.mint(voso(), Duration::from_secs(60)).unwrap();
    assert!(token.starts_with("ap2.k1."), "{token}");
    let got = a.verify(&token).await.unwrap();
    assert_eq!(got, claims);
    assert_eq!(got.aud, PORTAL_AUDIENCE);
    assert_eq!(got.partner(), Some(Partner::Voso));
}

#[tokio::test]
async fn tampered_foreign_unknown_and_expired_tokens_are_refused() {
    let a = auth();
    let (token, _) = a.mint(Role::Admin, Duration::from_secs(60)).unwrap();
    // The same key id, another key: the signature does not verify.
    let other = Authenticator::signing(signer("k1", 8), None).unwrap();
    assert!(refusal(&other, &token).contains("signature"));
    // Another key id: named as unknown.
    let unknown = Authenticator::signing(signer("k9", 7), None).unwrap();
    assert!(refusal(&unknown, &token).contains("unknown key id `k1`"));
    // One character of the claims changed.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let swap = if &parts[2][3..4] == "A" { "B" } else { "A" };
    parts[2].replace_range(3..4, swap);
    assert!(refusal(&a, &parts.join(".")).contains("signature"));
    // The kid swapped for another one the verifier knows does not carry the signature over.
    let two = Authenticator::new(
        Keys {
            signer: Some(signer("k1", 7)),
            public: vec![signer("k2", 8).public()],
        },
        None,
    )
    .unwrap();
    assert!(refusal(&two, &token.replacen(".k1.", ".k2.", 1)).contains("signature"));
    let (expired, _) = a.mint(Role::Admin, Duration::ZERO).unwrap();
    assert!(refusal(&a, &expired).contains("expired"));
    assert!(refusal(&a, "ap1.e30.c2ln").contains("retired"));
    for garbage in [
        "garbage",
        "ap2.k1.e30",
        "ap2.bad kid.e30.c2ln",
        "ap3.k1.e30.c2ln",
    ] {
        assert!(refusal(&a, garbage).contains("malformed"), "{garbage}");
    }
    assert!(a.authenticate(None).await.is_err());
    assert!(a.authenticate(Some("Basic abc")).await.is_err());
}

#[test]
fn lifetimes_over_the_cap_are_neither_minted_nor_accepted() {
    let a = auth();
    let day = Duration::from_secs(86_400);
    assert!(a.mint(Role::Admin, day).is_ok());
    let err = a.mint(Role::Admin, day * 2).unwrap_err();
    assert!(err.message.contains("at most 1 days"), "{}", err.message);
    assert!(a.mint(voso(), day * 366).is_ok());
    assert!(a.mint(voso(), day * 367).is_err());
    // A holder of the key who signs a longer one still gets it refused by every verifier.
    let now = now_secs();
    let long = Claims {
        id: "x".into(),
        role: Role::Admin,
        aud: PORTAL_AUDIENCE.into(),
        iat: now,
        exp: now + 2 * 86_400,
    };
    let key = signer("k1", 7);
    assert!(refusal(&a, &sign(&key, &long)).contains("longer than"));
    let future = Claims {
        iat: now + 3_600,
        exp: now + 7_200,
        ..long.clone()
    };
    assert!(refusal(&a, &sign(&key, &future)).contains("future"));
    let ok = Claims {
        exp: now + 3_600,
        ..long
    };
    assert!(a.verify_signed(&sign(&key, &ok)).is_ok());
}

#[test]
fn audiences_are_checked() {
    let a = auth();
    let now = now_secs();
    let key = signer("k1", 7);
    // A person's token addressed to one service, or a service's to the portal, is refused.
    let admin_to_marketplace = Claims {
        id: "x".into(),
        role: Role::Admin,
        aud: "marketplace".into(),
        iat: now,
        exp: now + 60,
    };
    assert!(refusal(&a, &sign(&key, &admin_to_marketplace)).contains("audience"));
    let service_to_portal = Claims {
        role: Role::Service {
            service: "gateway".into(),
        },
        aud: PORTAL_AUDIENCE.into(),
        ..admin_to_marketplace
    };
    assert!(refusal(&a, &sign(&key, &service_to_portal)).contains("audience"));
    assert!(a
        .mint(
            Role::Service {
                service: "gateway".into()
            },
            Duration::from_secs(60)
        )
        .is_err());
    assert!(a
        .mint_service("gateway", PORTAL_AUDIENCE, Duration::from_secs(60))
        .is_err());
    let (token, _) = a
        .mint_service("gateway", "marketplace", Duration::from_secs(60))
        .unwrap();
    let claims = a.verify_signed(&token).unwrap();
    assert!(claims.admits_internal("marketplace").is_ok());
    let err = claims.admits_internal("indicators").unwrap_err();
    assert_eq!(err.code, ErrorCode::PermissionDenied);
    assert!(
        err.message.contains("addressed to `marketplace`"),
        "{}",
        err.message
    );
    let (partner, _) = a.mint(voso(), Duration::from_secs(60)).unwrap();
    let partner = a.verify_signed(&partner).unwrap();
    assert!(partner.admits_internal("marketplace").is_err());
}

#[test]
fn rotation_two_public_keys_then_the_old_one_removed() {
    let (old, new) = (signer("k-old", 1), signer("k-new", 2));
    let (old_token, _) = Authenticator::signing(signer("k-old", 1), None)
        .unwrap()
        .mint(voso(), Duration::from_secs(60))
        .unwrap();
    let (new_token, _) = Authenticator::signing(signer("k-new", 2), None)
        .unwrap()
        .mint(voso(), Duration::from_secs(60))
        .unwrap();
    // During the rotation every service holds both public keys: both tokens verify.
    let both = Authenticator::new(
        Keys {
            signer: None,
            public: vec![old.public(), new.public()],
        },
        None,
    )
    .unwrap();
    assert!(!both.can_sign());
    assert!(both.verify_signed(&old_token).is_ok());
    assert!(both.verify_signed(&new_token).is_ok());
    assert!(both.mint(voso(), Duration::from_secs(60)).is_err());
    // Once the old key is removed, its tokens are refused by name.
    let after = Authenticator::new(
        Keys {
            signer: None,
            public: vec![new.public()],
        },
        None,
    )
    .unwrap();
    assert!(after.verify_signed(&new_token).is_ok());
    assert!(refusal(&after, &old_token).contains("unknown key id `k-old`"));
    // Nothing to verify by, or one kid with two keys, is a configuration error.
    assert!(Authenticator::new(Keys::default(), None).is_err());
    let clash = Keys {
        signer: None,
        public: vec![old.public(), signer("k-old", 3).public()],
    };
    assert!(Authenticator::new(clash, None).is_err());
}

#[test]
fn debug_shows_key_ids_never_keys() {
    let a = auth();
    let shown = format!("{a:?}");
    assert!(shown.contains("k1"), "{shown}");
    assert!(!shown.contains(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])));
}

#[test]
fn unknown_partner_province_or_service_name_cannot_be_minted() {
    let a = auth();
    let second = Duration::from_secs(1);
    let shopee = Role::Partner {
        partner: "shopee".into(),
    };
    assert!(a.mint(shopee, second).is_err());
    let province = |code: &str| Role::Province {
        province: code.into(),
    };
    assert!(a.mint(province("99"), second).is_err());
    assert!(a.mint(province("79"), second).is_ok());
    assert!(a.mint_service("bad name", "marketplace", second).is_err());
}

/// Revocations hold the token's expiry; those past it (and the leeway) are pruned, the
/// others stay and keep their tokens refused.
async fn revocations_are_pruned_past_expiry(config: &Config) {
    let db = crate::storage::platform_database(config).await.unwrap();
    let a = Authenticator::signing(signer("k1", 7), Some(db.clone())).unwrap();
    let (live, live_claims) = a.mint(voso(), Duration::from_secs(3_600)).unwrap();
    a.revoke(&live_claims.id, Some(live_claims.exp))
        .await
        .unwrap();
    a.revoke("long-gone", Some(now_secs() - 7_200))
        .await
        .unwrap();
    a.revoke("expiry-unknown", None).await.unwrap();
    assert!(a
        .verify(&live)
        .await
        .unwrap_err()
        .message
        .contains("revoked"));
    let leeway = i64::try_from(REVOCATION_PRUNE_LEEWAY.as_millis()).unwrap();
    let pruned = REVOCATIONS
        .all(&db, now_ms() - leeway, 10, &Default::default())
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let mut left: Vec<String> = with_db!(&db.pool, |pool| {
        sqlx::query_scalar("SELECT id FROM revoked_tokens")
            .fetch_all(pool)
            .await
            .unwrap()
    });
    left.sort();
    let mut want = vec!["expiry-unknown".to_string(), live_claims.id.clone()];
    want.sort();
    assert_eq!(left, want);
    let fresh = Authenticator::signing(signer("k1", 7), Some(db)).unwrap();
    assert!(fresh.verify(&live).await.is_err());
    // Revoking by the token's text takes its id and expiry.
    let (other, _) = a.mint(voso(), Duration::from_secs(60)).unwrap();
    let claims = unverified_claims(&other).unwrap();
    fresh.revoke(&claims.id, Some(claims.exp)).await.unwrap();
    assert!(fresh.verify(&other).await.is_err());
}

#[tokio::test]
async fn revocations_expire_on_each_backend() {
    let dir = tempfile::tempdir().unwrap();
    revocations_are_pruned_past_expiry(&Config::embedded(dir.path())).await;
    let Some(url) = testing::fresh_postgres("revocation_expiry").await else {
        return;
    };
    let mut config = Config::embedded(dir.path());
    config.database_url = Some(url);
    revocations_are_pruned_past_expiry(&config).await;
}
