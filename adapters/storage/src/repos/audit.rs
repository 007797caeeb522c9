//! [`AuditRepo`] on the `audit_events` table.

use crate::entities::audit_events;
use crate::{SeaStorage, db_err};
use async_trait::async_trait;
use idp_core::domain::{AuditEvent, OrgId, UserId};
use idp_core::ports::{AuditRepo, RepoError};
use sea_orm::sea_query::Order;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

#[async_trait]
impl AuditRepo for SeaStorage {
    async fn record(&self, event: &AuditEvent) -> Result<(), RepoError> {
        audit_events::Entity::insert(audit_events::ActiveModel::try_from(event)?)
            .exec_without_returning(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_for_user(&self, user: UserId, limit: u64) -> Result<Vec<AuditEvent>, RepoError> {
        self.latest_events_by(audit_events::Column::UserId, user.0, limit)
            .await
    }

    async fn list_for_org(&self, org: OrgId, limit: u64) -> Result<Vec<AuditEvent>, RepoError> {
        self.latest_events_by(audit_events::Column::OrgId, org.0, limit)
            .await
    }
}

impl SeaStorage {
    /// The latest `limit` events whose `column` (user or organization) is
    /// `id`, newest first.
    async fn latest_events_by(
        &self,
        column: audit_events::Column,
        id: uuid::Uuid,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, RepoError> {
        audit_events::Entity::find()
            .filter(column.eq(id))
            .order_by(
                self.time_order((audit_events::Entity, audit_events::Column::At)),
                Order::Desc,
            )
            .order_by_desc(audit_events::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(AuditEvent::try_from)
            .collect()
    }
}
