//! [`ClientStateRepo`] on the `client_states` table.

use crate::entities::client_states;
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{ClientId, ClientState};
use idp_core::ports::{ClientStateRepo, RepoError};
use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait;
use sea_orm::sea_query::OnConflict;
use time::OffsetDateTime;

#[async_trait]
impl ClientStateRepo for SeaStorage {
    async fn touch(&self, client: &ClientId, at: OffsetDateTime) -> Result<(), RepoError> {
        let at = stored_time(at);
        let row = client_states::ActiveModel {
            client_id: Set(client.0.clone()),
            first_seen_at: Set(at),
            last_token_at: Set(Some(at)),
        };
        // One statement: the first touch creates the row, later ones only move
        // `last_token_at`.
        let on_conflict = OnConflict::column(client_states::Column::ClientId)
            .update_column(client_states::Column::LastTokenAt)
            .to_owned();
        client_states::Entity::insert(row)
            .on_conflict(on_conflict)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find(&self, client: &ClientId) -> Result<Option<ClientState>, RepoError> {
        Ok(crate::unique_row(
            client_states::Entity::find_by_id(client.0.clone()),
            &self.db,
        )
        .await?
        .map(ClientState::from))
    }
}
