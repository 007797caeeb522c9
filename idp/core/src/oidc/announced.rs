//! The repositories whose writes can change what access-token reads answer
//! (grants, users' claims, organizations and memberships), wrapped so that
//! every such write is announced as a [`Change`] once it has succeeded (see
//! [`crate::changes`]). The provider wraps its ports in these at start-up, so
//! no code path can write one of them without the announcement; the other
//! methods pass through.

use crate::changes::{Change, ChangeFeed, ChangeLog};
use crate::domain::{
    Email, Membership, OrgId, OrgStatus, Organization, RefreshTokenRecord, Role, TokenFamily,
    TokenHash, User, UserId,
};
use crate::ports::{OrgRepo, RepoError, TokenFamilyRepo, UserRepo};
use async_trait::async_trait;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// Announces changes: to this node's log at once, then to every node.
pub(crate) struct Announcer {
    pub(crate) log: Arc<ChangeLog>,
    pub(crate) feed: Arc<dyn ChangeFeed>,
}

impl Announcer {
    /// The write is done when this is called, so a feed that cannot be
    /// reached does not undo it: the failure is logged, and other nodes drop
    /// what they kept within [`ChangeLog::MAX_AGE`] (if the feed is down for
    /// them too, they keep nothing meanwhile).
    pub(crate) async fn announce(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.log.heard(changes);
        if let Err(e) = self.feed.publish(changes).await {
            tracing::error!(
                error = %e,
                changes = changes.len(),
                "could not announce changes to the other nodes; they see them within {} s",
                ChangeLog::MAX_AGE.whole_seconds()
            );
        }
    }
}

pub(crate) struct AnnouncedUsers {
    pub(crate) inner: Arc<dyn UserRepo>,
    pub(crate) announcer: Arc<Announcer>,
}

