//! Dynamic client registration (RFC 7591) and its management (RFC 7592).
//!
//! Off unless `[registration]` enables it. A registration is checked against
//! the operator's [`RegistrationPolicy`] (redirect URI patterns, grant
//! types, authentication methods, scopes); the client gets a random
//! `client_id` (never one it asks for), a generated secret when it is
//! confidential, and a registration access token for the client
//! configuration endpoint. Only hashes of the secret and of the tokens are
//! stored. Every registered client signs in with the flows of the policy's
//! [`ClientTemplate`], never flows or platform settings of its own.
//!
//! Registered clients live in the database ([`RegisteredClientRepo`]) and,
//! for the request path, in the [`ClientRegistry`]'s snapshot, which
//! [`Registration::refresh`] replaces when the table changed: at once on the
//! node that made the change, and on the others at their next periodic
//! refresh (`[registration] refresh_secs`), so a deleted or disabled client
//! stops working everywhere within that bound. A file client always wins
//! over a registered client of the same id.
//!
//! The client configuration endpoint (RFC 7592) rotates the registration
//! access token on each read and update: only its hash is stored, so the
//! answer (where RFC 7592 §3 requires one) carries a new one, and the one
//! used stops working. Of two concurrent uses of one token, one wins.

use crate::client::{
    AccessTokenFormat, Client, ClientAccountSettings, ClientRegistry, ClientSecretHash, Lifetimes,
    ProtocolSettings, TokenEndpointAuthMethod,
};
use crate::clock::SharedClock;
use crate::domain::ClientId;
use crate::keys::SigningAlg;
use crate::policy::LoginPolicy;
use crate::ports::{RepoError, TokenFamilyRepo};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// The client metadata a registration holds (RFC 7591 §2), as stored and
/// as given back. Unknown members of a request are ignored (§2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    /// `RS256` (the default) or `ES256` (OpenID Connect Dynamic Client
    /// Registration 1.0 §2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token_signed_response_alg: Option<String>,
}

/// A registered client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredClient {
    pub id: ClientId,
    pub metadata: ClientMetadata,
    /// `None` for a public client (`none`).
    pub secret_hash: Option<ClientSecretHash>,
    pub registration_token_hash: ClientSecretHash,
    pub enabled: bool,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An initial access token minted by `idp client initial-token` (only its
/// hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialAccessToken {
    pub hash: ClientSecretHash,
    pub created_at: OffsetDateTime,
    /// `None`: valid until deleted.
    pub expires_at: Option<OffsetDateTime>,
}

