//! [`DeviceRepo`] on the `known_devices` table.

use crate::entities::known_devices;
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::{KnownDevice, TokenHash, UserId};
use idp_core::ports::{DeviceRepo, RepoError};
use sea_orm::sea_query::{Expr, Order};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use time::OffsetDateTime;
use uuid::Uuid;

#[async_trait]
impl DeviceRepo for SeaStorage {
    async fn find_device(&self, token_hash: &TokenHash) -> Result<Option<KnownDevice>, RepoError> {
        Ok(crate::unique_row(
            known_devices::Entity::find()
                .filter(known_devices::Column::TokenHash.eq(token_hash.as_str())),
            &self.db,
        )
        .await?
        .map(KnownDevice::from))
    }

    async fn create_device(&self, device: &KnownDevice) -> Result<(), RepoError> {
        known_devices::Entity::insert(known_devices::ActiveModel::from(device))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn touch_device(&self, id: Uuid, at: OffsetDateTime) -> Result<(), RepoError> {
        // Whether the device is revoked is the caller's check (it found the
        // device first); an unknown id changes nothing.
        known_devices::Entity::update_many()
            .col_expr(
                known_devices::Column::LastSeenAt,
                Expr::value(stored_time(at)),
            )
            .filter(known_devices::Column::Id.eq(id))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn revoke_device(&self, id: Uuid, at: OffsetDateTime) -> Result<bool, RepoError> {
        // The first revocation's time is kept.
        let res = known_devices::Entity::update_many()
            .col_expr(
                known_devices::Column::RevokedAt,
                Expr::value(stored_time(at)),
            )
            .filter(known_devices::Column::Id.eq(id))
            .filter(known_devices::Column::RevokedAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn list_devices(&self, user: UserId) -> Result<Vec<KnownDevice>, RepoError> {
        Ok(known_devices::Entity::find()
            .filter(known_devices::Column::UserId.eq(user.0))
            .order_by(
                self.time_order((known_devices::Entity, known_devices::Column::LastSeenAt)),
                Order::Desc,
            )
            .order_by_desc(known_devices::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(KnownDevice::from)
            .collect())
    }
}
