//! The `[accounts]` settings of the configuration file.

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
