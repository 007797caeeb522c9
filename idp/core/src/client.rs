//! Registered relying parties, as the core sees them once config is parsed.

use crate::domain::ClientId;
use crate::keys::SigningAlg;
use crate::policy::LoginPolicy;
use crate::request::ResponseMode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpointAuthMethod {
    /// A secret, by HTTP Basic or in the form (either is accepted).
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with one of the client's registered keys (RFC 7523 §2.2,
    /// OpenID Connect Core §9).
    PrivateKeyJwt,
    /// A JWT signed with HMAC over the client's secret (OpenID Connect Core §9).
    ClientSecretJwt,
    /// Public client: no secret, PKCE required.
    None,
}

impl TokenEndpointAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::None => "none",
        }
    }
}

/// SHA-256 of a client secret. Client secrets are generated with 256 bits of
/// entropy (`idp client secret`), so a fast hash is enough: there is no
/// dictionary to try. Written in config as `sha256:<base64url>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecretHash([u8; 32]);

impl fmt::Debug for ClientSecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecretHash([redacted])")
    }
}

impl ClientSecretHash {
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.strip_prefix("sha256:")?;
        let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn encode(&self) -> String {
        format!("sha256:{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    /// Constant-time comparison with a presented secret.
    pub fn matches(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(h.ct_eq(&self.0))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTokenFormat {
    /// RFC 9068 JWT, verifiable by resource servers with the JWKS.
    Jwt,
    /// Random handle, checked through introspection.
    Opaque,
}

/// Lifetimes in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub authorization_code: u32,
    pub access_token: u32,
    pub id_token: u32,
    /// Absolute lifetime of a refresh-token family.
    pub refresh_token: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            authorization_code: 60,
            access_token: 600,
            id_token: 600,
            refresh_token: 30 * 24 * 3600,
        }
    }
}

/// A registered relying party.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    pub auth_method: TokenEndpointAuthMethod,
    /// `None` exactly when `auth_method` is `None`.
    pub secret_hash: Option<ClientSecretHash>,
    /// Compared by exact string match.
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allow_authorization_code: bool,
    pub allow_refresh_token: bool,
    pub allow_client_credentials: bool,
    pub scopes: BTreeSet<String>,
    pub theme: String,
    pub access_token_format: AccessTokenFormat,
    pub id_token_alg: SigningAlg,
    pub access_token_alg: SigningAlg,
    /// PKCE required even though the client is confidential.
    pub require_pkce: bool,
    pub lifetimes: Lifetimes,
    /// The login flows of this client (the first is the default).
    pub login: LoginPolicy,
    /// Account journeys offered from this client's login pages.
    pub account: ClientAccountSettings,
    /// The protocol extensions its file enables.
    pub protocol: ProtocolSettings,
}

/// The protocol extensions a client uses; each is off unless its file
/// enables it, and discovery lists what at least one client enables.
#[derive(Debug, Clone)]
pub struct ProtocolSettings {
    /// Response modes it may ask for besides `query` (`response_modes`).
    pub response_modes: BTreeSet<ResponseMode>,
    /// Algorithm of its JARM responses (`authorization_signed_response_alg`).
    pub authorization_signed_response_alg: SigningAlg,
    /// Its public keys (`jwks` or `jwks_uri`): for `private_key_jwt`
    /// assertions and request objects.
    pub keys: Option<ClientKeySource>,
    /// The shared secret of `client_secret_jwt` (`secret_env` or
    /// `secret_file`; a hash cannot check an HMAC).
    pub jwt_secret: Option<std::sync::Arc<crate::secret::Secret>>,
    /// Authorization requests only through the PAR endpoint
    /// (`require_pushed_authorization_requests`, RFC 9126 §5).
    pub require_par: bool,
    /// Its access tokens are DPoP-bound: every token request carries a
    /// proof (`dpop_bound_access_tokens`, RFC 9449 §5.2).
    pub dpop_bound: bool,
    /// Its DPoP proofs at the token and introspection endpoints must carry
    /// a nonce this provider issued (`require_dpop_nonce`, RFC 9449 §8).
    pub require_dpop_nonce: bool,
    /// The FAPI 2.0 Security Profile (`security_profile = "fapi2"`): on top
    /// of the settings it implies (PAR, PKCE, DPoP, `private_key_jwt`, short
    /// codes, checked when the file is read), only PS256 and ES256 are
    /// accepted for its assertions, request objects and DPoP proofs, request
    /// objects need `exp` and `nbf`, and pushed requests a `redirect_uri`
    /// (FAPI 2.0 Security Profile §5.3 and §5.4).
    pub fapi2: bool,
    /// Single logout: its back- and front-channel logout URIs.
    pub logout: crate::oidc::logout_channels::LogoutChannels,
    /// May use the token exchange grant (RFC 8693), listed in its
    /// `grant_types`; which resources it may get tokens for is the resource
    /// servers' `exchange_clients` (see [`crate::oidc::resources`]).
    pub token_exchange: bool,
    /// `subject_type = "pairwise"` (OpenID Connect Core §8.1): the `sub`
    /// it sees is derived from its sector (see [`crate::oidc::subjects`]);
    /// `None`: the public (internal) user id.
    pub pairwise: Option<PairwiseSubject>,
    /// The device authorization grant (RFC 8628; `grant_types` names
    /// `urn:ietf:params:oauth:grant-type:device_code`).
    pub allow_device_code: bool,
}

