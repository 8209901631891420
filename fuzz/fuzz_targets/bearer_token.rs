//! Bearer tokens: `Authenticator::verify` and `authenticate` on arbitrary strings must never
//! panic, and must refuse anything not signed with the key. Because a mutated signature never
//! verifies, the input is also signed with the fuzzer's key as a token body, so the claims
//! parser behind the signature check (base64, JSON, expiry, lifetime cap, audience,
//! revocation) is fuzzed too.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use agriportal_platform::keys::Signer;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7u8; 32];

fn signer() -> Signer {
    Signer::from_seed("fuzz", &KEY).expect("a 32-byte seed")
}

fn auth() -> &'static Arc<Authenticator> {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| {
        let a = Authenticator::signing(signer(), None).expect("a key");
        // Sanity: a freshly minted token verifies, so a refusal below is the input's fault.
        let (token, claims) = a
            .mint(
                Role::Partner {
                    partner: "voso".into(),
                },
                Duration::from_secs(3600),
            )
            .expect("mint");
        assert_eq!(block_on(a.verify(&token)).expect("verify"), claims);
        a
    })
}

/// `ap2.fuzz.<body>.<signature>` with a valid signature over `ap2.fuzz.<body>`.
fn signed(body: &str) -> String {
    let signed = format!("ap2.fuzz.{body}");
    format!("{signed}.{}", B64.encode(signer().sign(signed.as_bytes())))
}

fuzz_target!(|data: &[u8]| {
    let a = auth();
    let text = String::from_utf8_lossy(data);

    // As given: only a token signed with KEY can pass, and the fuzzer cannot forge one.
    if let Ok(claims) = block_on(a.verify(&text)) {
        panic!("an unsigned input verified: {claims:?}");
    }
    let _ = block_on(a.authenticate(Some(&text)));
    let _ = block_on(a.authenticate(Some(&format!("Bearer {text}"))));

    // Signed: the input as the body (raw, when it has no '.'), and base64url-encoded as the
    // claims JSON. What passes must be unexpired, within its role's lifetime cap and
    // addressed to its audience.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if !text.contains('.') {
        if let Ok(claims) = block_on(a.verify(&signed(&text))) {
            assert!(claims.exp > now);
        }
    }
    let token = signed(&B64.encode(data));
    match block_on(a.verify(&token)) {
        Ok(claims) => {
            assert!(claims.exp > now);
            let cap = agriportal_platform::auth::max_ttl(&claims.role).as_secs() as i64;
            assert!(claims.exp - claims.iat <= cap);
            let header = format!("Bearer {token}");
            assert_eq!(block_on(a.authenticate(Some(&header))).ok(), Some(claims));
        }
        Err(err) => assert!(!err.message.is_empty()),
    }
});
