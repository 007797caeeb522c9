//! Recovery journeys: "forgot password?" (an emailed reset link), "forgot
//! identifier?" (the customer identifier by email), and choosing a password
//! from an emailed link (a reset link, or the invitation link a new member
//! receives).
//!
//! No enumeration: a request answers before anything about the account is
//! looked up. Finding the account, the per-account cap, making the link and
//! delivering the email all run in a background task, so a known and an
//! unknown identifier cost the request the same work and the same time,
//! and a slow mail server never holds the page.
//!
//! Setting a password from a link replaces the password only: second
//! factors stay (the next login still asks for them) and single sign-on
//! sessions already open stay open (a user who suspects an intrusion signs
//! out the other sessions from the account page).

use super::links::{LinkInfo, LinkPurpose};
use super::service::Accounts;
use crate::client::Client;
use crate::domain::RequestMeta;
use crate::domain::{ClientId, CustomerId, Email, User, UserId, UserStatus};
use crate::error::CoreError;
use crate::notify::{Message, Notification};
use crate::password_policy::{PasswordPolicy, Violation};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a "forgot password?" form accepts: an email address or a customer
/// identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Email(Email),
    Customer(CustomerId),
}

impl RecoveryTarget {
    /// `None` when `raw` has the shape of neither (a form error, which says
    /// nothing about any account).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.contains('@') {
            Email::parse(raw).ok().map(Self::Email)
        } else {
            CustomerId::parse(raw).map(Self::Customer)
        }
    }
}

/// The theme, display name and id of the client a journey started from.
#[derive(Debug, Clone, Default)]
struct JourneyClient {
    id: Option<ClientId>,
    theme: String,
    name: String,
    reset_link_minutes: Option<u32>,
}

impl JourneyClient {
    fn of(client: Option<&Client>) -> Self {
        client.map_or_else(
            || Self {
                theme: "default".into(),
                ..Self::default()
            },
            |c| Self {
                id: Some(c.id.clone()),
                theme: c.theme.clone(),
                name: c.name.clone(),
                reset_link_minutes: c.account.reset_link_minutes,
            },
        )
    }
}

/// A valid emailed link, as the page shows it before the password is chosen.
#[derive(Debug, Clone)]
pub struct PasswordLink {
    pub purpose: LinkPurpose,
    /// The client the link was sent for (themes the page).
    pub client_id: Option<ClientId>,
    pub user: User,
    /// The rules the new password must meet (platform, client and the
    /// user's organizations, strictest wins).
    pub policy: PasswordPolicy,
}

/// Why a password could not be set from a link.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    /// Unknown, expired, used, superseded or invalidated by a password
    /// change (all look the same).
    #[error("this link is invalid or has expired")]
    InvalidLink,
    /// The password breaks rules and/or the confirmation differs. The link
    /// stays usable and nothing changed.
    #[error("the new password was refused")]
    Rejected {
        violations: Vec<Violation>,
        mismatch: bool,
    },
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The strings a password must not contain (as `use_link` checks them).
fn policy_context(user: &User) -> [&str; 2] {
    [
        user.email.as_str().split('@').next().unwrap_or(""),
        user.customer_id.as_str(),
    ]
}

impl Accounts {
    /// "Forgot password?": in the background, finds the account of `target`;
    /// when it exists, is active and is under `[accounts]
    /// recovery_max_per_account`, emails it a reset link valid the client's
    /// `reset_link_minutes` (else `[accounts] reset_link_minutes`), which
    /// replaces any earlier one. Returns at once, whether or not the account
    /// exists; the handle only lets a caller wait for the work (dropping it
    /// does not cancel it).
    pub fn request_password_reset(
        self: &Arc<Self>,
        target: &RecoveryTarget,
        client: Option<&Client>,
        locale: &str,
        meta: &RequestMeta,
    ) -> JoinHandle<()> {
        self.request_in_background(
            "password reset request failed",
            target.clone(),
            client,
            locale,
            meta,
            |this, target, journey, locale, meta| async move {
                this.send_reset_link(&target, &journey, &locale, &meta)
                    .await
            },
        )
    }

