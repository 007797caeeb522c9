//! Password hashing: argon2id, off the async runtime, with a bound on how many
//! hashes run at once. Unknown accounts are checked against a dummy hash so a
//! wrong identifier costs the same time as a wrong password.

use crate::error::CoreError;
use crate::secret::Secret;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};
use serde::Deserialize;
use std::sync::Arc;
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
        let dummy = hash_blocking(&params, crate::random::token().as_bytes())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_phc: Arc::new(dummy),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Secret) -> Result<String, CoreError> {
        let _permit = self.permit().await?;
        let params = self.params.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&params, pw.expose().as_bytes()))
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
        let pw = password.clone();
        let check = tokio::task::spawn_blocking(move || verify_blocking(&params, &pw, &phc))
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

fn hash_blocking(params: &Params, pw: &[u8]) -> Result<String, CoreError> {
    argon(params)
        .hash_password(pw)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::Crypto(format!("argon2 hash: {e}")))
}

fn verify_blocking(params: &Params, pw: &Secret, phc: &str) -> Result<PasswordCheck, CoreError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| CoreError::Crypto(format!("stored password hash unreadable: {e}")))?;
    let stored_params = Params::try_from(&parsed).ok();
    // Verify with the parameters the hash was made with.
    let verifier = Argon2::default();
    match verifier.verify_password(pw.expose().as_bytes(), &parsed) {
        Ok(()) => {
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
        Err(_) => Ok(PasswordCheck::Mismatch),
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
