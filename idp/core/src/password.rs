//! Password hashing: argon2id, off the async runtime, with a bound on how many
//! hashes run at once. Unknown accounts are checked against a dummy hash so a
//! wrong identifier costs the same time as a wrong password.
//!
//! Each hash needs `memory_kib` of working memory (19 MiB by default). It is
//! taken from a small pool of buffers, one per permit, instead of being
//! allocated and freed per hash: with the allocator's per-thread arenas, a
//! fresh 19 MiB block per login left the process holding hundreds of MiB
//! after a burst of logins (see `bench/results.md`), while the pool keeps it
//! at `max_concurrent` buffers.

use crate::error::CoreError;
use crate::secret::Secret;
use argon2_rust::params::Memory;
use argon2_rust::{Algorithm, Argon2, Error as Argon2Error, Hasher, Params, Version};
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Argon2id cost parameters. Defaults are OWASP's: m=19456 KiB, t=2, p=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// How many hashes may run at once (0 = number of CPU cores).
    pub max_concurrent: usize,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
        }
    }
}

/// Outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Mismatch,
    /// Correct; `needs_rehash` when stored with other parameters than configured.
    Match {
        needs_rehash: bool,
    },
}

/// Password hashing and checking with argon2id.
///
/// The implementation is the `argon2-rust` crate (a port of the reference
/// implementation, checked against its test vectors, with SIMD chosen at run
/// time): on this project's benchmark machine it hashes at the OWASP
/// parameters in half the time RustCrypto's `argon2` takes, and a password
/// check is most of the CPU of a login (`bench/fixes.md`). The PHC strings are
/// the same either way; tests check hashes both ways against RustCrypto's.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2,
    /// The largest parameters a stored hash may name: what verification will
    /// allocate and spend at most (see [`ceiling`]).
    ceiling: Params,
    permits: Arc<Semaphore>,
    dummy_phc: Arc<String>,
    pool: Arc<HasherPool>,
}

/// Argon2 hashers, each holding its working memory (`memory_kib`), reused
/// across hashes: at most one per permit is kept.
struct HasherPool {
    argon2: Argon2,
    keep: usize,
    free: Mutex<Vec<Hasher>>,
}

impl HasherPool {
    fn new(argon2: Argon2, keep: usize) -> Self {
        Self {
            argon2,
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a hasher of the configured parameters.
    fn with_hasher<R>(&self, f: impl FnOnce(&mut Hasher) -> R) -> R {
        let taken = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut hasher = taken.unwrap_or_else(|| self.argon2.hasher());
        let out = f(&mut hasher);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(hasher);
        }
        out
    }

    #[cfg(test)]
    fn kept(&self) -> Vec<usize> {
        let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.iter().map(Hasher::reserved_blocks).collect()
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.argon2.params();
        f.debug_struct("PasswordHasher")
            .field("memory_kib", &p.memory_kib())
            .field("iterations", &p.passes())
            .field("parallelism", &p.lanes())
            .finish_non_exhaustive()
    }
}

/// The argon2id parameters of `settings` (32-byte output).
fn params(settings: &Argon2Settings) -> Result<Params, CoreError> {
    Params::builder()
        .memory(Memory::kib(u64::from(settings.memory_kib)))
        .passes(settings.iterations)
        .lanes(settings.parallelism)
        .build()
        .map_err(|e| CoreError::Crypto(format!("argon2 parameters: {e}")))
}

/// The largest parameters a stored hash may name before verification
/// refuses it without hashing: the configured ones or, when larger, 1 GiB of
/// memory, 16 passes and 8 lanes (hashes made before a change of settings
/// stay checkable; an absurd string cannot make a login allocate gigabytes).
fn ceiling(configured: &Params) -> Result<Params, CoreError> {
    Params::builder()
        .memory(Memory::kib(u64::from(configured.memory_kib().max(1 << 20))))
        .passes(configured.passes().max(16))
        .lanes(configured.lanes().max(8))
        .build()
        .map_err(|e| CoreError::Crypto(format!("argon2 parameters: {e}")))
}

impl PasswordHasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, CoreError> {
        let params = params(&settings)?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let permits = if settings.max_concurrent == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            settings.max_concurrent
        };
        Ok(Self {
            argon2,
            ceiling: ceiling(&params)?,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_phc: Arc::new(unmatchable_phc(&params)),
            pool: Arc::new(HasherPool::new(argon2, permits)),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Secret) -> Result<String, CoreError> {
        let _permit = self.permit().await?;
        let pool = self.pool.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&pool, pw.expose().as_bytes()))
            .await
            .map_err(|e| CoreError::Internal(format!("hashing task: {e}")))?
    }

    /// Verifies `password` against `stored`; with `None` (unknown account)
    /// runs the same work against a dummy hash and reports a mismatch.
    pub async fn verify(
        &self,
        password: &Secret,
        stored: Option<&str>,
    ) -> Result<PasswordCheck, CoreError> {
        let _permit = self.permit().await?;
        let is_real = stored.is_some();
        let phc = stored.map_or_else(|| self.dummy_phc.as_str().to_owned(), str::to_owned);
        let (configured, ceiling) = (*self.argon2.params(), self.ceiling);
        let pool = self.pool.clone();
        let pw = password.clone();
        let check = tokio::task::spawn_blocking(move || {
            verify_blocking(&pool, &configured, &ceiling, &pw, &phc)
        })
        .await
        .map_err(|e| CoreError::Internal(format!("hashing task: {e}")))??;
        Ok(if is_real {
            check
        } else {
            PasswordCheck::Mismatch
        })
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, CoreError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| CoreError::Internal("password hasher closed".into()))
    }
}

