//! Bearer tokens: `Authenticator::verify` and `authenticate` on arbitrary strings must never
//! panic, and must refuse anything not signed with the key. Because a mutated signature never
//! verifies, the input is also signed with the fuzzer's key as a token body, so the claims
//! parser behind the signature check (base64, JSON, expiry, revocation) is fuzzed too.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agriportal_platform::auth::{Authenticator, Role};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures::executor::block_on;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: [u8; 32] = [7u8; 32];

fn auth() -> &'static Arc<Authenticator> {
    static AUTH: OnceLock<Arc<Authenticator>> = OnceLock::new();
    AUTH.get_or_init(|| {
        let a = Authenticator::new(&KEY, None).expect("a 32-byte secret");
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

/// `ap1.<body>.<signature>` with a valid signature over `body`.
fn signed(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&KEY).expect("hmac key");
    mac.update(b"ap1.");
    mac.update(body.as_bytes());
    format!("ap1.{body}.{}", B64.encode(mac.finalize().into_bytes()))
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
    // claims JSON. What passes must be unexpired.
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
            let header = format!("Bearer {token}");
            assert_eq!(block_on(a.authenticate(Some(&header))).ok(), Some(claims));
        }
        Err(err) => assert!(!err.message.is_empty()),
    }
});
