//! `consents`: scopes a user granted a client, one row per (user, client).

use idp_core::domain::{ClientId, Consent, UserId};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub client_id: String,
    #[sea_orm(column_type = "Text")]
    pub scope: String,
    pub granted_at: TimeDateTimeWithTimeZone,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<&Consent> for ActiveModel {
    fn from(c: &Consent) -> Self {
        Self {
            user_id: Set(c.user_id.0),
            client_id: Set(c.client_id.0.clone()),
            scope: Set(c.scope.clone()),
            granted_at: Set(crate::stored_time(c.granted_at)),
        }
    }
}

impl From<Model> for Consent {
    fn from(m: Model) -> Self {
        Consent {
            user_id: UserId(m.user_id),
            client_id: ClientId(m.client_id),
            scope: m.scope,
            granted_at: m.granted_at,
        }
    }
}
