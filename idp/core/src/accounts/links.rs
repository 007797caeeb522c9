//! Emailed single-use links that let a user choose a password: the reset link
//! ("forgot password?") and the invitation link a new member receives.
//!
//! The link carries 256 random bits; only their SHA-256 is stored, in the
//! short-lived store, with the link's own expiry. A link is valid while:
//! - it has not expired (checked against the injected clock, not only the TTL);
//! - it is the newest link of its purpose for that user (a newer link
//!   invalidates older ones);
//! - the user's password has not changed since it was sent (any password
//!   change invalidates it);
//! - it has not been used (taken atomically from the store: of two concurrent
//!   uses, one wins).

use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::domain::{ClientId, PasswordCredential, RequestMeta, TokenHash, User, UserId};
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use crate::password::PasswordHasher;
use crate::password_policy::{PasswordPolicy, Violation};
use crate::ports::{CredentialRepo, UserRepo};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPurpose {
    /// "Forgot password?": valid minutes.
    Reset,
    /// A member created by an administrator defines their first password.
    Invitation,
}

impl LinkPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reset => "reset",
            Self::Invitation => "invitation",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LinkRecord {
    user_id: UserId,
    purpose: LinkPurpose,
    /// The client the journey started from (themes the pages and emails,
    /// and leads back to its login).
    client_id: Option<ClientId>,
    /// Unix seconds.
    expires_at: i64,
    /// The password's `updated_at` (unix nanoseconds) when the link was made;
    /// `None` when the user had no password.
    password_stamp: Option<i128>,
}