/// A pairwise client's sector (OpenID Connect Core §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairwiseSubject {
    /// The host of its `sector_identifier_uri`, else of its redirect URIs.
    pub sector: String,
    /// Fetched at start-up: a JSON array that must hold every redirect URI
    /// of the client (§8.1).
    pub sector_identifier_uri: Option<String>,
    /// Where it is configured (the client file), for start-up errors.
    pub declared_in: String,
}

/// Where a client's public keys come from.
#[derive(Debug, Clone)]
pub enum ClientKeySource {
    /// `jwks` in its file.
    Inline(std::sync::Arc<crate::oidc::client_jwt::ClientKeys>),
    /// `jwks_uri`, fetched and cached (see `oidc::client_auth`).
    Remote(String),
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        Self {
            response_modes: BTreeSet::new(),
            authorization_signed_response_alg: SigningAlg::RS256,
            keys: None,
            jwt_secret: None,
            require_par: false,
            dpop_bound: false,
            require_dpop_nonce: false,
            fapi2: false,
            logout: Default::default(),
            token_exchange: false,
            pairwise: None,
            allow_device_code: false,
        }
    }
}

impl ProtocolSettings {
    /// Whether the client may use `mode` (`query` always).
    pub fn allows_response_mode(&self, mode: ResponseMode) -> bool {
        mode == ResponseMode::Query || self.response_modes.contains(&mode)
    }
}

/// What a client's login pages offer around login (`[account]` in a client file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAccountSettings {
    /// Show "create an organization" on the login page.
    pub allow_org_creation: bool,
    /// Validity of a password reset link started from this client (default:
    /// `[accounts] reset_link_minutes`).
    pub reset_link_minutes: Option<u32>,
    /// The authentication kind this client's logins count as, for an
    /// organization's enforced MFA (`console`, `api`, ...).
    pub auth_kind: String,
    /// The client's password rules (merged with the platform's and the
    /// organization's: the strictest wins).
    pub password_policy: crate::password_policy::PasswordPolicy,
    /// Tokens this client obtains with `client_credentials` may call the
    /// platform operator's admin API (validate organizations, ...).
    pub platform_admin: bool,
}

impl Default for ClientAccountSettings {
    fn default() -> Self {
        Self {
            allow_org_creation: false,
            reset_link_minutes: None,
            auth_kind: "console".into(),
            password_policy: crate::password_policy::PasswordPolicy::default(),
            platform_admin: false,
        }
    }
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.auth_method == TokenEndpointAuthMethod::None
    }

    pub fn pkce_required(&self) -> bool {
        self.is_public() || self.require_pkce
    }
}

/// All clients, by id: those of the client files (built once at start-up)
/// and those registered through the registration endpoint (RFC 7591), kept
/// as a snapshot that [`crate::registration::Registration::refresh`]
/// replaces when the database says they changed. [`Self::get`] stays
/// synchronous: it reads the file clients, then the current snapshot.
/// Clones share the snapshot. A file client always wins over a registered
/// client of the same id.
#[derive(Debug, Default, Clone)]
pub struct ClientRegistry {
    by_id: HashMap<ClientId, Arc<Client>>,
    registered: Arc<RwLock<ClientsById>>,
}

/// A snapshot of clients by id.
pub type ClientsById = Arc<HashMap<ClientId, Arc<Client>>>;

impl ClientRegistry {
    pub fn new(clients: impl IntoIterator<Item = Client>) -> Self {
        Self {
            by_id: clients
                .into_iter()
                .map(|c| (c.id.clone(), Arc::new(c)))
                .collect(),
            registered: Arc::default(),
        }
    }

    /// The file client `id`, else the registered client `id` (enabled ones
    /// only are in the snapshot).
    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        let key = ClientId(id.to_owned());
        if let Some(c) = self.by_id.get(&key) {
            return Some(c.clone());
        }
        self.registered_snapshot().get(&key).cloned()
    }

    /// Whether `id` is a client of the files (or built in).
    pub fn is_file_client(&self, id: &str) -> bool {
        self.by_id.contains_key(&ClientId(id.to_owned()))
    }

    pub fn insert(&mut self, client: Client) {
        self.by_id.insert(client.id.clone(), Arc::new(client));
    }

    /// The file (and built-in) clients; registered clients are not listed
    /// (discovery and key retention are decided by the files).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.by_id.values()
    }

    /// The current snapshot of registered clients.
    pub fn registered_snapshot(&self) -> ClientsById {
        self.registered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the registered clients with `clients`, leaving out any whose
    /// id is a file client's (the file wins); returns the ids left out.
    pub fn replace_registered(&self, clients: impl IntoIterator<Item = Client>) -> Vec<ClientId> {
        let mut shadowed = Vec::new();
        let mut map = HashMap::new();
        for c in clients {
            if self.by_id.contains_key(&c.id) {
                shadowed.push(c.id);
            } else {
                map.insert(c.id.clone(), Arc::new(c));
            }
        }
        *self
            .registered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(map);
        shadowed
    }

    /// File clients (registered ones are counted by the snapshot).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hash_roundtrip_and_match() {
        let h = ClientSecretHash::of("s3cret-value");
        let parsed = ClientSecretHash::parse(&h.encode()).unwrap();
        assert_eq!(parsed, h);
        assert!(h.matches("s3cret-value"));
        assert!(!h.matches("s3cret-valuE"));
        assert!(ClientSecretHash::parse("md5:abc").is_none());
        assert!(ClientSecretHash::parse("sha256:short").is_none());
    }
}