    /// Runs a recovery request's `work` on `subject` in the background (with
    /// the journey's client, the locale and the request facts), logging its
    /// failure as `what`; the handle only lets a caller wait for it.
    fn request_in_background<T, F, Fut>(
        self: &Arc<Self>,
        what: &'static str,
        subject: T,
        client: Option<&Client>,
        locale: &str,
        meta: &RequestMeta,
        work: F,
    ) -> JoinHandle<()>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>, T, JourneyClient, String, RequestMeta) -> Fut,
        Fut: Future<Output = Result<(), CoreError>> + Send + 'static,
    {
        let work = work(
            Arc::clone(self),
            subject,
            JourneyClient::of(client),
            locale.to_owned(),
            meta.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = work.await {
                tracing::error!(error = %e, "{what}");
            }
        })
    }

    async fn send_reset_link(
        &self,
        target: &RecoveryTarget,
        journey: &JourneyClient,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<(), CoreError> {
        let user = match target {
            RecoveryTarget::Email(e) => self.ports.users.find_by_email(e).await?,
            RecoveryTarget::Customer(c) => self.ports.users.find_by_customer_id(c).await?,
        };
        let Some(user) = user.filter(|u| u.status == UserStatus::Active) else {
            return Ok(());
        };
        if !self
            .recovery_target_allowed(&account_target(user.id))
            .await?
        {
            tracing::info!(user = %user.id, "recovery email cap reached; nothing sent");
            return Ok(());
        }
        let minutes = journey
            .reset_link_minutes
            .unwrap_or(self.settings.accounts.reset_link_minutes)
            .max(1);
        let token = self
            .links
            .create_link(
                &user,
                LinkPurpose::Reset,
                journey.id.as_ref(),
                Duration::from_secs(u64::from(minutes) * 60),
            )
            .await?;
        let url = self
            .links
            .password_link_url(LinkPurpose::Reset, &token, journey.id.as_ref());
        self.audit_log
            .record(
                "password.reset_requested",
                Some(user.id),
                journey.id.as_ref(),
                meta,
                serde_json::json!({ "valid_minutes": minutes }),
            )
            .await;
        self.deliver(
            &user.email,
            Message::PasswordResetLink {
                url,
                valid_minutes: minutes,
            },
            journey,
            locale,
        )
        .await;
        Ok(())
    }

    /// "Forgot identifier?": in the background, emails the customer
    /// identifier of the active account whose primary email is `email`, if
    /// any, under the same per-account cap. Returns at once either way.
    pub fn request_identifier_reminder(
        self: &Arc<Self>,
        email: &Email,
        client: Option<&Client>,
        locale: &str,
        meta: &RequestMeta,
    ) -> JoinHandle<()> {
        self.request_in_background(
            "identifier reminder request failed",
            email.clone(),
            client,
            locale,
            meta,
            |this, email, journey, locale, meta| async move {
                this.send_identifier_reminder(&email, &journey, &locale, &meta)
                    .await
            },
        )
    }

    async fn send_identifier_reminder(
        &self,
        email: &Email,
        journey: &JourneyClient,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<(), CoreError> {
        let Some(user) = self
            .ports
            .users
            .find_by_email(email)
            .await?
            .filter(|u| u.status == UserStatus::Active)
        else {
            return Ok(());
        };
        if !self
            .recovery_target_allowed(&account_target(user.id))
            .await?
        {
            tracing::info!(user = %user.id, "recovery email cap reached; nothing sent");
            return Ok(());
        }
        self.audit_log
            .record(
                "identifier.reminder_sent",
                Some(user.id),
                journey.id.as_ref(),
                meta,
                serde_json::json!({}),
            )
            .await;
        self.deliver(
            &user.email,
            Message::CustomerIdReminder {
                customer_id: user.customer_id.as_str().to_owned(),
            },
            journey,
            locale,
        )
        .await;
        Ok(())
    }

    /// Emails `message`; a failure is logged (the requester was already
    /// answered, and must not learn whether an account exists).
    async fn deliver(&self, to: &Email, message: Message, journey: &JourneyClient, locale: &str) {
        let kind = message.template().to_owned();
        let n = Notification {
            message,
            locale: locale.to_owned(),
            theme: journey.theme.clone(),
            client_name: journey.name.clone(),
        };
        if let Err(e) = self.step_ports.notifier.email(to, &n).await {
            tracing::error!(error = %e, kind, "recovery email not delivered");
        }
    }

    /// A still valid emailed link, with the rules its new password must
    /// meet; `None` for an unknown, expired, used or superseded link, or a
    /// disabled account. Does not use the link.
    pub async fn password_link(&self, token: &str) -> Result<Option<PasswordLink>, CoreError> {
        let Some(info) = self.links.check_link(token).await? else {
            return Ok(None);
        };
        if info.user.status != UserStatus::Active {
            return Ok(None);
        }
        let client = info
            .client_id
            .as_ref()
            .and_then(|id| self.clients.get(&id.0));
        let policy = self
            .password_policy_for_user(client.as_deref(), &info.user)
            .await?;
        Ok(Some(PasswordLink {
            purpose: info.purpose,
            client_id: info.client_id,
            user: info.user,
            policy,
        }))
    }

    /// Sets the password from an emailed link (reset or invitation): the
    /// confirmation must match and the password meet the rules of the
    /// link's client and the user's organizations; otherwise nothing changes
    /// and the link stays usable. On success the link is used up, the event
    /// audited (`password.reset` / `password.defined`) and the user emailed
    /// that their password changed. Second factors and open sessions stay.
    pub async fn set_password_from_link(
        self: &Arc<Self>,
        token: &str,
        password: &Secret,
        confirmation: &Secret,
        locale: &str,
        meta: &RequestMeta,
    ) -> Result<LinkInfo, SetPasswordError> {
        let link = self
            .password_link(token)
            .await?
            .ok_or(SetPasswordError::InvalidLink)?;
        let violations = link
            .policy
            .check(password.expose(), &policy_context(&link.user));
        let mismatch = !bool::from(subtle::ConstantTimeEq::ct_eq(
            password.expose().as_bytes(),
            confirmation.expose().as_bytes(),
        ));
        if mismatch || !violations.is_empty() {
            return Err(SetPasswordError::Rejected {
                violations,
                mismatch,
            });
        }
        let info = match self
            .links
            .use_link(token, password, &link.policy, meta)
            .await
        {
            Ok(info) => info,
            Err(super::links::LinkError::Invalid) => return Err(SetPasswordError::InvalidLink),
            Err(super::links::LinkError::WeakPassword(violations)) => {
                return Err(SetPasswordError::Rejected {
                    violations,
                    mismatch: false,
                });
            }
            Err(super::links::LinkError::Core(e)) => return Err(e.into()),
        };
        let client = info
            .client_id
            .as_ref()
            .and_then(|id| self.clients.get(&id.0));
        let journey = JourneyClient::of(client.as_deref());
        let this = Arc::clone(self);
        let to = info.user.email.clone();
        let locale = locale.to_owned();
        tokio::spawn(async move {
            this.deliver(&to, Message::PasswordChanged, &journey, &locale)
                .await;
        });
        Ok(info)
    }
}

/// The per-account cap of recovery emails counts accounts, not what was
/// typed: the email and the customer identifier share one budget.
pub(crate) fn account_target(user: UserId) -> String {
    format!("account:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_an_email_or_a_customer_identifier() {
        assert!(matches!(
            RecoveryTarget::parse("  Alice@Example.com "),
            Some(RecoveryTarget::Email(e)) if e.as_str() == "Alice@Example.com"
        ));
        assert!(matches!(
            RecoveryTarget::parse("AB12345-IDP"),
            Some(RecoveryTarget::Customer(c)) if c.as_str() == "ab12345-idp"
        ));
        for bad in ["", "alice", "@example.com", "ab1234-idp", "a b@example.com"] {
            assert_eq!(RecoveryTarget::parse(bad), None, "{bad:?}");
        }
    }
}
