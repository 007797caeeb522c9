//! A checked authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1):
//! the data a login flow carries and the code resumes. The checks that make
//! one are in `oidc::authorize`.

use serde::{Deserialize, Serialize};

/// `prompt` values we act on (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
}

/// A checked authorization request: everything the login flow and the code
/// need, nothing raw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Granted scope values, in request order, de-duplicated.
    pub scope: Vec<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// S256 challenge (the only method we accept).
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
    pub ui_locales: Option<String>,
    pub id_token_hint: Option<String>,
    pub acr_values: Vec<String>,
}

impl AuthorizeRequest {
    pub fn scope_string(&self) -> String {
        self.scope.join(" ")
    }

    pub fn is_openid(&self) -> bool {
        self.scope.iter().any(|s| s == "openid")
    }
}
