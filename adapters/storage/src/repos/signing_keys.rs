//! [`SigningKeyRepo`] on the `signing_keys` table.

use crate::entities::signing_keys;
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::StoredSigningKey;
use idp_core::ports::{RepoError, SigningKeyRepo};
use sea_orm::sea_query::{Expr, Order};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use time::OffsetDateTime;

#[async_trait]
impl SigningKeyRepo for SeaStorage {
    async fn list(&self) -> Result<Vec<StoredSigningKey>, RepoError> {
        Ok(signing_keys::Entity::find()
            .order_by(
                self.time_order((signing_keys::Entity, signing_keys::Column::CreatedAt)),
                Order::Asc,
            )
            .order_by_asc(signing_keys::Column::Kid)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(StoredSigningKey::from)
            .collect())
    }

    async fn create(&self, key: &StoredSigningKey) -> Result<(), RepoError> {
        signing_keys::Entity::insert(signing_keys::ActiveModel::from(key))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn retire(&self, kid: &str, at: OffsetDateTime) -> Result<(), RepoError> {
        // A key already retired keeps its first retirement time; an unknown
        // kid changes nothing.
        signing_keys::Entity::update_many()
            .col_expr(
                signing_keys::Column::RetiredAt,
                Expr::value(stored_time(at)),
            )
            .filter(signing_keys::Column::Kid.eq(kid))
            .filter(signing_keys::Column::RetiredAt.is_null())
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
