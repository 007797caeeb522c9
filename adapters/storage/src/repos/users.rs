//! [`UserRepo`] on the `users` table.

use crate::entities::{memberships, organizations, users};
use crate::{SeaStorage, db_err};
use async_trait::async_trait;
use idp_core::domain::{CustomerId, Email, Membership, Organization, Role, User, UserId};
use idp_core::ports::{RepoError, UserOrganizations, UserRepo};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryTrait};

#[async_trait]
impl UserRepo for SeaStorage {
    async fn create(&self, user: &User) -> Result<(), RepoError> {
        // One statement: a unique violation leaves nothing behind.
        users::Entity::insert(users::ActiveModel::from(user))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepoError> {
        let stmt = self.prebuilt(
            &self.sql.user_by_id,
            || users::Entity::find_by_id(uuid::Uuid::nil()).build(self.backend()),
            [id.0.into()],
        );
        let rows = users::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        crate::at_most_one(rows)?.map(User::try_from).transpose()
    }

    async fn find_with_organizations(
        &self,
        id: UserId,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError> {
        let stmt = self.prebuilt(
            &self.sql.user_and_organizations,
            || {
                users::Entity::find()
                    .filter(users::Column::Id.eq(uuid::Uuid::nil()))
                    .find_also_related(memberships::Entity)
                    .and_also_related(organizations::Entity)
                    .build(self.backend())
            },
            [id.0.into()],
        );
        self.user_with_organizations(stmt).await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError> {
        crate::unique_row(
            users::Entity::find().filter(users::Column::EmailNormalized.eq(email.normalized())),
            &self.db,
        )
        .await?
        .map(User::try_from)
        .transpose()
    }

    async fn find_by_customer_id(&self, id: &CustomerId) -> Result<Option<User>, RepoError> {
        crate::unique_row(
            users::Entity::find().filter(users::Column::CustomerId.eq(id.as_str())),
            &self.db,
        )
        .await?
        .map(User::try_from)
        .transpose()
    }

    async fn list(&self, limit: u64, offset: u64) -> Result<Vec<User>, RepoError> {
        self.oldest_first_page(
            users::Entity::find(),
            users::Column::CreatedAt,
            users::Column::Id,
            limit,
            offset,
        )
        .await
    }

    async fn set_last_method(&self, user: UserId, method: &str) -> Result<(), RepoError> {
        self.update_user(user, [(users::Column::LastMethod, Expr::value(method))])
            .await
    }

    async fn set_mfa_required(&self, user: UserId, required: bool) -> Result<(), RepoError> {
        self.update_user(user, [(users::Column::MfaRequired, Expr::value(required))])
            .await
    }

    async fn set_phone(
        &self,
        user: UserId,
        phone: Option<&str>,
        verified: bool,
    ) -> Result<(), RepoError> {
        self.update_user(
            user,
            [
                (users::Column::Phone, Expr::value(phone)),
                (users::Column::PhoneVerified, Expr::value(verified)),
            ],
        )
        .await
    }

    async fn set_email(
        &self,
        user: UserId,
        email: &Email,
        verified: bool,
    ) -> Result<(), RepoError> {
        // One statement: when another account holds the address, the unique
        // key on `email_normalized` refuses it and nothing changes.
        self.update_user(
            user,
            [
                (users::Column::Email, Expr::value(email.as_str())),
                (
                    users::Column::EmailNormalized,
                    Expr::value(email.normalized()),
                ),
                (users::Column::EmailVerified, Expr::value(verified)),
            ],
        )
        .await
    }

    async fn set_backup_email(&self, user: UserId, email: Option<&Email>) -> Result<(), RepoError> {
        self.update_user(
            user,
            [(
                users::Column::BackupEmail,
                Expr::value(email.map(Email::as_str)),
            )],
        )
        .await
    }

    async fn set_name(&self, user: UserId, name: Option<&str>) -> Result<(), RepoError> {
        self.update_user(user, [(users::Column::Name, Expr::value(name))])
            .await
    }
}

impl SeaStorage {
    /// Runs a select of users with their memberships and organizations (one
    /// row per membership, one with none when there are none: the user's
    /// columns repeat on each) and gives the user, if any, with their
    /// organizations and roles in the order they joined them.
    pub(crate) async fn user_with_organizations(
        &self,
        stmt: sea_orm::Statement,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError> {
        use sea_orm::{ConnectionTrait, FromQueryResult, IdenStatic, SelectA, SelectB, SelectC};
        let rows = self
            .db
            .query_all_raw(stmt)
            .await
            .map_err(db_err)?
            .iter()
            .map(|row| {
                Ok((
                    users::Model::from_query_result(row, SelectA.as_str())?,
                    memberships::Model::from_query_result_optional(row, SelectB.as_str())?,
                    organizations::Model::from_query_result_optional(row, SelectC.as_str())?,
                ))
            })
            .collect::<Result<Vec<_>, sea_orm::DbErr>>()
            .map_err(db_err)?;
        crate::at_most_one(users_with_organizations(rows)?)
    }

    /// Sets columns of one user in one statement. An unknown user changes
    /// nothing. The ports give no time, so `updated_at` is left as it is.
    async fn update_user(
        &self,
        user: UserId,
        values: impl IntoIterator<Item = (users::Column, Expr)>,
    ) -> Result<(), RepoError> {
        let mut update = users::Entity::update_many().filter(users::Column::Id.eq(user.0));
        for (col, value) in values {
            update = update.col_expr(col, value);
        }
        update.exec(&self.writer).await.map_err(db_err)?;
        Ok(())
    }
}

/// Users with their organizations and roles, from the rows of a select of
/// users joined with their memberships and organizations (one row per
/// membership, one with none when there are none: the user's columns repeat
/// on each), in the order the users first appear; each user's organizations
/// in the order they joined them.
pub(crate) fn users_with_organizations(
    rows: Vec<(
        users::Model,
        Option<memberships::Model>,
        Option<organizations::Model>,
    )>,
) -> Result<Vec<(User, UserOrganizations)>, RepoError> {
    let mut found: Vec<(users::Model, Vec<(Membership, Organization)>)> = Vec::new();
    for (user, membership, org) in rows {
        let at = match found.iter().position(|(u, _)| u.id == user.id) {
            Some(at) => at,
            None => {
                found.push((user, Vec::new()));
                found.len() - 1
            }
        };
        // A membership whose organization is gone is left out, as
        // `OrgRepo::find_org` would find nothing.
        if let (Some(m), Some(o)) = (membership, org) {
            found[at]
                .1
                .push((Membership::try_from(m)?, Organization::try_from(o)?));
        }
    }
    found
        .into_iter()
        .map(|(user, mut joined)| {
            // The order `OrgRepo::memberships_of` gives: joined first, then by id.
            joined.sort_by_key(|(m, _)| (m.created_at, m.org_id.0));
            let orgs = joined.into_iter().map(|(m, o)| (o, m.roles)).collect();
            Ok((User::try_from(user)?, orgs))
        })
        .collect()
}
