//! [`TokenFamilyRepo`] on `token_families` and `refresh_tokens`. The state
//! changes (rotation, revocation) are conditional updates whose affected-row
//! count says who won, so concurrent callers need no lock of their own.

use crate::entities::{memberships, organizations, refresh_tokens, token_families, users};
use crate::grant_writes::{GrantWrite, Outcome, UserCheck};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{
    Organization, RefreshTokenRecord, Role, TokenFamily, TokenHash, User, UserId,
};
use idp_core::ports::{RepoError, RotationWithUser, TokenFamilyRepo, UserOrganizations};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic, QueryFilter,
    QueryTrait, SelectA, SelectB, SelectC,
};
use time::OffsetDateTime;
use uuid::Uuid;

#[async_trait]
impl TokenFamilyRepo for SeaStorage {
    async fn create_family(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
    ) -> Result<(), RepoError> {
        self.grants
            .write(GrantWrite::Create {
                family: Box::new(token_families::ActiveModel::try_from(family)?),
                first: first_token.map(refresh_tokens::ActiveModel::from),
                user: None,
            })
            .await
            .map(|_| ())
    }

    async fn create_family_of_active_user(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
        with_organizations: bool,
    ) -> Result<Option<(User, Option<UserOrganizations>)>, RepoError> {
        let outcome = self
            .grants
            .write(GrantWrite::Create {
                family: Box::new(token_families::ActiveModel::try_from(family)?),
                first: first_token.map(refresh_tokens::ActiveModel::from),
                user: Some(UserCheck {
                    id: family.user_id.0,
                    with_organizations,
                }),
            })
            .await?;
        Ok(match outcome {
            Outcome::CreatedFor(found) => Some(*found),
            _ => None,
        })
    }

    async fn find_family(&self, id: Uuid) -> Result<Option<TokenFamily>, RepoError> {
        crate::unique_row(token_families::Entity::find_by_id(id), &self.db)
            .await?
            .map(TokenFamily::try_from)
            .transpose()
    }

    async fn find_user_of_unrevoked_family(&self, id: Uuid) -> Result<Option<User>, RepoError> {
        let stmt = self.prebuilt(
            &self.sql.user_of_unrevoked_family,
            || {
                users::Entity::find()
                    .inner_join(token_families::Entity)
                    .filter(token_families::Column::Id.eq(Uuid::nil()))
                    .filter(token_families::Column::RevokedAt.is_null())
                    .build(self.backend())
            },
            [id.into()],
        );
        let rows = users::Entity::find()
            .from_raw_sql(stmt)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        crate::at_most_one(rows)?.map(User::try_from).transpose()
    }

    async fn find_user_and_organizations_of_unrevoked_family(
        &self,
        id: Uuid,
    ) -> Result<Option<(User, Vec<(Organization, Vec<Role>)>)>, RepoError> {
        // One row per membership (one with none when there are none): the
        // user's columns repeat on each.
        let stmt = self.prebuilt(
            &self.sql.user_and_organizations_of_unrevoked_family,
            || {
                users::Entity::find()
                    .inner_join(token_families::Entity)
                    .filter(token_families::Column::Id.eq(Uuid::nil()))
                    .filter(token_families::Column::RevokedAt.is_null())
                    .find_also_related(memberships::Entity)
                    .and_also_related(organizations::Entity)
                    .build(self.backend())
            },
            [id.into()],
        );
        self.user_with_organizations(stmt).await
    }

    async fn revoke_family(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool, RepoError> {
        let res = token_families::Entity::update_many()
            .col_expr(
                token_families::Column::RevokedAt,
                Expr::value(stored_time(at)),
            )
            .col_expr(token_families::Column::RevokedReason, Expr::value(reason))
            .filter(token_families::Column::Id.eq(id))
            .filter(token_families::Column::RevokedAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn revoke_families_of_session(
        &self,
        sid: &str,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<Vec<Uuid>, RepoError> {
        let revoked = token_families::Entity::update_many()
            .col_expr(
                token_families::Column::RevokedAt,
                Expr::value(stored_time(at)),
            )
            .col_expr(token_families::Column::RevokedReason, Expr::value(reason))
            .filter(token_families::Column::Sid.eq(sid))
            .filter(token_families::Column::RevokedAt.is_null())
            .exec_with_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(revoked.into_iter().map(|f| f.id).collect())
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<RefreshTokenRecord>, RepoError> {
        Ok(crate::unique_row(
            refresh_tokens::Entity::find()
                .filter(refresh_tokens::Column::TokenHash.eq(hash.as_str())),
            &self.db,
        )
        .await?
        .map(RefreshTokenRecord::from))
    }

    async fn find_refresh_token_grant(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<(RefreshTokenRecord, TokenFamily, User)>, RepoError> {
        // `token_hash` is unique: one row at most (no `LIMIT`, see `unique_row`).
        let stmt = self.prebuilt(
            &self.sql.refresh_token_grant,
            || {
                refresh_tokens::Entity::find()
                    .filter(refresh_tokens::Column::TokenHash.eq(""))
                    .find_also_related(token_families::Entity)
                    .and_also_related(users::Entity)
                    .build(self.backend())
            },
            [hash.as_str().into()],
        );
        let Some(row) = crate::at_most_one(self.db.query_all_raw(stmt).await.map_err(db_err)?)?
        else {
            return Ok(None);
        };
        // Decoded as sea-orm decodes what it selects this way: each entity's
        // columns under its alias prefix.
        let decode = || -> Result<_, sea_orm::DbErr> {
            Ok((
                refresh_tokens::Model::from_query_result(&row, SelectA.as_str())?,
                token_families::Model::from_query_result_optional(&row, SelectB.as_str())?,
                users::Model::from_query_result_optional(&row, SelectC.as_str())?,
            ))
        };
        // The foreign keys (ON DELETE CASCADE) leave no token without its
        // family and user; a row without them is treated as absent.
        let (token, Some(family), Some(user)) = decode().map_err(db_err)? else {
            return Ok(None);
        };
        Ok(Some((
            RefreshTokenRecord::from(token),
            TokenFamily::try_from(family)?,
            User::try_from(user)?,
        )))
    }

    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
    ) -> Result<bool, RepoError> {
        // The compare-and-set (`used_at IS NULL`) and the insert, grouped
        // with other grant writes (see `grant_writes`).
        self.grants
            .write(GrantWrite::Rotate {
                old,
                at,
                next: refresh_tokens::ActiveModel::from(new),
                user: None,
            })
            .await
            .map(|o| matches!(o, Outcome::Rotated(true)))
    }

    async fn rotate_refresh_token_reading_user(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
        user: UserId,
    ) -> Result<RotationWithUser, RepoError> {
        let outcome = self
            .grants
            .write(GrantWrite::Rotate {
                old,
                at,
                next: refresh_tokens::ActiveModel::from(new),
                user: Some(UserCheck {
                    id: user.0,
                    with_organizations: true,
                }),
            })
            .await?;
        Ok(match outcome {
            Outcome::RotatedFor(found) => RotationWithUser::Won(found.map(|f| {
                let (user, orgs) = *f;
                Box::new((user, orgs.unwrap_or_default()))
            })),
            _ => RotationWithUser::Lost,
        })
    }
}