/// Where registered clients and initial access tokens are stored.
#[async_trait]
pub trait RegisteredClientRepo: Send + Sync {
    /// Inserts `client`; an existing id gives [`RepoError::Conflict`].
    async fn create_registered_client(&self, client: &RegisteredClient) -> Result<(), RepoError>;
    /// The client `id` unless deleted (disabled ones included).
    async fn find_registered_client(
        &self,
        id: &ClientId,
    ) -> Result<Option<RegisteredClient>, RepoError>;
    /// Every client not deleted, by creation time.
    async fn list_registered_clients(&self) -> Result<Vec<RegisteredClient>, RepoError>;
    /// Replaces the metadata, secret and token hash of `client` (matched by
    /// id) only if the stored token hash is still `expected` and the client
    /// is enabled and not deleted; returns whether it did.
    async fn replace_registered_client(
        &self,
        client: &RegisteredClient,
        expected: &ClientSecretHash,
    ) -> Result<bool, RepoError>;
    /// Enables or disables client `id`; returns whether it exists.
    async fn set_registered_client_enabled(
        &self,
        id: &ClientId,
        enabled: bool,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
    /// Deletes client `id` if the stored token hash is `expected`; returns
    /// whether it did. (The row is kept, marked deleted: see
    /// [`Self::registered_clients_version`].)
    async fn delete_registered_client(
        &self,
        id: &ClientId,
        expected: &ClientSecretHash,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
    /// A value that changes with every write to the registered clients
    /// (rows are never removed and each write bumps a row's revision):
    /// nodes compare it to decide whether to reload.
    async fn registered_clients_version(&self) -> Result<(i64, i64), RepoError>;
    /// The grants (token families) of `client` not revoked yet.
    async fn live_grants_of_client(&self, client: &ClientId) -> Result<Vec<Uuid>, RepoError>;
    async fn create_initial_access_token(
        &self,
        token: &InitialAccessToken,
    ) -> Result<(), RepoError>;
    /// Whether a minted initial access token of hash `hash` is valid at `at`.
    async fn initial_access_token_valid(
        &self,
        hash: &ClientSecretHash,
        at: OffsetDateTime,
    ) -> Result<bool, RepoError>;
}

/// What every registered client gets that it cannot choose: the login
/// flows and theme (from the file client named by `flows_from`, or the
/// built-in identifier-then-password flow and the default theme).
#[derive(Debug, Clone)]
pub struct ClientTemplate {
    pub login: LoginPolicy,
    pub theme: String,
    pub account: ClientAccountSettings,
    /// `require_pushed_authorization_requests` of `idp.toml`.
    pub require_par: bool,
    /// PKCE even for confidential registered clients.
    pub require_pkce: bool,
}

/// One `redirect_uri_patterns` entry: `scheme://host[:port]/path`, where a
/// `*` in the host stands for one or more characters among letters, digits,
/// `-` and `.`, and a `*` in the path (and query) for anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
    rest: String,
    text: String,
}

impl RedirectPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, tail) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?}: expected scheme://host/path"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!("{text:?}: the scheme must be https or http"));
        }
        let (authority, path) = match tail.find('/') {
            Some(i) => (&tail[..i], &tail[i..]),
            None => return Err(format!("{text:?}: a path is needed (at least /)")),
        };
        if authority.is_empty() || authority.contains('@') || path.contains('#') {
            return Err(format!(
                "{text:?}: no user info or fragment, and a host is needed"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{text:?}: bad port {p:?}"))?,
                ),
            ),
            _ => (authority, None),
        };
        if scheme == "http" && !is_loopback_host(host) {
            return Err(format!(
                "{text:?}: http only on a loopback address; use https"
            ));
        }
        if host.starts_with('*') && host.len() > 1 && !host[1..].starts_with('.') {
            return Err(format!(
                "{text:?}: a host wildcard stands for whole labels (*.example.com)"
            ));
        }
        Ok(Self {
            scheme: scheme.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            rest: path.to_owned(),
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the (parsed) redirect URI `u` matches.
    pub fn matches(&self, u: &url::Url) -> bool {
        let Some(host) = u.host_str() else {
            return false;
        };
        let mut rest = u.path().to_owned();
        if let Some(q) = u.query() {
            rest.push('?');
            rest.push_str(q);
        }
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        u.scheme() == self.scheme
            && u.port_or_known_default() == Some(self.port.unwrap_or(default_port))
            && glob(&self.host, &host.to_ascii_lowercase(), true, |c| {
                c.is_ascii_alphanumeric() || c == '-' || c == '.'
            })
            && glob(&self.rest, &rest, false, |_| true)
    }
}

/// `pattern` with `*` standing for characters satisfying `ok` (at least one
/// when `one`) matches all of `text`.
fn glob(pattern: &str, text: &str, one: bool, ok: impl Fn(char) -> bool + Copy) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            let Some(after) = text.strip_prefix(head) else {
                return false;
            };
            if !one && glob(tail, after, one, ok) {
                return true;
            }
            for (i, c) in after.char_indices() {
                if !ok(c) {
                    return false;
                }
                if glob(tail, &after[i + c.len_utf8()..], one, ok) {
                    return true;
                }
            }
            false
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "127.0.0.1" || host == "[::1]" || host == "localhost"
}

/// What a registration may ask for (`[registration]`).
#[derive(Debug, Clone)]
pub struct RegistrationPolicy {
    /// Registration without an initial access token.
    pub open: bool,
    /// Hashes of initial access tokens given in configuration.
    pub initial_token_hashes: Vec<ClientSecretHash>,
    pub redirect_uri_patterns: Vec<RedirectPattern>,
    /// `http://127.0.0.1:{any port}/...` and `http://[::1]:{any port}/...`
    /// for native apps (RFC 8252 §7.3).
    pub allow_loopback_redirects: bool,
    /// Among `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant_types: BTreeSet<String>,
    /// Among `client_secret_basic`, `client_secret_post`, `none`.
    pub auth_methods: BTreeSet<String>,
    pub scopes: BTreeSet<String>,
    /// Given when a registration names no `scope`.
    pub default_scope: Vec<String>,
    /// `POST /register` requests one client IP may make per hour.
    pub max_per_ip_per_hour: u32,
}

/// The grant types a registered client may have.
pub const SUPPORTED_GRANT_TYPES: [&str; 3] =
    ["authorization_code", "refresh_token", "client_credentials"];
/// The authentication methods a registered client may use (keys and
/// `client_secret_jwt` need material a registration does not carry here).
pub const SUPPORTED_AUTH_METHODS: [&str; 3] = ["client_secret_basic", "client_secret_post", "none"];

/// A refusal of the registration or client configuration endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    /// `invalid_token`, `invalid_redirect_uri`, `invalid_client_metadata`,
    /// `invalid_request`, `server_error`.
    pub code: &'static str,
    pub description: String,
    /// `temporarily_unavailable`: seconds until a new request may pass.
    pub retry_after: Option<u64>,
}

