//! `signing_keys`: token signing keys, the private half encrypted.

use idp_core::domain::StoredSigningKey;
use sea_orm::ActiveValue::Set;
use sea_orm::entity::prelude::*;

// Compact format (no `#[sea_orm::model]`): that would generate a `ModelEx`
// needing a derived `Debug`, and `Model`'s `Debug` is written by hand below.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub kid: String,
    #[sea_orm(column_type = "Text")]
    pub alg: String,
    #[sea_orm(column_type = "Text")]
    pub private_jwe: String,
    #[sea_orm(column_type = "Text")]
    pub public_jwk: String,
    pub created_at: TimeDateTimeWithTimeZone,
    pub retired_at: Option<TimeDateTimeWithTimeZone>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

// Hand-written so the encrypted private key never reaches a log.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl From<&StoredSigningKey> for ActiveModel {
    fn from(k: &StoredSigningKey) -> Self {
        Self {
            kid: Set(k.kid.clone()),
            alg: Set(k.alg.clone()),
            private_jwe: Set(k.private_jwe.clone()),
            public_jwk: Set(k.public_jwk.clone()),
            created_at: Set(crate::stored_time(k.created_at)),
            retired_at: Set(k.retired_at.map(crate::stored_time)),
        }
    }
}

impl From<Model> for StoredSigningKey {
    fn from(m: Model) -> Self {
        StoredSigningKey {
            kid: m.kid,
            alg: m.alg,
            private_jwe: m.private_jwe,
            public_jwk: m.public_jwk,
            created_at: m.created_at,
            retired_at: m.retired_at,
        }
    }
}
