//! `client_states`: runtime state of registered clients (the registration
//! itself is config).

use idp_core::domain::{ClientId, ClientState};
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_states")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub client_id: String,
    pub first_seen_at: TimeDateTimeWithTimeZone,
    pub last_token_at: Option<TimeDateTimeWithTimeZone>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<Model> for ClientState {
    fn from(m: Model) -> Self {
        ClientState {
            client_id: ClientId(m.client_id),
            first_seen_at: m.first_seen_at,
            last_token_at: m.last_token_at,
        }
    }
}