#[async_trait]
impl UserRepo for AnnouncedUsers {
    async fn create(&self, user: &User) -> Result<(), RepoError> {
        self.inner.create(user).await
    }
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepoError> {
        self.inner.find_by_id(id).await
    }
    async fn find_with_organizations(
        &self,
        id: UserId,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError> {
        self.inner.find_with_organizations(id).await
    }
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError> {
        self.inner.find_by_email(email).await
    }
    async fn find_by_customer_id(
        &self,
        id: &crate::domain::CustomerId,
    ) -> Result<Option<User>, RepoError> {
        self.inner.find_by_customer_id(id).await
    }
    async fn list(&self, limit: u64, offset: u64) -> Result<Vec<User>, RepoError> {
        self.inner.list(limit, offset).await
    }
    // Not in any claim: no announcement.
    async fn set_last_method(&self, user: UserId, method: &str) -> Result<(), RepoError> {
        self.inner.set_last_method(user, method).await
    }
    async fn set_mfa_required(&self, user: UserId, required: bool) -> Result<(), RepoError> {
        self.inner.set_mfa_required(user, required).await
    }
    async fn set_phone(
        &self,
        user: UserId,
        phone: Option<&str>,
        verified: bool,
    ) -> Result<(), RepoError> {
        self.inner.set_phone(user, phone, verified).await
    }
    async fn set_backup_email(&self, user: UserId, email: Option<&Email>) -> Result<(), RepoError> {
        self.inner.set_backup_email(user, email).await
    }
    // The `email`, `email_verified` and `name` claims.
    async fn set_email(
        &self,
        user: UserId,
        email: &Email,
        verified: bool,
    ) -> Result<(), RepoError> {
        self.inner.set_email(user, email, verified).await?;
        self.announcer.announce(&[Change::User(user)]).await;
        Ok(())
    }
    async fn set_name(&self, user: UserId, name: Option<&str>) -> Result<(), RepoError> {
        self.inner.set_name(user, name).await?;
        self.announcer.announce(&[Change::User(user)]).await;
        Ok(())
    }
}

pub(crate) struct AnnouncedFamilies {
    pub(crate) inner: Arc<dyn TokenFamilyRepo>,
    pub(crate) announcer: Arc<Announcer>,
}

#[async_trait]
impl TokenFamilyRepo for AnnouncedFamilies {
    async fn create_family(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
    ) -> Result<(), RepoError> {
        self.inner.create_family(family, first_token).await
    }
    async fn create_family_of_active_user(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
        with_organizations: bool,
    ) -> Result<Option<(User, Option<crate::ports::UserOrganizations>)>, RepoError> {
        self.inner
            .create_family_of_active_user(family, first_token, with_organizations)
            .await
    }
    async fn find_family(&self, id: Uuid) -> Result<Option<TokenFamily>, RepoError> {
        self.inner.find_family(id).await
    }
    async fn find_user_of_unrevoked_family(&self, id: Uuid) -> Result<Option<User>, RepoError> {
        self.inner.find_user_of_unrevoked_family(id).await
    }
    async fn find_user_and_organizations_of_unrevoked_family(
        &self,
        id: Uuid,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError> {
        self.inner
            .find_user_and_organizations_of_unrevoked_family(id)
            .await
    }
    async fn revoke_family(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool, RepoError> {
        let revoked = self.inner.revoke_family(id, at, reason).await?;
        if revoked {
            self.announcer.announce(&[Change::Grant(id)]).await;
        }
        Ok(revoked)
    }
    async fn revoke_families_of_session(
        &self,
        sid: &str,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<Vec<Uuid>, RepoError> {
        let revoked = self
            .inner
            .revoke_families_of_session(sid, at, reason)
            .await?;
        let changes: Vec<Change> = revoked.iter().copied().map(Change::Grant).collect();
        self.announcer.announce(&changes).await;
        Ok(revoked)
    }
    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<RefreshTokenRecord>, RepoError> {
        self.inner.find_refresh_token(hash).await
    }
    async fn find_refresh_token_grant(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, TokenFamily, User)>, RepoError> {
        self.inner.find_refresh_token_grant(hash).await
    }
    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
    ) -> Result<bool, RepoError> {
        self.inner.rotate_refresh_token(old, at, new).await
    }
    async fn rotate_refresh_token_reading_user(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
        user: UserId,
    ) -> Result<crate::ports::RotationWithUser, RepoError> {
        self.inner
            .rotate_refresh_token_reading_user(old, at, new, user)
            .await
    }
}

pub(crate) struct AnnouncedOrgs {
    pub(crate) inner: Arc<dyn OrgRepo>,
    pub(crate) announcer: Arc<Announcer>,
}

#[async_trait]
impl OrgRepo for AnnouncedOrgs {
    // The creator's `organizations` claim gains one.
    async fn create_org(&self, org: &Organization, creator: &Membership) -> Result<(), RepoError> {
        self.inner.create_org(org, creator).await?;
        self.announcer
            .announce(&[Change::User(creator.user_id)])
            .await;
        Ok(())
    }
    async fn find_org(&self, id: OrgId) -> Result<Option<Organization>, RepoError> {
        self.inner.find_org(id).await
    }
    async fn list_orgs(
        &self,
        status: Option<OrgStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Organization>, RepoError> {
        self.inner.list_orgs(status, limit, offset).await
    }
    // Every member's `organizations` claim shows the status.
    async fn set_status(
        &self,
        id: OrgId,
        expected: OrgStatus,
        new: OrgStatus,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        let moved = self.inner.set_status(id, expected, new, at).await?;
        if moved {
            self.announcer.announce(&[Change::Organization(id)]).await;
        }
        Ok(moved)
    }
    // Not in any claim: no announcement.
    async fn update_security(
        &self,
        id: OrgId,
        mfa_required_for: &[String],
        password_policy: &crate::password_policy::PasswordPolicy,
    ) -> Result<(), RepoError> {
        self.inner
            .update_security(id, mfa_required_for, password_policy)
            .await
    }
    async fn add_member(&self, m: &Membership) -> Result<(), RepoError> {
        self.inner.add_member(m).await?;
        self.announcer.announce(&[Change::User(m.user_id)]).await;
        Ok(())
    }
    async fn find_membership(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Membership>, RepoError> {
        self.inner.find_membership(org, user).await
    }
    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, RepoError> {
        self.inner.list_members(org).await
    }
    async fn memberships_of(&self, user: UserId) -> Result<Vec<Membership>, RepoError> {
        self.inner.memberships_of(user).await
    }
    async fn set_roles(&self, org: OrgId, user: UserId, roles: &[Role]) -> Result<bool, RepoError> {
        let existed = self.inner.set_roles(org, user, roles).await?;
        self.announcer.announce(&[Change::User(user)]).await;
        Ok(existed)
    }
    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<bool, RepoError> {
        let existed = self.inner.remove_member(org, user).await?;
        self.announcer.announce(&[Change::User(user)]).await;
        Ok(existed)
    }
}
