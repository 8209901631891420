//! Token signing keys: Ed25519 key pairs named by a key id (`kid`).
//!
//! Services hold only [`PublicKey`]s (several at once, so a key can be rotated without logging
//! anyone out); a [`Signer`] (the private key) is held by `agriportal token mint`, by the
//! embedded `up`, and by nothing that faces the internet. A private key lives in a file of one
//! line, `<kid>:<base64 of the 32-byte seed>`, readable by its owner only; a public key is
//! written `<kid>:<base64 of the 32-byte key>` (configuration, `token keygen`'s output).

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

/// Longest key id accepted (it is part of every token).
pub const MAX_KID_LEN: usize = 40;

/// Whether `kid` is a well-formed key id: 1 to [`MAX_KID_LEN`] ASCII letters, digits, `-`, `_`.
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_kid(kid: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        valid_kid(kid),
        "key id `{kid}` is not valid: 1 to {MAX_KID_LEN} letters, digits, `-` or `_`"
    );
    Ok(())
}

/// A new key id: `k<yyyymmdd>-<4 hex digits>`, so ids sort by when the key was made.
pub fn new_kid() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    let mut random = [0u8; 2];
    rand::rng().fill_bytes(&mut random);
    format!(
        "k{:04}{:02}{:02}-{:02x}{:02x}",
        today.year(),
        u8::from(today.month()),
        today.day(),
        random[0],
        random[1]
    )
}

/// A private signing key and its id. Its `Debug` shows the id only; the key is wiped from
/// memory when dropped (ed25519-dalek's `zeroize`).
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new random key named `kid`.
    pub fn generate(kid: &str) -> anyhow::Result<Signer> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        Signer::from_seed(kid, &seed)
    }

    /// The key of a 32-byte seed (tests use fixed seeds).
    pub fn from_seed(kid: &str, seed: &[u8; 32]) -> anyhow::Result<Signer> {
        check_kid(kid)?;
        Ok(Signer {
            kid: kid.to_string(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, to give every service.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(message).to_bytes()
    }

    /// Reads a private key file, refusing one that its group or others may read: a key
    /// anyone on the machine can copy signs anyone's tokens.
    pub fn read_file(path: &Path) -> anyhow::Result<Signer> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the token private key {}", path.display()))?,
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            anyhow::ensure!(
                mode & 0o077 == 0,
                "the token private key {} is readable by others (mode {mode:o}): \
                 `chmod 600` it (and consider it leaked: rotate it)",
                path.display()
            );
        }
        let (kid, seed) = text.trim().split_once(':').with_context(|| {
            format!(
                "{} is not a token private key (`<kid>:<base64 seed>`)",
                path.display()
            )
        })?;
        let bytes = Zeroizing::new(B64.decode(seed.trim()).ok().unwrap_or_default());
        let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not a token private key: the seed must be 32 bytes in base64",
                path.display()
            )
        })?;
        Signer::from_seed(kid.trim(), seed)
    }

    /// Writes this key to `path` (owner-only, through a temporary file in the same directory
    /// renamed into place, so no reader ever sees half a key). Refuses to replace an existing
    /// file: returns `false` and leaves it when another process wrote one first.
    pub fn write_new_file(&self, path: &Path) -> anyhow::Result<bool> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // tempfile creates its files with mode 0600 on Unix.
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        let line = Zeroizing::new(format!(
            "{}:{}\n",
            self.kid,
            B64.encode(self.key.to_bytes())
        ));
        file.write_all(line.as_bytes())?;
        file.as_file().sync_all()?;
        match file.persist_noclobber(path) {
            Ok(_) => Ok(true),
            Err(err) if err.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(err.error).with_context(|| format!("writing {}", path.display())),
        }
    }
}

/// A public key and its id, written `<kid>:<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether `signature` is this key's over `message` (strict: no malleable signatures).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.key
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kid, B64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for PublicKey {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<PublicKey> {
        let (kid, key) = text.trim().split_once(':').with_context(|| {
            format!("token public key `{text}` is not `<kid>:<base64 of 32 bytes>`")
        })?;
        check_kid(kid)?;
        let bytes: [u8; 32] = B64
            .decode(key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("token public key `{kid}`: not 32 bytes in base64"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| anyhow::anyhow!("token public key `{kid}` is not an Ed25519 key"))?;
        Ok(PublicKey {
            kid: kid.to_string(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pair_signs_verifies_and_round_trips_through_its_texts() {
        let signer = Signer::generate(&new_kid()).unwrap();
        assert!(valid_kid(signer.kid()), "{}", signer.kid());
        let signature = signer.sign(b"message");
        let public: PublicKey = signer.public().to_string().parse().unwrap();
        assert_eq!(public, signer.public());
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"massage", &signature));
        assert!(!public.verifies(b"message", &signature[..63]));
        for bad in ["nokid", "k:!!", "k:AAAA", "bad kid:AAAA", ":AAAA"] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_file_is_written_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token_key");
        let signer = Signer::generate("k1").unwrap();
        assert!(signer.write_new_file(&path).unwrap());
        // A second writer loses the race and leaves the first key in place.
        assert!(!Signer::generate("k2")
            .unwrap()
            .write_new_file(&path)
            .unwrap());
        let read = Signer::read_file(&path).unwrap();
        assert_eq!(read.public(), signer.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
            let err = Signer::read_file(&path).unwrap_err().to_string();
            assert!(err.contains("readable by others"), "{err}");
        }
        // No temporary files are left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let signer = Signer::from_seed("k1", &[7u8; 32]).unwrap();
        let seed = B64.encode([7u8; 32]);
        let shown = format!("{signer:?}");
        assert!(shown.contains("k1") && !shown.contains(&seed), "{shown}");
        // The configuration names the key's file and holds public keys only.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token_key");
        signer.write_new_file(&path).unwrap();
        let mut config = crate::Config::embedded(dir.path());
        config.token_private_key_file = Some(path.clone());
        config.token_public_keys = vec![signer.public()];
        let keys = crate::context::token_keys(&config).unwrap();
        for shown in [format!("{config:?}"), format!("{keys:?}")] {
            assert!(!shown.contains(&seed), "{shown}");
        }
        assert!(format!("{config:?}").contains("token_key"));
    }
}
