//! `audit_events`: the audit trail. `user_id` and `org_id` have no foreign
//! key: events outlive the users and organizations they are about.

use idp_core::domain::{AuditEvent, ClientId, OrgId, UserId};
use idp_core::ports::RepoError;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub at: TimeDateTimeWithTimeZone,
    #[sea_orm(column_type = "Text")]
    pub kind: String,
    pub user_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub client_id: Option<String>,
    pub org_id: Option<Uuid>,
    #[sea_orm(column_type = "Text", nullable)]
    pub ip: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub user_agent: Option<String>,
    /// JSON text.
    #[sea_orm(column_type = "Text")]
    pub detail: String,
}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<&AuditEvent> for ActiveModel {
    type Error = RepoError;

    fn try_from(e: &AuditEvent) -> Result<Self, RepoError> {
        let detail = serde_json::to_string(&e.detail)
            .map_err(|err| RepoError::Corrupt(format!("audit event {}: detail: {err}", e.id)))?;
        Ok(Self {
            id: Set(e.id),
            at: Set(crate::stored_time(e.at)),
            kind: Set(e.kind.clone()),
            user_id: Set(e.user_id.map(|u| u.0)),
            client_id: Set(e.client_id.as_ref().map(|c| c.0.clone())),
            org_id: Set(e.org_id.map(|o| o.0)),
            ip: Set(e.ip.clone()),
            user_agent: Set(e.user_agent.clone()),
            detail: Set(detail),
        })
    }
}

impl TryFrom<Model> for AuditEvent {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let detail = serde_json::from_str(&m.detail)
            .map_err(|e| RepoError::Corrupt(format!("audit_events {}: bad detail: {e}", m.id)))?;
        Ok(AuditEvent {
            id: m.id,
            at: m.at,
            kind: m.kind,
            user_id: m.user_id.map(UserId),
            client_id: m.client_id.map(ClientId),
            org_id: m.org_id.map(OrgId),
            ip: m.ip,
            user_agent: m.user_agent,
            detail,
        })
    }
}
