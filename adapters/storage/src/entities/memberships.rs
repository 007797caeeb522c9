//! `memberships`: which user belongs to which organization, one row per
//! (organization, user), with the member's roles as a JSON array of
//! [`Role::as_str`] names.

use idp_core::domain::{Membership, OrgId, Role, UserId};
use idp_core::ports::RepoError;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "memberships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub org_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false, indexed)]
    pub user_id: Uuid,
    /// JSON array of role names.
    #[sea_orm(column_type = "Text")]
    pub roles: String,
    /// When the user joined.
    pub created_at: TimeDateTimeWithTimeZone,
    #[sea_orm(belongs_to, from = "org_id", to = "id", on_delete = "Cascade")]
    pub organization: BelongsTo<super::organizations::Entity>,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

/// The stored form of [`Membership::roles`].
pub fn roles_json(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

impl From<&Membership> for ActiveModel {
    fn from(m: &Membership) -> Self {
        Self {
            org_id: Set(m.org_id.0),
            user_id: Set(m.user_id.0),
            roles: Set(roles_json(&m.roles)),
            created_at: Set(crate::stored_time(m.created_at)),
        }
    }
}

impl TryFrom<Model> for Membership {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let corrupt = || {
            RepoError::Corrupt(format!(
                "memberships ({}, {}): bad roles {:?}",
                m.org_id, m.user_id, m.roles
            ))
        };
        let names: Vec<String> = serde_json::from_str(&m.roles).map_err(|_| corrupt())?;
        let roles = names
            .iter()
            .map(|n| Role::parse(n))
            .collect::<Option<Vec<Role>>>()
            .ok_or_else(corrupt)?;
        Ok(Membership {
            org_id: OrgId(m.org_id),
            user_id: UserId(m.user_id),
            roles,
            created_at: m.created_at,
        })
    }
}
