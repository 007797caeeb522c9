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
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordVerifier as _, Version};
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

#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy_phc: Arc<String>,
    pool: Arc<BlockPool>,
}

/// Working memory of argon2, reused across hashes (at most one buffer per
/// permit is kept).
#[derive(Debug)]
struct BlockPool {
    blocks_per_buffer: usize,
    keep: usize,
    free: Mutex<Vec<Vec<Block>>>,
}

impl BlockPool {
    fn new(params: &Params, keep: usize) -> Self {
        Self {
            blocks_per_buffer: params.block_count(),
            keep,
            free: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` with a buffer of the configured size.
    fn with_buffer<R>(&self, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let taken = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut buf = taken.unwrap_or_else(|| vec![Block::default(); self.blocks_per_buffer]);
        let out = f(&mut buf);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
        out
    }
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    pub fn new(settings: Argon2Settings) -> Result<Self, CoreError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| CoreError::Crypto(format!("argon2 parameters: {e}")))?;
        let permits = if settings.max_concurrent == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            settings.max_concurrent
        };
        let pool = Arc::new(BlockPool::new(&params, permits));
        let dummy = unmatchable_phc(&params)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_phc: Arc::new(dummy),
            pool,
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Secret) -> Result<String, CoreError> {
        let _permit = self.permit().await?;
        let params = self.params.clone();
        let pool = self.pool.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, &pool, pw.expose().as_bytes()))
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
        let params = self.params.clone();
        let pool = self.pool.clone();
        let pw = password.clone();
        let check = tokio::task::spawn_blocking(move || verify_blocking(&params, &pool, &pw, &phc))
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

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn crypto(what: &str) -> impl FnOnce(argon2::Error) -> CoreError + '_ {
    move |e| CoreError::Crypto(format!("{what}: {e}"))
}

/// Hashes into a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a
/// fresh 16-byte salt, in a pooled buffer.
fn hash_blocking(params: &Params, pool: &BlockPool, pw: &[u8]) -> Result<String, CoreError> {
    let salt = crate::random::bytes(16);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    pool.with_buffer(|blocks| {
        argon(params).hash_password_into_with_memory(pw, &salt, &mut out, blocks)
    })
    .map_err(crypto("argon2 hash"))?;
    phc_string(params, &salt, &out)
}

/// A PHC string with the configured parameters that no password matches: a
/// random salt and a random output, which a password would match with a
/// chance of 2^-256. It is what unknown accounts are checked against, and
/// verifying a password against it costs what verifying against a real hash
/// costs, which is all it is for. Making it costs nothing: before, it was a
/// real hash made at start-up, whose 19 MiB of working memory then stayed in
/// the pool of an idle server (half of its resident memory).
fn unmatchable_phc(params: &Params) -> Result<String, CoreError> {
    let salt = crate::random::bytes(16);
    let out = crate::random::bytes(Params::DEFAULT_OUTPUT_LEN);
    phc_string(params, &salt, &out)
}

fn phc_string(params: &Params, salt: &[u8], out: &[u8]) -> Result<String, CoreError> {
    let phc = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)
            .map_err(|e| CoreError::Crypto(format!("argon2 parameters: {e}")))?,
        salt: Some(Salt::new(salt).map_err(|e| CoreError::Crypto(format!("salt: {e}")))?),
        hash: Some(Output::new(out).map_err(|e| CoreError::Crypto(format!("output: {e}")))?),
    };
    Ok(phc.to_string())
}

/// Recomputes an argon2id v1.3 hash made with the configured memory cost in
/// a pooled buffer; `None` for any other hash (checked by the library).
fn pooled_check(
    params: &Params,
    pool: &BlockPool,
    pw: &[u8],
    parsed: &PasswordHash,
) -> Option<Result<bool, CoreError>> {
    let stored = Params::try_from(parsed).ok()?;
    let (salt, expected) = (parsed.salt.as_ref()?, parsed.hash.as_ref()?);
    let pooled = parsed.algorithm == argon2::ARGON2ID_IDENT
        && parsed.version == Some(Version::V0x13.into())
        && stored.block_count() == params.block_count()
        && stored.p_cost() == params.p_cost();
    if !pooled {
        return None;
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, stored);
    Some(
        pool.with_buffer(|blocks| argon.hash_password_into_with_memory(pw, salt, &mut out, blocks))
            .map(|()| subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes()).into())
            .map_err(crypto("argon2 verify")),
    )
}

fn verify_blocking(
    params: &Params,
    pool: &BlockPool,
    pw: &Secret,
    phc: &str,
) -> Result<PasswordCheck, CoreError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| CoreError::Crypto(format!("stored password hash unreadable: {e}")))?;
    let stored_params = Params::try_from(&parsed).ok();
    // Verify with the parameters the hash was made with: in a pooled buffer
    // when it has the configured size, else by the library (older hashes).
    let matched = match pooled_check(params, pool, pw.expose().as_bytes(), &parsed) {
        Some(result) => result?,
        None => Argon2::default()
            .verify_password(pw.expose().as_bytes(), &parsed)
            .is_ok(),
    };
    match matched {
        true => {
            let same = parsed.algorithm.as_str() == "argon2id"
                && stored_params.is_some_and(|p| {
                    p.m_cost() == params.m_cost()
                        && p.t_cost() == params.t_cost()
                        && p.p_cost() == params.p_cost()
                });
            Ok(PasswordCheck::Match {
                needs_rehash: !same,
            })
        }
        false => Ok(PasswordCheck::Mismatch),
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

    #[tokio::test]
    async fn pooled_hashes_are_standard_phc_strings_both_ways() {
        use argon2::PasswordHasher as _;
        let h = PasswordHasher::new(cheap()).unwrap();
        let pw = Secret::new("correct horse battery staple");
        // Ours, checked by the library as any other argon2 implementation would.
        let ours = h.hash(&pw).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(pw.expose().as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        assert_ne!(ours, h.hash(&pw).await.unwrap(), "a fresh salt each time");
        // The library's, checked by ours (the pooled path: same parameters).
        let theirs = argon(&h.params)
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
        // An argon2i hash takes the library path and asks for a rehash.
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, h.params.clone())
            .hash_password(pw.expose().as_bytes())
            .unwrap()
            .to_string();
        assert_eq!(
            h.verify(&pw, Some(&argon2i)).await.unwrap(),
            PasswordCheck::Match { needs_rehash: true }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_keeps_at_most_one_buffer_per_permit() {
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
        let free = h.pool.free.lock().unwrap();
        assert!((1..=2).contains(&free.len()), "{} buffers kept", free.len());
        // memory_kib = 1024: 1024 blocks of 1 KiB each.
        assert!(free.iter().all(|b| b.len() == 1024));
    }

    #[tokio::test]
    async fn the_dummy_hash_costs_a_real_verification_and_no_memory_at_start() {
        let h = PasswordHasher::new(cheap()).unwrap();
        // Nothing hashed yet, so no working memory held.
        assert_eq!(h.pool.free.lock().unwrap().len(), 0);
        // Same algorithm and parameters as a real hash: the same work.
        let dummy = PasswordHash::new(&h.dummy_phc).unwrap();
        let real_phc = h.hash(&Secret::new("pw")).await.unwrap();
        let real = PasswordHash::new(&real_phc).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            (dummy.salt.unwrap().len(), dummy.hash.unwrap().len()),
            (real.salt.unwrap().len(), real.hash.unwrap().len())
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
