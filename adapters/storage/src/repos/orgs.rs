//! [`OrgRepo`] on `organizations` and `memberships`.
//!
//! A SIRET is unique among the organizations that are not rejected: the
//! partial unique index `uq_organizations_siret` enforces it, so a duplicate
//! is a unique violation ([`RepoError::Conflict`]) whichever node inserts it.
//! Status changes are conditional updates whose affected-row count says who
//! won.

use crate::entities::{memberships, organizations};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{Membership, OrgId, OrgStatus, Organization, Role, UserId};
use idp_core::password_policy::PasswordPolicy;
use idp_core::ports::{OrgRepo, RepoError};
use sea_orm::sea_query::{Expr, Order};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait};
use time::OffsetDateTime;

#[async_trait]
impl OrgRepo for SeaStorage {
    async fn create_org(&self, org: &Organization, creator: &Membership) -> Result<(), RepoError> {
        let org_row = organizations::ActiveModel::try_from(org)?;
        let txn = self.writer.begin().await.map_err(db_err)?;
        // On an error the transaction is dropped, which rolls it back: a
        // refused organization leaves no membership behind, and the reverse.
        organizations::Entity::insert(org_row)
            .exec_without_returning(&txn)
            .await
            .map_err(db_err)?;
        memberships::Entity::insert(memberships::ActiveModel::from(creator))
            .exec_without_returning(&txn)
            .await
            .map_err(db_err)?;
        txn.commit().await.map_err(db_err)
    }

    async fn find_org(&self, id: OrgId) -> Result<Option<Organization>, RepoError> {
        crate::unique_row(organizations::Entity::find_by_id(id.0), &self.db)
            .await?
            .map(Organization::try_from)
            .transpose()
    }

    async fn list_orgs(
        &self,
        status: Option<OrgStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Organization>, RepoError> {
        let mut query = organizations::Entity::find();
        if let Some(status) = status {
            query = query.filter(organizations::Column::Status.eq(status.as_str()));
        }
        self.oldest_first_page(
            query,
            organizations::Column::CreatedAt,
            organizations::Column::Id,
            limit,
            offset,
        )
        .await
    }

    async fn set_status(
        &self,
        id: OrgId,
        expected: OrgStatus,
        new: OrgStatus,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        // The compare-and-swap: of concurrent decisions, the database lets
        // exactly one see the expected status.
        let res = organizations::Entity::update_many()
            .col_expr(organizations::Column::Status, Expr::value(new.as_str()))
            .col_expr(
                organizations::Column::DecidedAt,
                Expr::value(stored_time(at)),
            )
            .filter(organizations::Column::Id.eq(id.0))
            .filter(organizations::Column::Status.eq(expected.as_str()))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn update_security(
        &self,
        id: OrgId,
        mfa_required_for: &[String],
        password_policy: &PasswordPolicy,
    ) -> Result<(), RepoError> {
        organizations::Entity::update_many()
            .col_expr(
                organizations::Column::MfaRequiredFor,
                Expr::value(organizations::mfa_required_for_json(mfa_required_for)?),
            )
            .col_expr(
                organizations::Column::PasswordPolicy,
                Expr::value(organizations::password_policy_json(password_policy)?),
            )
            .filter(organizations::Column::Id.eq(id.0))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn add_member(&self, m: &Membership) -> Result<(), RepoError> {
        // The primary key (org_id, user_id) refuses a second membership.
        memberships::Entity::insert(memberships::ActiveModel::from(m))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_membership(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<Membership>, RepoError> {
        crate::unique_row(memberships::Entity::find_by_id((org.0, user.0)), &self.db)
            .await?
            .map(Membership::try_from)
            .transpose()
    }

    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>, RepoError> {
        self.memberships_by(
            memberships::Column::OrgId,
            org.0,
            memberships::Column::UserId,
        )
        .await
    }

    async fn memberships_of(&self, user: UserId) -> Result<Vec<Membership>, RepoError> {
        // In the order the user joined them, so the first is stable.
        self.memberships_by(
            memberships::Column::UserId,
            user.0,
            memberships::Column::OrgId,
        )
        .await
    }

    async fn set_roles(&self, org: OrgId, user: UserId, roles: &[Role]) -> Result<bool, RepoError> {
        let res = memberships::Entity::update_many()
            .col_expr(
                memberships::Column::Roles,
                Expr::value(memberships::roles_json(roles)),
            )
            .filter(memberships::Column::OrgId.eq(org.0))
            .filter(memberships::Column::UserId.eq(user.0))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<bool, RepoError> {
        let res = memberships::Entity::delete_many()
            .filter(memberships::Column::OrgId.eq(org.0))
            .filter(memberships::Column::UserId.eq(user.0))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }
}

impl SeaStorage {
    /// The memberships whose `column` is `id` (one organization's, or one
    /// user's), oldest first (ties by `then`).
    async fn memberships_by(
        &self,
        column: memberships::Column,
        id: uuid::Uuid,
        then: memberships::Column,
    ) -> Result<Vec<Membership>, RepoError> {
        memberships::Entity::find()
            .filter(column.eq(id))
            .order_by(
                self.time_order((memberships::Entity, memberships::Column::CreatedAt)),
                Order::Asc,
            )
            .order_by_asc(then)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(Membership::try_from)
            .collect()
    }
}
