//! Where an authorization request's parameters come from, before the
//! checks of [`super::authorize`] run on them:
//!
//! - the query (or form) of `/authorize`, as they are;
//! - a request object by value (`request`, RFC 9101): a JWT signed with one
//!   of the client's registered keys, whose claims are the parameters
//!   (§6.3: only those; the outer `client_id` must match);
//! - a pushed authorization request (`request_uri`, RFC 9126): parameters
//!   the client sent to the PAR endpoint, authenticated, checked there, and
//!   kept [`PAR_LIFETIME_SECS`] under a random `request_uri` usable once.
//!
//! A request object's `exp`, `nbf`, `iss` and `aud` are checked, and its
//! `jti`, when it has one, is single use (remembered in the short-lived
//! store until the object expires, at most an hour).

use super::authorize::{
    AuthorizeError, RESOURCE, RawParams, RequestSource, check_authorize_request,
};
use super::client_auth::ClientAuthentication;
use super::client_jwt::{self, ClientJwtError, RequestObjectRules};
use super::error::{ErrorCode, OAuthError};
use super::resources::ResourceServers;
use crate::client::{Client, ClientRegistry};
use crate::clock::SharedClock;
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use std::sync::Arc;
use std::time::Duration;

/// RFC 9126 §2.2: the `request_uri` prefix of pushed requests.
pub const PAR_URN_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a pushed request can be used (RFC 9126 §2.2: short).
pub const PAR_LIFETIME_SECS: u64 = 60;
/// How long a request object's `jti` is remembered when it has no `exp`.
const JTI_MEMORY_SECS: u64 = 3600;

/// A pushed request as kept: its parameters, and when it stops being
/// usable (checked with the provider's clock; the store's expiry only
/// cleans up).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Pushed {
    params: Vec<(String, String)>,
    expires_at: i64,
}

/// Pushed requests and request objects.
pub struct RequestObjects {
    clients: Arc<ClientRegistry>,
    resources: Arc<ResourceServers>,
    client_auth: Arc<ClientAuthentication>,
    issuer: String,
    clock: SharedClock,
    pushed: Records<Pushed>,
    seen_jtis: Records<bool>,
}

impl RequestObjects {
    pub fn new(
        clients: Arc<ClientRegistry>,
        resources: Arc<ResourceServers>,
        client_auth: Arc<ClientAuthentication>,
        issuer: String,
        clock: SharedClock,
        store: Arc<dyn EphemeralStore>,
    ) -> Self {
        Self {
            clients,
            resources,
            client_auth,
            issuer,
            clock,
            pushed: Records::new(store.clone(), Namespace::PushedRequest),
            seen_jtis: Records::new(store, Namespace::RequestObject),
        }
    }