impl RegistrationError {
    fn invalid_token() -> Self {
        Self {
            code: "invalid_token",
            description: "the access token is missing, invalid or expired".into(),
            retry_after: None,
        }
    }
    fn metadata(d: impl Into<String>) -> Self {
        Self {
            code: "invalid_client_metadata",
            description: d.into(),
            retry_after: None,
        }
    }
    fn redirect(d: impl Into<String>) -> Self {
        Self {
            code: "invalid_redirect_uri",
            description: d.into(),
            retry_after: None,
        }
    }
    /// Too many registrations from one address (`429`, `Retry-After`).
    fn throttled(retry_after: u64) -> Self {
        Self {
            code: "temporarily_unavailable",
            description: "too many registrations from this address".into(),
            retry_after: Some(retry_after),
        }
    }
    fn server(e: RepoError) -> Self {
        tracing::error!(error = %e, "client registration storage failed");
        Self {
            code: "server_error",
            description: "the registration could not be stored".into(),
            retry_after: None,
        }
    }
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3).
#[derive(Debug, Clone, Serialize)]
pub struct ClientInformation {
    pub client_id: String,
    /// Only when issued by this answer (the stored value is a hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire (present for confidential clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    pub registration_access_token: String,
    pub registration_client_uri: String,
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}

/// Registration, the client configuration endpoint, and the refresh of the
/// registered clients' snapshot.
pub struct Registration {
    repo: Arc<dyn RegisteredClientRepo>,
    families: Arc<dyn TokenFamilyRepo>,
    clients: Arc<ClientRegistry>,
    /// `None`: the endpoints are off (registered clients still work).
    policy: Option<RegistrationPolicy>,
    template: ClientTemplate,
    clock: SharedClock,
    issuer: String,
    /// The version loaded last; held while refreshing, so two refreshes do
    /// not race an older snapshot over a newer one.
    loaded: tokio::sync::Mutex<Option<(i64, i64)>>,
    refresh_every: std::time::Duration,
    throttle: Arc<crate::throttle::Throttle>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("enabled", &self.policy.is_some())
            .finish_non_exhaustive()
    }
}

/// RFC 7591 §2: redirect URIs are absolute, without fragment; this provider
/// also wants https, or http on a loopback address (RFC 8252 §7.3), and no
/// user info.
fn check_redirect_uri_form(u: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(u).map_err(|_| format!("{u:?} is not an absolute URI"))?;
    if parsed.fragment().is_some() {
        return Err(format!("{u:?} has a fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!("{u:?} has user info"));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if parsed.host_str().is_some_and(is_loopback_host) => Ok(parsed),
        _ => Err(format!("{u:?}: https, or http on a loopback address")),
    }
}

/// RFC 8252 §7.3: a native app's loopback redirect, any port.
fn is_native_loopback(u: &url::Url) -> bool {
    u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "[::1]"))
}

/// RFC 7591 §2 (`redirect_uris`) and §3.2.2 (`invalid_redirect_uri`): each
/// redirect URI is well formed and allowed by the policy.
fn check_redirect_uris(
    uris: &[String],
    policy: &RegistrationPolicy,
) -> Result<(), RegistrationError> {
    for u in uris {
        let parsed = check_redirect_uri_form(u).map_err(RegistrationError::redirect)?;
        let allowed = (policy.allow_loopback_redirects && is_native_loopback(&parsed))
            || policy
                .redirect_uri_patterns
                .iter()
                .any(|p| p.matches(&parsed));
        if !allowed {
            return Err(RegistrationError::redirect(format!(
                "{u:?} is not allowed by this provider's registration policy"
            )));
        }
    }
    Ok(())
}

/// RFC 7591 §2 (`grant_types`): known, allowed by the policy, and possible
/// for the client's kind.
fn check_grant_types(
    grants: &[String],
    public: bool,
    policy: &RegistrationPolicy,
) -> Result<(), RegistrationError> {
    for g in grants {
        if !SUPPORTED_GRANT_TYPES.contains(&g.as_str()) || !policy.grant_types.contains(g) {
            return Err(RegistrationError::metadata(format!(
                "grant_types: {g:?} is not allowed"
            )));
        }
    }
    if public && grants.iter().any(|g| g == "client_credentials") {
        return Err(RegistrationError::metadata(
            "grant_types: a public client cannot use client_credentials",
        ));
    }
    Ok(())
}

