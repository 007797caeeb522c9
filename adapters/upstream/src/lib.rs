//! Upstream OpenID providers, on the `openidconnect` crate: the
//! [`Upstreams`] port of `idp_core::federation`.
//!
//! Per upstream: discovery (`/.well-known/openid-configuration`, whose
//! `issuer` must be exactly the configured one, OIDC Discovery §4.3) and its
//! JWKS, cached for an hour and fetched again when an ID token names a key
//! the cache does not hold (key rotation); the authorization request
//! (authorization code, PKCE S256, `state` and `nonce` made by the core); and
//! at the callback: the RFC 9207 `iss` parameter (required when the upstream
//! advertises it), the code exchange (client secret by HTTP Basic, or the
//! client id alone for a public registration), the ID token (signature by an
//! asymmetric algorithm the upstream publishes, `iss`, `aud`, `azp`, `exp`,
//! `iat` not in the future, `nonce`), then UserInfo when the upstream has one (its `sub` must be
//! the ID token's, OIDC Core §5.3.2), and the configured claim mapping.

use async_trait::async_trait;
use base64::Engine;
use idp_core::clock::SharedClock;
use idp_core::domain::ClientId;
use idp_core::federation::{
    UpstreamCallback, UpstreamError, UpstreamIdentity, UpstreamInfo, UpstreamPolicy,
    UpstreamRequest, Upstreams, callback_path,
};
use idp_core::secret::Secret;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::sync::Mutex;

/// How long discovery and keys are kept before being fetched again.
const DISCOVERY_TTL_SECS: i64 = 3600;

/// How far in the future an ID token's `iat` may be (clocks differ).
const MAX_CLOCK_SKEW_SECS: i64 = 120;

/// Which claims hold what (`[upstreams.claims]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub email: String,
    pub email_verified: String,
    pub name: String,
    /// Matched against customer identifiers when set.
    pub username: Option<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            email: "email".into(),
            email_verified: "email_verified".into(),
            name: "name".into(),
            username: None,
        }
    }
}

/// One upstream, checked by the configuration loader.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub display_name: String,
    /// Exactly as the upstream's discovery document and tokens write it.
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public registration (PKCE only).
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    /// Clients whose login pages offer it.
    pub clients: Vec<String>,
    pub policy: UpstreamPolicy,
    pub claims: ClaimMapping,
}

type UpstreamClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Discovered {
    metadata: CoreProviderMetadata,
    /// RFC 9207: the upstream sends `iss` with its answers.
    sends_iss: bool,
    /// Unix seconds.
    fetched_at: i64,
}

struct Upstream {
    settings: UpstreamSettings,
    redirect_uri: RedirectUrl,
    discovered: Mutex<Option<std::sync::Arc<Discovered>>>,
}

/// The configured upstreams.
pub struct OidcUpstreams {
    upstreams: Vec<Upstream>,
    http: reqwest::Client,
    clock: SharedClock,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Unavailable(format!("{what}: {e}"))
}

