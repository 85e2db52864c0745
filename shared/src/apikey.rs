//! API keys: `trg_live_<prefix>_<secret>`. The prefix is public and indexed for lookup; the
//! secret has 256 bits of randomness; only an argon2id hash of the whole key is stored.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;

pub const KEY_PREFIX: &str = "trg_live_";

/// A freshly generated key: the full secret (shown once), its lookup prefix and its hash.
pub struct GeneratedKey {
    pub key: String,
    pub prefix: String,
    pub hash: String,
}

/// Generate a new key with its argon2id hash (CPU-heavy: call from `spawn_blocking`).
pub fn generate() -> anyhow::Result<GeneratedKey> {
    let mut rng = rand::rng();
    let mut lookup = [0u8; 6];
    rng.fill_bytes(&mut lookup);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let prefix = format!("{KEY_PREFIX}{}", hex(&lookup));
    let key = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash(&key)?;
    Ok(GeneratedKey { key, prefix, hash })
}

/// The lookup prefix of a presented key, or `None` if it cannot be one of ours.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (lookup, secret) = rest.split_once('_')?;
    let well_formed = lookup.len() == 12
        && lookup.bytes().all(|b| b.is_ascii_hexdigit())
        && (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| &key[..KEY_PREFIX.len() + lookup.len()])
}

/// argon2id hash (PHC string) of a key.
pub fn hash(key: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::default()
        .hash_password_with_salt(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

/// Does `key` match the stored `hash`? (CPU-heavy: call from `spawn_blocking`.)
pub fn verify(key: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(key.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_expose_their_prefix() {
        let k = generate().expect("generate");
        assert!(k.key.starts_with("trg_live_"));
        assert_eq!(prefix_of(&k.key), Some(k.prefix.as_str()));
        assert!(verify(&k.key, &k.hash));
        assert!(!verify(&format!("{}x", k.key), &k.hash));
    }

    #[test]
    fn foreign_strings_have_no_prefix() {
        assert_eq!(prefix_of("hello"), None);
        assert_eq!(
            prefix_of("trg_live_zzzzzzzzzzzz_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None
        );
        assert_eq!(prefix_of("trg_live_"), None);
    }
}
