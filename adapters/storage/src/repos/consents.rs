//! [`ConsentRepo`] on the `consents` table.

use crate::entities::consents;
use crate::{SeaStorage, db_err};
use async_trait::async_trait;
use idp_core::domain::{ClientId, Consent, UserId};
use idp_core::ports::{ConsentRepo, RepoError};
use sea_orm::EntityTrait;
use sea_orm::sea_query::OnConflict;

#[async_trait]
impl ConsentRepo for SeaStorage {
    async fn find(&self, user: UserId, client: &ClientId) -> Result<Option<Consent>, RepoError> {
        Ok(crate::unique_row(
            consents::Entity::find_by_id((user.0, client.0.clone())),
            &self.db,
        )
        .await?
        .map(Consent::from))
    }

    async fn upsert(&self, consent: &Consent) -> Result<(), RepoError> {
        let on_conflict =
            OnConflict::columns([consents::Column::UserId, consents::Column::ClientId])
                .update_columns([consents::Column::Scope, consents::Column::GrantedAt])
                .to_owned();
        consents::Entity::insert(consents::ActiveModel::from(consent))
            .on_conflict(on_conflict)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
