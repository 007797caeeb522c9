//! `webhook_deliveries`: the webhook outbox. `next_attempt_at` and
//! `lease_until` are Unix milliseconds, so they compare exactly in SQL on
//! both backends.

use idp_core::domain::ClientId;
use idp_core::ports::RepoError;
use idp_core::webhooks::{DeliveryStatus, WebhookDelivery, WebhookEventType};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;
use time::OffsetDateTime;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub event_id: Uuid,
    /// [`WebhookEventType::as_str`].
    #[sea_orm(column_type = "Text")]
    pub event_type: String,
    #[sea_orm(column_type = "Text")]
    pub client_id: String,
    #[sea_orm(column_type = "Text")]
    pub url: String,
    /// The request body (JSON text).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// [`DeliveryStatus::as_str`].
    #[sea_orm(column_type = "Text")]
    pub status: String,
    pub attempts: i32,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    /// Unix milliseconds.
    pub lease_until: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub created_at: TimeDateTimeWithTimeZone,
    pub delivered_at: Option<TimeDateTimeWithTimeZone>,
}

impl ActiveModelBehavior for ActiveModel {}

/// How a scheduling instant is stored: Unix milliseconds.
pub fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64, id: Uuid) -> Result<OffsetDateTime, RepoError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| RepoError::Corrupt(format!("webhook_deliveries {id}: bad time {ms}: {e}")))
}

impl From<&WebhookDelivery> for ActiveModel {
    fn from(d: &WebhookDelivery) -> Self {
        Self {
            id: Set(d.id),
            event_id: Set(d.event_id),
            event_type: Set(d.event_type.as_str().to_owned()),
            client_id: Set(d.client_id.0.clone()),
            url: Set(d.url.clone()),
            payload: Set(d.payload.clone()),
            status: Set(d.status.as_str().to_owned()),
            attempts: Set(i32::try_from(d.attempts).unwrap_or(i32::MAX)),
            next_attempt_at: Set(millis(d.next_attempt_at)),
            lease_until: Set(d.lease_until.map(millis)),
            last_error: Set(d.last_error.clone()),
            created_at: Set(crate::stored_time(d.created_at)),
            delivered_at: Set(d.delivered_at.map(crate::stored_time)),
        }
    }
}

impl TryFrom<Model> for WebhookDelivery {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let corrupt = |what: &str, v: &str| {
            RepoError::Corrupt(format!("webhook_deliveries {}: bad {what} {v:?}", m.id))
        };
        Ok(WebhookDelivery {
            id: m.id,
            event_id: m.event_id,
            event_type: WebhookEventType::parse_stored(&m.event_type)
                .ok_or_else(|| corrupt("event_type", &m.event_type))?,
            client_id: ClientId(m.client_id.clone()),
            url: m.url.clone(),
            payload: m.payload.clone(),
            status: DeliveryStatus::parse(&m.status).ok_or_else(|| corrupt("status", &m.status))?,
            attempts: u32::try_from(m.attempts)
                .map_err(|_| corrupt("attempts", &m.attempts.to_string()))?,
            next_attempt_at: from_millis(m.next_attempt_at, m.id)?,
            lease_until: m.lease_until.map(|l| from_millis(l, m.id)).transpose()?,
            last_error: m.last_error,
            created_at: m.created_at,
            delivered_at: m.delivered_at,
        })
    }
}
