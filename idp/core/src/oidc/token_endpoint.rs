//! The token endpoint (RFC 6749 §3.2) as a pipeline, as the authorization
//! endpoint's is in [`super::authorize`]. Every request goes through, in
//! order:
//!
//! 1. [`TokenEndpoint::check_client_authentication`]: RFC 6749 §2.3 and
//!    §3.2.1, RFC 7523 §3 (see [`super::client_auth`]);
//! 2. [`check_grant_type`]: RFC 6749 §4.1.3, §6, §4.4.2 and §5.2 (the grant
//!    is one we support and the client may use);
//! 3. [`TokenEndpoint::check_dpop`]: RFC 9449 §4.3 and §5 (a client with
//!    `dpop_bound_access_tokens` sends a proof, which binds the tokens), §8
//!    (nonces);
//!
//! then the grant's own checks, each a `check_*` function of
//! [`super::token`] citing its section:
//!
//! - `authorization_code`: `check_code_binding` (RFC 6749 §4.1.3),
//!   `check_code_verifier` (RFC 7636 §4.6), `check_code_key` (RFC 9449
//!   §10), the resources (RFC 8707 §2.2),
//!   then the code's single use (RFC 6749 §4.1.2);
//! - `refresh_token`: `check_refresh_binding` (RFC 6749 §6, §10.4),
//!   `check_refresh_key` (RFC 9449 §5), `check_refresh_scope` (RFC 6749
//!   §6), the resources (RFC 8707 §2.2), then the rotation (RFC 9700
//!   §4.14.2);
//! - `client_credentials`: `check_client_credentials_scope` (RFC 6749
//!   §4.4.2), the resources (RFC 8707 §2);
//! - token exchange (RFC 8693): see [`super::token`]'s `exchange` module;
//! - `urn:ietf:params:oauth:grant-type:device_code`: `check_device_client`
//!   (RFC 8628 §3.4), `check_device_expiry` and `check_poll_interval`
//!   (§3.5) of [`super::device`], the resources (RFC 8707 §2.2), then the
//!   approved authorization's single use.
//!
//! No grant repeats a check of the common steps.

use super::authorize::RawParams;
use super::client_auth::{ClientAuthInput, ClientAuthentication};
use super::device::DeviceAuthorizations;
use super::dpop::{DpopProofs, ProofPolicy};
use super::error::{ErrorCode, OAuthError};
use super::token::{TokenResponse, Tokens};
use crate::client::Client;
use crate::domain::RequestMeta;
use std::sync::Arc;

/// A token request as received.
pub struct TokenRequest<'a> {
    /// The client's credentials, however presented.
    pub auth: ClientAuthInput,
    /// The form body's parameters.
    pub form: &'a RawParams,
    /// The values of the request's `DPoP` headers (RFC 9449 §4.1).
    pub dpop: &'a [&'a str],
    /// The endpoint's URL as the client addresses it: the proof's `htu`.
    pub url: &'a str,
    pub meta: &'a RequestMeta,
}

/// The answer, and a fresh `DPoP-Nonce` for a client that needs nonces
/// (RFC 9449 §8: also sent on errors, so the client can retry).
pub struct TokenAnswer<T> {
    pub result: Result<T, OAuthError>,
    pub dpop_nonce: Option<String>,
}

/// The grants of RFC 6749 this provider supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 §4.1.3.
    AuthorizationCode,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.4.2.
    ClientCredentials,
    /// RFC 8693 §2.1.
    TokenExchange,
    /// RFC 8628 §3.4.
    DeviceCode,
}

/// RFC 6749 §5.2: `grant_type` present (`invalid_request`), supported
/// (`unsupported_grant_type`; the password and implicit grants never are,
/// RFC 9700 §2.4) and allowed to this client by its file
/// (`unauthorized_client`; never client credentials for a public client,
/// §4.4).
pub fn check_grant_type(form: &RawParams, client: &Client) -> Result<Grant, OAuthError> {
    let grant = match form.get("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
        Some("authorization_code") => Grant::AuthorizationCode,
        Some("refresh_token") => Grant::RefreshToken,
        Some("client_credentials") => Grant::ClientCredentials,
        Some(super::token::TOKEN_EXCHANGE) => Grant::TokenExchange,
        Some(super::device::DEVICE_CODE_GRANT) => Grant::DeviceCode,
        Some(_) => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "unsupported grant_type",
            ));
        }
    };
    let allowed = match grant {
        Grant::AuthorizationCode => client.allow_authorization_code,
        Grant::RefreshToken => client.allow_refresh_token,
        Grant::ClientCredentials => !client.is_public() && client.allow_client_credentials,
        Grant::TokenExchange => !client.is_public() && client.protocol.token_exchange,
        Grant::DeviceCode => client.protocol.allow_device_code,
    };
    if !allowed {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "grant not allowed for this client",
        ));
    }
    Ok(grant)
}

/// The token endpoint's pipeline (see the module docs).
pub struct TokenEndpoint {
    client_auth: Arc<ClientAuthentication>,
    dpop: Arc<DpopProofs>,
    tokens: Arc<Tokens>,
    device: Arc<DeviceAuthorizations>,
}

impl TokenEndpoint {
    pub fn new(
        client_auth: Arc<ClientAuthentication>,
        dpop: Arc<DpopProofs>,
        tokens: Arc<Tokens>,
        device: Arc<DeviceAuthorizations>,
    ) -> Self {
        Self {
            client_auth,
            dpop,
            tokens,
            device,
        }
    }

