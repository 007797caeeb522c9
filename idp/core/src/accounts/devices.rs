//! The signed-in user's second factors and known browsers (the account
//! page's "devices" part): list, add (an authenticator app or a WebAuthn
//! security key / passkey), rename and delete second factors; see and
//! regenerate recovery codes; see and revoke the browsers remembered by the
//! new-device check.
//!
//! The ceremonies are the login steps' own ([`totp`], [`webauthn`],
//! [`recovery_code`]): a pending TOTP seed (sealed) or WebAuthn registration
//! state waits in the short-lived store, keyed by the user and a random id,
//! until a valid code or the authenticator's answer confirms it.
//!
//! Rules:
//! - adding or deleting a factor, and regenerating recovery codes, need a
//!   recent authentication (the session's `auth_time` within
//!   [`RECENT_AUTH_SECS`](super::security::RECENT_AUTH_SECS), see
//!   [`Accounts::is_recent_auth`](super::service::Accounts::is_recent_auth)): a stolen or forgotten session cannot attach an
//!   attacker's authenticator or strip the account's protection;
//! - the last second factor cannot be deleted while MFA is enforced for the
//!   user (on the account, or by one of their organizations for any kind of
//!   authentication); when the last one goes otherwise, the recovery codes go
//!   with it (they are a fallback of the factors, not a factor);
//! - names are 1 to 64 characters, trimmed, without control characters;
//! - only the user's own credentials and browsers are found: another user's
//!   id is "not found", and nothing changes;
//! - every change is audited (`mfa.added`, `mfa.removed`, `mfa.renamed`,
//!   `recovery_codes.regenerated`, `device.revoked`) with the user, their
//!   organization, the client the page was opened from, IP and user agent;
//!   never a secret.

use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::domain::RequestMeta;
use crate::domain::{ClientId, KnownDevice, OrgStatus, StoredCredential, TokenHash, User};
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use crate::flow::{FlowRunner, StepPorts};
use crate::ports::{CredentialRepo, DeviceRepo, OrgRepo};
use crate::sessions::Sessions;
use crate::sessions::SsoSession;
use crate::steps::{recovery_code, totp, webauthn};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// Longest factor name, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// How long a TOTP seed waits for its first code.
const PENDING_TOTP_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a WebAuthn registration waits for the authenticator.
const PENDING_KEY_TTL: Duration = Duration::from_secs(10 * 60);
/// Serializes deletions of one user's factors (the last-factor rule).
const DELETE_LOCK_TTL: Duration = Duration::from_secs(10);

/// A kind of second factor managed on the account page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorKind {
    /// An authenticator app.
    Totp,
    /// A security key or passkey.
    Webauthn,
}

impl FactorKind {
    pub const ALL: [FactorKind; 2] = [FactorKind::Totp, FactorKind::Webauthn];

    /// The credential kind in storage (also the method name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => totp::KIND,
            Self::Webauthn => webauthn::KIND,
        }
    }

    fn of(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    fn default_label(self) -> &'static str {
        match self {
            Self::Totp => totp::DEFAULT_DEVICE_NAME,
            Self::Webauthn => webauthn::DEFAULT_KEY_NAME,
        }
    }
}

/// A second factor as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Factor {
    pub id: Uuid,
    pub kind: FactorKind,
    pub label: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

impl Factor {
    fn of(c: &StoredCredential) -> Option<Self> {
        let kind = FactorKind::of(&c.kind)?;
        Some(Self {
            id: c.id,
            kind,
            label: c
                .label
                .clone()
                .unwrap_or_else(|| kind.default_label().to_owned()),
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        })
    }
}

/// A browser remembered by the new-device check, not revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBrowser {
    pub id: Uuid,
    /// From the user agent it signed in with.
    pub label: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// The browser showing the page.
    pub current: bool,
}

/// What the devices page shows.
#[derive(Debug, Clone)]
pub struct SecuritySummary {
    pub factors: Vec<Factor>,
    pub recovery_codes_left: usize,
    pub browsers: Vec<KnownBrowser>,
    /// A second factor is required for this user (account or organization).
    pub mfa_enforced: bool,
}

/// A TOTP enrollment waiting for its first code.
pub struct PendingTotp {
    /// Names the pending seed in the short-lived store (random; not a secret
    /// by itself: it is only usable with the user's session).
    pub id: String,
    pub setup: totp::TotpSetup,
}

/// A WebAuthn registration waiting for the authenticator.
pub struct PendingKey {
    pub id: String,
    /// Creation options for `webauthn.js`.
    pub options: serde_json::Value,
}