impl OidcUpstreams {
    /// `issuer` is this provider's (the redirect URIs are on it).
    pub fn new(
        issuer: &str,
        upstreams: Vec<UpstreamSettings>,
        clock: SharedClock,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            // No idle connections kept: an upstream that closes a kept-alive
            // connection just as a request goes out on it (Node's default
            // keep-alive is 5 s) fails that request, which for the token
            // request loses the user's sign-in (seen in a CI run). A
            // sign-in through an upstream makes a handful of requests; a
            // new connection each costs less than that failure.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let upstreams = upstreams
            .into_iter()
            .map(|settings| {
                let uri = format!(
                    "{}{}",
                    issuer.trim_end_matches('/'),
                    callback_path(&settings.name)
                );
                let redirect_uri = RedirectUrl::new(uri)
                    .map_err(|e| format!("upstream {}: redirect URI: {e}", settings.name))?;
                Ok(Upstream {
                    settings,
                    redirect_uri,
                    discovered: Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            upstreams,
            http,
            clock,
        })
    }

    fn upstream(&self, name: &str) -> Result<&Upstream, UpstreamError> {
        self.upstreams
            .iter()
            .find(|u| u.settings.name == name)
            .ok_or_else(|| UpstreamError::Unknown(name.to_owned()))
    }

    /// The redirect URI registered at each upstream, by name.
    pub fn redirect_uris(&self) -> Vec<(String, String)> {
        self.upstreams
            .iter()
            .map(|u| (u.settings.name.clone(), u.redirect_uri.to_string()))
            .collect()
    }

    /// Discovery and keys, from the cache unless stale (or `refresh`).
    async fn discovered(
        &self,
        up: &Upstream,
        refresh: bool,
    ) -> Result<std::sync::Arc<Discovered>, UpstreamError> {
        let now = self.clock.now().unix_timestamp();
        let mut slot = up.discovered.lock().await;
        if let Some(d) = slot.as_ref()
            && !refresh
            && now - d.fetched_at < DISCOVERY_TTL_SECS
        {
            return Ok(d.clone());
        }
        let d = std::sync::Arc::new(self.discover(&up.settings, now).await?);
        *slot = Some(d.clone());
        Ok(d)
    }

    async fn discover(&self, s: &UpstreamSettings, now: i64) -> Result<Discovered, UpstreamError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            s.issuer.trim_end_matches('/')
        );
        let res = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("discovery", e))?;
        if !res.status().is_success() {
            return Err(unavailable("discovery", res.status()));
        }
        let doc: Value = res.json().await.map_err(|e| unavailable("discovery", e))?;
        let sends_iss = doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let metadata: CoreProviderMetadata =
            serde_json::from_value(doc).map_err(|e| unavailable("discovery document", e))?;
        if metadata.issuer().as_str() != s.issuer {
            // A misconfiguration (or a mix-up): the upstream cannot be used.
            return Err(UpstreamError::Unavailable(format!(
                "discovery names issuer {:?}, configured {:?}",
                metadata.issuer().as_str(),
                s.issuer
            )));
        }
        let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| unavailable("JWKS", e))?;
        Ok(Discovered {
            metadata: metadata.set_jwks(jwks),
            sends_iss,
            fetched_at: now,
        })
    }

    fn client(&self, up: &Upstream, d: &Discovered) -> UpstreamClient {
        CoreClient::from_provider_metadata(
            d.metadata.clone(),
            openidconnect::ClientId::new(up.settings.client_id.clone()),
            up.settings
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(up.redirect_uri.clone())
    }

    /// Validates the ID token of `token` against `d`'s keys.
    fn verify_id_token(
        &self,
        up: &Upstream,
        d: &Discovered,
        id_token: &openidconnect::core::CoreIdToken,
        req: &UpstreamRequest,
    ) -> Result<Map<String, Value>, openidconnect::ClaimsVerificationError> {
        let client = self.client(up, d);
        let clock = self.clock.clone();
        let iat_clock = self.clock.clone();
        let algs: Vec<CoreJwsSigningAlgorithm> = d
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|a| {
                !matches!(
                    a,
                    CoreJwsSigningAlgorithm::None
                        | CoreJwsSigningAlgorithm::HmacSha256
                        | CoreJwsSigningAlgorithm::HmacSha384
                        | CoreJwsSigningAlgorithm::HmacSha512
                )
            })
            .cloned()
            .collect();
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(if algs.is_empty() {
                vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
            } else {
                algs
            })
            .set_time_fn(move || {
                chrono::DateTime::from_timestamp(clock.now().unix_timestamp(), 0)
                    .unwrap_or_default()
            })
            // OIDC Core §3.1.3.7 step 10: not issued in the future (beyond
            // clock skew).
            .set_issue_time_verifier_fn(move |iat| {
                let now = iat_clock.now().unix_timestamp();
                if iat.timestamp() > now + MAX_CLOCK_SKEW_SECS {
                    Err(format!("issued in the future (iat {})", iat.timestamp()))
                } else {
                    Ok(())
                }
            });
        // With max_age, `auth_time` is required and must be recent enough
        // (OIDC Core §3.1.3.7 step 13), with the same skew allowance.
        let verifier = match req.max_age {
            Some(secs) => {
                let clock = self.clock.clone();
                let oldest = i64::try_from(secs)
                    .unwrap_or(i64::MAX)
                    .saturating_add(MAX_CLOCK_SKEW_SECS);
                verifier.set_auth_time_verifier_fn(move |auth_time| {
                    let now = clock.now().unix_timestamp();
                    match auth_time {
                        None => Err("no auth_time, though max_age was asked".into()),
                        Some(t) if now.saturating_sub(t.timestamp()) > oldest => Err(format!(
                            "authenticated {} s ago, more than max_age {secs}",
                            now - t.timestamp()
                        )),
                        Some(_) => Ok(()),
                    }
                })
            }
            None => verifier,
        };
        id_token.claims(&verifier, &Nonce::new(req.nonce.clone()))?;
        // Verified: read every claim (the configured mapping may name any).
        let claims = payload(&id_token.to_string())
            .ok_or_else(|| openidconnect::ClaimsVerificationError::Other("payload".into()))?;
        // OIDC Core §3.1.3.7 steps 4-5 (openidconnect 4.1 leaves them out):
        // an `azp` must be our client.
        if let Some(azp) = claims.get("azp")
            && azp.as_str() != Some(up.settings.client_id.as_str())
        {
            return Err(openidconnect::ClaimsVerificationError::InvalidAudience(
                format!("azp {azp} is not this client"),
            ));
        }
        Ok(claims)
    }

    async fn user_info(
        &self,
        d: &Discovered,
        access_token: &str,
        subject: &str,
    ) -> Result<Option<Map<String, Value>>, UpstreamError> {
        let Some(endpoint) = d.metadata.userinfo_endpoint() else {
            return Ok(None);
        };
        let res = self
            .http
            .get(endpoint.url().as_str())
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("UserInfo", e))?;
        if !res.status().is_success() {
            return Err(unavailable("UserInfo", res.status()));
        }
        let json = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(UpstreamError::Invalid(
                "UserInfo is not JSON (signed UserInfo is not supported)".into(),
            ));
        }
        let claims: Map<String, Value> = res
            .json()
            .await
            .map_err(|e| UpstreamError::Invalid(format!("UserInfo: {e}")))?;
        if claims.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(UpstreamError::Invalid(
                "UserInfo names another subject than the ID token".into(),
            ));
        }
        Ok(Some(claims))
    }
}

