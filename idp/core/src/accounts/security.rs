//! The signed-in user's own security settings (the account page): change the
//! password, change the primary email (proved by a code sent to the new
//! address), set a backup email, see and end sessions, see what protects the
//! account and what happened to it recently.
//!
//! # Sessions
//!
//! Listing and ending sessions is [`crate::sessions::Sessions`]'s; this
//! module answers for the account page.
//!
//! # Email change
//!
//! A change of the primary email is pending until the user types the 6-digit
//! code sent to the new address: `email_change:<user id>` holds the new
//! address, a keyed hash of the code, the wrong attempts so far and the
//! expiry (`[accounts] email_change_code_minutes`). The pending change is
//! bound to the session that asked for it. Whether the new address already
//! belongs to another account is only said once the code proved the user
//! owns it, so the form cannot be used to find out who has an account.

use super::service::{Accounts, EmailChangeRecord};
use crate::client::Client;
use crate::domain::RequestMeta;
use crate::domain::{AuditEvent, Email, PasswordCredential, TokenHash, User, UserId};
use crate::error::CoreError;
use crate::notify::{Message, Notification};
use crate::password::PasswordCheck;
use crate::password_policy::{PasswordPolicy, Violation};
use crate::ports::RepoError;
use crate::secret::Secret;
use crate::sessions::SsoSession;
use serde::Serialize;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// How old an authentication may be for a sensitive change (password,
/// primary email): older sessions sign in again first.
pub const RECENT_AUTH_SECS: i64 = 600;
/// Codes sent to new addresses per user and hour.
const MAX_EMAIL_CODES_PER_HOUR: u64 = 5;
const EMAIL_CODE_MAC_PURPOSE: &str = "email-change-code";
const CODE_LEN: usize = 6;

pub use crate::sessions::SessionEntry;

/// What protects an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtectionStatus {
    /// Named authenticator apps.
    pub totp_devices: Vec<String>,
    /// Named security keys and passkeys.
    pub webauthn_keys: Vec<String>,
    /// A verified mobile number (texted codes).
    pub phone_verified: bool,
    pub recovery_codes_left: usize,
    /// Whether any second factor is enrolled.
    pub has_second_factor: bool,
    /// A second factor is required on the account itself.
    pub mfa_required_on_account: bool,
    /// Organizations that require a second factor of their members.
    pub enforced_by: Vec<EnforcingOrg>,
}

/// An organization enforcing a second factor, and for which kinds of login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnforcingOrg {
    pub name: String,
    /// Authentication kinds (`console`, `api`, ...).
    pub kinds: Vec<String>,
}

/// What is wrong with a password change form (every problem at once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordProblems {
    /// The current password is missing or wrong.
    pub current_wrong: bool,
    /// The confirmation differs from the new password.
    pub mismatch: bool,
    /// Rules the new password breaks.
    pub violations: Vec<Violation>,
}

