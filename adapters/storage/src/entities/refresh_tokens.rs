//! `refresh_tokens`: the refresh tokens of a family, by hash only.

use idp_core::domain::{RefreshTokenRecord, TokenHash};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub family_id: Uuid,
    #[sea_orm(column_type = "Text", unique)]
    pub token_hash: String,
    pub created_at: TimeDateTimeWithTimeZone,
    pub expires_at: TimeDateTimeWithTimeZone,
    pub used_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(belongs_to, from = "family_id", to = "id", on_delete = "Cascade")]
    pub family: BelongsTo<super::token_families::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<&RefreshTokenRecord> for ActiveModel {
    fn from(r: &RefreshTokenRecord) -> Self {
        Self {
            id: Set(r.id),
            family_id: Set(r.family_id),
            token_hash: Set(r.token_hash.as_str().to_owned()),
            created_at: Set(crate::stored_time(r.created_at)),
            expires_at: Set(crate::stored_time(r.expires_at)),
            used_at: Set(r.used_at.map(crate::stored_time)),
        }
    }
}

impl From<Model> for RefreshTokenRecord {
    fn from(m: Model) -> Self {
        RefreshTokenRecord {
            id: m.id,
            family_id: m.family_id,
            token_hash: TokenHash::from_stored(m.token_hash),
            created_at: m.created_at,
            expires_at: m.expires_at,
            used_at: m.used_at,
        }
    }
}