/// A factor just added; `recovery_codes` when it was the user's first
/// (shown once).
pub struct Added {
    pub factor: Factor,
    pub recovery_codes: Option<Vec<String>>,
}

/// Who acts, and from where.
pub struct AccountCx<'a> {
    pub user: &'a User,
    pub session: &'a SsoSession,
    /// The hash of the session's cookie.
    pub session_key: &'a TokenHash,
    /// The session's authentication is recent enough for a sensitive
    /// change (see `security::Provider::is_recent_auth`).
    pub recent_auth: bool,
    pub meta: &'a RequestMeta,
    /// The client the account page was opened from, if any.
    pub client: Option<&'a ClientId>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No such factor or browser among the user's.
    #[error("not found")]
    NotFound,
    /// The session's authentication is too old for this change.
    #[error("a recent sign-in is required")]
    ReauthRequired,
    /// It is the last second factor and MFA is enforced.
    #[error("the last second factor cannot be removed while MFA is enforced")]
    LastFactor,
    /// The pending enrollment is gone (expired, or already used).
    #[error("the setup expired")]
    Expired,
    /// Another deletion for this user is in progress.
    #[error("another change is in progress")]
    Busy,
    /// Bad input: the message id to show (a name rule, a wrong code, a
    /// refused registration).
    #[error("refused: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<crate::ports::RepoError> for DeviceError {
    fn from(e: crate::ports::RepoError) -> Self {
        Self::Core(e.into())
    }
}

impl From<crate::ephemeral::StoreError> for DeviceError {
    fn from(e: crate::ephemeral::StoreError) -> Self {
        Self::Core(e.into())
    }
}

impl DeviceError {
    /// Whether an `Invalid` message is about the name field.
    pub fn is_name_error(id: &str) -> bool {
        id.starts_with("account_devices.name_")
    }
}

/// A factor name as typed: trimmed, 1 to [`MAX_LABEL_CHARS`] characters,
/// no control characters. `Err` is the message id.
pub fn check_label(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() {
        Err("account_devices.name_empty")
    } else if name.chars().any(char::is_control) {
        Err("account_devices.name_invalid")
    } else if name.chars().count() > MAX_LABEL_CHARS {
        Err("account_devices.name_too_long")
    } else {
        Ok(name.to_owned())
    }
}

/// A pending enrollment is kept under its user and the hash of its id.
fn pending_id(user: &User, id: &str) -> String {
    format!("{}:{}", user.id, TokenHash::of(id).as_str())
}

