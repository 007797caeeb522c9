//! [`FederatedIdentityRepo`] on the `federated_identities` table. The two
//! unique indexes make a second link of the same identity, or a second link
//! of one account at the same upstream, a [`RepoError::Conflict`].

use crate::entities::federated_identities;
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::domain::UserId;
use idp_core::federation::FederatedIdentity;
use idp_core::ports::{FederatedIdentityRepo, RepoError};
use sea_orm::sea_query::{Expr, Order};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use time::OffsetDateTime;

#[async_trait]
impl FederatedIdentityRepo for SeaStorage {
    async fn find_identity(
        &self,
        upstream: &str,
        subject: &str,
    ) -> Result<Option<FederatedIdentity>, RepoError> {
        // (upstream, subject) is a unique index.
        Ok(crate::unique_row(
            federated_identities::Entity::find()
                .filter(federated_identities::Column::Upstream.eq(upstream))
                .filter(federated_identities::Column::Subject.eq(subject)),
            &self.db,
        )
        .await?
        .map(FederatedIdentity::from))
    }

    async fn list_identities(&self, user: UserId) -> Result<Vec<FederatedIdentity>, RepoError> {
        Ok(federated_identities::Entity::find()
            .filter(federated_identities::Column::UserId.eq(user.0))
            .order_by(
                self.time_order((
                    federated_identities::Entity,
                    federated_identities::Column::CreatedAt,
                )),
                Order::Asc,
            )
            .order_by_asc(federated_identities::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(FederatedIdentity::from)
            .collect())
    }

    async fn create_identity(&self, identity: &FederatedIdentity) -> Result<(), RepoError> {
        federated_identities::Entity::insert(federated_identities::ActiveModel::from(identity))
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn delete_identity(&self, user: UserId, upstream: &str) -> Result<bool, RepoError> {
        let res = federated_identities::Entity::delete_many()
            .filter(federated_identities::Column::UserId.eq(user.0))
            .filter(federated_identities::Column::Upstream.eq(upstream))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected > 0)
    }

    async fn touch_identity(
        &self,
        upstream: &str,
        subject: &str,
        at: OffsetDateTime,
    ) -> Result<(), RepoError> {
        federated_identities::Entity::update_many()
            .col_expr(
                federated_identities::Column::LastUsedAt,
                Expr::value(stored_time(at)),
            )
            .filter(federated_identities::Column::Upstream.eq(upstream))
            .filter(federated_identities::Column::Subject.eq(subject))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
