//! Discovery (OpenID Connect Discovery 1.0 §3, RFC 8414) and the JWKS.

use crate::app::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

/// The metadata document for `issuer`, whose declared assurance levels
/// (the `acr` values flows reach) are `acr_values`.
pub fn document(issuer: &str, acr_values: &[String]) -> String {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "scopes_supported": ["openid", "profile", "email"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash",
                              "email", "email_verified", "name", "preferred_username", "customer_id", "locale", "updated_at"],
        "acr_values_supported": acr_values,
        "ui_locales_supported": ["en", "fr"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    })
    .to_string()
}

/// A JSON document served as is to every client: its bytes and entity tag,
/// made once.
#[derive(Clone, Debug)]
pub struct PublishedJson {
    body: Bytes,
    etag: HeaderValue,
}

impl PublishedJson {
    pub fn new(json: String) -> Self {
        let etag = entity_tag(json.as_bytes());
        Self {
            body: Bytes::from(json),
            etag,
        }
    }
}

/// A strong entity tag for `body`: part of its SHA-256, quoted.
fn entity_tag(body: &[u8]) -> HeaderValue {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(body);
    let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]));
    HeaderValue::from_str(&tag).expect("base64url is a valid header value")
}

/// The document, or 304 Not Modified when the client holds this version
/// (`If-None-Match`, RFC 9110 §13.1.2); cacheable for 5 minutes either way.
fn published(
    headers: &HeaderMap,
    content_type: &'static str,
    body: Bytes,
    etag: HeaderValue,
) -> Response {
    let held = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let mut res = if held {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(body))
    };
    // Room for these and the security headers added on the way out.
    let h = res.headers_mut();
    h.reserve(16);
    if !held {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(header::ETAG, etag);
    res
}

pub(crate) async fn openid_configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Response {
    let doc = &state.discovery;
    published(
        &headers,
        "application/json",
        doc.body.clone(),
        doc.etag.clone(),
    )
}

pub(crate) async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let keys = state.provider.keys.current();
    let etag = HeaderValue::from_str(keys.jwks_etag()).expect("an entity tag is a header value");
    published(
        &headers,
        "application/jwk-set+json",
        Bytes::copy_from_slice(keys.jwks_json().as_bytes()),
        etag,
    )
}