/// The JSON payload of a compact JWS (already verified).
fn payload(jwt: &str) -> Option<Map<String, Value>> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A claim as text.
fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `email_verified` as a boolean (some providers send the string "true").
fn flag(claims: &Map<String, Value>, name: &str) -> bool {
    match claims.get(name) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// `amr` values that look like RFC 8176 ones (short lower-case tokens).
fn amr(claims: &Map<String, Value>) -> Vec<String> {
    claims
        .get("amr")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|v| {
                    !v.is_empty()
                        && v.len() <= 16
                        && v.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The identity of merged claims (ID token, then UserInfo).
fn identity(up: &UpstreamSettings, claims: &Map<String, Value>) -> UpstreamIdentity {
    let m = &up.claims;
    UpstreamIdentity {
        upstream: up.name.clone(),
        issuer: up.issuer.clone(),
        subject: text(claims, "sub").unwrap_or_default(),
        email: text(claims, &m.email),
        email_verified: flag(claims, &m.email_verified),
        name: text(claims, &m.name),
        username: m.username.as_deref().and_then(|u| text(claims, u)),
        amr: amr(claims),
    }
}

fn verification_error(e: &openidconnect::ClaimsVerificationError) -> UpstreamError {
    use openidconnect::ClaimsVerificationError as E;
    match e {
        E::InvalidIssuer(m) => UpstreamError::WrongIssuer(format!("ID token: {m}")),
        other => UpstreamError::Invalid(format!("ID token: {other}")),
    }
}

#[async_trait]
impl Upstreams for OidcUpstreams {
    fn for_client(&self, client: &ClientId) -> Vec<UpstreamInfo> {
        self.upstreams
            .iter()
            .filter(|u| u.settings.clients.iter().any(|c| c == &client.0))
            .map(|u| UpstreamInfo {
                name: u.settings.name.clone(),
                display_name: u.settings.display_name.clone(),
            })
            .collect()
    }

    fn find(&self, upstream: &str) -> Option<(UpstreamInfo, UpstreamPolicy)> {
        let u = self.upstream(upstream).ok()?;
        Some((
            UpstreamInfo {
                name: u.settings.name.clone(),
                display_name: u.settings.display_name.clone(),
            },
            u.settings.policy,
        ))
    }

    async fn authorization_url(&self, req: &UpstreamRequest) -> Result<String, UpstreamError> {
        let up = self.upstream(&req.upstream)?;
        let d = self.discovered(up, false).await?;
        let client = self.client(up, &d);
        let state = req.state.clone();
        let nonce = req.nonce.clone();
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            req.pkce_verifier.clone(),
        ));
        let mut auth = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for s in up.settings.scopes.iter().filter(|s| *s != "openid") {
            auth = auth.add_scope(Scope::new(s.clone()));
        }
        // The request we serve wants a recent (or fresh) authentication:
        // the upstream must not answer from an older session of its own.
        match req.max_age {
            Some(0) => {
                auth = auth
                    .add_prompt(openidconnect::core::CoreAuthPrompt::Login)
                    .set_max_age(Duration::ZERO);
            }
            Some(secs) => auth = auth.set_max_age(Duration::from_secs(secs)),
            None => {}
        }
        let (url, _, _) = auth.url();
        Ok(url.to_string())
    }

    async fn finish(
        &self,
        req: &UpstreamRequest,
        cb: &UpstreamCallback,
    ) -> Result<UpstreamIdentity, UpstreamError> {
        let up = self.upstream(&req.upstream)?;
        let d = self.discovered(up, false).await?;
        // RFC 9207 / RFC 9700 §4.4: the answer says who sent it.
        match &cb.iss {
            Some(iss) if *iss != up.settings.issuer => {
                return Err(UpstreamError::WrongIssuer(format!(
                    "the answer's iss is {iss:?}"
                )));
            }
            None if d.sends_iss => {
                return Err(UpstreamError::WrongIssuer(
                    "the answer has no iss, which this upstream always sends".into(),
                ));
            }
            _ => {}
        }
        let client = self.client(up, &d);
        let token = client
            .exchange_code(AuthorizationCode::new(cb.code.expose().to_owned()))
            .map_err(|e| unavailable("token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(req.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                openidconnect::RequestTokenError::ServerResponse(r) => {
                    UpstreamError::Refused(r.error().to_string())
                }
                openidconnect::RequestTokenError::Parse(e, _) => {
                    UpstreamError::Invalid(format!("token response: {e}"))
                }
                other => unavailable("token endpoint", other),
            })?;
        let id_token = token
            .id_token()
            .ok_or_else(|| UpstreamError::Invalid("no ID token in the token response".into()))?;
        let mut claims = match self.verify_id_token(up, &d, id_token, req) {
            Ok(c) => c,
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(
                openidconnect::SignatureVerificationError::NoMatchingKey,
            )) => {
                // A key the cache does not hold yet: fetch them again, once.
                let fresh = self.discovered(up, true).await?;
                self.verify_id_token(up, &fresh, id_token, req)
                    .map_err(|e| verification_error(&e))?
            }
            Err(e) => return Err(verification_error(&e)),
        };
        let subject = text(&claims, "sub")
            .ok_or_else(|| UpstreamError::Invalid("ID token without sub".into()))?;
        if subject.len() > 255 {
            return Err(UpstreamError::Invalid("sub longer than 255".into()));
        }
        if let Some(info) = self
            .user_info(&d, token.access_token().secret(), &subject)
            .await?
        {
            for (k, v) in info {
                if !matches!(k.as_str(), "sub" | "iss" | "aud" | "amr") {
                    claims.insert(k, v);
                }
            }
        }
        Ok(identity(&up.settings, &claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_mapped() {
        let up = UpstreamSettings {
            name: "p".into(),
            display_name: "P".into(),
            issuer: "https://p.example".into(),
            client_id: "c".into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            clients: vec![],
            policy: UpstreamPolicy::default(),
            claims: ClaimMapping {
                email: "mail".into(),
                email_verified: "mail_ok".into(),
                name: "display".into(),
                username: Some("uid".into()),
            },
        };
        let claims = serde_json::json!({
            "sub": "s1", "mail": " a@b.example ", "mail_ok": "true", "display": "A B",
            "uid": "ab12345-idp", "amr": ["pwd", "mfa", "Not Valid", 3]
        });
        let id = identity(&up, claims.as_object().unwrap());
        assert_eq!(id.subject, "s1");
        assert_eq!(id.email.as_deref(), Some("a@b.example"));
        assert!(id.email_verified);
        assert_eq!(id.name.as_deref(), Some("A B"));
        assert_eq!(id.username.as_deref(), Some("ab12345-idp"));
        assert_eq!(id.amr, ["pwd", "mfa"]);
        let none = serde_json::json!({"sub": "s2", "mail_ok": false});
        let id = identity(&up, none.as_object().unwrap());
        assert_eq!(
            (id.email, id.email_verified, id.username),
            (None, false, None)
        );
    }
}
