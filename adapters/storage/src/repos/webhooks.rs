//! [`WebhookRepo`] on the `webhook_deliveries` table.
//!
//! Claiming is a compare-and-set per row: candidates are read, then each is
//! leased by one conditional `UPDATE` (still pending, still free). Of several
//! nodes claiming at once, the database lets one update match each row
//! (PostgreSQL re-checks the condition after waiting for the row lock;
//! SQLite runs one writer at a time), so they get disjoint sets. Finishing a
//! delivery is conditional on its attempt count, so a worker whose lease ran
//! out cannot overwrite what the next holder recorded.

use crate::entities::webhook_deliveries::{self, millis};
use crate::{SeaStorage, db_err, stored_time};
use async_trait::async_trait;
use idp_core::ports::{RepoError, WebhookRepo};
use idp_core::webhooks::{DeliveryStatus, WebhookDelivery};
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use time::OffsetDateTime;
use uuid::Uuid;

use webhook_deliveries::Column as C;

#[async_trait]
impl WebhookRepo for SeaStorage {
    async fn enqueue(&self, deliveries: &[WebhookDelivery]) -> Result<(), RepoError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        // One statement: all rows or none.
        webhook_deliveries::Entity::insert_many(
            deliveries
                .iter()
                .map(webhook_deliveries::ActiveModel::from)
                .collect::<Vec<_>>(),
        )
        .exec_without_returning(&self.writer)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn claim_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, RepoError> {
        let now_ms = millis(now);
        let lease_ms = millis(lease_until);
        let free = || {
            Condition::any()
                .add(C::LeaseUntil.is_null())
                .add(C::LeaseUntil.lte(now_ms))
        };
        let candidates = webhook_deliveries::Entity::find()
            .filter(C::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(C::NextAttemptAt.lte(now_ms))
            .filter(free())
            .order_by_asc(C::NextAttemptAt)
            .order_by_asc(C::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for mut row in candidates {
            let res = webhook_deliveries::Entity::update_many()
                .col_expr(C::LeaseUntil, Expr::value(lease_ms))
                .filter(C::Id.eq(row.id))
                .filter(C::Status.eq(DeliveryStatus::Pending.as_str()))
                .filter(C::Attempts.eq(row.attempts))
                .filter(free())
                .exec(&self.writer)
                .await
                .map_err(db_err)?;
            if res.rows_affected == 1 {
                row.lease_until = Some(lease_ms);
                claimed.push(WebhookDelivery::try_from(row)?);
            }
        }
        Ok(claimed)
    }

    async fn mark_delivered(
        &self,
        id: Uuid,
        attempts: u32,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError> {
        let res = webhook_deliveries::Entity::update_many()
            .col_expr(C::Status, Expr::value(DeliveryStatus::Delivered.as_str()))
            .col_expr(C::Attempts, Expr::value(next_count(attempts)))
            .col_expr(C::DeliveredAt, Expr::value(stored_time(at)))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(C::Id.eq(id))
            .filter(C::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(C::Attempts.eq(count(attempts)))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn mark_failed(
        &self,
        id: Uuid,
        attempts: u32,
        error: &str,
        retry_at: Option<OffsetDateTime>,
    ) -> Result<bool, RepoError> {
        let mut update = webhook_deliveries::Entity::update_many()
            .col_expr(C::Attempts, Expr::value(next_count(attempts)))
            .col_expr(C::LastError, Expr::value(error))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None));
        update = match retry_at {
            Some(at) => update.col_expr(C::NextAttemptAt, Expr::value(millis(at))),
            None => update.col_expr(C::Status, Expr::value(DeliveryStatus::Failed.as_str())),
        };
        let res = update
            .filter(C::Id.eq(id))
            .filter(C::Status.eq(DeliveryStatus::Pending.as_str()))
            .filter(C::Attempts.eq(count(attempts)))
            .exec(&self.writer)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected == 1)
    }

    async fn list_deliveries(
        &self,
        status: Option<DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<WebhookDelivery>, RepoError> {
        let mut q = webhook_deliveries::Entity::find();
        if let Some(s) = status {
            q = q.filter(C::Status.eq(s.as_str()));
        }
        // Ids are UUID v7: their order is the creation order.
        q.order_by_desc(C::Id)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(WebhookDelivery::try_from)
            .collect()
    }
}

fn count(attempts: u32) -> i32 {
    i32::try_from(attempts).unwrap_or(i32::MAX)
}

fn next_count(attempts: u32) -> i32 {
    count(attempts).saturating_add(1)
}
