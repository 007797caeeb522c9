//! Client authentication at the token, pushed authorization request,
//! introspection and revocation endpoints (RFC 6749 §2.3, RFC 7523 §2.2,
//! OpenID Connect Core §9). A client authenticates the one way its file
//! registers:
//!
//! - `client_secret_basic` / `client_secret_post`: its secret, by HTTP Basic
//!   or in the form (either, one per request), checked against its hash;
//! - `private_key_jwt`: a JWT signed by one of its keys (`jwks`, or
//!   `jwks_uri` fetched through [`JwksFetcher`] and kept
//!   [`KEYS_FRESH_FOR`]; a key id not found is fetched again, at most every
//!   [`REFETCH_AFTER`]);
//! - `client_secret_jwt`: a JWT signed with HMAC-SHA256 over its secret;
//! - `none`: a public client, its `client_id` only.
//!
//! An assertion's audience is this provider's issuer identifier only
//! (draft-ietf-oauth-rfc7523bis §4: not an endpoint URL), it lives at most
//! [`MAX_ASSERTION_LIFETIME_SECS`], and its `jti` is single use: it is
//! remembered in the short-lived store until the assertion expires, so a
//! replay on any node is refused.

use super::client_jwt::{self, AssertionRules, ClientJwtError, ClientKeys, Signer};
use super::error::OAuthError;
use crate::client::{Client, ClientKeySource, ClientRegistry, TokenEndpointAuthMethod};
use crate::clock::SharedClock;
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use crate::secret::Secret;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// RFC 7523 §2.2.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long an assertion may live (`exp` - `iat`).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
/// How long keys fetched from a `jwks_uri` are used without fetching again.
pub const KEYS_FRESH_FOR: Duration = Duration::from_secs(300);
/// The least time between two fetches of one `jwks_uri` (an unknown key id
/// fetches again, but a flood of them does not flood the client).
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// Client credentials as presented: HTTP Basic, form fields, or an assertion.
#[derive(Debug, Default, Clone)]
pub struct ClientAuthInput {
    /// Already URL-decoded (RFC 6749 §2.3.1).
    pub basic: Option<(String, Secret)>,
    pub form_client_id: Option<String>,
    pub form_client_secret: Option<Secret>,
    /// `client_assertion_type` (RFC 7521 §4.2).
    pub assertion_type: Option<String>,
    /// `client_assertion`.
    pub assertion: Option<String>,
}

/// Fetches a client's `jwks_uri` (an outside system: the client's server).
#[async_trait]
pub trait JwksFetcher: Send + Sync {
    /// The JWKS document's text, or why it could not be had.
    async fn fetch(&self, uri: &str) -> Result<String, String>;
}

struct Fetched {
    keys: Arc<ClientKeys>,
    at: OffsetDateTime,
}

/// Authenticates clients; see the module docs.
pub struct ClientAuthentication {
    clients: Arc<ClientRegistry>,
    issuer: String,
    clock: SharedClock,
    fetcher: Arc<dyn JwksFetcher>,
    fetched: Mutex<HashMap<String, Fetched>>,
    seen_jtis: Records<bool>,
}

impl ClientAuthentication {
    pub fn new(
        clients: Arc<ClientRegistry>,
        issuer: String,
        clock: SharedClock,
        fetcher: Arc<dyn JwksFetcher>,
        store: Arc<dyn EphemeralStore>,
    ) -> Self {
        Self {
            clients,
            issuer,
            clock,
            fetcher,
            fetched: Mutex::new(HashMap::new()),
            seen_jtis: Records::new(store, Namespace::ClientAssertion),
        }
    }

