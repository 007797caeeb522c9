//! Accounts and organizations around login: emailed links to set or reset a
//! password, the forgotten identifier, organization creation and membership,
//! the self-service security settings and enforced MFA.

use crate::password_policy::PasswordPolicy;
use serde::{Deserialize, Serialize};

/// Provider-wide settings (`[accounts]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountSettings {
    /// Validity of the "define your password" link sent to a new member.
    pub invite_link_hours: u32,
    /// Validity of a password reset link, unless the client sets its own
    /// (`[account] reset_link_minutes` in a client file).
    pub reset_link_minutes: u32,
    /// Validity of the code sent to a new primary email address.
    pub email_change_code_minutes: u32,
    /// Recovery requests (forgot password/identifier, organization creation)
    /// per client IP and window.
    pub recovery_max_per_ip: u32,
    /// Recovery emails per target account and window.
    pub recovery_max_per_account: u32,
    pub recovery_window_secs: u32,
    /// Proof-of-work difficulty of the recovery forms' challenge: the largest
    /// number a browser may have to try (about 50 000 takes well under a
    /// second on a phone).
    pub challenge_max_number: u64,
    /// Platform-wide password rules, merged with the client's and the
    /// organization's (the strictest wins).
    pub password_policy: PasswordPolicy,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            invite_link_hours: 24,
            reset_link_minutes: 5,
            email_change_code_minutes: 10,
            recovery_max_per_ip: 20,
            recovery_max_per_account: 3,
            recovery_window_secs: 3600,
            challenge_max_number: 50_000,
            password_policy: PasswordPolicy::default(),
        }
    }
}

pub mod creation;
pub mod devices;
pub mod federated;
pub mod links;
pub mod orgs;
pub mod recovery;
pub mod security;

use crate::challenge::{ChallengeError, ChallengeSpec};
use crate::error::CoreError;
use crate::oidc::Provider;
use std::time::Duration;

/// Too many recovery requests from this client IP.
#[derive(Debug, thiserror::Error)]
#[error("too many requests; try again in {retry_after_secs} seconds")]
pub struct RecoveryThrottled {
    pub retry_after_secs: u64,
}

impl Provider {
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
        crate::challenge::verify(&self.kek, self.store.as_ref(), self.clock.now(), payload).await
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

    /// Counts a recovery email to `target` (an email address or identifier as
    /// typed, compared case-insensitively). `false` past `[accounts]
    /// recovery_max_per_account` in the window: the caller then sends nothing
    /// but answers exactly as if it had (no enumeration, no mail bombing).
    pub async fn recovery_target_allowed(&self, target: &str) -> Result<bool, CoreError> {
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

impl Provider {
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
