//! [`TokenFamilyRepo`] on `token_families` and `refresh_tokens`. The state
//! changes (rotation, revocation) are conditional updates whose affected-row
//! count says who won, so concurrent callers need no lock of their own.

use crate::entities::{refresh_tokens, token_families};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{RefreshTokenRecord, TokenFamily, TokenHash};
use idp_core::ports::{RepoError, TokenFamilyRepo};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use time::OffsetDateTime;
use uuid::Uuid;

#[async_trait]
impl TokenFamilyRepo for SeaStorage {
    async fn create_family(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
    ) -> Result<(), RepoError> {
        let family_row = token_families::ActiveModel::try_from(family)?;
        let txn = self.db.begin().await.map_err(db_err)?;
        token_families::Entity::insert(family_row)
            .exec_without_returning(&txn)
            .await
            .map_err(db_err)?;
        if let Some(token) = first_token {
            refresh_tokens::Entity::insert(refresh_tokens::ActiveModel::from(token))
                .exec_without_returning(&txn)
                .await
                .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)
    }

    async fn find_family(&self, id: Uuid) -> Result<Option<TokenFamily>, RepoError> {
        token_families::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(TokenFamily::try_from)
            .transpose()
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
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn revoke_families_of_session(
        &self,
        sid: &str,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64, RepoError> {
        let res = token_families::Entity::update_many()
            .col_expr(
                token_families::Column::RevokedAt,
                Expr::value(stored_time(at)),
            )
            .col_expr(token_families::Column::RevokedReason, Expr::value(reason))
            .filter(token_families::Column::Sid.eq(sid))
            .filter(token_families::Column::RevokedAt.is_null())
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected)
    }

    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<RefreshTokenRecord>, RepoError> {
        Ok(refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash.as_str()))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(RefreshTokenRecord::from))
    }

    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
    ) -> Result<bool, RepoError> {
        let txn = self.db.begin().await.map_err(db_err)?;
        // The compare-and-set: of concurrent rotations of `old`, the database
        // lets exactly one see `used_at IS NULL` (PostgreSQL re-checks the
        // condition after waiting for the row lock; SQLite runs one writer at
        // a time).
        let marked = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(stored_time(at)))
            .filter(refresh_tokens::Column::Id.eq(old))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if marked.rows_affected != 1 {
            txn.rollback().await.map_err(db_err)?;
            return Ok(false);
        }
        refresh_tokens::Entity::insert(refresh_tokens::ActiveModel::from(new))
            .exec_without_returning(&txn)
            .await
            .map_err(db_err)?;
        txn.commit().await.map_err(db_err)?;
        Ok(true)
    }
}