    /// The client these credentials prove, or `invalid_client` (`invalid_request`
    /// for credentials sent two ways at once).
    pub async fn authenticate(&self, auth: &ClientAuthInput) -> Result<Arc<Client>, OAuthError> {
        let ways = [
            auth.basic.is_some(),
            auth.form_client_secret.is_some(),
            auth.assertion.is_some() || auth.assertion_type.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(OAuthError::invalid_request(
                "use only one client authentication method",
            ));
        }
        if auth.assertion.is_some() || auth.assertion_type.is_some() {
            return self.by_assertion(auth).await;
        }
        let (id, secret) = match (&auth.basic, &auth.form_client_secret) {
            (Some((id, secret)), _) => {
                if auth.form_client_id.as_ref().is_some_and(|f| f != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id does not match the authenticated client",
                    ));
                }
                (id.as_str(), Some(secret))
            }
            (None, secret) => (
                auth.form_client_id.as_deref().ok_or_else(|| {
                    OAuthError::invalid_client().with_detail("no client credentials")
                })?,
                secret.as_ref(),
            ),
        };
        let client = self.client(id)?;
        let bad = || OAuthError::invalid_client().with_detail(format!("bad credentials for {id}"));
        match (client.auth_method, &client.secret_hash, secret) {
            (
                TokenEndpointAuthMethod::ClientSecretBasic
                | TokenEndpointAuthMethod::ClientSecretPost,
                Some(hash),
                Some(s),
            ) if hash.matches(s.expose()) => Ok(client),
            (TokenEndpointAuthMethod::None, None, None) => Ok(client),
            (
                TokenEndpointAuthMethod::PrivateKeyJwt | TokenEndpointAuthMethod::ClientSecretJwt,
                ..,
            ) => Err(bad().with_detail(format!("{id} must authenticate with a signed JWT"))),
            _ => Err(bad()),
        }
    }

    fn client(&self, id: &str) -> Result<Arc<Client>, OAuthError> {
        self.clients
            .get(id)
            .ok_or_else(|| OAuthError::invalid_client().with_detail(format!("unknown client {id}")))
    }

    /// RFC 7523 §3: `private_key_jwt` and `client_secret_jwt`.
    async fn by_assertion(&self, auth: &ClientAuthInput) -> Result<Arc<Client>, OAuthError> {
        if auth.assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_client()
                .with_detail("client_assertion_type is missing or not jwt-bearer"));
        }
        let jwt = auth.assertion.as_deref().ok_or_else(|| {
            OAuthError::invalid_client().with_detail("client_assertion is missing")
        })?;
        let id = client_jwt::unverified_issuer(jwt).ok_or_else(|| {
            OAuthError::invalid_client().with_detail("client_assertion has no issuer")
        })?;
        if auth.form_client_id.as_ref().is_some_and(|f| *f != id) {
            return Err(OAuthError::invalid_client()
                .with_detail("client_id does not match the assertion's issuer"));
        }
        let client = self.client(&id)?;
        let rules = AssertionRules {
            client_id: &client.id.0,
            issuer: &self.issuer,
            now: self.clock.now(),
            max_lifetime_secs: MAX_ASSERTION_LIFETIME_SECS,
            fapi2: client.protocol.fapi2,
        };
        let refused = |e: ClientJwtError| {
            OAuthError::invalid_client().with_detail(format!("client assertion of {id}: {e}"))
        };
        let verified = match client.auth_method {
            TokenEndpointAuthMethod::ClientSecretJwt => {
                let secret = client.protocol.jwt_secret.as_ref().ok_or_else(|| {
                    OAuthError::invalid_client().with_detail(format!("{id} has no JWT secret"))
                })?;
                client_jwt::verify_client_assertion(
                    jwt,
                    &Signer::Secret(secret.expose().as_bytes()),
                    &rules,
                )
                .map_err(refused)?
            }
            TokenEndpointAuthMethod::PrivateKeyJwt => {
                let keys = self.keys_of(&client, false).await?;
                match client_jwt::verify_client_assertion(jwt, &Signer::Keys(&keys), &rules) {
                    Err(ClientJwtError::UnknownKey) if self.may_refetch(&client) => {
                        let keys = self.keys_of(&client, true).await?;
                        client_jwt::verify_client_assertion(jwt, &Signer::Keys(&keys), &rules)
                            .map_err(refused)?
                    }
                    other => other.map_err(refused)?,
                }
            }
            _ => {
                return Err(OAuthError::invalid_client().with_detail(format!(
                    "{id} is not registered for JWT client authentication"
                )));
            }
        };
        let ttl = (verified.exp - self.clock.now()).whole_seconds() + client_jwt::CLOCK_SKEW_SECS;
        let first = self
            .seen_jtis
            .put_new(
                &format!("{}\u{0}{}", client.id.0, verified.jti),
                &true,
                Duration::from_secs(ttl.max(1) as u64),
            )
            .await
            .map_err(CoreError::from)?;
        if !first {
            return Err(OAuthError::invalid_client()
                .with_detail(format!("client assertion of {id}: jti replayed")));
        }
        Ok(client)
    }

    /// The client's public keys: from its file, or its `jwks_uri` (fetched
    /// when not fresh, or when `refresh` and not fetched in the last
    /// [`REFETCH_AFTER`]).
    pub async fn keys_of(
        &self,
        client: &Client,
        refresh: bool,
    ) -> Result<Arc<ClientKeys>, OAuthError> {
        let uri = match &client.protocol.keys {
            Some(ClientKeySource::Inline(keys)) => return Ok(keys.clone()),
            Some(ClientKeySource::Remote(uri)) => uri,
            None => {
                return Err(OAuthError::invalid_client()
                    .with_detail(format!("{} has no registered keys", client.id.0)));
            }
        };
        let now = self.clock.now();
        if let Some(f) = self.lock().get(uri)
            && now - f.at
                < if refresh {
                    REFETCH_AFTER
                } else {
                    KEYS_FRESH_FOR
                }
        {
            return Ok(f.keys.clone());
        }
        let unavailable = |why: String| {
            OAuthError::invalid_client().with_detail(format!("jwks_uri of {}: {why}", client.id.0))
        };
        let text = self.fetcher.fetch(uri).await.map_err(unavailable)?;
        let keys = Arc::new(ClientKeys::from_jwks(&text).map_err(|e| unavailable(e.to_string()))?);
        self.lock().insert(
            uri.clone(),
            Fetched {
                keys: keys.clone(),
                at: now,
            },
        );
        Ok(keys)
    }

    /// Whether an unknown key id may send us to the client's `jwks_uri` again.
    fn may_refetch(&self, client: &Client) -> bool {
        let Some(ClientKeySource::Remote(uri)) = &client.protocol.keys else {
            return false;
        };
        let now = self.clock.now();
        self.lock()
            .get(uri)
            .is_none_or(|f| now - f.at >= REFETCH_AFTER)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fetched>> {
        self.fetched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fetcher for deployments where no client has a `jwks_uri`.
#[derive(Debug, Default)]
pub struct NoJwksFetcher;

#[async_trait]
impl JwksFetcher for NoJwksFetcher {
    async fn fetch(&self, uri: &str) -> Result<String, String> {
        Err(format!("no HTTP client to fetch {uri}"))
    }
}