    /// Runs a token request through the pipeline.
    pub async fn token(&self, req: TokenRequest<'_>) -> TokenAnswer<TokenResponse> {
        let client = match self.check_client_authentication(&req.auth).await {
            Ok(c) => c,
            Err(e) => {
                return TokenAnswer {
                    result: Err(e),
                    dpop_nonce: None,
                };
            }
        };
        let dpop_nonce = client
            .protocol
            .require_dpop_nonce
            .then(|| self.dpop.nonce());
        let result = async {
            let grant = check_grant_type(req.form, &client)?;
            let jkt = self.check_dpop(&client, req.dpop, req.url, true).await?;
            let jkt = jkt.as_deref();
            match grant {
                Grant::AuthorizationCode => {
                    self.tokens
                        .grant_authorization_code(&client, req.form, req.meta, jkt)
                        .await
                }
                Grant::RefreshToken => {
                    self.tokens
                        .grant_refresh_token(&client, req.form, req.meta, jkt)
                        .await
                }
                Grant::ClientCredentials => {
                    self.tokens
                        .grant_client_credentials(&client, req.form, jkt)
                        .await
                }
                Grant::TokenExchange => {
                    self.tokens
                        .grant_token_exchange(&client, req.form, req.meta, jkt)
                        .await
                }
                Grant::DeviceCode => {
                    let (code, record) = self.device.poll(&client, req.form).await?;
                    self.tokens
                        .grant_device_code(&client, code, &record, req.form, jkt)
                        .await
                }
            }
        }
        .await;
        TokenAnswer { result, dpop_nonce }
    }

    /// RFC 6749 §2.3 and §3.2.1, RFC 7523 §3: the client, authenticated the
    /// way its file registers (see [`super::client_auth`]).
    pub async fn check_client_authentication(
        &self,
        auth: &ClientAuthInput,
    ) -> Result<Arc<Client>, OAuthError> {
        self.client_auth.authenticate(auth).await
    }

    /// RFC 9449 §5: for a client with `dpop_bound_access_tokens` (§5.2),
    /// the key of the request's DPoP proof, required and checked (§4.3, a
    /// single-use `jti`; a nonce for a client with `require_dpop_nonce`,
    /// §8; ES256 or PS256 for a FAPI 2.0 client), which the tokens are
    /// bound to. DPoP is enabled per client: any other client's `DPoP`
    /// header is ignored, and its tokens are bearer tokens. With `required`
    /// false (the introspection endpoint, which RP libraries call without a
    /// proof), a proof is checked when sent.
    pub async fn check_dpop(
        &self,
        client: &Client,
        proofs: &[&str],
        url: &str,
        required: bool,
    ) -> Result<Option<String>, OAuthError> {
        if !client.protocol.dpop_bound {
            return Ok(None);
        }
        let proof = self
            .dpop
            .check(proofs, "POST", url, None, ProofPolicy::of(client))
            .await?;
        match proof {
            Some(p) => Ok(Some(p.jkt)),
            None if !required => Ok(None),
            None => Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "a DPoP proof is required",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(grant: &str) -> RawParams {
        RawParams::new([("grant_type".to_owned(), grant.to_owned())])
    }

    #[test]
    fn grant_types_are_checked_once_for_every_grant() {
        let mut c = crate::oidc::authorize::tests::client(false);
        c.allow_client_credentials = true;
        assert_eq!(
            check_grant_type(&form("authorization_code"), &c).unwrap(),
            Grant::AuthorizationCode
        );
        assert_eq!(
            check_grant_type(&form("refresh_token"), &c).unwrap(),
            Grant::RefreshToken
        );
        assert_eq!(
            check_grant_type(&form("client_credentials"), &c).unwrap(),
            Grant::ClientCredentials
        );
        for g in ["password", "implicit", "urn:x"] {
            assert_eq!(
                check_grant_type(&form(g), &c).unwrap_err().code,
                ErrorCode::UnsupportedGrantType
            );
        }
        assert_eq!(
            check_grant_type(&RawParams::new([]), &c).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        c.allow_refresh_token = false;
        assert_eq!(
            check_grant_type(&form("refresh_token"), &c)
                .unwrap_err()
                .code,
            ErrorCode::UnauthorizedClient
        );
        // The device grant only for a client whose file allows it.
        let device = form(crate::oidc::device::DEVICE_CODE_GRANT);
        assert_eq!(
            check_grant_type(&device, &c).unwrap_err().code,
            ErrorCode::UnauthorizedClient
        );
        c.protocol.allow_device_code = true;
        assert_eq!(check_grant_type(&device, &c).unwrap(), Grant::DeviceCode);
        // A public client never gets client credentials, nor exchanges.
        let mut public = crate::oidc::authorize::tests::client(true);
        public.allow_client_credentials = true;
        public.protocol.token_exchange = true;
        for g in ["client_credentials", crate::oidc::token::TOKEN_EXCHANGE] {
            assert_eq!(
                check_grant_type(&form(g), &public).unwrap_err().code,
                ErrorCode::UnauthorizedClient
            );
        }
        // Token exchange only for the clients whose file allows it.
        assert_eq!(
            check_grant_type(&form(crate::oidc::token::TOKEN_EXCHANGE), &c)
                .unwrap_err()
                .code,
            ErrorCode::UnauthorizedClient
        );
        c.protocol.token_exchange = true;
        assert_eq!(
            check_grant_type(&form(crate::oidc::token::TOKEN_EXCHANGE), &c).unwrap(),
            Grant::TokenExchange
        );
    }
}
