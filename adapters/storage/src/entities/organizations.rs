//! `organizations`: customer companies. A SIRET is unique among the
//! organizations that are not rejected (partial unique index
//! `uq_organizations_siret`). The security settings are JSON text.

use idp_core::domain::{OrgId, OrgStatus, Organization, UserId};
use idp_core::password_policy::PasswordPolicy;
use idp_core::ports::RepoError;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// 14 digits, for a company domiciled in France.
    #[sea_orm(column_type = "Text", nullable)]
    pub siret: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[sea_orm(column_type = "Text")]
    pub country: String,
    /// [`OrgStatus::as_str`].
    #[sea_orm(column_type = "Text")]
    pub status: String,
    pub created_by: Uuid,
    pub created_at: TimeDateTimeWithTimeZone,
    pub decided_at: Option<TimeDateTimeWithTimeZone>,
    /// JSON array of authentication kinds.
    #[sea_orm(column_type = "Text")]
    pub mfa_required_for: String,
    /// JSON object: a [`PasswordPolicy`].
    #[sea_orm(column_type = "Text")]
    pub password_policy: String,
    #[sea_orm(belongs_to, from = "created_by", to = "id", on_delete = "Restrict")]
    pub creator: BelongsTo<super::users::Entity>,
    #[sea_orm(has_many)]
    pub memberships: HasMany<super::memberships::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

/// The stored form of [`Organization::mfa_required_for`].
pub fn mfa_required_for_json(kinds: &[String]) -> Result<String, RepoError> {
    serde_json::to_string(kinds)
        .map_err(|e| RepoError::Corrupt(format!("organization mfa_required_for: {e}")))
}

/// The stored form of [`Organization::password_policy`].
pub fn password_policy_json(policy: &PasswordPolicy) -> Result<String, RepoError> {
    serde_json::to_string(policy)
        .map_err(|e| RepoError::Corrupt(format!("organization password_policy: {e}")))
}

impl TryFrom<&Organization> for ActiveModel {
    type Error = RepoError;

    fn try_from(o: &Organization) -> Result<Self, RepoError> {
        Ok(Self {
            id: Set(o.id.0),
            name: Set(o.name.clone()),
            siret: Set(o.siret.clone()),
            country: Set(o.country.clone()),
            status: Set(o.status.as_str().to_owned()),
            created_by: Set(o.created_by.0),
            created_at: Set(crate::stored_time(o.created_at)),
            decided_at: Set(o.decided_at.map(crate::stored_time)),
            mfa_required_for: Set(mfa_required_for_json(&o.mfa_required_for)?),
            password_policy: Set(password_policy_json(&o.password_policy)?),
        })
    }
}

impl TryFrom<Model> for Organization {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let corrupt = |what: &str, value: &str| {
            RepoError::Corrupt(format!("organizations {}: bad {what} {value:?}", m.id))
        };
        let status = OrgStatus::parse(&m.status).ok_or_else(|| corrupt("status", &m.status))?;
        let mfa_required_for = serde_json::from_str(&m.mfa_required_for)
            .map_err(|_| corrupt("mfa_required_for", &m.mfa_required_for))?;
        let password_policy = serde_json::from_str(&m.password_policy)
            .map_err(|_| corrupt("password_policy", &m.password_policy))?;
        Ok(Organization {
            id: OrgId(m.id),
            name: m.name,
            siret: m.siret,
            country: m.country,
            status,
            created_by: UserId(m.created_by),
            created_at: m.created_at,
            decided_at: m.decided_at,
            mfa_required_for,
            password_policy,
        })
    }
}
