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
    /// How the response goes back (`query` unless the request names another
    /// mode the client may use).
    #[serde(default)]
    pub response_mode: ResponseMode,
    /// Claims named by the `claims` parameter (OpenID Connect Core §5.5).
    #[serde(default)]
    pub claims: crate::domain::RequestedClaims,
    /// The resources the token is for (RFC 8707 §2), checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The DPoP key the code is bound to (`dpop_jkt`, or the key of a proof
    /// sent to the PAR endpoint; RFC 9449 §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
    /// The device authorization (RFC 8628) this login is for: its record's
    /// id. Such a login ends at the user-code page's approval, never in a
    /// code sent to a redirect URI (see `oidc::device`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl AuthorizeRequest {
    pub fn scope_string(&self) -> String {
        self.scope.join(" ")
    }

    pub fn is_openid(&self) -> bool {
        self.scope.iter().any(|s| s == "openid")
    }
}

/// A `response_mode` value.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    /// The parameters in the redirect's query (the default of `code`).
    #[default]
    Query,
    /// The parameters posted to the redirect URI by a self-submitting form.
    FormPost,
    /// JARM in the query (`query.jwt`; `jwt` means the same for `code`, JARM §2.3.4).
    QueryJwt,
    /// JARM posted by a self-submitting form (`form_post.jwt`).
    FormPostJwt,
}

impl ResponseMode {
    pub const ALL: [ResponseMode; 4] = [
        ResponseMode::Query,
        ResponseMode::FormPost,
        ResponseMode::QueryJwt,
        ResponseMode::FormPostJwt,
    ];

    /// The modes' names in requests and discovery (`jwt` is an alias of
    /// `query.jwt` and is parsed, not listed separately).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::FormPost => "form_post",
            Self::QueryJwt => "query.jwt",
            Self::FormPostJwt => "form_post.jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "query" => Some(Self::Query),
            "form_post" => Some(Self::FormPost),
            "query.jwt" | "jwt" => Some(Self::QueryJwt),
            "form_post.jwt" => Some(Self::FormPostJwt),
            _ => None,
        }
    }

    /// The parameters travel in one signed JWT (JARM).
    pub fn is_jwt(self) -> bool {
        matches!(self, Self::QueryJwt | Self::FormPostJwt)
    }

    pub fn delivery(self) -> Delivery {
        match self {
            Self::Query | Self::QueryJwt => Delivery::Redirect,
            Self::FormPost | Self::FormPostJwt => Delivery::FormPost,
        }
    }
}

/// How the browser carries the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A 303 to the redirect URI with the parameters in its query.
    Redirect,
    /// A page whose form posts the parameters to the redirect URI.
    FormPost,
}
