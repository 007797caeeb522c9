//! `registered_clients`: clients registered through RFC 7591 (file clients
//! are config). Deleted rows stay, with `deleted_at` set.

use idp_core::client::ClientSecretHash;
use idp_core::domain::ClientId;
use idp_core::ports::RepoError;
use idp_core::registration::RegisteredClient;
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "registered_clients")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub client_id: String,
    /// The client metadata, JSON.
    #[sea_orm(column_type = "Text")]
    pub metadata: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub secret_hash: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub registration_token_hash: String,
    pub enabled: bool,
    pub revision: i64,
    pub created_at: TimeDateTimeWithTimeZone,
    pub updated_at: TimeDateTimeWithTimeZone,
    pub deleted_at: Option<TimeDateTimeWithTimeZone>,
}

impl ActiveModelBehavior for ActiveModel {}

fn hash(s: &str) -> Result<ClientSecretHash, RepoError> {
    ClientSecretHash::parse(s).ok_or_else(|| RepoError::Corrupt("registered client hash".into()))
}

impl TryFrom<Model> for RegisteredClient {
    type Error = RepoError;

    fn try_from(m: Model) -> Result<Self, RepoError> {
        Ok(RegisteredClient {
            id: ClientId(m.client_id),
            metadata: serde_json::from_str(&m.metadata)
                .map_err(|e| RepoError::Corrupt(format!("registered client metadata: {e}")))?,
            secret_hash: m.secret_hash.as_deref().map(hash).transpose()?,
            registration_token_hash: hash(&m.registration_token_hash)?,
            enabled: m.enabled,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}