/// The id of the device a pending enrollment creates: derived, so two
/// concurrent confirmations of one enrollment create one device.
fn totp_credential_id(user: &User, pending: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"account-totp-enrollment\0")
        .chain_update(pending.as_bytes())
        .chain_update(b"\0")
        .chain_update(user.id.to_string().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The account page's second factors and known browsers, holding only what
/// they use.
pub struct Devices {
    credentials: Arc<dyn CredentialRepo>,
    orgs: Arc<dyn OrgRepo>,
    devices: Arc<dyn DeviceRepo>,
    pending_apps: Records<String>,
    pending_keys: Records<String>,
    deletion_locks: Records<bool>,
    clock: SharedClock,
    sessions: Arc<Sessions>,
    runner: Arc<FlowRunner>,
    step_ports: StepPorts,
    audit_log: Audit,
}

/// What [`Devices`] is built from.
pub struct DevicesParts {
    pub credentials: Arc<dyn CredentialRepo>,
    pub orgs: Arc<dyn OrgRepo>,
    pub devices: Arc<dyn DeviceRepo>,
    pub store: Arc<dyn EphemeralStore>,
    pub clock: SharedClock,
    pub sessions: Arc<Sessions>,
    pub runner: Arc<FlowRunner>,
    pub step_ports: StepPorts,
    pub audit: Audit,
}

impl Devices {
    pub fn new(p: DevicesParts) -> Self {
        Self {
            credentials: p.credentials,
            orgs: p.orgs,
            devices: p.devices,
            pending_apps: Records::new(p.store.clone(), Namespace::PendingTotp),
            pending_keys: Records::new(p.store.clone(), Namespace::PendingKey),
            deletion_locks: Records::new(p.store, Namespace::FactorDeletion),
            clock: p.clock,
            sessions: p.sessions,
            runner: p.runner,
            step_ports: p.step_ports,
            audit_log: p.audit,
        }
    }

    /// The user's TOTP devices and WebAuthn keys, apps first, each oldest first.
    async fn second_factors(&self, user: &User) -> Result<Vec<Factor>, CoreError> {
        let mut factors = Vec::new();
        for kind in FactorKind::ALL {
            let stored = self
                .credentials
                .list_credentials(user.id, kind.as_str())
                .await?;
            factors.extend(stored.iter().filter_map(Factor::of));
        }
        Ok(factors)
    }

    /// Whether `user` must keep a second factor: set on the account, or
    /// enforced by one of their organizations (not rejected) for any kind
    /// of authentication. (A login checks one client's kind, see
    /// [`mfa_required`](crate::flow::runner::mfa_required); the account page cannot know which
    /// portal comes next, so any kind counts.)
    async fn mfa_enforced(&self, user: &User) -> Result<bool, CoreError> {
        if user.mfa_required {
            return Ok(true);
        }
        for m in self.orgs.memberships_of(user.id).await? {
            if let Some(org) = self.orgs.find_org(m.org_id).await?
                && org.status != OrgStatus::Rejected
                && !org.mfa_required_for.is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The user's browsers remembered by the new-device check, most
    /// recently seen first; `device_cookie` marks the current one.
    async fn known_browsers(
        &self,
        user: &User,
        device_cookie: Option<&str>,
    ) -> Result<Vec<KnownBrowser>, CoreError> {
        let current = device_cookie.map(TokenHash::of);
        Ok(self
            .devices
            .list_devices(user.id)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none())
            .map(|d: KnownDevice| KnownBrowser {
                id: d.id,
                current: current.as_ref() == Some(&d.token_hash),
                label: d.label,
                created_at: d.created_at,
                last_seen_at: d.last_seen_at,
            })
            .collect())
    }

    /// Everything the devices page lists.
    pub async fn security_summary(
        &self,
        user: &User,
        device_cookie: Option<&str>,
    ) -> Result<SecuritySummary, CoreError> {
        Ok(SecuritySummary {
            factors: self.second_factors(user).await?,
            recovery_codes_left: recovery_code::remaining(&self.step_ports, user).await?,
            browsers: self.known_browsers(user, device_cookie).await?,
            mfa_enforced: self.mfa_enforced(user).await?,
        })
    }

    fn require_recent(cx: &AccountCx<'_>) -> Result<(), DeviceError> {
        if cx.recent_auth {
            Ok(())
        } else {
            Err(DeviceError::ReauthRequired)
        }
    }

    /// One of the user's second factors.
    async fn own_factor(&self, user: &User, id: Uuid) -> Result<Factor, DeviceError> {
        match self.credentials.find_credential(id).await? {
            Some(c) if c.user_id == user.id => Factor::of(&c).ok_or(DeviceError::NotFound),
            _ => Err(DeviceError::NotFound),
        }
    }

    /// Audits an account change, in the user's (first) organization if any.
    async fn audit_account(&self, cx: &AccountCx<'_>, kind: &str, detail: serde_json::Value) {
        let org = match self.orgs.memberships_of(cx.user.id).await {
            Ok(ms) => ms.first().map(|m| m.org_id),
            Err(e) => {
                tracing::error!(error = %e, "memberships lookup for the audit trail failed");
                None
            }
        };
        self.audit_log
            .record_in_org(kind, Some(cx.user.id), org, cx.client, cx.meta, detail)
            .await;
    }

    /// After a factor is stored: audit, and recovery codes if it is the first.
    async fn added(
        &self,
        cx: &AccountCx<'_>,
        stored: &StoredCredential,
    ) -> Result<Added, DeviceError> {
        let factor = Factor::of(stored)
            .ok_or_else(|| CoreError::Internal("added credential is not a second factor".into()))?;
        self.audit_account(
            cx,
            "mfa.added",
            serde_json::json!({
                "method": factor.kind.as_str(),
                "credential": factor.id,
                "label": factor.label,
            }),
        )
        .await;
        // Completing the enrollment proved possession of the new
        // authenticator: the session counts it (the account pages, and other
        // portals' flows, need not ask it again at once).
        let method = crate::method::MethodId::new(factor.kind.as_str());
        if let Some(step) = self.runner.steps().get(&method) {
            let traits = step.traits();
            let proof = crate::assurance::Proof {
                method,
                factors: traits.assurance.factors.to_vec(),
                amr: traits.amr.iter().take(1).map(|a| (*a).to_owned()).collect(),
                credential: Some(factor.id),
                at: self.clock.now().unix_timestamp(),
                device: None,
            };
            self.sessions.record(cx.session_key, &[proof]).await?;
        }
        let recovery_codes = recovery_code::issue_if_none(&self.step_ports, cx.user).await?;
        if let Some(codes) = &recovery_codes {
            self.audit_account(
                cx,
                "recovery_codes.regenerated",
                serde_json::json!({"count": codes.len(), "first": true}),
            )
            .await;
        }
        Ok(Added {
            factor,
            recovery_codes,
        })
    }

    /// Starts adding an authenticator app: a fresh seed, kept sealed in the
    /// short-lived store until a code confirms it.
    pub async fn begin_totp(&self, cx: &AccountCx<'_>) -> Result<PendingTotp, DeviceError> {
        Self::require_recent(cx)?;
        let setup = totp::begin_enrollment(&self.step_ports, cx.user)?;
        let id = crate::random::token();
        self.pending_apps
            .put(
                &pending_id(cx.user, &id),
                &setup.sealed_seed,
                PENDING_TOTP_TTL,
            )
            .await?;
        Ok(PendingTotp { id, setup })
    }

    /// A pending TOTP enrollment again (same seed: the user may have scanned it).
    pub async fn pending_totp(&self, user: &User, id: &str) -> Result<PendingTotp, DeviceError> {
        let sealed = self
            .pending_apps
            .get(&pending_id(user, id))
            .await?
            .ok_or(DeviceError::Expired)?;
        let setup = totp::enrollment_setup(&self.step_ports, user, &sealed)?;
        Ok(PendingTotp {
            id: id.to_owned(),
            setup,
        })
    }

    /// Confirms a pending authenticator app with its first code and stores
    /// it under `name`. A wrong code or name keeps the enrollment pending.
    pub async fn finish_totp(
        &self,
        cx: &AccountCx<'_>,
        pending: &str,
        name: &str,
        code: &str,
    ) -> Result<Added, DeviceError> {
        Self::require_recent(cx)?;
        let key = pending_id(cx.user, pending);
        let sealed = self
            .pending_apps
            .get(&key)
            .await?
            .ok_or(DeviceError::Expired)?;
        let name = check_label(name).map_err(DeviceError::Invalid)?;
        let stored = totp::finish_enrollment(
            &self.step_ports,
            cx.user,
            &sealed,
            name,
            code,
            totp_credential_id(cx.user, pending),
        )
        .await?
        .map_err(DeviceError::Invalid)?;
        self.pending_apps.delete(&key).await?;
        self.added(cx, &stored).await
    }

    /// Starts adding a security key or passkey: creation options for the
    /// browser; the ceremony state waits in the short-lived store.
    pub async fn begin_webauthn(&self, cx: &AccountCx<'_>) -> Result<PendingKey, DeviceError> {
        Self::require_recent(cx)?;
        let (options, state) = webauthn::begin_registration(&self.step_ports, cx.user).await?;
        let id = crate::random::token();
        self.pending_keys
            .put(&pending_id(cx.user, &id), &state, PENDING_KEY_TTL)
            .await?;
        Ok(PendingKey { id, options })
    }

    /// Checks the authenticator's answer (`credential`, the JSON
    /// `webauthn.js` posts) and stores the key under `name`. The ceremony is
    /// single use: any refusal needs a new one.
    pub async fn finish_webauthn(
        &self,
        cx: &AccountCx<'_>,
        pending: &str,
        name: &str,
        credential: &str,
    ) -> Result<Added, DeviceError> {
        Self::require_recent(cx)?;
        let state = self
            .pending_keys
            .take(&pending_id(cx.user, pending))
            .await?
            .ok_or(DeviceError::Expired)?;
        let name = check_label(name).map_err(DeviceError::Invalid)?;
        let stored =
            webauthn::finish_registration_for(&self.step_ports, cx.user, &state, credential, name)
                .await?
                .map_err(DeviceError::Invalid)?;
        self.added(cx, &stored).await
    }

    /// Renames one of the user's factors.
    pub async fn rename_factor(
        &self,
        cx: &AccountCx<'_>,
        id: Uuid,
        name: &str,
    ) -> Result<Factor, DeviceError> {
        let factor = self.own_factor(cx.user, id).await?;
        let name = check_label(name).map_err(DeviceError::Invalid)?;
        self.credentials.rename_credential(id, &name).await?;
        self.audit_account(
            cx,
            "mfa.renamed",
            serde_json::json!({
                "method": factor.kind.as_str(),
                "credential": id,
                "from": factor.label,
                "to": name,
            }),
        )
        .await;
        Ok(Factor {
            label: name,
            ..factor
        })
    }

    /// Deletes one of the user's factors; refused for the last one while MFA
    /// is enforced. The last one takes the recovery codes with it.
    pub async fn delete_factor(&self, cx: &AccountCx<'_>, id: Uuid) -> Result<Factor, DeviceError> {
        let factor = self.own_factor(cx.user, id).await?;
        Self::require_recent(cx)?;
        // Two concurrent deletions of the last two factors must not both pass.
        let lock = cx.user.id.to_string();
        let locks = &self.deletion_locks;
        if !locks.put_new(&lock, &true, DELETE_LOCK_TTL).await? {
            return Err(DeviceError::Busy);
        }
        let result = self.delete_factor_locked(cx, &factor).await;
        if let Err(e) = locks.delete(&lock).await {
            tracing::warn!(error = %e, "factor deletion lock not released (it expires)");
        }
        result.map(|()| factor)
    }

    async fn delete_factor_locked(
        &self,
        cx: &AccountCx<'_>,
        factor: &Factor,
    ) -> Result<(), DeviceError> {
        let left = self
            .second_factors(cx.user)
            .await?
            .iter()
            .filter(|f| f.id != factor.id)
            .count();
        if left == 0 && self.mfa_enforced(cx.user).await? {
            return Err(DeviceError::LastFactor);
        }
        if !self.credentials.delete_credential(factor.id).await? {
            return Err(DeviceError::NotFound);
        }
        let codes_removed = if left == 0 {
            self.credentials
                .delete_credentials_of_kind(cx.user.id, recovery_code::KIND)
                .await?
        } else {
            0
        };
        self.audit_account(
            cx,
            "mfa.removed",
            serde_json::json!({
                "method": factor.kind.as_str(),
                "credential": factor.id,
                "label": factor.label,
                "recovery_codes_removed": codes_removed,
            }),
        )
        .await;
        Ok(())
    }

    /// Replaces the user's recovery codes; returns the new ones (shown once).
    /// Only for a user with a second factor (the codes are its fallback).
    pub async fn regenerate_codes(&self, cx: &AccountCx<'_>) -> Result<Vec<String>, DeviceError> {
        Self::require_recent(cx)?;
        if self.second_factors(cx.user).await?.is_empty() {
            return Err(DeviceError::Invalid("account_devices.recovery_no_factor"));
        }
        let codes = recovery_code::regenerate(&self.step_ports, cx.user).await?;
        self.audit_account(
            cx,
            "recovery_codes.regenerated",
            serde_json::json!({"count": codes.len()}),
        )
        .await;
        Ok(codes)
    }

    /// Forgets one of the user's remembered browsers: its next login is a
    /// new device again.
    pub async fn revoke_browser(&self, cx: &AccountCx<'_>, id: Uuid) -> Result<(), DeviceError> {
        let found = self
            .devices
            .list_devices(cx.user.id)
            .await?
            .into_iter()
            .any(|d| d.id == id && d.revoked_at.is_none());
        if !found || !self.devices.revoke_device(id, self.clock.now()).await? {
            return Err(DeviceError::NotFound);
        }
        self.audit_account(cx, "device.revoked", serde_json::json!({"device": id}))
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_trimmed_bounded_and_plain() {
        assert_eq!(check_label("  My phone ").unwrap(), "My phone");
        assert_eq!(check_label(""), Err("account_devices.name_empty"));
        assert_eq!(check_label(" \t "), Err("account_devices.name_empty"));
        assert_eq!(check_label("a\u{0}b"), Err("account_devices.name_invalid"));
        assert_eq!(check_label("a\nb"), Err("account_devices.name_invalid"));
        let long = "é".repeat(MAX_LABEL_CHARS);
        assert_eq!(check_label(&long).unwrap(), long);
        assert_eq!(
            check_label(&format!("{long}x")),
            Err("account_devices.name_too_long")
        );
        assert!(DeviceError::is_name_error("account_devices.name_empty"));
        assert!(!DeviceError::is_name_error("login.totp.invalid"));
    }

    #[test]
    fn factor_kinds_are_the_stored_kinds() {
        assert_eq!(FactorKind::of("totp"), Some(FactorKind::Totp));
        assert_eq!(FactorKind::of("webauthn"), Some(FactorKind::Webauthn));
        assert_eq!(FactorKind::of("recovery_code"), None);
        assert_eq!(FactorKind::of("password"), None);
    }
}
