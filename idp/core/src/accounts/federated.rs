//! What an upstream provider's identity leads to, and the links between
//! upstream identities and local accounts.
//!
//! After the `upstream` step validated an upstream's answer:
//!
//! 1. an identity already linked signs in to its account;
//! 2. otherwise, a local account holding the same email, when the upstream
//!    vouches for it (`email_verified`, or the upstream's `trust_email`), or
//!    the same customer identifier as the mapped username, is a candidate:
//!    the user must first sign in to it through the client's own flow
//!    (identifier pinned to that account), and only then is the link made.
//!    An unverified email matching an account is refused: never a silent
//!    link, never a second account with someone's address;
//! 3. otherwise, when the upstream allows it and vouches for an email, an
//!    account is created just in time from the mapped claims and linked;
//! 4. otherwise the user is told no account matches (contact support).
//!
//! In a step-up (the user already known), the identity must be linked to
//! that same user.

use super::creation::AccountCreator;
use crate::accounts::orgs::PlatformOperator;
use crate::audit::Audit;
use crate::client::Client;
use crate::clock::SharedClock;
use crate::domain::{CustomerId, Email, RequestMeta, User, UserId, UserStatus};
use crate::error::{CoreError, RepoError};
use crate::federation::{FederatedIdentity, PendingLink, UpstreamIdentity, Upstreams};
use crate::flow::runner::{Resolution, UpstreamAccounts};
use crate::policy::FlowDef;
use crate::ports::{CredentialRepo, FederatedIdentityRepo, UserRepo};
use async_trait::async_trait;
use std::sync::Arc;

/// Accounts and their links to upstream identities.
pub struct FederatedAccounts {
    users: Arc<dyn UserRepo>,
    credentials: Arc<dyn CredentialRepo>,
    identities: Arc<dyn FederatedIdentityRepo>,
    upstreams: Arc<dyn Upstreams>,
    creator: AccountCreator,
    audit: Audit,
    clock: SharedClock,
}

