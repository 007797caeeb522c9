//! [`CredentialRepo`] on the `credentials` table.

use crate::entities::credentials::{self, KIND_PASSWORD};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{PasswordCredential, UserId};
use idp_core::ports::{CredentialRepo, RepoError};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

#[async_trait]
impl CredentialRepo for SeaStorage {
    async fn find_password(&self, user: UserId) -> Result<Option<PasswordCredential>, RepoError> {
        Ok(credentials::Entity::find()
            .filter(credentials::Column::UserId.eq(user.0))
            .filter(credentials::Column::Kind.eq(KIND_PASSWORD))
            .one(&self.db)
            .await
            .map_err(db_err)?
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
            .exec_without_returning(&self.db)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
