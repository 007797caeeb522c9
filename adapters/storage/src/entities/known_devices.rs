//! `known_devices`: browsers users signed in from, by the hash of their
//! device cookie.

use idp_core::domain::{KnownDevice, TokenHash, UserId};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "known_devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    #[sea_orm(column_type = "Text", unique)]
    pub token_hash: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub label: Option<String>,
    pub created_at: TimeDateTimeWithTimeZone,
    pub last_seen_at: TimeDateTimeWithTimeZone,
    pub revoked_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<&KnownDevice> for ActiveModel {
    fn from(d: &KnownDevice) -> Self {
        Self {
            id: Set(d.id),
            user_id: Set(d.user_id.0),
            token_hash: Set(d.token_hash.as_str().to_owned()),
            label: Set(d.label.clone()),
            created_at: Set(crate::stored_time(d.created_at)),
            last_seen_at: Set(crate::stored_time(d.last_seen_at)),
            revoked_at: Set(d.revoked_at.map(crate::stored_time)),
        }
    }
}

impl From<Model> for KnownDevice {
    fn from(m: Model) -> Self {
        KnownDevice {
            id: m.id,
            user_id: UserId(m.user_id),
            token_hash: TokenHash::from_stored(m.token_hash),
            label: m.label,
            created_at: m.created_at,
            last_seen_at: m.last_seen_at,
            revoked_at: m.revoked_at,
        }
    }
}