impl PasswordProblems {
    fn is_empty(&self) -> bool {
        !self.current_wrong && !self.mismatch && self.violations.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordChangeError {
    #[error("the password change was refused")]
    Invalid(PasswordProblems),
    /// Too many wrong current passwords: try again later.
    #[error("too many wrong passwords; try again in {retry_after_secs} seconds")]
    Locked { retry_after_secs: u64 },
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// A primary email change waiting for its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEmailChange {
    pub new_email: Email,
    pub valid_minutes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailChangeError {
    #[error("not a valid email address")]
    InvalidAddress,
    #[error("this is already the account's address")]
    SameAddress,
    #[error("too many codes were sent; try again later")]
    TooManyCodes,
    #[error("the code could not be sent")]
    SendFailed,
    #[error("no email change is pending")]
    NothingPending,
    #[error("wrong code")]
    WrongCode,
    /// The pending change (to `address`) has expired.
    #[error("the code has expired")]
    Expired { address: Email },
    /// The pending change (to `address`) died of too many wrong codes.
    #[error("too many wrong codes")]
    TooManyAttempts { address: Email },
    /// Said only after the code proved the user owns `address`.
    #[error("the address belongs to another account")]
    AddressInUse { address: Email },
    #[error(transparent)]
    Core(#[from] CoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum BackupEmailError {
    #[error("not a valid email address")]
    InvalidAddress,
    #[error("the backup address must differ from the primary one")]
    SameAsPrimary,
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The S256 PKCE challenge of a verifier (RFC 7636 §4.2), for the
/// provider's own pages that sign in through OIDC (the account page).
pub fn pkce_s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn new_code() -> String {
    format!("{:06}", crate::random::below(1_000_000))
}

/// The typed code without spaces or dashes, if it is 6 digits.
fn normalize_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(1) as u64)
}

impl Accounts {
    /// Whether the session's authentication is recent enough for a
    /// sensitive change: `client`'s default flow (the account pages') is
    /// satisfied by proofs less than [`RECENT_AUTH_SECS`] old.
    pub async fn is_recent_auth(
        &self,
        client: &Client,
        session: &SsoSession,
        cookie: &str,
        user: &User,
        device: Option<&str>,
    ) -> Result<bool, CoreError> {
        self.runner
            .session_satisfies(
                client,
                session,
                TokenHash::of(cookie),
                user,
                device,
                Some(RECENT_AUTH_SECS as u64),
            )
            .await
            .map_err(|e| match e {
                crate::flow::FlowError::Core(e) => e,
                other => CoreError::Internal(other.to_string()),
            })
    }

    /// The user's live sessions, newest first.
    pub async fn list_sessions(&self, user: UserId) -> Result<Vec<SessionEntry>, CoreError> {
        self.sessions.list(user).await
    }

    /// Ends every session of the user but `current_sid`, and revokes the
    /// tokens issued from them. Returns how many were ended.
    pub async fn sign_out_other_sessions(
        &self,
        user: &User,
        current_sid: &str,
        meta: &RequestMeta,
    ) -> Result<usize, CoreError> {
        self.sessions.end_others(user.id, current_sid, meta).await
    }

    /// Ends a session this browser no longer uses (its cookie, of hash
    /// `cookie_hash`, was replaced by a new login), without revoking the
    /// tokens issued from it: the same person holds them.
    pub async fn forget_replaced_session(&self, cookie_hash: &str) -> Result<(), CoreError> {
        self.sessions
            .forget_replaced(&TokenHash::from_stored(cookie_hash.to_owned()))
            .await
    }

    /// The password rules for this user: the platform's, the client's (when
    /// the change is made from one) and those of the user's organizations,
    /// the strictest of each.
    pub async fn password_policy_for_user(
        &self,
        client: Option<&Client>,
        user: &User,
    ) -> Result<PasswordPolicy, CoreError> {
        let mut orgs = Vec::new();
        for m in self.ports.orgs.memberships_of(user.id).await? {
            if let Some(org) = self.ports.orgs.find_org(m.org_id).await? {
                orgs.push(org);
            }
        }
        Ok(self.password_policy_for(client, &orgs))
    }

    /// Whether the user has a password (an invited member who never set
    /// one, or a passkey-only account, has none).
    pub async fn has_password(&self, user: UserId) -> Result<bool, CoreError> {
        Ok(self.ports.credentials.find_password(user).await?.is_some())
    }

    /// Sends `message` to `to`, themed for `client`; a failed delivery is
    /// logged, not returned (for notices of something already done).
    async fn send_notice(
        &self,
        to: &Email,
        message: Message,
        client: Option<&Client>,
        locale: &str,
    ) {
        let n = Notification {
            message,
            locale: locale.to_owned(),
            theme: client.map_or_else(|| "default".to_owned(), |c| c.theme.clone()),
            client_name: client.map(|c| c.name.clone()).unwrap_or_default(),
        };
        if let Err(e) = self.step_ports.notifier.email(to, &n).await {
            tracing::warn!(error = %e, template = n.message.template(), "notice not delivered");
        }
    }

    /// Changes the user's password: the current one must be right (when the
    /// account has one), the new one must follow `policy` and match its
    /// confirmation. Wrong current passwords are throttled like failed
    /// logins. The user is emailed that their password changed; emailed
    /// reset links sent before stop working.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_password(
        &self,
        user: &User,
        client: Option<&Client>,
        current: &Secret,
        new: &Secret,
        confirmation: &Secret,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<(), PasswordChangeError> {
        let mut problems = PasswordProblems::default();
        let mut ticket = None;
        if let Some(stored) = self
            .ports
            .credentials
            .find_password(user.id)
            .await
            .map_err(CoreError::from)?
        {
            // Counted before the current password is checked: concurrent
            // guesses past the limit are never checked.
            let buckets = self.throttle.password_change(user.id, meta.ip.as_deref());
            let t = match self
                .throttle
                .attempt(buckets)
                .await
                .map_err(CoreError::from)?
            {
                crate::throttle::Attempt::Allowed(t) => t,
                crate::throttle::Attempt::Locked { until } => {
                    let left = (until - self.clock.now()).whole_seconds().max(1);
                    return Err(PasswordChangeError::Locked {
                        retry_after_secs: left as u64,
                    });
                }
            };
            let check = self.hasher.verify(current, Some(&stored.phc)).await?;
            if matches!(check, PasswordCheck::Match { .. }) {
                ticket = Some(t);
            } else {
                problems.current_wrong = true;
                self.throttle.failed(t);
                self.audit_log
                    .record(
                        "password.change_failed",
                        Some(user.id),
                        client.map(|c| &c.id),
                        meta,
                        serde_json::json!({"reason": "wrong_current_password"}),
                    )
                    .await;
            }
        }
        let policy = self.password_policy_for_user(client, user).await?;
        let context = [
            user.email.as_str().split('@').next().unwrap_or(""),
            user.customer_id.as_str(),
        ];
        problems.violations = policy.check(new.expose(), &context);
        problems.mismatch = new.expose() != confirmation.expose();
        if let Some(t) = ticket {
            // The current password was right: whatever else is wrong, the
            // attempt does not count against the user.
            self.throttle.succeeded(t).await.map_err(CoreError::from)?;
        }
        if !problems.is_empty() {
            return Err(PasswordChangeError::Invalid(problems));
        }
        let phc = self.hasher.hash(new).await?;
        self.ports
            .credentials
            .set_password(&PasswordCredential {
                user_id: user.id,
                phc,
                updated_at: self.clock.now(),
            })
            .await
            .map_err(CoreError::from)?;
        self.audit_log
            .record(
                "password.changed",
                Some(user.id),
                client.map(|c| &c.id),
                meta,
                serde_json::json!({}),
            )
            .await;
        self.send_notice(&user.email, Message::PasswordChanged, client, locale)
            .await;
        Ok(())
    }

    fn email_code_mac(&self, user: UserId, email: &Email, code: &str) -> String {
        self.kek.mac(
            EMAIL_CODE_MAC_PURPOSE,
            format!("{user}\n{}\n{code}", email.as_str().to_lowercase()).as_bytes(),
        )
    }

    /// Starts a change of the primary email to `new_address`: sends a code
    /// to it (replacing any pending change). Whether another account uses
    /// the address is not checked yet (see the module documentation).
    pub async fn request_email_change(
        &self,
        user: &User,
        session: &SsoSession,
        new_address: &str,
        client: Option<&Client>,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<PendingEmailChange, EmailChangeError> {
        let new_email =
            Email::parse(new_address.trim()).map_err(|_| EmailChangeError::InvalidAddress)?;
        if new_email.as_str().eq_ignore_ascii_case(user.email.as_str()) {
            return Err(EmailChangeError::SameAddress);
        }
        let sends =
            crate::throttle::Throttle::email_change_sends(user.id, MAX_EMAIL_CODES_PER_HOUR as u32);
        if !self.throttle.spend(sends).await.map_err(CoreError::from)? {
            return Err(EmailChangeError::TooManyCodes);
        }
        let valid_minutes = self.settings.accounts.email_change_code_minutes.max(1);
        let ttl = i64::from(valid_minutes) * 60;
        let code = new_code();
        let record = EmailChangeRecord {
            mac: self.email_code_mac(user.id, &new_email, &code),
            new_email: new_email.clone(),
            attempts: 0,
            expires_at: self.clock.now().unix_timestamp() + ttl,
            sid: session.sid.clone(),
            client_id: client.map(|c| c.id.clone()),
        };
        // Kept an hour past its validity, so that a late code is told
        // "expired" (checked against the record's own expiry) rather than
        // "nothing pending".
        let changes = &self.records.email_changes;
        changes
            .put(&user.id.to_string(), &record, secs(ttl + 3600))
            .await
            .map_err(CoreError::from)?;
        let n = Notification {
            message: Message::EmailChangeCode {
                code,
                valid_minutes,
            },
            locale: locale.to_owned(),
            theme: client.map_or_else(|| "default".to_owned(), |c| c.theme.clone()),
            client_name: client.map(|c| c.name.clone()).unwrap_or_default(),
        };
        if let Err(e) = self.step_ports.notifier.email(&new_email, &n).await {
            tracing::warn!(error = %e, "email change code not delivered");
            changes
                .delete(&user.id.to_string())
                .await
                .map_err(CoreError::from)?;
            return Err(EmailChangeError::SendFailed);
        }
        self.audit_log
            .record(
                "email.change_requested",
                Some(user.id),
                client.map(|c| &c.id),
                meta,
                serde_json::json!({}),
            )
            .await;
        Ok(PendingEmailChange {
            new_email,
            valid_minutes,
        })
    }

    /// The email change pending for this session, if any (and not expired).
    pub async fn pending_email_change(
        &self,
        user: &User,
        session: &SsoSession,
    ) -> Result<Option<PendingEmailChange>, CoreError> {
        let record = self.records.email_changes.get(&user.id.to_string()).await?;
        let now = self.clock.now().unix_timestamp();
        Ok(record
            .filter(|r| r.sid == session.sid && r.expires_at > now)
            .map(|r| PendingEmailChange {
                new_email: r.new_email,
                valid_minutes: self.settings.accounts.email_change_code_minutes.max(1),
            }))
    }

    /// Drops the pending email change.
    pub async fn cancel_email_change(&self, user: &User) -> Result<(), CoreError> {
        Ok(self
            .records
            .email_changes
            .delete(&user.id.to_string())
            .await?)
    }

    /// Confirms the pending email change with the code sent to the new
    /// address. On success the new address is the account's (verified), the
    /// old address gets a notice, and the event is recorded.
    pub async fn confirm_email_change(
        &self,
        user: &User,
        session: &SsoSession,
        typed: &str,
        client: Option<&Client>,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<Email, EmailChangeError> {
        let key = user.id.to_string();
        let changes = &self.records.email_changes;
        // Each try is counted before the code is checked (a compare-and-swap
        // of the attempts): concurrent guesses check at most the limit.
        let record = loop {
            let Some(record) = changes.get(&key).await.map_err(CoreError::from)? else {
                return Err(EmailChangeError::NothingPending);
            };
            if record.sid != session.sid {
                return Err(EmailChangeError::NothingPending);
            }
            if record.expires_at <= self.clock.now().unix_timestamp() {
                changes.delete(&key).await.map_err(CoreError::from)?;
                return Err(EmailChangeError::Expired {
                    address: record.new_email,
                });
            }
            let max = self.settings.methods.code_max_attempts.max(1);
            if record.attempts >= max {
                // Dead: a new code must be asked for.
                changes.delete(&key).await.map_err(CoreError::from)?;
                return Err(EmailChangeError::TooManyAttempts {
                    address: record.new_email,
                });
            }
            let counted = EmailChangeRecord {
                attempts: record.attempts + 1,
                ..record.clone()
            };
            let left = secs(record.expires_at + 3600 - self.clock.now().unix_timestamp());
            if !changes
                .replace_if(&key, &record, &counted, left)
                .await
                .map_err(CoreError::from)?
            {
                continue;
            }
            let right = normalize_code(typed).is_some_and(|code| {
                let mac = self.email_code_mac(user.id, &record.new_email, &code);
                bool::from(mac.as_bytes().ct_eq(record.mac.as_bytes()))
            });
            if !right {
                if counted.attempts >= max {
                    changes.delete(&key).await.map_err(CoreError::from)?;
                    return Err(EmailChangeError::TooManyAttempts {
                        address: record.new_email,
                    });
                }
                return Err(EmailChangeError::WrongCode);
            }
            // Single use: of two concurrent confirmations, one takes it.
            let taken = changes.take(&key).await.map_err(CoreError::from)?;
            if taken.is_none_or(|t| t.mac != counted.mac || t.attempts != counted.attempts) {
                return Err(EmailChangeError::NothingPending);
            }
            break record;
        };
        {
            match self
                .ports
                .users
                .set_email(user.id, &record.new_email, true)
                .await
            {
                Ok(()) => {}
                Err(RepoError::Conflict(_)) => {
                    self.audit_log
                        .record(
                            "email.change_failed",
                            Some(user.id),
                            client.map(|c| &c.id),
                            meta,
                            serde_json::json!({"reason": "address_in_use"}),
                        )
                        .await;
                    return Err(EmailChangeError::AddressInUse {
                        address: record.new_email,
                    });
                }
                Err(e) => return Err(CoreError::from(e).into()),
            }
            self.audit_log.record(
                "email.changed",
                Some(user.id),
                client.map(|c| &c.id),
                meta,
                serde_json::json!({"from": user.email.as_str(), "to": record.new_email.as_str()}),
            )
            .await;
            let changed = User {
                email: record.new_email.clone(),
                email_verified: true,
                ..user.clone()
            };
            self.events
                .user(crate::webhooks::WebhookEventType::UserUpdated, &changed)
                .await;
            self.send_notice(
                &user.email,
                Message::EmailChanged {
                    new_email: record.new_email.as_str().to_owned(),
                },
                client,
                locale,
            )
            .await;
            Ok(record.new_email)
        }
    }

    /// Sets (or, with `None` or an empty value, clears) the backup email.
    pub async fn set_backup_email(
        &self,
        user: &User,
        address: Option<&str>,
        client: Option<&Client>,
        meta: &RequestMeta,
    ) -> Result<Option<Email>, BackupEmailError> {
        let email = match address.map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => {
                let e = Email::parse(a).map_err(|_| BackupEmailError::InvalidAddress)?;
                if e.as_str().eq_ignore_ascii_case(user.email.as_str()) {
                    return Err(BackupEmailError::SameAsPrimary);
                }
                Some(e)
            }
        };
        self.ports
            .users
            .set_backup_email(user.id, email.as_ref())
            .await
            .map_err(CoreError::from)?;
        let kind = if email.is_some() {
            "backup_email.set"
        } else {
            "backup_email.cleared"
        };
        self.audit_log
            .record(
                kind,
                Some(user.id),
                client.map(|c| &c.id),
                meta,
                serde_json::json!({}),
            )
            .await;
        Ok(email)
    }

    /// What protects the account: enrolled second factors, recovery codes
    /// left, and whether a second factor is required (on the account, or by
    /// which organizations for which kinds of login).
    pub async fn protection_status(&self, user: &User) -> Result<ProtectionStatus, CoreError> {
        let creds = &self.ports.credentials;
        let names = |list: Vec<crate::domain::StoredCredential>| -> Vec<String> {
            list.into_iter()
                .map(|c| c.label.unwrap_or_default())
                .collect()
        };
        let totp_devices = names(
            creds
                .list_credentials(user.id, crate::steps::totp::KIND)
                .await?,
        );
        let webauthn_keys = names(
            creds
                .list_credentials(user.id, crate::steps::webauthn::KIND)
                .await?,
        );
        let recovery_codes_left = creds
            .list_credentials(user.id, crate::steps::recovery_code::KIND)
            .await?
            .len();
        let mut enforced_by = Vec::new();
        for m in self.ports.orgs.memberships_of(user.id).await? {
            if let Some(org) = self.ports.orgs.find_org(m.org_id).await?
                && org.status != crate::domain::OrgStatus::Rejected
                && !org.mfa_required_for.is_empty()
            {
                enforced_by.push(EnforcingOrg {
                    name: org.name,
                    kinds: org.mfa_required_for,
                });
            }
        }
        let phone_verified = user.phone.is_some() && user.phone_verified;
        Ok(ProtectionStatus {
            has_second_factor: !totp_devices.is_empty()
                || !webauthn_keys.is_empty()
                || phone_verified,
            totp_devices,
            webauthn_keys,
            phone_verified,
            recovery_codes_left,
            mfa_required_on_account: user.mfa_required,
            enforced_by,
        })
    }

    /// The user's own most recent audit events, newest first.
    pub async fn recent_activity(
        &self,
        user: UserId,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, CoreError> {
        Ok(self.ports.audit.list_for_user(user, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_typed_codes_normalize() {
        for _ in 0..50 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
        assert_eq!(normalize_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456").as_deref(), Some("123456"));
        assert_eq!(normalize_code("12345"), None);
        assert_eq!(normalize_code("12345a"), None);
    }
}
