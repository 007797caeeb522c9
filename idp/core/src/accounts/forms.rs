//! The public forms of the account journeys (forgot password or
//! identifier, organization creation): their proof-of-work challenge, the
//! per-IP and per-account limits of recovery requests, and the CSRF tokens
//! of forms outside a login flow.

use super::service::Accounts;
use crate::challenge::{ChallengeError, ChallengeSpec};
use crate::error::CoreError;
use std::time::Duration;

/// Too many recovery requests from this client IP.
#[derive(Debug, thiserror::Error)]
#[error("too many requests; try again in {retry_after_secs} seconds")]
pub struct RecoveryThrottled {
    pub retry_after_secs: u64,
}

impl Accounts {
    /// A proof-of-work challenge for a public recovery form.
    pub fn issue_challenge(&self) -> ChallengeSpec {
        crate::challenge::issue(
            &self.kek,
            self.clock.now(),
            self.settings.accounts.challenge_max_number,
        )
    }

    /// Checks (and uses up) a solved challenge posted with a recovery form.
    pub async fn verify_challenge(&self, payload: &str) -> Result<(), ChallengeError> {
        crate::challenge::verify(
            &self.kek,
            &self.records.proofs_of_work,
            self.clock.now(),
            payload,
        )
        .await
    }

    /// Counts a recovery request (forgot password or identifier, organization
    /// creation) from `ip`; refuses past `[accounts] recovery_max_per_ip` in
    /// the window. Call before doing any work for the request.
    pub async fn throttle_recovery_ip(&self, ip: Option<&str>) -> Result<(), RecoveryError> {
        let s = &self.settings.accounts;
        let window = Duration::from_secs(u64::from(s.recovery_window_secs));
        let bucket = crate::throttle::Throttle::recovery_ip(ip, s.recovery_max_per_ip, window);
        if !self
            .throttle
            .spend(bucket.clone())
            .await
            .map_err(CoreError::from)?
        {
            return Err(RecoveryError::Throttled(RecoveryThrottled {
                retry_after_secs: self
                    .throttle
                    .retry_after(&bucket)
                    .await
                    .map_err(CoreError::from)?,
            }));
        }
        Ok(())
    }

    /// How many recovery emails were counted for `user` in the current
    /// window (the "forgot password" and "forgot identifier" journeys share
    /// this budget).
    pub async fn recovery_emails_counted(
        &self,
        user: crate::domain::UserId,
    ) -> Result<u64, CoreError> {
        let s = &self.settings.accounts;
        let window = Duration::from_secs(u64::from(s.recovery_window_secs));
        let bucket = crate::throttle::Throttle::recovery_target(
            &super::recovery::account_target(user),
            s.recovery_max_per_account,
            window,
        );
        Ok(self.throttle.count(&bucket).await?)
    }

    /// Counts a recovery email to `target` (an email address or identifier as
    /// typed, compared case-insensitively). `false` past `[accounts]
    /// recovery_max_per_account` in the window: the caller then sends nothing
    /// but answers exactly as if it had (no enumeration, no mail bombing).
    pub(crate) async fn recovery_target_allowed(&self, target: &str) -> Result<bool, CoreError> {
        let s = &self.settings.accounts;
        let window = Duration::from_secs(u64::from(s.recovery_window_secs));
        let bucket =
            crate::throttle::Throttle::recovery_target(target, s.recovery_max_per_account, window);
        Ok(self.throttle.spend(bucket).await?)
    }
}

/// Why a recovery request was refused before any work.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Throttled(RecoveryThrottled),
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl Accounts {
    /// The CSRF token of a form outside a login flow: a MAC of the browser's
    /// random cookie and the form's purpose, so it needs no storage and a
    /// token of one browser or form is worthless for another.
    pub fn form_token(&self, browser: &str, purpose: &str) -> String {
        self.kek
            .mac(&format!("form-csrf:{purpose}"), browser.as_bytes())
    }

    /// Whether `token` is [`form_token`](Self::form_token) of this browser and purpose.
    pub fn check_form_token(&self, browser: &str, purpose: &str, token: &str) -> bool {
        let expected = self.form_token(browser, purpose);
        !browser.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                token.as_bytes(),
            ))
    }
}
