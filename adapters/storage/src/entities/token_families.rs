//! `token_families`: grants; a chain of refresh tokens and what they stand for.

use idp_core::domain::{ClientId, TokenFamily, UserId};
use idp_core::ports::RepoError;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "token_families")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    #[sea_orm(column_type = "Text")]
    pub client_id: String,
    #[sea_orm(column_type = "Text")]
    pub scope: String,
    #[sea_orm(column_type = "Text", nullable, indexed)]
    pub sid: Option<String>,
    pub auth_time: TimeDateTimeWithTimeZone,
    #[sea_orm(column_type = "Text", nullable)]
    pub acr: Option<String>,
    /// JSON array of strings.
    #[sea_orm(column_type = "Text")]
    pub amr: String,
    pub created_at: TimeDateTimeWithTimeZone,
    pub expires_at: TimeDateTimeWithTimeZone,
    pub revoked_at: Option<TimeDateTimeWithTimeZone>,
    #[sea_orm(column_type = "Text", nullable)]
    pub revoked_reason: Option<String>,
    /// JSON `{"id_token": [...], "userinfo": [...]}`, NULL when none.
    #[sea_orm(column_type = "Text", nullable)]
    pub claims: Option<String>,
    /// JSON array of resource indicators (RFC 8707), NULL when none.
    #[sea_orm(column_type = "Text", nullable)]
    pub resources: Option<String>,
    /// Thumbprint of the DPoP key its refresh tokens are bound to.
    #[sea_orm(column_type = "Text", nullable)]
    pub dpop_jkt: Option<String>,
    #[sea_orm(belongs_to, from = "user_id", to = "id", on_delete = "Cascade")]
    pub user: BelongsTo<super::users::Entity>,
    #[sea_orm(has_many)]
    pub refresh_tokens: HasMany<super::refresh_tokens::Entity>,
}

impl ActiveModelBehavior for ActiveModel {}

impl TryFrom<&TokenFamily> for ActiveModel {
    type Error = RepoError;

    fn try_from(f: &TokenFamily) -> Result<Self, RepoError> {
        let amr = serde_json::to_string(&f.amr)
            .map_err(|e| RepoError::Corrupt(format!("token family {}: amr: {e}", f.id)))?;
        let claims =
            if f.claims.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&f.claims).map_err(|e| {
                    RepoError::Corrupt(format!("token family {}: claims: {e}", f.id))
                })?)
            };
        let resources = if f.resources.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&f.resources).map_err(|e| {
                RepoError::Corrupt(format!("token family {}: resources: {e}", f.id))
            })?)
        };
        Ok(Self {
            resources: Set(resources),
            dpop_jkt: Set(f.dpop_jkt.clone()),
            id: Set(f.id),
            user_id: Set(f.user_id.0),
            client_id: Set(f.client_id.0.clone()),
            scope: Set(f.scope.clone()),
            sid: Set(f.sid.clone()),
            auth_time: Set(crate::stored_time(f.auth_time)),
            acr: Set(f.acr.clone()),
            amr: Set(amr),
            created_at: Set(crate::stored_time(f.created_at)),
            expires_at: Set(crate::stored_time(f.expires_at)),
            revoked_at: Set(f.revoked_at.map(crate::stored_time)),
            revoked_reason: Set(f.revoked_reason.clone()),
            claims: Set(claims),
        })
    }
}

impl TryFrom<Model> for TokenFamily {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        let amr = serde_json::from_str(&m.amr).map_err(|e| {
            RepoError::Corrupt(format!("token_families {}: bad amr {:?}: {e}", m.id, m.amr))
        })?;
        let claims = match &m.claims {
            None => Default::default(),
            Some(c) => serde_json::from_str(c).map_err(|e| {
                RepoError::Corrupt(format!("token_families {}: bad claims {c:?}: {e}", m.id))
            })?,
        };
        let resources = match &m.resources {
            None => Vec::new(),
            Some(r) => serde_json::from_str(r).map_err(|e| {
                RepoError::Corrupt(format!("token_families {}: bad resources {r:?}: {e}", m.id))
            })?,
        };
        Ok(TokenFamily {
            resources,
            dpop_jkt: m.dpop_jkt,
            claims,
            id: m.id,
            user_id: UserId(m.user_id),
            client_id: ClientId(m.client_id),
            scope: m.scope,
            sid: m.sid,
            auth_time: m.auth_time,
            acr: m.acr,
            amr,
            created_at: m.created_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            revoked_reason: m.revoked_reason,
        })
    }
}