/// Why an identity could not be unlinked.
#[derive(Debug, thiserror::Error)]
pub enum UnlinkError {
    #[error("no such link")]
    NotLinked,
    /// It is the account's only way to sign in (no password, no other link).
    #[error("the account would have no way to sign in left")]
    LastWayToSignIn,
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<RepoError> for UnlinkError {
    fn from(e: RepoError) -> Self {
        Self::Core(e.into())
    }
}

/// Why an operator's link was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no upstream named {0:?}")]
    UnknownUpstream(String),
    #[error("the subject must be 1 to 255 characters")]
    InvalidSubject,
    /// The identity is linked (to this or another account), or the account
    /// already has a link at that upstream.
    #[error("already linked")]
    AlreadyLinked,
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl FederatedAccounts {
    pub fn new(
        users: Arc<dyn UserRepo>,
        credentials: Arc<dyn CredentialRepo>,
        identities: Arc<dyn FederatedIdentityRepo>,
        upstreams: Arc<dyn Upstreams>,
        creator: AccountCreator,
        audit: Audit,
        clock: SharedClock,
    ) -> Self {
        Self {
            users,
            credentials,
            identities,
            upstreams,
            creator,
            audit,
            clock,
        }
    }

    async fn resolve_upstream(
        &self,
        client: &Client,
        def: &FlowDef,
        flow_user: Option<&User>,
        id: &UpstreamIdentity,
        meta: &RequestMeta,
    ) -> Result<Resolution, CoreError> {
        let Some((info, policy)) = self.upstreams.find(&id.upstream) else {
            return Ok(Resolution::Refused("login.upstream.unavailable"));
        };
        let refuse = |reason: &'static str, message: &'static str| async move {
            self.audit
                .record(
                    "federation.refused",
                    flow_user.map(|u| u.id),
                    Some(&client.id),
                    meta,
                    serde_json::json!({"upstream": id.upstream, "reason": reason}),
                )
                .await;
            Ok(Resolution::Refused(message))
        };
        let identities = &self.identities;
        if let Some(link) = identities.find_identity(&id.upstream, &id.subject).await? {
            let account = self
                .users
                .find_by_id(link.user_id)
                .await?
                .filter(|u| u.status == UserStatus::Active);
            let Some(account) = account else {
                return refuse("account_inactive", "login.upstream.no_account").await;
            };
            if flow_user.is_some_and(|u| u.id != account.id) {
                return refuse("other_account", "login.upstream.other_account").await;
            }
            identities
                .touch_identity(&id.upstream, &id.subject, self.clock.now())
                .await?;
            return Ok(Resolution::SignedIn(account));
        }
        if flow_user.is_some() {
            return refuse("not_linked", "login.upstream.other_account").await;
        }
        let email_vouched = id.email_verified || policy.trust_email;
        let email = id.email.as_deref().and_then(|e| Email::parse(e).ok());
        let by_email = match &email {
            Some(e) => self.users.find_by_email(e).await?,
            None => None,
        };
        let by_username = match id.username.as_deref().and_then(CustomerId::parse) {
            Some(c) => self.users.find_by_customer_id(&c).await?,
            None => None,
        };
        let candidate = match (by_email, by_username) {
            (Some(_), _) if !email_vouched => {
                return refuse("unverified_email", "login.upstream.unverified_email").await;
            }
            (Some(u), _) | (None, Some(u)) => Some(u),
            (None, None) => None,
        };
        if let Some(account) = candidate.filter(|u| u.status == UserStatus::Active) {
            let Some(local) = client.login.local_flow(&def.acr) else {
                return refuse("no_local_flow", "login.upstream.cannot_link").await;
            };
            return Ok(Resolution::Prove {
                link: PendingLink {
                    user_id: account.id,
                    identity: id.clone(),
                    display_name: info.display_name,
                },
                flow: local.name.clone(),
            });
        }
        if !policy.create_accounts {
            return refuse("no_account", "login.upstream.no_account").await;
        }
        let Some(email) = email.filter(|_| email_vouched) else {
            return refuse("unverified_email", "login.upstream.unverified_email").await;
        };
        let Some(mut account) = self
            .creator
            .create(&email, id.name.clone(), None, Some(&client.id), meta)
            .await?
        else {
            // Created meanwhile by someone else: let the user start again.
            return refuse("email_taken", "login.upstream.retry").await;
        };
        // The upstream vouched for the address.
        self.users.set_email(account.id, &email, true).await?;
        account.email_verified = true;
        if !self
            .link_upstream_identity(account.id, id, client, meta, "created")
            .await?
        {
            return refuse("linked_meanwhile", "login.upstream.retry").await;
        }
        Ok(Resolution::SignedIn(account))
    }

    /// Links `id` to `user`; `false` when it (or the user at that upstream)
    /// is linked already.
    async fn link_upstream_identity(
        &self,
        user: UserId,
        id: &UpstreamIdentity,
        client: &Client,
        meta: &RequestMeta,
        how: &str,
    ) -> Result<bool, CoreError> {
        let now = self.clock.now();
        let link = FederatedIdentity {
            user_id: user,
            upstream: id.upstream.clone(),
            subject: id.subject.clone(),
            email: id.email.clone(),
            created_at: now,
            last_used_at: Some(now),
        };
        match self.identities.create_identity(&link).await {
            Ok(()) => {}
            Err(RepoError::Conflict(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.audit
            .record(
                "federation.linked",
                Some(user),
                Some(&client.id),
                meta,
                serde_json::json!({"upstream": id.upstream, "how": how}),
            )
            .await;
        Ok(true)
    }

    /// The proof of a pending link passed: link (an identity linked
    /// meanwhile stays as it is, and the login goes on).
    async fn link_proven_here(
        &self,
        link: &PendingLink,
        client: &Client,
        meta: &RequestMeta,
    ) -> Result<(), CoreError> {
        if !self
            .link_upstream_identity(link.user_id, &link.identity, client, meta, "proven")
            .await?
        {
            tracing::info!(upstream = link.identity.upstream, user = %link.user_id, "link not made: linked meanwhile");
        }
        Ok(())
    }

    /// The display name of a configured upstream (its name when it is no
    /// longer configured).
    pub fn upstream_display_name(&self, upstream: &str) -> String {
        self.upstreams
            .find(upstream)
            .map_or_else(|| upstream.to_owned(), |(info, _)| info.display_name)
    }

    /// A user's links, oldest first.
    pub async fn linked_identities(
        &self,
        user: UserId,
    ) -> Result<Vec<FederatedIdentity>, CoreError> {
        Ok(self.identities.list_identities(user).await?)
    }

    /// The signed-in user unlinks their identity at `upstream`, if another
    /// way to sign in remains (a password, or another link).
    pub async fn unlink_identity(
        &self,
        user: UserId,
        upstream: &str,
        meta: &RequestMeta,
    ) -> Result<(), UnlinkError> {
        self.remove_link(user, upstream, true, meta).await
    }

    /// The platform operator unlinks `user`'s identity at `upstream` (even
    /// the account's only way to sign in: the operator decides).
    pub async fn unlink_identity_as_operator(
        &self,
        _op: &PlatformOperator,
        user: UserId,
        upstream: &str,
        meta: &RequestMeta,
    ) -> Result<(), UnlinkError> {
        self.remove_link(user, upstream, false, meta).await
    }

    async fn remove_link(
        &self,
        user: UserId,
        upstream: &str,
        keep_a_way_in: bool,
        meta: &RequestMeta,
    ) -> Result<(), UnlinkError> {
        let links = self.identities.list_identities(user).await?;
        if !links.iter().any(|l| l.upstream == upstream) {
            return Err(UnlinkError::NotLinked);
        }
        if keep_a_way_in {
            let other_link = links.iter().any(|l| l.upstream != upstream);
            let password = self.credentials.find_password(user).await?.is_some();
            if !other_link && !password {
                return Err(UnlinkError::LastWayToSignIn);
            }
        }
        if !self.identities.delete_identity(user, upstream).await? {
            return Err(UnlinkError::NotLinked);
        }
        self.audit
            .record(
            "federation.unlinked",
            Some(user),
            None,
            meta,
            serde_json::json!({"upstream": upstream, "by": if keep_a_way_in { "user" } else { "operator" }}),
        )
        .await;
        Ok(())
    }

    /// The platform operator links `subject` at `upstream` to `user` (CLI,
    /// admin API).
    pub async fn link_identity(
        &self,
        _op: &PlatformOperator,
        user: &User,
        upstream: &str,
        subject: &str,
        meta: &RequestMeta,
    ) -> Result<FederatedIdentity, LinkError> {
        if self.upstreams.find(upstream).is_none() {
            return Err(LinkError::UnknownUpstream(upstream.to_owned()));
        }
        if subject.is_empty() || subject.len() > 255 {
            return Err(LinkError::InvalidSubject);
        }
        let now = self.clock.now();
        let link = FederatedIdentity {
            user_id: user.id,
            upstream: upstream.to_owned(),
            subject: subject.to_owned(),
            email: None,
            created_at: now,
            last_used_at: None,
        };
        match self.identities.create_identity(&link).await {
            Ok(()) => {}
            Err(RepoError::Conflict(_)) => return Err(LinkError::AlreadyLinked),
            Err(e) => return Err(LinkError::Core(e.into())),
        }
        self.audit
            .record(
                "federation.linked",
                Some(user.id),
                None,
                meta,
                serde_json::json!({"upstream": upstream, "how": "operator"}),
            )
            .await;
        Ok(link)
    }
}

#[async_trait]
impl UpstreamAccounts for FederatedAccounts {
    async fn resolve(
        &self,
        client: &Client,
        def: &FlowDef,
        flow_user: Option<&User>,
        identity: &UpstreamIdentity,
        meta: &RequestMeta,
    ) -> Result<Resolution, CoreError> {
        self.resolve_upstream(client, def, flow_user, identity, meta)
            .await
    }

    async fn link_proven(
        &self,
        link: &PendingLink,
        client: &Client,
        meta: &RequestMeta,
    ) -> Result<(), CoreError> {
        self.link_proven_here(link, client, meta).await
    }
}
