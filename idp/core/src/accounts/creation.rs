//! Creating accounts: one place draws a free customer identifier, writes
//! the user (and a password, when given), audits `user.created` and emits
//! the webhook. Self-service, invitations, just-in-time federation, the CLI
//! and the demo all go through it.

use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::domain::{
    ClientId, CustomerId, Email, PasswordCredential, RequestMeta, User, UserId, UserStatus,
};
use crate::error::{CoreError, RepoError};
use crate::events::Events;
use crate::password_policy::PasswordPolicy;
use crate::ports::{CredentialRepo, UserRepo};
use crate::secret::Secret;
use crate::webhooks::WebhookEventType;
use std::sync::Arc;

/// Creates accounts.
#[derive(Clone)]
pub struct AccountCreator {
    users: Arc<dyn UserRepo>,
    credentials: Arc<dyn CredentialRepo>,
    audit: Audit,
    events: Events,
    clock: SharedClock,
    customer_id_suffix: String,
}

impl AccountCreator {
    pub fn new(
        users: Arc<dyn UserRepo>,
        credentials: Arc<dyn CredentialRepo>,
        audit: Audit,
        events: Events,
        clock: SharedClock,
        customer_id_suffix: String,
    ) -> Self {
        Self {
            users,
            credentials,
            audit,
            events,
            clock,
            customer_id_suffix,
        }
    }

    /// Creates an active account for `email` (drawing customer identifiers
    /// until one is free), with the password of hash `phc` when given, and
    /// audits `user.created`. `None` when the email is taken.
    pub async fn create(
        &self,
        email: &Email,
        name: Option<String>,
        phc: Option<String>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
    ) -> Result<Option<User>, CoreError> {
        let now = self.clock.now();
        for _ in 0..8 {
            let user = User {
                id: UserId::new_v7(),
                customer_id: CustomerId::generate(&self.customer_id_suffix),
                email: email.clone(),
                email_verified: false,
                name: name.clone(),
                locale: None,
                status: UserStatus::Active,
                phone: None,
                phone_verified: false,
                mfa_required: false,
                last_method: None,
                backup_email: None,
                created_at: now,
                updated_at: now,
            };
            match self.users.create(&user).await {
                Ok(()) => {
                    if let Some(phc) = phc {
                        self.credentials
                            .set_password(&PasswordCredential {
                                user_id: user.id,
                                phc,
                                updated_at: now,
                            })
                            .await?;
                    }
                    self.audit
                        .record(
                            "user.created",
                            Some(user.id),
                            client,
                            meta,
                            serde_json::json!({}),
                        )
                        .await;
                    self.events.user(WebhookEventType::UserCreated, &user).await;
                    return Ok(Some(user));
                }
                Err(RepoError::Conflict(_)) => {
                    if self.users.find_by_email(email).await?.is_some() {
                        return Ok(None);
                    }
                    // A customer identifier collision: draw another.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Internal(
            "could not draw a free customer identifier".into(),
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Every rule the password breaks.
    #[error("{}", crate::password_policy::english_all(.0))]
    WeakPassword(Vec<crate::password_policy::Violation>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<RepoError> for CreateUserError {
    fn from(e: RepoError) -> Self {
        Self::Core(e.into())
    }
}

/// Checks `pw` against `policy`; `context` holds what it must not contain
/// (email local part, customer identifier). Every broken rule is reported.
pub fn check_password_policy(
    policy: &crate::password_policy::PasswordPolicy,
    pw: &Secret,
    context: &[&str],
) -> Result<(), CreateUserError> {
    let violations = policy.check(pw.expose(), context);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CreateUserError::WeakPassword(violations))
    }
}

/// The password rules that apply: the platform's (`[accounts]
/// password_policy`), the client's and every organization's, the strictest
/// of each rule ([`PasswordPolicy::strictest`]).
pub fn applicable_policy(
    platform: &PasswordPolicy,
    client: Option<&crate::client::Client>,
    orgs: &[crate::domain::Organization],
) -> PasswordPolicy {
    let with_client = match client {
        Some(c) => platform.strictest(&c.account.password_policy),
        None => platform.clone(),
    };
    orgs.iter().fold(with_client, |policy, org| {
        policy.strictest(&org.password_policy)
    })
}