/// RFC 7591 §2.1: `response_types` and `grant_types` agree (`code` goes
/// with `authorization_code`); `code` is the only response type.
fn check_response_types(responses: &[String], grants: &[String]) -> Result<(), RegistrationError> {
    if let Some(r) = responses.iter().find(|r| r.as_str() != "code") {
        return Err(RegistrationError::metadata(format!(
            "response_types: {r:?} is not supported (code only)"
        )));
    }
    let code = grants.iter().any(|g| g == "authorization_code");
    if code == responses.is_empty() {
        return Err(RegistrationError::metadata(
            "response_types: code goes with the authorization_code grant type (RFC 7591 §2.1)",
        ));
    }
    Ok(())
}

/// RFC 7591 §2 (`token_endpoint_auth_method`): supported and allowed.
fn check_auth_method(
    method: &str,
    policy: &RegistrationPolicy,
) -> Result<TokenEndpointAuthMethod, RegistrationError> {
    let m = match method {
        "client_secret_basic" => TokenEndpointAuthMethod::ClientSecretBasic,
        "client_secret_post" => TokenEndpointAuthMethod::ClientSecretPost,
        "none" => TokenEndpointAuthMethod::None,
        _ => {
            return Err(RegistrationError::metadata(format!(
                "token_endpoint_auth_method: {method:?} is not supported for registered clients"
            )));
        }
    };
    if !policy.auth_methods.contains(method) {
        return Err(RegistrationError::metadata(format!(
            "token_endpoint_auth_method: {method:?} is not allowed"
        )));
    }
    Ok(m)
}

/// RFC 7591 §2 (`scope`): each value allowed by the policy.
fn check_scope(scope: &str, policy: &RegistrationPolicy) -> Result<(), RegistrationError> {
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !policy.scopes.contains(s) {
            return Err(RegistrationError::metadata(format!(
                "scope: {s:?} is not allowed"
            )));
        }
    }
    Ok(())
}

/// RFC 7591 §2: the human-readable and URL members are of sane size and
/// form (they are shown to users on consent and login pages).
fn check_display_members(m: &ClientMetadata) -> Result<(), RegistrationError> {
    if m.client_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 100 || n.trim().is_empty())
    {
        return Err(RegistrationError::metadata(
            "client_name: 1 to 100 characters",
        ));
    }
    for (name, v) in [
        ("client_uri", &m.client_uri),
        ("logo_uri", &m.logo_uri),
        ("tos_uri", &m.tos_uri),
        ("policy_uri", &m.policy_uri),
    ] {
        if let Some(v) = v
            && !url::Url::parse(v).is_ok_and(|u| u.scheme() == "https")
        {
            return Err(RegistrationError::metadata(format!("{name}: an https URL")));
        }
    }
    if m.redirect_uris.len() > 20 || m.post_logout_redirect_uris.len() > 20 || m.contacts.len() > 10
    {
        return Err(RegistrationError::metadata("too many values"));
    }
    Ok(())
}

/// The JSON body of a request (RFC 7591 §3.1), or `invalid_client_metadata`.
fn json_body(body: &[u8]) -> Result<serde_json::Value, RegistrationError> {
    serde_json::from_slice(body).map_err(|_| {
        RegistrationError::metadata("the body must be a JSON object of client metadata")
    })
}

/// Members that ask for something this provider does not do for registered
/// clients: accepting them silently would leave the client believing it
/// has them (pairwise subjects, signed or encrypted responses, keys).
const UNSUPPORTED_MEMBERS: [&str; 9] = [
    "sector_identifier_uri",
    "userinfo_signed_response_alg",
    "userinfo_encrypted_response_alg",
    "id_token_encrypted_response_alg",
    "request_object_signing_alg",
    "request_object_encryption_alg",
    "jwks",
    "jwks_uri",
    "token_endpoint_auth_signing_alg",
];

/// OpenID Connect Dynamic Client Registration 1.0 §2: what is asked for is
/// done or refused (`subject_type` public only, `id_token_signed_response_alg`
/// RS256 or ES256, none of [`UNSUPPORTED_MEMBERS`]).
fn check_supported_members(
    body: &serde_json::Value,
    m: &ClientMetadata,
) -> Result<(), RegistrationError> {
    if let Some(member) = UNSUPPORTED_MEMBERS
        .iter()
        .find(|k| body.get(**k).is_some_and(|v| !v.is_null()))
    {
        return Err(RegistrationError::metadata(format!(
            "{member}: not supported for registered clients"
        )));
    }
    match body.get("subject_type").and_then(|v| v.as_str()) {
        None | Some("public") => {}
        Some(t) => {
            return Err(RegistrationError::metadata(format!(
                "subject_type: {t:?} is not supported (public)"
            )));
        }
    }
    match m.id_token_signed_response_alg.as_deref() {
        None | Some("RS256" | "ES256") => Ok(()),
        Some(a) => Err(RegistrationError::metadata(format!(
            "id_token_signed_response_alg: {a:?} is not supported (RS256, ES256)"
        ))),
    }
}