/// A valid link, as seen before it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub user: User,
    pub purpose: LinkPurpose,
    pub client_id: Option<ClientId>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Unknown, expired, used, superseded by a newer link or by a password
    /// change: all look the same to the user.
    #[error("this link is invalid or has expired")]
    Invalid,
    /// The new password breaks the policy; the link stays usable.
    #[error("the password does not meet the rules")]
    WeakPassword(Vec<Violation>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// A link's record is kept under the hash of its secret.
fn link_id(token: &str) -> String {
    TokenHash::of(token).as_str().to_owned()
}

/// The newest link of a purpose and user.
fn latest_id(purpose: LinkPurpose, user: UserId) -> String {
    format!("{}:{user}", purpose.as_str())
}

fn stamp(cred: Option<&PasswordCredential>) -> Option<i128> {
    cred.map(|c| c.updated_at.unix_timestamp_nanos())
}

/// Emailed password links: made, checked, used.
#[derive(Clone)]
pub struct Links {
    /// Links in emails start with it.
    issuer: String,
    records: Records<LinkRecord>,
    latest: Records<String>,
    users: Arc<dyn UserRepo>,
    credentials: Arc<dyn CredentialRepo>,
    hasher: PasswordHasher,
    audit: Audit,
    clock: SharedClock,
}

impl Links {
    pub fn new(
        issuer: String,
        store: Arc<dyn EphemeralStore>,
        users: Arc<dyn UserRepo>,
        credentials: Arc<dyn CredentialRepo>,
        hasher: PasswordHasher,
        audit: Audit,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer,
            records: Records::new(store.clone(), Namespace::PasswordLink),
            latest: Records::new(store, Namespace::LatestPasswordLink),
            users,
            credentials,
            hasher,
            audit,
            clock,
        }
    }

    /// The page where the holder of an emailed link chooses a password.
    pub fn password_link_url(
        &self,
        purpose: LinkPurpose,
        token: &str,
        client_id: Option<&ClientId>,
    ) -> String {
        let path = match purpose {
            LinkPurpose::Reset => "reset-password",
            LinkPurpose::Invitation => "set-password",
        };
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("token", token);
        if let Some(id) = client_id {
            query.append_pair("client_id", &id.0);
        }
        format!("{}/{path}?{}", self.issuer, query.finish())
    }

    /// Makes a link of `purpose` for `user`, valid `valid_for`, replacing any
    /// earlier one of the same purpose. Returns the secret to put in the URL.
    pub async fn create_link(
        &self,
        user: &User,
        purpose: LinkPurpose,
        client_id: Option<&ClientId>,
        valid_for: Duration,
    ) -> Result<String, CoreError> {
        let token = crate::random::token();
        let cred = self.credentials.find_password(user.id).await?;
        let record = LinkRecord {
            user_id: user.id,
            purpose,
            client_id: client_id.cloned(),
            expires_at: self.clock.now().unix_timestamp()
                + i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2),
            password_stamp: stamp(cred.as_ref()),
        };
        self.records
            .put(&link_id(&token), &record, valid_for)
            .await?;
        self.latest
            .put(&latest_id(purpose, user.id), &link_id(&token), valid_for)
            .await?;
        Ok(token)
    }

    async fn valid_record(&self, token: &str, record: &LinkRecord) -> Result<bool, CoreError> {
        if record.expires_at <= self.clock.now().unix_timestamp() {
            return Ok(false);
        }
        let latest = self
            .latest
            .get(&latest_id(record.purpose, record.user_id))
            .await?;
        if latest.as_deref() != Some(link_id(token).as_str()) {
            return Ok(false);
        }
        let cred = self.credentials.find_password(record.user_id).await?;
        Ok(stamp(cred.as_ref()) == record.password_stamp)
    }

    /// The link's user and purpose when it is still valid (does not use it).
    pub async fn check_link(&self, token: &str) -> Result<Option<LinkInfo>, CoreError> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let Some(record) = self.records.get(&link_id(token)).await? else {
            return Ok(None);
        };
        if !self.valid_record(token, &record).await? {
            return Ok(None);
        }
        let Some(user) = self.users.find_by_id(record.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(LinkInfo {
            user,
            purpose: record.purpose,
            client_id: record.client_id,
        }))
    }

    /// Uses the link to set `password` under `policy`. A policy violation
    /// leaves the link usable; anything else consumes it. Records the event
    /// and emails the user that their password changed.
    pub async fn use_link(
        &self,
        token: &str,
        password: &Secret,
        policy: &PasswordPolicy,
        meta: &RequestMeta,
    ) -> Result<LinkInfo, LinkError> {
        let info = self.check_link(token).await?.ok_or(LinkError::Invalid)?;
        let context = [
            info.user.email.as_str().split('@').next().unwrap_or(""),
            info.user.customer_id.as_str(),
        ];
        let violations = policy.check(password.expose(), &context);
        if !violations.is_empty() {
            return Err(LinkError::WeakPassword(violations));
        }
        // Hash before taking the link: a slow hash must not leave a taken
        // link unused if the request is cancelled.
        let phc = self.hasher.hash(password).await?;
        let Some(record) = self
            .records
            .take(&link_id(token))
            .await
            .map_err(CoreError::from)?
        else {
            return Err(LinkError::Invalid);
        };
        if !self.valid_record(token, &record).await? {
            return Err(LinkError::Invalid);
        }
        self.latest
            .delete(&latest_id(record.purpose, record.user_id))
            .await
            .map_err(CoreError::from)?;
        self.credentials
            .set_password(&PasswordCredential {
                user_id: record.user_id,
                phc,
                updated_at: self.clock.now(),
            })
            .await
            .map_err(CoreError::from)?;
        if !info.user.email_verified {
            // The link arrived at this address: it is verified now.
            self.users
                .set_email(info.user.id, &info.user.email, true)
                .await
                .map_err(CoreError::from)?;
        }
        let kind = match record.purpose {
            LinkPurpose::Reset => "password.reset",
            LinkPurpose::Invitation => "password.defined",
        };
        self.audit
            .record(
                kind,
                Some(record.user_id),
                record.client_id.as_ref(),
                meta,
                serde_json::json!({}),
            )
            .await;
        Ok(info)
    }
}
