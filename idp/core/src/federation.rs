//! Sign-in through upstream OpenID providers (federation): what the core
//! knows of them, the port the `upstream` step drives (an authorization-code
//! request with PKCE, state and nonce, then the validated identity), and the
//! links between upstream identities and local accounts.
//!
//! The protocol itself (discovery, the code exchange, ID token validation)
//! lives in `adapters/upstream` behind [`Upstreams`]; the core decides what
//! an identity leads to (see `oidc/federation.rs`): the account it is linked
//! to, a local account the user must first prove they own, a new account
//! (just-in-time creation), or a refusal.

use crate::domain::{ClientId, UserId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// An upstream as the login pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamInfo {
    /// Its id in config, URLs and the CLI (`partner-sso`).
    pub name: String,
    /// "Continue with <display_name>".
    pub display_name: String,
}

/// What an upstream's identities may do on this provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamPolicy {
    /// Create an account for an identity that matches none (just in time).
    pub create_accounts: bool,
    /// Take the upstream's email as verified even without `email_verified`.
    pub trust_email: bool,
}

/// An authorization request sent to an upstream, kept (in the login flow)
/// until its answer comes back. The values are random, single use, and never
/// logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRequest {
    pub upstream: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// The authentication at the upstream must be at most this old (in
    /// seconds; `0`: a fresh one, `prompt=login`), because the request we
    /// serve asked so (`max_age`, `prompt=login`): passed on as `max_age`,
    /// and the ID token's `auth_time` is checked.
    #[serde(default)]
    pub max_age: Option<u64>,
}

impl UpstreamRequest {
    /// Fresh random state, nonce and PKCE verifier for `upstream`.
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            state: crate::random::token(),
            nonce: crate::random::token(),
            pkce_verifier: crate::random::token(),
            max_age: None,
        }
    }

    /// The same, asking for an authentication at most `max_age` seconds old.
    pub fn with_max_age(mut self, max_age: Option<u64>) -> Self {
        self.max_age = max_age;
        self
    }
}

impl fmt::Debug for UpstreamRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRequest")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// The successful answer of an upstream at the callback.
#[derive(Clone)]
pub struct UpstreamCallback {
    pub code: crate::secret::Secret,
    /// RFC 9207 `iss` parameter, when the upstream sends one.
    pub iss: Option<String>,
}

/// Who the upstream says the user is, from its validated ID token (and its
/// UserInfo), with the configured claim mapping applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamIdentity {
    pub upstream: String,
    /// The upstream's issuer (`iss`).
    pub issuer: String,
    /// `sub`: stable per user at that issuer.
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// The mapped username claim, matched against customer identifiers.
    pub username: Option<String>,
    /// `amr` the upstream reported (RFC 8176), if any.
    pub amr: Vec<String>,
}

/// Why an upstream login failed. The message is for the log, never the page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("no upstream named {0:?}")]
    Unknown(String),
    /// Discovery, JWKS, token or UserInfo endpoint unreachable or failing.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused the code (used, expired, wrong verifier).
    #[error("upstream refused the code: {0}")]
    Refused(String),
    /// The answer came from (or names) another issuer: RFC 9207 `iss`, or
    /// the ID token's `iss`.
    #[error("wrong issuer: {0}")]
    WrongIssuer(String),
    /// The ID token or UserInfo failed validation (signature, audience,
    /// expiry, nonce, subject).
    #[error("invalid upstream answer: {0}")]
    Invalid(String),
}

/// The upstream OpenID providers this provider signs users in through.
#[async_trait]
pub trait Upstreams: Send + Sync {
    /// The upstreams `client`'s login pages offer, in configured order.
    fn for_client(&self, client: &ClientId) -> Vec<UpstreamInfo>;

    /// An upstream's display name and policy.
    fn find(&self, upstream: &str) -> Option<(UpstreamInfo, UpstreamPolicy)>;

    /// The URL to send the browser to for `req` (authorization code flow,
    /// PKCE S256, `state` and `nonce` from `req`).
    async fn authorization_url(&self, req: &UpstreamRequest) -> Result<String, UpstreamError>;

    /// Exchanges the code of `cb` (the answer to `req`) and validates what
    /// comes back: `iss` of the response and of the ID token, signature,
    /// audience, expiry, `nonce`; UserInfo's `sub` must match.
    async fn finish(
        &self,
        req: &UpstreamRequest,
        cb: &UpstreamCallback,
    ) -> Result<UpstreamIdentity, UpstreamError>;
}

/// No upstream configured.
pub struct NoUpstreams;

#[async_trait]
impl Upstreams for NoUpstreams {
    fn for_client(&self, _client: &ClientId) -> Vec<UpstreamInfo> {
        Vec::new()
    }

    fn find(&self, _upstream: &str) -> Option<(UpstreamInfo, UpstreamPolicy)> {
        None
    }

    async fn authorization_url(&self, req: &UpstreamRequest) -> Result<String, UpstreamError> {
        Err(UpstreamError::Unknown(req.upstream.clone()))
    }

    async fn finish(
        &self,
        req: &UpstreamRequest,
        _cb: &UpstreamCallback,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        Err(UpstreamError::Unknown(req.upstream.clone()))
    }
}

/// The path of an upstream's redirect URI on this provider (one per
/// upstream, so an answer can only be taken for the upstream it came from:
/// RFC 9700 §4.4.2, mix-up).
pub fn callback_path(upstream: &str) -> String {
    format!("/login/upstream/{upstream}/callback")
}

/// Whether `name` can name an upstream: `a-z`, `0-9`, `-`, `_`, starting
/// with a letter or digit, at most 64 characters.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A link between an upstream identity and a local account. An upstream
/// identity is linked to at most one account, and an account to at most one
/// identity per upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedIdentity {
    pub user_id: UserId,
    pub upstream: String,
    pub subject: String,
    /// The upstream's email when linked (shown on the account page).
    pub email: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A link waiting for its proof: the upstream identity matched the local
/// account `user_id` (same verified email, or username), and the user signs
/// in to that account through the client's own flow before the link is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLink {
    pub user_id: UserId,
    pub identity: UpstreamIdentity,
    /// Shown on the pages of the proof ("sign in to link <display_name>").
    pub display_name: String,
}

/// The `amr` of a sign-in through `identity`'s upstream: `fed` and the
/// upstream's own values (RFC 8176 §2) but `mfa`, which this provider
/// claims only for factors it counted itself (the sign-in counts as the
/// factors the `upstream` step's traits say; see `config/README.md`,
/// "Assurance levels").
pub fn amr_of(identity: &UpstreamIdentity) -> Vec<String> {
    let mut amr = vec!["fed".to_owned()];
    for a in &identity.amr {
        if !amr.contains(a) && a != "mfa" {
            amr.push(a.clone());
        }
    }
    amr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["partner-sso", "a", "x_1", "9lives"] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-a", "A", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn requests_are_random_and_redacted() {
        let a = UpstreamRequest::new("p");
        let b = UpstreamRequest::new("p");
        assert_ne!(a.state, b.state);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.pkce_verifier, b.pkce_verifier);
        assert!(
            a.pkce_verifier.len() >= 43,
            "RFC 7636: 43 to 128 characters"
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.state) && !shown.contains(&a.pkce_verifier));
    }
}