/// Parses and checks a registration request's metadata against `policy`,
/// filling RFC 7591 §2's defaults.
pub fn parse_metadata(
    body: &serde_json::Value,
    policy: &RegistrationPolicy,
) -> Result<ClientMetadata, RegistrationError> {
    if !body.is_object() {
        return Err(RegistrationError::metadata("a JSON object is expected"));
    }
    let mut m: ClientMetadata = serde_json::from_value(body.clone())
        .map_err(|e| RegistrationError::metadata(format!("malformed metadata: {e}")))?;
    if m.token_endpoint_auth_method.is_empty() {
        m.token_endpoint_auth_method = "client_secret_basic".into();
    }
    if m.grant_types.is_empty() {
        m.grant_types = vec!["authorization_code".into()];
    }
    if m.response_types.is_empty()
        && body.get("response_types").is_none()
        && m.grant_types.iter().any(|g| g == "authorization_code")
    {
        m.response_types = vec!["code".into()];
    }
    if m.scope.trim().is_empty() {
        m.scope = policy.default_scope.join(" ");
    }
    m.grant_types.sort();
    m.grant_types.dedup();
    let method = check_auth_method(&m.token_endpoint_auth_method, policy)?;
    check_grant_types(
        &m.grant_types,
        method == TokenEndpointAuthMethod::None,
        policy,
    )?;
    check_response_types(&m.response_types, &m.grant_types)?;
    check_scope(&m.scope, policy)?;
    check_display_members(&m)?;
    check_supported_members(body, &m)?;
    if m.grant_types.iter().any(|g| g == "authorization_code") && m.redirect_uris.is_empty() {
        return Err(RegistrationError::redirect(
            "redirect_uris: at least one is needed for the authorization_code grant",
        ));
    }
    check_redirect_uris(&m.redirect_uris, policy)?;
    for u in &m.post_logout_redirect_uris {
        check_redirect_uris(std::slice::from_ref(u), policy).map_err(|e| {
            RegistrationError::metadata(format!("post_logout_redirect_uris: {}", e.description))
        })?;
    }
    Ok(m)
}

/// The client a stored registration stands for.
pub fn to_client(r: &RegisteredClient, template: &ClientTemplate) -> Client {
    let m = &r.metadata;
    let auth_method = match m.token_endpoint_auth_method.as_str() {
        "client_secret_post" => TokenEndpointAuthMethod::ClientSecretPost,
        "none" => TokenEndpointAuthMethod::None,
        _ => TokenEndpointAuthMethod::ClientSecretBasic,
    };
    let has = |g: &str| m.grant_types.iter().any(|x| x == g);
    Client {
        id: r.id.clone(),
        name: m.client_name.clone().unwrap_or_else(|| r.id.0.clone()),
        auth_method,
        secret_hash: r.secret_hash.clone(),
        redirect_uris: m.redirect_uris.clone(),
        post_logout_redirect_uris: m.post_logout_redirect_uris.clone(),
        allow_authorization_code: has("authorization_code"),
        allow_refresh_token: has("refresh_token"),
        allow_client_credentials: has("client_credentials"),
        scopes: m
            .scope
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        theme: template.theme.clone(),
        access_token_format: AccessTokenFormat::Jwt,
        id_token_alg: match m.id_token_signed_response_alg.as_deref() {
            Some("ES256") => SigningAlg::ES256,
            _ => SigningAlg::RS256,
        },
        access_token_alg: SigningAlg::ES256,
        require_pkce: template.require_pkce,
        lifetimes: Lifetimes::default(),
        login: template.login.clone(),
        account: ClientAccountSettings {
            platform_admin: false,
            allow_org_creation: false,
            ..template.account.clone()
        },
        protocol: ProtocolSettings {
            require_par: template.require_par,
            ..ProtocolSettings::default()
        },
    }
}

/// A `Bearer` token from an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?;
    let (scheme, token) = h.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

