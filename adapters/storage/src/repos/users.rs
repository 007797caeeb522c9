//! [`UserRepo`] on the `users` table.

use crate::entities::users;
use crate::{SeaStorage, db_err};
use async_trait::async_trait;
use idp_core::domain::{CustomerId, Email, User, UserId};
use idp_core::ports::{RepoError, UserRepo};
use sea_orm::sea_query::Order;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

#[async_trait]
impl UserRepo for SeaStorage {
    async fn create(&self, user: &User) -> Result<(), RepoError> {
        // One statement: a unique violation leaves nothing behind.
        users::Entity::insert(users::ActiveModel::from(user))
            .exec_without_returning(&self.db)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepoError> {
        users::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError> {
        users::Entity::find()
            .filter(users::Column::EmailNormalized.eq(email.normalized()))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn find_by_customer_id(&self, id: &CustomerId) -> Result<Option<User>, RepoError> {
        users::Entity::find()
            .filter(users::Column::CustomerId.eq(id.as_str()))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(User::try_from)
            .transpose()
    }

    async fn list(&self, limit: u64, offset: u64) -> Result<Vec<User>, RepoError> {
        users::Entity::find()
            .order_by(
                self.time_order((users::Entity, users::Column::CreatedAt)),
                Order::Asc,
            )
            .order_by_asc(users::Column::Id)
            .limit(limit)
            .offset(offset)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(User::try_from)
            .collect()
    }
}