fn crypto(what: &str) -> impl FnOnce(Argon2Error) -> CoreError + '_ {
    move |e| CoreError::Crypto(format!("{what}: {e}"))
}

/// Hashes into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a
/// fresh 16-byte salt, with a pooled hasher.
fn hash_blocking(pool: &HasherPool, pw: &[u8]) -> Result<String, CoreError> {
    let salt = crate::random::bytes(16);
    pool.with_hasher(|h| h.hash_password(pw, &salt))
        .map_err(crypto("argon2 hash"))
}

/// A PHC string with the configured parameters that no password matches: a
/// random salt and a random output, which a password would match with a
/// chance of 2^-256. It is what unknown accounts are checked against, and
/// verifying a password against it costs what verifying against a real hash
/// costs, which is all it is for. Making it costs nothing: a real hash made
/// at start-up would keep its working memory in the pool of an idle server.
fn unmatchable_phc(params: &Params) -> String {
    use base64::Engine as _;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.memory_kib(),
        params.passes(),
        params.lanes(),
        b64(crate::random::bytes(16)),
        b64(crate::random::bytes(params.tag_len_bytes())),
    )
}

/// Checks `pw` against a stored PHC string with the parameters it names (a
/// hash made before a change of settings still verifies, and asks for a
/// rehash), in a pooled hasher's memory when it fits there. A string naming
/// more than `ceiling` is refused before anything is allocated.
fn verify_blocking(
    pool: &HasherPool,
    configured: &Params,
    ceiling: &Params,
    pw: &Secret,
    phc: &str,
) -> Result<PasswordCheck, CoreError> {
    let stored = argon2_rust::decode_phc(phc)
        .map_err(|e| CoreError::Crypto(format!("stored password hash unreadable: {e}")))?;
    let result = pool.with_hasher(|h| {
        h.verify_encoded_bounded(phc, pw.expose().as_bytes(), stored.algorithm, ceiling)
    });
    match result {
        Ok(()) => {
            let p = stored.params;
            let same = stored.algorithm == Algorithm::Argon2id
                && stored.version == Version::V0x13
                && p.memory_kib() == configured.memory_kib()
                && p.passes() == configured.passes()
                && p.lanes() == configured.lanes();
            Ok(PasswordCheck::Match {
                needs_rehash: !same,
            })
        }
        Err(Argon2Error::VerifyMismatch) => Ok(PasswordCheck::Mismatch),
        Err(e) => Err(crypto("argon2 verify")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 2,
        }
    }

    #[tokio::test]
    async fn hash_verify_and_rehash_on_parameter_change() {
        let h = PasswordHasher::new(cheap()).unwrap();
        let pw = Secret::new("correct horse battery staple");
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert_eq!(
            h.verify(&pw, Some(&phc)).await.unwrap(),
            PasswordCheck::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Secret::new("wrong"), Some(&phc)).await.unwrap(),
            PasswordCheck::Mismatch
        );
        let stronger = PasswordHasher::new(Argon2Settings {
            memory_kib: 2048,
            ..cheap()
        })
        .unwrap();
        assert_eq!(
            stronger.verify(&pw, Some(&phc)).await.unwrap(),
            PasswordCheck::Match { needs_rehash: true }
        );
    }

    /// RustCrypto's `argon2` (the implementation used before, and the one
    /// hashes already stored were made with), as a second opinion.
    fn rustcrypto(
        settings: Argon2Settings,
        algorithm: argon2::Algorithm,
    ) -> argon2::Argon2<'static> {
        let params = argon2::Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .unwrap();
        argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
    }

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::phc::PasswordHash;
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let h = PasswordHasher::new(cheap()).unwrap();
        let pw = Secret::new("correct horse battery staple");
        // Ours, checked by another implementation.
        let ours = h.hash(&pw).await.unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{ours}");
        let parsed = PasswordHash::new(&ours).unwrap();
        let other = rustcrypto(cheap(), argon2::Algorithm::Argon2id);
        assert!(
            other
                .verify_password(pw.expose().as_bytes(), &parsed)
                .is_ok()
        );
        assert!(other.verify_password(b"wrong", &parsed).is_err());
        assert_ne!(ours, h.hash(&pw).await.unwrap(), "a fresh salt each time");
        // Hashes stored by the other implementation, checked by ours.
        let theirs = other
            .hash_password(pw.expose().as_bytes())
            .unwrap()
            .to_string();
        assert_eq!(
            h.verify(&pw, Some(&theirs)).await.unwrap(),
            PasswordCheck::Match {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(&Secret::new("wrong"), Some(&theirs))
                .await
                .unwrap(),
            PasswordCheck::Mismatch
        );
        // An argon2i hash verifies with its own algorithm and asks for a rehash.
        let argon2i = rustcrypto(cheap(), argon2::Algorithm::Argon2i)
            .hash_password(pw.expose().as_bytes())
            .unwrap()
            .to_string();
        assert_eq!(
            h.verify(&pw, Some(&argon2i)).await.unwrap(),
            PasswordCheck::Match { needs_rehash: true }
        );
        assert_eq!(
            h.verify(&Secret::new("wrong"), Some(&argon2i))
                .await
                .unwrap(),
            PasswordCheck::Mismatch
        );
    }

    #[tokio::test]
    async fn a_stored_hash_beyond_the_ceiling_is_refused_unhashed() {
        let h = PasswordHasher::new(cheap()).unwrap();
        // 4 GiB of memory named by a (forged or corrupt) stored string.
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(matches!(
            h.verify(&Secret::new("pw"), Some(huge)).await,
            Err(CoreError::Crypto(_))
        ));
        assert!(matches!(
            h.verify(&Secret::new("pw"), Some("not a hash")).await,
            Err(CoreError::Crypto(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_keeps_at_most_one_hasher_per_permit() {
        let h = PasswordHasher::new(cheap()).unwrap();
        let pw = Secret::new("correct horse battery staple");
        let phc = h.hash(&pw).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (h, pw, phc) = (h.clone(), pw.clone(), phc.clone());
                tokio::spawn(async move { h.verify(&pw, Some(&phc)).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(
                t.await.unwrap().unwrap(),
                PasswordCheck::Match { .. }
            ));
        }
        let kept = h.pool.kept();
        assert!((1..=2).contains(&kept.len()), "{} hashers kept", kept.len());
        // memory_kib = 1024: 1024 blocks of 1 KiB each, held for reuse.
        assert!(kept.iter().all(|&blocks| blocks == 1024), "{kept:?}");
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_a_real_verification_and_no_memory_at_start() {
        let h = PasswordHasher::new(cheap()).unwrap();
        // Nothing hashed yet, so no working memory held.
        assert!(h.pool.kept().is_empty());
        // Same algorithm and parameters as a real hash: the same work.
        let dummy = argon2_rust::decode_phc(&h.dummy_phc).unwrap();
        let real_phc = h.hash(&Secret::new("pw")).await.unwrap();
        let real = argon2_rust::decode_phc(&real_phc).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            (dummy.salt.len(), dummy.hash.len()),
            (real.salt.len(), real.hash.len())
        );
    }

    #[tokio::test]
    async fn unknown_account_is_a_mismatch_even_with_the_dummy_password() {
        let h = PasswordHasher::new(cheap()).unwrap();
        assert_eq!(
            h.verify(&Secret::new("anything"), None).await.unwrap(),
            PasswordCheck::Mismatch
        );
    }

    #[test]
    fn default_parameters_are_owasp() {
        let d = Argon2Settings::default();
        assert_eq!((d.memory_kib, d.iterations, d.parallelism), (19_456, 2, 1));
    }
}
