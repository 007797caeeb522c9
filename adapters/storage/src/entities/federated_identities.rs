//! `federated_identities`: links between upstream identities and accounts.

use idp_core::domain::UserId;
use idp_core::federation::FederatedIdentity;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "federated_identities")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub upstream: String,
    #[sea_orm(column_type = "Text")]
    pub subject: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub email: Option<String>,
    pub created_at: TimeDateTimeWithTimeZone,
    pub last_used_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<&FederatedIdentity> for ActiveModel {
    fn from(f: &FederatedIdentity) -> Self {
        Self {
            id: Set(Uuid::now_v7()),
            user_id: Set(f.user_id.0),
            upstream: Set(f.upstream.clone()),
            subject: Set(f.subject.clone()),
            email: Set(f.email.clone()),
            created_at: Set(crate::stored_time(f.created_at)),
            last_used_at: Set(f.last_used_at.map(crate::stored_time)),
        }
    }
}

impl From<Model> for FederatedIdentity {
    fn from(m: Model) -> Self {
        FederatedIdentity {
            user_id: UserId(m.user_id),
            upstream: m.upstream,
            subject: m.subject,
            email: m.email,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        }
    }
}
