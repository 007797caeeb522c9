//! What an access token of this provider stands for once validated, and
//! the admin API's audience. Read by the token service, the admin API and
//! the organizations service.

use crate::domain::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an access token stands for once validated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenInfo {
    pub client_id: String,
    /// User id, or the client id for client_credentials.
    pub sub: String,
    pub user_id: Option<UserId>,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub family_id: Option<Uuid>,
    /// Who the token is for: the client, and this provider's admin API when
    /// the token has the [`ADMIN_API_SCOPE`] scope.
    #[serde(default)]
    pub aud: Vec<String>,
    /// The `amr` of the authentication behind it (none for client
    /// credentials).
    #[serde(default)]
    pub amr: Vec<String>,
    /// Claims userinfo returns besides those of the scope (the `userinfo`
    /// member of the `claims` request parameter).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub userinfo_claims: Vec<String>,
    /// The thumbprint of the DPoP key it is bound to (`cnf.jkt`, RFC 9449 §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// The actor of a token obtained by token exchange (RFC 8693 §4.1):
    /// `{"sub": ...}`, nesting the previous actor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<serde_json::Value>,
}

impl AccessTokenInfo {
    /// Whether the token was issued for `audience`.
    pub fn is_for(&self, audience: &str) -> bool {
        self.aud.iter().any(|a| a == audience)
    }

    /// How long it lives, from issue to expiry (`expires_in` when issued).
    pub fn lifetime_secs(&self) -> u32 {
        u32::try_from(self.exp - self.iat).unwrap_or(0)
    }

    /// Whether the authentication behind it used two kinds of factor.
    pub fn is_multi_factor(&self) -> bool {
        self.amr.iter().any(|a| a == "mfa")
    }
}

/// The scope a client asks for to call this provider's admin API: its
/// access tokens then carry the admin API's audience too (clients list it
/// in their `scopes`).
pub const ADMIN_API_SCOPE: &str = "admin_api";

/// The admin API's audience (`aud`) for `issuer`.
pub fn admin_api_audience(issuer: &str) -> String {
    format!("{issuer}/admin/api")
}
