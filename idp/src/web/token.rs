//! Back-channel endpoints: token, userinfo, introspection, revocation. JSON
//! out, RFC 6749 §5.2 errors with their status codes.

use super::no_store;
use super::{Peer, peer_addr, request_meta};
use crate::app::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use idp_core::oidc::authorize::RawParams;
use idp_core::oidc::client_auth::ClientAuthInput;
use idp_core::oidc::dpop::ProofPolicy;
use idp_core::oidc::token_endpoint::TokenRequest;
use idp_core::oidc::{ErrorCode, OAuthError};
use idp_core::secret::Secret;
use serde_json::json;
use std::sync::Arc;

/// An OAuth error as JSON with the right status (RFC 6749 §5.2, RFC 6750 §3).
pub(crate) struct ApiError {
    error: OAuthError,
    basic_used: bool,
}

impl From<OAuthError> for ApiError {
    fn from(error: OAuthError) -> Self {
        Self {
            error,
            basic_used: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = &self.error;
        if let Some(d) = &e.detail {
            tracing::info!(error = %e, detail = d.as_str(), "request refused");
        }
        let status = match e.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut res = (
            status,
            Json(json!({"error": e.code.as_str(), "error_description": e.description})),
        )
            .into_response();
        let h = res.headers_mut();
        if e.code == ErrorCode::InvalidClient && self.basic_used {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"idp\""),
            );
        }
        if e.code == ErrorCode::InvalidToken {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        res
    }
}

/// Parses a form body; the content type must be a form (RFC 6749 §3.2).
pub(crate) fn form_params(headers: &HeaderMap, body: &[u8]) -> Result<RawParams, OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the form body is malformed"))?;
    // Token requests carry a handful of parameters: comparing each with the
    // ones before it is cheaper than hashing them. Beyond that (a body may
    // hold thousands), a set, so the check stays linear.
    // `resource` alone may be repeated (RFC 8707 §2).
    let single = |k: &str| k != idp_core::oidc::authorize::RESOURCE;
    let repeated = if pairs.len() <= 16 {
        pairs
            .iter()
            .enumerate()
            .any(|(i, (k, _))| single(k) && pairs[..i].iter().any(|(earlier, _)| earlier == k))
    } else {
        let mut seen = std::collections::HashSet::new();
        pairs
            .iter()
            .any(|(k, _)| single(k) && !seen.insert(k.as_str()))
    };
    if repeated {
        return Err(OAuthError::invalid_request(
            "a parameter was sent more than once",
        ));
    }
    Ok(RawParams::new(pairs))
}

/// HTTP Basic client credentials, each part form-URL-decoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, Secret)>, OAuthError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client().with_detail("malformed Basic credentials");
    let v = v.to_str().map_err(|_| bad())?;
    let Some(b64) = v
        .strip_prefix("Basic ")
        .or_else(|| v.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let decoded = STANDARD.decode(b64.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((dec(id), Secret::new(dec(secret)))))
}

fn client_auth(headers: &HeaderMap, form: &RawParams) -> Result<ClientAuthInput, ApiError> {
    let basic = basic_credentials(headers).map_err(|e| ApiError {
        error: e,
        basic_used: true,
    })?;
    Ok(ClientAuthInput {
        basic,
        form_client_id: form.get("client_id").map(str::to_owned),
        form_client_secret: form.get("client_secret").map(|s| Secret::new(s.to_owned())),
        assertion_type: form.get("client_assertion_type").map(str::to_owned),
        assertion: form.get("client_assertion").map(str::to_owned),
    })
}

pub(crate) async fn authenticated(
    state: &AppState,
    headers: &HeaderMap,
    form: &RawParams,
) -> Result<Arc<idp_core::client::Client>, ApiError> {
    let auth = client_auth(headers, form)?;
    let basic_used = auth.basic.is_some();
    state
        .provider
        .client_auth
        .authenticate(&auth)
        .await
        .map_err(|error| ApiError { error, basic_used })
}

#[tracing::instrument(skip_all)]
pub(crate) async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (form, auth) = match form_params(&headers, &body)
        .map_err(ApiError::from)
        .and_then(|form| client_auth(&headers, &form).map(|auth| (form, auth)))
    {
        Ok(parsed) => parsed,
        Err(e) => return no_store(e.into_response()),
    };
    let basic_used = auth.basic.is_some();
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let proofs = dpop_headers(&headers);
    let url = format!("{}/token", state.provider.settings.issuer);
    let answer = state
        .provider
        .token_endpoint
        .token(TokenRequest {
            auth,
            form: &form,
            dpop: &proofs,
            url: &url,
            meta: &meta,
        })
        .await;
    let res = match answer.result {
        Ok(tokens) => Json(tokens).into_response(),
        Err(error) => ApiError { error, basic_used }.into_response(),
    };
    no_store(with_dpop_nonce(res, answer.dpop_nonce))
}

/// RFC 9449 §8: the `DPoP-Nonce` header, for a client that needs nonces.
fn with_dpop_nonce(mut res: Response, nonce: Option<String>) -> Response {
    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        res.headers_mut().insert("dpop-nonce", v);
    }
    res
}

