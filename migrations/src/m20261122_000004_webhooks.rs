//! The webhook outbox (`webhook_deliveries`): one row per event and
//! subscribed endpoint, written when the event happens and updated by the
//! delivery workers of every node.
//!
//! - `client_id` and `url` name the endpoint (its secret stays in
//!   configuration, never in the database); `payload` is the exact request
//!   body (JSON text).
//! - `status`: `pending` | `delivered` | `failed`.
//! - `next_attempt_at` and `lease_until` are Unix milliseconds (integers), so
//!   that "due" and "lease expired" compare exactly in SQL on both backends
//!   (SQLite keeps timestamps as text). A worker claims a pending, due row by
//!   setting `lease_until`; another node skips it until the lease expires.
//! - Index `(status, next_attempt_at)`: the workers' claim query.
//!
//! Every step is skipped when already done, so an interrupted run can be run
//! again.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .if_not_exists()
                    .col(pk_uuid(WebhookDeliveries::Id))
                    // The event's id: the `webhook-id` header, the same on
                    // every attempt and for every endpoint.
                    .col(uuid(WebhookDeliveries::EventId))
                    .col(text(WebhookDeliveries::EventType))
                    .col(text(WebhookDeliveries::ClientId))
                    .col(text(WebhookDeliveries::Url))
                    .col(text(WebhookDeliveries::Payload))
                    .col(text(WebhookDeliveries::Status))
                    .col(integer(WebhookDeliveries::Attempts))
                    // Unix milliseconds.
                    .col(big_integer(WebhookDeliveries::NextAttemptAt))
                    // Unix milliseconds; NULL when nobody holds it.
                    .col(big_integer_null(WebhookDeliveries::LeaseUntil))
                    .col(text_null(WebhookDeliveries::LastError))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        WebhookDeliveries::DeliveredAt,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(IDX_WEBHOOK_DELIVERIES_DUE)
                    .if_not_exists()
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(WebhookDeliveries::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

const IDX_WEBHOOK_DELIVERIES_DUE: &str = "idx_webhook_deliveries_due";

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EventId,
    EventType,
    ClientId,
    Url,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseUntil,
    LastError,
    CreatedAt,
    DeliveredAt,
}
