//! [`CredentialRepo`] on the `credentials` table.
//!
//! The password (`kind = 'password'`, at most one per user) goes through
//! `find_password`/`set_password`; the other methods work on any kind and
//! return a password row only when asked for that kind or its id.

use crate::entities::credentials::{self, KIND_PASSWORD};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{PasswordCredential, StoredCredential, UserId};
use idp_core::ports::{CredentialRepo, RepoError};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict, Order};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use time::OffsetDateTime;
use uuid::Uuid;

#[async_trait]
impl CredentialRepo for SeaStorage {
    async fn find_password(&self, user: UserId) -> Result<Option<PasswordCredential>, RepoError> {
        Ok(crate::unique_row(
            credentials::Entity::find()
                .filter(credentials::Column::UserId.eq(user.0))
                .filter(credentials::Column::Kind.eq(KIND_PASSWORD)),
            &self.db,
        )
        .await?
        .map(PasswordCredential::from))
    }

    async fn set_password(&self, cred: &PasswordCredential) -> Result<(), RepoError> {
        let at = stored_time(cred.updated_at);
        let row = credentials::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(cred.user_id.0),
            kind: Set(KIND_PASSWORD.to_owned()),
            label: Set(None),
            secret: Set(cred.phc.clone()),
            created_at: Set(at),
            updated_at: Set(at),
            last_used_at: NotSet,
        };
        // One statement, so two concurrent calls cannot both insert. The
        // conflict target is the partial unique index
        // `uq_credentials_password_user`; its predicate must be written out
        // literally for either backend to match it.
        let on_conflict = OnConflict::column(credentials::Column::UserId)
            .target_and_where(Expr::cust("kind = 'password'"))
            .update_columns([credentials::Column::Secret, credentials::Column::UpdatedAt])
            .to_owned();
        credentials::Entity::insert(row)
            .on_conflict(on_conflict)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_credentials(
        &self,
        user: UserId,
        kind: &str,
    ) -> Result<Vec<StoredCredential>, RepoError> {
        Ok(credentials::Entity::find()
            .filter(credentials::Column::UserId.eq(user.0))
            .filter(credentials::Column::Kind.eq(kind))
            .order_by(
                self.time_order((credentials::Entity, credentials::Column::CreatedAt)),
                Order::Asc,
            )
            .order_by_asc(credentials::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(StoredCredential::from)
            .collect())
    }

    async fn find_credential(&self, id: Uuid) -> Result<Option<StoredCredential>, RepoError> {
        Ok(
            crate::unique_row(credentials::Entity::find_by_id(id), &self.db)
                .await?
                .map(StoredCredential::from),
        )
    }

    async fn create_credential(&self, cred: &StoredCredential) -> Result<(), RepoError> {
        // A second password of a user hits `uq_credentials_password_user`
        // (a conflict), as does an id already taken.
        credentials::Entity::insert(credentials::ActiveModel::from(cred))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn update_credential_secret(
        &self,
        id: Uuid,
        expected: &str,
        new_secret: &str,
        used_at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        // The compare-and-set: one conditional statement, so of concurrent
        // callers holding the same `expected` the database lets exactly one
        // match (PostgreSQL re-checks the condition after waiting for the row
        // lock; SQLite runs one writer at a time).
        let at = stored_time(used_at);
        let res = credentials::Entity::update_many()
            .col_expr(credentials::Column::Secret, Expr::value(new_secret))
            .col_expr(credentials::Column::LastUsedAt, Expr::value(at))
            .col_expr(credentials::Column::UpdatedAt, Expr::value(at))
            .filter(credentials::Column::Id.eq(id))
            .filter(credentials::Column::Secret.eq(expected))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn rename_credential(&self, id: Uuid, label: &str) -> Result<(), RepoError> {
        // The port gives no time, so `updated_at` (which tracks the secret)
        // is left alone; an unknown id changes nothing.
        credentials::Entity::update_many()
            .col_expr(credentials::Column::Label, Expr::value(label))
            .filter(credentials::Column::Id.eq(id))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn delete_credential(&self, id: Uuid) -> Result<bool, RepoError> {
        let res = credentials::Entity::delete_by_id(id)
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn delete_credentials_of_kind(&self, user: UserId, kind: &str) -> Result<u64, RepoError> {
        let res = credentials::Entity::delete_many()
            .filter(credentials::Column::UserId.eq(user.0))
            .filter(credentials::Column::Kind.eq(kind))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected)
    }
}
