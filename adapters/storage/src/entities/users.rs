//! `users`: accounts.

use idp_core::domain::{CustomerId, Email, User, UserId, UserStatus};
use idp_core::ports::RepoError;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text", unique)]
    pub customer_id: String,
    /// As typed.
    #[sea_orm(column_type = "Text")]
    pub email: String,
    /// Lower-cased lookup key ([`Email::normalized`]).
    #[sea_orm(column_type = "Text", unique)]
    pub email_normalized: String,
    pub email_verified: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub name: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub locale: Option<String>,
    /// [`UserStatus::as_str`].
    #[sea_orm(column_type = "Text")]
    pub status: String,
    /// E.164 mobile number.
    #[sea_orm(column_type = "Text", nullable)]
    pub phone: Option<String>,
    pub phone_verified: bool,
    pub mfa_required: bool,
    /// Step kind of the login method passed last.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_method: Option<String>,
    /// Second address for account notices, as typed (never a login key).
    #[sea_orm(column_type = "Text", nullable)]
    pub backup_email: Option<String>,
    pub created_at: TimeDateTimeWithTimeZone,
    pub updated_at: TimeDateTimeWithTimeZone,
    #[sea_orm(has_many)]
    pub credentials: HasMany<super::credentials::Entity>,
    #[sea_orm(has_many)]
    pub token_families: HasMany<super::token_families::Entity>,
    #[sea_orm(has_many)]
    pub consents: HasMany<super::consents::Entity>,
    #[sea_orm(has_many)]
    pub known_devices: HasMany<super::known_devices::Entity>,
    #[sea_orm(has_many)]
    pub memberships: HasMany<super::memberships::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl From<&User> for ActiveModel {
    fn from(u: &User) -> Self {
        Self {
            id: Set(u.id.0),
            customer_id: Set(u.customer_id.as_str().to_owned()),
            email: Set(u.email.as_str().to_owned()),
            email_normalized: Set(u.email.normalized()),
            email_verified: Set(u.email_verified),
            name: Set(u.name.clone()),
            locale: Set(u.locale.clone()),
            status: Set(u.status.as_str().to_owned()),
            phone: Set(u.phone.clone()),
            phone_verified: Set(u.phone_verified),
            mfa_required: Set(u.mfa_required),
            last_method: Set(u.last_method.clone()),
            backup_email: Set(u.backup_email.as_ref().map(|e| e.as_str().to_owned())),
            created_at: Set(crate::stored_time(u.created_at)),
            updated_at: Set(crate::stored_time(u.updated_at)),
        }
    }
}

impl TryFrom<Model> for User {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let corrupt = |what: &str, value: &str| {
            RepoError::Corrupt(format!("users {}: bad {what} {value:?}", m.id))
        };
        let email = Email::parse(&m.email).map_err(|_| corrupt("email", &m.email))?;
        let customer_id = CustomerId::parse(&m.customer_id)
            .ok_or_else(|| corrupt("customer_id", &m.customer_id))?;
        let backup_email = m
            .backup_email
            .as_deref()
            .map(|b| Email::parse(b).map_err(|_| corrupt("backup_email", b)))
            .transpose()?;
        let status = UserStatus::parse(&m.status).ok_or_else(|| corrupt("status", &m.status))?;
        Ok(User {
            id: UserId(m.id),
            customer_id,
            email,
            email_verified: m.email_verified,
            name: m.name,
            locale: m.locale,
            status,
            phone: m.phone,
            phone_verified: m.phone_verified,
            mfa_required: m.mfa_required,
            last_method: m.last_method,
            backup_email,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}