impl Registration {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        repo: Arc<dyn RegisteredClientRepo>,
        families: Arc<dyn TokenFamilyRepo>,
        clients: Arc<ClientRegistry>,
        policy: Option<RegistrationPolicy>,
        template: ClientTemplate,
        clock: SharedClock,
        issuer: String,
        refresh_every: std::time::Duration,
        throttle: Arc<crate::throttle::Throttle>,
    ) -> Self {
        Self {
            repo,
            families,
            clients,
            policy,
            template,
            clock,
            issuer,
            loaded: tokio::sync::Mutex::new(None),
            refresh_every,
            throttle,
        }
    }

    /// Where registered clients are stored.
    pub fn store(&self) -> Arc<dyn RegisteredClientRepo> {
        self.repo.clone()
    }

    /// How often each node checks for changes made elsewhere.
    pub fn refresh_every(&self) -> std::time::Duration {
        self.refresh_every
    }

    /// Whether the registration endpoints are on.
    pub fn enabled(&self) -> bool {
        self.policy.is_some()
    }

    fn policy(&self) -> Result<&RegistrationPolicy, RegistrationError> {
        self.policy.as_ref().ok_or_else(|| RegistrationError {
            code: "invalid_request",
            description: "client registration is not enabled".into(),
            retry_after: None,
        })
    }

    fn configuration_uri(&self, id: &ClientId) -> String {
        format!("{}/register/{}", self.issuer.trim_end_matches('/'), id.0)
    }

    /// RFC 7591 §3: an initial access token is needed unless the policy is
    /// open; a configured hash or a minted, unexpired one.
    async fn check_initial_token(
        &self,
        policy: &RegistrationPolicy,
        token: Option<&str>,
    ) -> Result<(), RegistrationError> {
        let Some(token) = token else {
            return if policy.open {
                Ok(())
            } else {
                Err(RegistrationError::invalid_token())
            };
        };
        if policy.initial_token_hashes.iter().any(|h| h.matches(token)) {
            return Ok(());
        }
        let valid = self
            .repo
            .initial_access_token_valid(&ClientSecretHash::of(token), self.clock.now())
            .await
            .map_err(RegistrationError::server)?;
        if valid {
            Ok(())
        } else {
            Err(RegistrationError::invalid_token())
        }
    }

    /// Registrations per client IP and hour (every request counts, refused
    /// ones too: they cost a token check and may be a guess of one).
    async fn check_registration_rate(
        &self,
        policy: &RegistrationPolicy,
        ip: Option<&str>,
    ) -> Result<(), RegistrationError> {
        let bucket = crate::throttle::Throttle::registrations(ip, policy.max_per_ip_per_hour);
        let within = self.throttle.spend(bucket.clone()).await.map_err(|e| {
            tracing::error!(error = %e, "registration counter failed");
            RegistrationError {
                code: "server_error",
                description: "the registration could not be counted".into(),
                retry_after: None,
            }
        })?;
        if within {
            return Ok(());
        }
        let retry = self.throttle.retry_after(&bucket).await.unwrap_or(3600);
        Err(RegistrationError::throttled(retry))
    }

    /// `POST /register` (RFC 7591 §3).
    pub async fn register(
        &self,
        initial_token: Option<&str>,
        body: &[u8],
        ip: Option<&str>,
    ) -> Result<ClientInformation, RegistrationError> {
        let policy = self.policy()?;
        self.check_registration_rate(policy, ip).await?;
        // The token first: an unauthorized caller learns nothing of what
        // would be accepted.
        self.check_initial_token(policy, initial_token).await?;
        let metadata = parse_metadata(&json_body(body)?, policy)?;
        let now = self.clock.now();
        let secret = (metadata.token_endpoint_auth_method != "none").then(crate::random::token);
        let access_token = crate::random::token();
        // The id is random and never a file client's (file clients win
        // anyway, see `ClientRegistry::replace_registered`).
        let id = loop {
            let candidate = format!("dcr-{}", &crate::random::token()[..22]);
            if !self.clients.is_file_client(&candidate) {
                break ClientId(candidate);
            }
        };
        let record = RegisteredClient {
            id: id.clone(),
            metadata: metadata.clone(),
            secret_hash: secret.as_deref().map(ClientSecretHash::of),
            registration_token_hash: ClientSecretHash::of(&access_token),
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        self.repo
            .create_registered_client(&record)
            .await
            .map_err(RegistrationError::server)?;
        tracing::info!(client_id = %id, "client registered");
        self.refresh_logged().await;
        Ok(self.information(&record, secret, access_token))
    }

    fn information(
        &self,
        r: &RegisteredClient,
        secret: Option<String>,
        access_token: String,
    ) -> ClientInformation {
        ClientInformation {
            client_id: r.id.0.clone(),
            client_secret: secret,
            client_id_issued_at: r.created_at.unix_timestamp(),
            client_secret_expires_at: r.secret_hash.as_ref().map(|_| 0),
            registration_access_token: access_token,
            registration_client_uri: self.configuration_uri(&r.id),
            metadata: r.metadata.clone(),
        }
    }

    /// The client `id` if `token` is its registration access token (RFC
    /// 7592 §2: anything else is `invalid_token`, whether the client exists
    /// or not).
    async fn authorized(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<RegisteredClient, RegistrationError> {
        self.policy()?;
        let token = token.ok_or_else(RegistrationError::invalid_token)?;
        // A stored registration shadowed by a file client is not managed
        // here: the id is the file's.
        if self.clients.is_file_client(id) {
            return Err(RegistrationError::invalid_token());
        }
        let found = self
            .repo
            .find_registered_client(&ClientId(id.to_owned()))
            .await
            .map_err(RegistrationError::server)?;
        match found {
            Some(c) if c.enabled && c.registration_token_hash.matches(token) => Ok(c),
            _ => Err(RegistrationError::invalid_token()),
        }
    }

    /// Stores `next` in place of `current` with a new registration access
    /// token; `invalid_token` when a concurrent request used the token first.
    async fn replace(
        &self,
        current: &RegisteredClient,
        mut next: RegisteredClient,
        secret: Option<String>,
    ) -> Result<ClientInformation, RegistrationError> {
        let access_token = crate::random::token();
        next.registration_token_hash = ClientSecretHash::of(&access_token);
        next.updated_at = self.clock.now();
        let done = self
            .repo
            .replace_registered_client(&next, &current.registration_token_hash)
            .await
            .map_err(RegistrationError::server)?;
        if !done {
            return Err(RegistrationError::invalid_token());
        }
        self.refresh_logged().await;
        Ok(self.information(&next, secret, access_token))
    }

    /// `GET /register/{id}` (RFC 7592 §2.1).
    pub async fn read(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> Result<ClientInformation, RegistrationError> {
        let current = self.authorized(id, token).await?;
        self.replace(&current, current.clone(), None).await
    }

    /// `PUT /register/{id}` (RFC 7592 §2.2): the metadata are replaced as a
    /// whole, checked like a registration. The secret stays unless the
    /// client becomes confidential (a new one is issued) or public (dropped).
    pub async fn update(
        &self,
        id: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<ClientInformation, RegistrationError> {
        let current = self.authorized(id, token).await?;
        let policy = self.policy()?;
        let body = &json_body(body)?;
        if body.get("client_id").and_then(|v| v.as_str()) != Some(id) {
            return Err(RegistrationError {
                code: "invalid_request",
                description: "client_id: must be the client's own (RFC 7592 §2.2)".into(),
                retry_after: None,
            });
        }
        for member in [
            "registration_access_token",
            "registration_client_uri",
            "client_secret_expires_at",
            "client_id_issued_at",
        ] {
            if body.get(member).is_some() {
                return Err(RegistrationError {
                    code: "invalid_request",
                    description: format!("{member}: must not be sent (RFC 7592 §2.2)"),
                    retry_after: None,
                });
            }
        }
        if let Some(s) = body.get("client_secret") {
            let same = match (s.as_str(), &current.secret_hash) {
                (Some(s), Some(h)) => h.matches(s),
                _ => false,
            };
            if !same {
                return Err(RegistrationError {
                    code: "invalid_request",
                    description: "client_secret: not the client's secret (RFC 7592 §2.2)".into(),
                    retry_after: None,
                });
            }
        }
        let metadata = parse_metadata(body, policy)?;
        let public = metadata.token_endpoint_auth_method == "none";
        let (secret_hash, secret) = match (&current.secret_hash, public) {
            (_, true) => (None, None),
            (Some(h), false) => (Some(h.clone()), None),
            (None, false) => {
                let s = crate::random::token();
                (Some(ClientSecretHash::of(&s)), Some(s))
            }
        };
        let next = RegisteredClient {
            metadata,
            secret_hash,
            ..current.clone()
        };
        tracing::info!(client_id = %current.id, "registered client updated");
        self.replace(&current, next, secret).await
    }

    /// `DELETE /register/{id}` (RFC 7592 §2.3): the client stops working and
    /// its grants are revoked (its refresh tokens are refused).
    pub async fn delete(&self, id: &str, token: Option<&str>) -> Result<(), RegistrationError> {
        let current = self.authorized(id, token).await?;
        let now = self.clock.now();
        let done = self
            .repo
            .delete_registered_client(&current.id, &current.registration_token_hash, now)
            .await
            .map_err(RegistrationError::server)?;
        if !done {
            return Err(RegistrationError::invalid_token());
        }
        tracing::info!(client_id = %current.id, "registered client deleted");
        self.refresh_logged().await;
        self.revoke_grants(&current.id)
            .await
            .map_err(RegistrationError::server)?;
        Ok(())
    }

    /// Revokes every live grant of `client` (announced to every node through
    /// the families port).
    pub async fn revoke_grants(&self, client: &ClientId) -> Result<usize, RepoError> {
        let now = self.clock.now();
        let ids = self.repo.live_grants_of_client(client).await?;
        for id in &ids {
            self.families
                .revoke_family(*id, now, "client_removed")
                .await?;
        }
        Ok(ids.len())
    }

    async fn refresh_logged(&self) {
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "registered clients could not be reloaded");
        }
    }

    /// Reloads the registered clients into the registry when the table
    /// changed since the last load; returns whether it reloaded. A stored
    /// client whose id is a file client's is left out, with a warning.
    pub async fn refresh(&self) -> Result<bool, RepoError> {
        let mut loaded = self.loaded.lock().await;
        let version = self.repo.registered_clients_version().await?;
        if *loaded == Some(version) {
            return Ok(false);
        }
        let stored = self.repo.list_registered_clients().await?;
        let clients = stored
            .iter()
            .filter(|r| r.enabled)
            .map(|r| to_client(r, &self.template));
        for id in self.clients.replace_registered(clients) {
            tracing::warn!(
                client_id = %id,
                "a registered client has the id of a client file; the file client wins"
            );
        }
        *loaded = Some(version);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RegistrationPolicy {
        RegistrationPolicy {
            open: false,
            initial_token_hashes: vec![],
            redirect_uri_patterns: vec![
                RedirectPattern::parse("https://*.example.com/*").unwrap(),
                RedirectPattern::parse("https://app.example.org/cb").unwrap(),
            ],
            allow_loopback_redirects: true,
            grant_types: ["authorization_code", "refresh_token"]
                .map(String::from)
                .into(),
            auth_methods: ["client_secret_basic", "none"].map(String::from).into(),
            scopes: ["openid", "profile", "email"].map(String::from).into(),
            default_scope: vec!["openid".into()],
            max_per_ip_per_hour: 20,
        }
    }

    fn parse(v: serde_json::Value) -> Result<ClientMetadata, &'static str> {
        parse_metadata(&v, &policy()).map_err(|e| e.code)
    }

    #[test]
    fn patterns_match_whole_labels_and_paths() {
        let p = RedirectPattern::parse("https://*.example.com/*").unwrap();
        let m = |u: &str| p.matches(&url::Url::parse(u).unwrap());
        assert!(m("https://a.example.com/cb"));
        assert!(m("https://a.b.example.com/x/y?z=1"));
        assert!(!m("https://example.com/cb"));
        assert!(!m("https://a.example.com.evil.net/cb"));
        assert!(!m("https://evil.net/a.example.com/cb"));
        assert!(!m("http://a.example.com/cb"));
        assert!(!m("https://a.example.com:8443/cb"));
        let exact = RedirectPattern::parse("https://app.example.org/cb").unwrap();
        assert!(exact.matches(&url::Url::parse("https://app.example.org/cb").unwrap()));
        assert!(!exact.matches(&url::Url::parse("https://app.example.org/cb2").unwrap()));
        assert!(RedirectPattern::parse("http://example.com/*").is_err());
        assert!(RedirectPattern::parse("https://u@x.example.com/").is_err());
        assert!(RedirectPattern::parse("https://*evil.com/").is_err());
    }

    #[test]
    fn defaults_follow_rfc_7591() {
        let m = parse(serde_json::json!({"redirect_uris": ["https://a.example.com/cb"]})).unwrap();
        assert_eq!(m.grant_types, ["authorization_code"]);
        assert_eq!(m.response_types, ["code"]);
        assert_eq!(m.token_endpoint_auth_method, "client_secret_basic");
        assert_eq!(m.scope, "openid");
    }

    #[test]
    fn policy_refusals_have_their_codes() {
        let r = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"redirect_uris": ["https://a.example.com/cb"]});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            parse(v)
        };
        assert_eq!(
            r(serde_json::json!({"redirect_uris": ["https://evil.net/cb"]})),
            Err("invalid_redirect_uri")
        );
        assert_eq!(
            r(serde_json::json!({"redirect_uris": ["https://a.example.com/cb#f"]})),
            Err("invalid_redirect_uri")
        );
        assert_eq!(
            r(serde_json::json!({"redirect_uris": []})),
            Err("invalid_redirect_uri")
        );
        assert!(r(serde_json::json!({"redirect_uris": ["http://127.0.0.1:53123/cb"]})).is_ok());
        assert_eq!(
            r(serde_json::json!({"redirect_uris": ["http://localhost:53123/cb"]})),
            Err("invalid_redirect_uri")
        );
        assert_eq!(
            r(serde_json::json!({"grant_types": ["client_credentials"]})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"grant_types": ["implicit"]})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"token_endpoint_auth_method": "client_secret_post"})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"token_endpoint_auth_method": "private_key_jwt"})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"scope": "openid admin_api"})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"response_types": ["token"]})),
            Err("invalid_client_metadata")
        );
        assert_eq!(
            r(serde_json::json!({"client_uri": "javascript:alert(1)"})),
            Err("invalid_client_metadata")
        );
        assert!(parse(serde_json::json!([1])).is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