/// The values of the request's `DPoP` headers.
fn dpop_headers(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("dpop")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// A 401 in the `DPoP` scheme (RFC 9449 §7.1), with the algorithms accepted.
fn dpop_challenge(error: &str, description: &str) -> Response {
    let mut res = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "DPoP error=\"{error}\", algs=\"ES256 PS256 RS256\""
    )) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    no_store(res)
}

/// The pushed authorization request endpoint (RFC 9126 §2): the client
/// authenticates as at the token endpoint; 201 with the `request_uri`.
#[tracing::instrument(skip_all)]
pub(crate) async fn pushed_authorization_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let form = form_params(&headers, &body)?;
        let client = authenticated(&state, &headers, &form).await?;
        // RFC 9449 §10.1: a DPoP proof sent with the pushed request binds
        // the code to its key, as `dpop_jkt` would (and must agree with it).
        let url = format!("{}/par", state.provider.settings.issuer);
        let proof = if client.protocol.dpop_bound {
            state
                .provider
                .dpop
                .check(
                    &dpop_headers(&headers),
                    "POST",
                    &url,
                    None,
                    ProofPolicy {
                        nonce: false,
                        ..ProofPolicy::of(&client)
                    },
                )
                .await?
        } else {
            None
        };
        // The credentials are not part of the request.
        let params = RawParams::new(form.pairs().into_iter().filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "client_secret" | "client_assertion" | "client_assertion_type"
            )
        }));
        let (request_uri, expires_in) = state
            .provider
            .request_objects
            .push(&client, params, proof.map(|p| p.jkt))
            .await?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"request_uri": request_uri, "expires_in": expires_in})),
        )
            .into_response())
    }
    .await;
    no_store(result.unwrap_or_else(IntoResponse::into_response))
}

/// Userinfo: the token in the Authorization header, or (POST) in the form body (RFC 6750 §2).
#[tracing::instrument(skip_all)]
pub(crate) async fn userinfo(
    State(state): State<AppState>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // RFC 9449 §7.1: a DPoP-bound token comes in the `DPoP` scheme, with a
    // proof of its key for this request.
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
    {
        let token = token.trim();
        let url = format!("{}/userinfo", state.provider.settings.issuer);
        let proofs = dpop_headers(&headers);
        let checked = state
            .provider
            .dpop
            .check(
                &proofs,
                method.as_str(),
                &url,
                Some(token),
                ProofPolicy::default(),
            )
            .await;
        let jkt = match checked {
            Ok(Some(p)) => p.jkt,
            Ok(None) => return dpop_challenge("invalid_dpop_proof", "a DPoP proof is required"),
            Err(e) => return dpop_challenge(e.code.as_str(), &e.description),
        };
        return match state.provider.tokens.userinfo(token, Some(&jkt)).await {
            Ok(claims) => no_store(Json(claims).into_response()),
            Err(e) if e.code == ErrorCode::InvalidToken => {
                dpop_challenge("invalid_token", &e.description)
            }
            Err(e) => ApiError::from(e).into_response(),
        };
    }
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned());
    let from_body = if body.is_empty() {
        None
    } else {
        form_params(&headers, &body)
            .ok()
            .and_then(|f| f.get("access_token").map(str::to_owned))
    };
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return ApiError::from(OAuthError::invalid_request(
                "send the access token only once",
            ))
            .into_response();
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut res = StatusCode::UNAUTHORIZED.into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    };
    match state.provider.tokens.userinfo(&token, None).await {
        Ok(claims) => no_store(Json(claims).into_response()),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[tracing::instrument(skip_all)]
pub(crate) async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let form = form_params(&headers, &body)?;
        let client = authenticated(&state, &headers, &form).await?;
        // A DPoP client's proof sent here is checked (RFC 9449 §4.3, `htu`
        // this endpoint); RP libraries introspect without one, so it is not
        // required.
        let nonce = client
            .protocol
            .require_dpop_nonce
            .then(|| state.provider.dpop.nonce());
        let url = format!("{}/introspect", state.provider.settings.issuer);
        let checked = state
            .provider
            .token_endpoint
            .check_dpop(&client, &dpop_headers(&headers), &url, false)
            .await;
        let res = match checked {
            Ok(_) => Json(state.provider.tokens.introspect(&client, &form).await?).into_response(),
            Err(e) => ApiError::from(e).into_response(),
        };
        Ok(with_dpop_nonce(res, nonce))
    }
    .await;
    no_store(result.unwrap_or_else(IntoResponse::into_response))
}

#[tracing::instrument(skip_all)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let form = form_params(&headers, &body)?;
        let client = authenticated(&state, &headers, &form).await?;
        let meta = request_meta(&state, &headers, peer_addr(&peer));
        state.provider.tokens.revoke(&client, &form, &meta).await?;
        Ok(StatusCode::OK.into_response())
    }
    .await;
    no_store(result.unwrap_or_else(IntoResponse::into_response))
}
