//! `credentials`: authentication credentials of users, one row per credential,
//! told apart by `kind`. A user has at most one `password` row (partial unique
//! index `uq_credentials_password_user`); other kinds may have several.
//!
//! The password has its own conversion ([`PasswordCredential`]); every other
//! kind converts to [`StoredCredential`].

use idp_core::domain::{PasswordCredential, StoredCredential, UserId};
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

/// `kind` of a password credential; `secret` holds its argon2 PHC string.
pub const KIND_PASSWORD: &str = "password";

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "credentials")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `password`, `totp`, `webauthn`, `recovery_code`.
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub label: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub secret: String,
    pub created_at: TimeDateTimeWithTimeZone,
    pub updated_at: TimeDateTimeWithTimeZone,
    pub last_used_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<Model> for PasswordCredential {
    fn from(m: Model) -> Self {
        PasswordCredential {
            user_id: UserId(m.user_id),
            phc: m.secret,
            updated_at: m.updated_at,
        }
    }
}

impl From<&StoredCredential> for ActiveModel {
    /// A new row: `updated_at` starts at `created_at`.
    fn from(c: &StoredCredential) -> Self {
        let created_at = crate::stored_time(c.created_at);
        Self {
            id: Set(c.id),
            user_id: Set(c.user_id.0),
            kind: Set(c.kind.clone()),
            label: Set(c.label.clone()),
            secret: Set(c.secret.clone()),
            created_at: Set(created_at),
            updated_at: Set(created_at),
            last_used_at: Set(c.last_used_at.map(crate::stored_time)),
        }
    }
}

impl From<Model> for StoredCredential {
    fn from(m: Model) -> Self {
        StoredCredential {
            id: m.id,
            user_id: UserId(m.user_id),
            kind: m.kind,
            label: m.label,
            secret: m.secret,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
        }
    }
}