    /// The PAR endpoint (RFC 9126 §2), for an authenticated `client`: the
    /// parameters (or the request object among them) are checked as the
    /// authorization endpoint would, then kept. Returns the `request_uri`
    /// and its lifetime in seconds. `proof_jkt`: the key of a DPoP proof
    /// sent with the request, which binds the code as `dpop_jkt` does (RFC
    /// 9449 §10.1; both, when sent, must agree).
    pub async fn push(
        &self,
        client: &Client,
        params: RawParams,
        proof_jkt: Option<String>,
    ) -> Result<(String, u64), OAuthError> {
        if params.get("request_uri").is_some() {
            return Err(OAuthError::invalid_request(
                "request_uri cannot be pushed (RFC 9126 §2.1)",
            ));
        }
        if params.get("client_id").is_some_and(|id| id != client.id.0) {
            return Err(OAuthError::invalid_request(
                "client_id does not match the authenticated client",
            ));
        }
        let params = match params.get("request") {
            Some(jwt) => self.open_request_object(client, jwt).await?,
            None => params,
        };
        let mut pairs = params.pairs();
        if params.get("client_id").is_none() {
            pairs.push(("client_id".into(), client.id.0.clone()));
        }
        if let Some(jkt) = proof_jkt {
            match params.get("dpop_jkt") {
                None => pairs.push(("dpop_jkt".into(), jkt)),
                Some(named) if named == jkt => {}
                Some(_) => {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidDpopProof,
                        "the DPoP proof's key is not the one dpop_jkt names",
                    ));
                }
            }
        }
        let params = RawParams::new(pairs.clone());
        // (Checked as `/authorize` will check them.)
        check_authorize_request(
            &params,
            &self.clients,
            &self.resources,
            RequestSource::Pushed,
        )
        .map_err(|e| match e {
            AuthorizeError::Page(e) => e,
            AuthorizeError::Redirect { error, .. } => error,
        })?;
        let id = crate::random::token();
        let record = Pushed {
            params: pairs,
            expires_at: self.clock.now().unix_timestamp() + PAR_LIFETIME_SECS as i64,
        };
        self.pushed
            .put(&id, &record, Duration::from_secs(PAR_LIFETIME_SECS))
            .await
            .map_err(CoreError::from)?;
        Ok((format!("{PAR_URN_PREFIX}{id}"), PAR_LIFETIME_SECS))
    }

    /// The parameters an `/authorize` request stands for, and where they
    /// came from. Errors are shown on a page: the redirect URI is not
    /// trusted yet.
    pub async fn resolve(
        &self,
        params: RawParams,
    ) -> Result<(RawParams, RequestSource), AuthorizeError> {
        let page = AuthorizeError::Page;
        // A `request_uri` that is not a pushed request's, and a request
        // object from a client without keys, are left for the checks to
        // refuse as unsupported (`request_uri_not_supported`,
        // `request_not_supported`), sent to the client's redirect URI.
        if let Some(id) = params
            .get("request_uri")
            .and_then(|uri| uri.strip_prefix(PAR_URN_PREFIX))
        {
            let stored = self
                .pushed
                .take(id)
                .await
                .map_err(|e| page(CoreError::from(e).into()))?
                .filter(|p| p.expires_at > self.clock.now().unix_timestamp())
                .ok_or_else(|| {
                    page(OAuthError::new(
                        ErrorCode::InvalidRequestUri,
                        "the request_uri is unknown, expired or already used",
                    ))
                })?;
            let pushed = RawParams::new(stored.params);
            // RFC 9126 §4: the client_id sent along must be the pusher's.
            if params.get("client_id") != pushed.get("client_id") {
                return Err(page(OAuthError::invalid_request(
                    "client_id does not match the pushed request",
                )));
            }
            return Ok((pushed, RequestSource::Pushed));
        }
        if let Some(jwt) = params.get("request")
            && params.get("request_uri").is_none()
            && let Some(client) = params.get("client_id").and_then(|id| self.clients.get(id))
            && client.protocol.keys.is_some()
        {
            let opened = self.open_request_object(&client, jwt).await.map_err(page)?;
            return Ok((opened, RequestSource::Query));
        }
        Ok((params, RequestSource::Query))
    }

    /// RFC 9101 §6.3: the request object's claims, as the parameters, once
    /// its signature (a key of the client's), `iss`, `aud`, `exp`, `nbf`,
    /// `client_id` and single-use `jti` are checked.
    async fn open_request_object(
        &self,
        client: &Client,
        jwt: &str,
    ) -> Result<RawParams, OAuthError> {
        let refused = |e: ClientJwtError| {
            OAuthError::new(
                ErrorCode::InvalidRequestObject,
                "the request object is invalid",
            )
            .with_detail(format!("request object of {}: {e}", client.id.0))
        };
        let rules = RequestObjectRules {
            client_id: &client.id.0,
            issuer: &self.issuer,
            now: self.clock.now(),
            fapi2: client.protocol.fapi2,
        };
        let keys = self.client_auth.keys_of(client, false).await.map_err(|e| {
            OAuthError::new(
                ErrorCode::InvalidRequestObject,
                "the client has no usable keys",
            )
            .with_detail(e.detail.unwrap_or_default())
        })?;
        let verified = match client_jwt::verify_request_object(jwt, &keys, &rules) {
            Err(ClientJwtError::UnknownKey) => {
                let keys =
                    self.client_auth.keys_of(client, true).await.map_err(|e| {
                        refused(ClientJwtError::Malformed(e.description.into_owned()))
                    })?;
                client_jwt::verify_request_object(jwt, &keys, &rules).map_err(refused)?
            }
            other => other.map_err(refused)?,
        };
        if let Some(jti) = &verified.jti {
            let ttl = verified.exp.map_or(JTI_MEMORY_SECS, |exp| {
                ((exp - self.clock.now()).whole_seconds() + client_jwt::CLOCK_SKEW_SECS)
                    .clamp(1, JTI_MEMORY_SECS as i64) as u64
            });
            let first = self
                .seen_jtis
                .put_new(
                    &format!("{}\u{0}{jti}", client.id.0),
                    &true,
                    Duration::from_secs(ttl),
                )
                .await
                .map_err(CoreError::from)?;
            if !first {
                return Err(refused(ClientJwtError::Claim("jti replayed".into())));
            }
        }
        let mut pairs: Vec<(String, String)> = verified
            .claims
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "iss" | "aud" | "exp" | "nbf" | "iat" | "jti"))
            .flat_map(|(k, v)| {
                let texts = match v {
                    serde_json::Value::String(s) => vec![s.clone()],
                    // RFC 8707 §2: several resources, as an array.
                    serde_json::Value::Array(items) if k == RESOURCE => items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect(),
                    // `claims` is an object, `max_age` a number (RFC 9101 §4).
                    other => vec![other.to_string()],
                };
                texts.into_iter().map(move |t| (k.clone(), t))
            })
            .collect();
        if !pairs.iter().any(|(k, _)| k == "client_id") {
            pairs.push(("client_id".into(), client.id.0.clone()));
        }
        Ok(RawParams::new(pairs))
    }
}
