//! API keys: `trg_live_<prefix>_<secret>`. The prefix is public and indexed for lookup; the
//! secret has 256 bits of randomness; only an argon2id hash of the whole key is stored.
//!
//! argon2id costs ~19 MiB and tens of milliseconds of one core per hash, so every hash of the
//! process (generating a key, verifying one) runs through [`generate`] and [`verify`], which
//! share one pool: a semaphore with one permit per core in front of `spawn_blocking`. However
//! many requests want a hash, at most that many run at once and the rest wait their turn
//! (first come, first served) without taking blocking threads or memory.

use std::sync::{Arc, LazyLock};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use tokio::sync::Semaphore;

pub const KEY_PREFIX: &str = "trg_live_";

/// A freshly generated key: the full secret (shown once), its lookup prefix and its hash.
pub struct GeneratedKey {
    pub key: String,
    pub prefix: String,
    pub hash: String,
}

/// The one pool every argon2 hash of the process runs on: a permit per core.
static HASH_PERMITS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(Semaphore::new(cores))
});

/// Run one argon2 computation on the pool: wait for a permit, then hash on the blocking pool.
async fn on_hash_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let permit = Arc::clone(&HASH_PERMITS).acquire_owned().await?;
    let done = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await?;
    Ok(done)
}

/// Generate a new key with its argon2id hash, on the hash pool.
pub async fn generate() -> anyhow::Result<GeneratedKey> {
    on_hash_pool(generate_now).await?
}

/// Does `key` match the stored `hash`? Verified on the hash pool; `Err` only if the pool's
/// task failed (a panic), never for a wrong key or a malformed hash.
pub async fn verify(key: &str, hash: &str) -> anyhow::Result<bool> {
    let (key, hash) = (key.to_owned(), hash.to_owned());
    on_hash_pool(move || verify_now(&key, &hash)).await
}

fn generate_now() -> anyhow::Result<GeneratedKey> {
    let mut rng = rand::rng();
    let mut lookup = [0u8; 6];
    rng.fill_bytes(&mut lookup);
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let prefix = format!("{KEY_PREFIX}{}", hex::encode(lookup));
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
fn hash(key: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::default()
        .hash_password_with_salt(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

fn verify_now(key: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| Argon2::default().verify_password(key.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generated_keys_verify_and_expose_their_prefix() {
        let k = generate().await.expect("generate");
        assert!(k.key.starts_with("trg_live_"));
        assert_eq!(prefix_of(&k.key), Some(k.prefix.as_str()));
        assert!(verify(&k.key, &k.hash).await.expect("pool"));
        assert!(!verify(&format!("{}x", k.key), &k.hash).await.expect("pool"));
        assert!(!verify(&k.key, "not a PHC string").await.expect("pool"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_hashes_run_at_once_than_the_pool_has_permits() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let permits = HASH_PERMITS.available_permits();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        // Each hash waits until a pool's worth runs at once (no clock): the pool must let that
        // many run together, and never more.
        let together = Arc::new(std::sync::Barrier::new(permits));
        let tasks: Vec<_> = (0..permits * 4)
            .map(|_| {
                let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                let together = Arc::clone(&together);
                tokio::spawn(on_hash_pool(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    together.wait();
                    running.fetch_sub(1, SeqCst);
                }))
            })
            .collect();
        let all = async {
            for task in tasks {
                task.await.expect("join").expect("pool");
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), all)
            .await
            .expect("the pool never ran a permit's worth of hashes at once");
        let most = most.load(SeqCst);
        assert_eq!(most, permits, "{most} ran at once with {permits} permits");
    }
}
