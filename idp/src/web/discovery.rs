//! Discovery (OpenID Connect Discovery 1.0 §3, RFC 8414) and the JWKS.

use crate::app::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idp_core::client::{Client, TokenEndpointAuthMethod};
use idp_core::oidc::authorize::OFFLINE_ACCESS;
use idp_core::request::ResponseMode;
use serde_json::json;
use std::collections::BTreeSet;

/// The metadata document for `issuer`, whose declared assurance levels
/// (the `acr` values flows reach) are `acr_values`. What a client must
/// enable in its file is listed only when one of `clients` does.
pub fn document(
    issuer: &str,
    acr_values: &[String],
    clients: &[&Client],
    require_par: bool,
) -> String {
    let clients = clients.iter().copied();
    let mut scopes: BTreeSet<&str> = ["openid", "profile", "email"].into();
    scopes.extend(
        clients
            .clone()
            .flat_map(|c| c.scopes.iter().map(String::as_str)),
    );
    if clients.clone().any(|c| c.allow_refresh_token) {
        scopes.insert(OFFLINE_ACCESS);
    }
    let mut response_modes: BTreeSet<ResponseMode> = [ResponseMode::Query].into();
    response_modes.extend(
        clients
            .clone()
            .flat_map(|c| c.protocol.response_modes.iter().copied()),
    );
    let jarm_algs: BTreeSet<&str> = clients
        .clone()
        .filter(|c| c.protocol.response_modes.iter().any(|m| m.is_jwt()))
        .map(|c| c.protocol.authorization_signed_response_alg.as_str())
        .collect();
    // Secrets are always accepted both ways; JWT methods when a client uses them.
    let mut auth_methods = vec!["client_secret_basic", "client_secret_post"];
    let mut auth_algs: Vec<&str> = Vec::new();
    if clients
        .clone()
        .any(|c| c.auth_method == TokenEndpointAuthMethod::PrivateKeyJwt)
    {
        auth_methods.push("private_key_jwt");
        auth_algs.extend(["ES256", "PS256", "RS256"]);
    }
    if clients
        .clone()
        .any(|c| c.auth_method == TokenEndpointAuthMethod::ClientSecretJwt)
    {
        auth_methods.push("client_secret_jwt");
        auth_algs.push("HS256");
    }
    let with_keys = clients.clone().any(|c| c.protocol.keys.is_some());
    let mut with_none = auth_methods.clone();
    with_none.push("none");
    let mut grant_types = vec!["authorization_code", "refresh_token", "client_credentials"];
    if clients.clone().any(|c| c.protocol.token_exchange) {
        // RFC 8693 §2.1 (RFC 8414 §2).
        grant_types.push(idp_core::oidc::token::TOKEN_EXCHANGE);
    }
    let mut subject_types = vec!["public"];
    if clients.clone().any(|c| c.protocol.pairwise.is_some()) {
        // OpenID Connect Core §8, Discovery §3.
        subject_types.push("pairwise");
    }
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/logout"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        // JARM §2.3.4: `jwt` is `query.jwt` for the code flow.
        "response_modes_supported": response_modes
            .iter()
            .flat_map(|m| match m {
                ResponseMode::QueryJwt => vec![m.as_str(), "jwt"],
                _ => vec![m.as_str()],
            })
            .collect::<Vec<_>>(),
        "grant_types_supported": grant_types,
        "subject_types_supported": subject_types,
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": with_none,
        "revocation_endpoint_auth_methods_supported": with_none,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash",
                              "email", "email_verified", "name", "preferred_username", "customer_id", "locale", "updated_at"],
        "acr_values_supported": acr_values,
        "ui_locales_supported": ["en", "fr"],
        "claims_parameter_supported": true,
        // RFC 9126 §5: open to every client; required of all when the
        // server says so (each client's own requirement is its metadata).
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": require_par,
        // RFC 9101 §10.1: request objects by value, from clients with keys;
        // `request_uri` only as a pushed request's reference (never fetched).
        "request_parameter_supported": with_keys,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    // RFC 8628 §4: only when a client may use the device grant.
    if clients.clone().any(|c| c.protocol.allow_device_code) {
        doc["device_authorization_endpoint"] = json!(format!("{issuer}/device_authorization"));
        if let Some(grants) = doc["grant_types_supported"].as_array_mut() {
            grants.push(json!(idp_core::oidc::device::DEVICE_CODE_GRANT));
        }
    }
    if !auth_algs.is_empty() {
        for endpoint in ["token", "revocation", "introspection"] {
            doc[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")] =
                json!(auth_algs);
        }
    }
    if clients.clone().any(|c| c.protocol.dpop_bound) {
        // RFC 9449 §5.1.
        doc["dpop_signing_alg_values_supported"] = json!(["ES256", "PS256", "RS256"]);
    }
    if with_keys {
        doc["request_object_signing_alg_values_supported"] = json!(["ES256", "PS256", "RS256"]);
    }
    if !jarm_algs.is_empty() {
        // JARM §4.
        doc["authorization_signing_alg_values_supported"] = json!(jarm_algs);
    }
    // Back-Channel Logout 1.0 §2.1 and Front-Channel Logout 1.0 §3: always
    // on for a client that registers a logout URI; sessions are sent
    // (`sid`) to clients that require them.
    for key in [
        "backchannel_logout_supported",
        "backchannel_logout_session_supported",
        "frontchannel_logout_supported",
        "frontchannel_logout_session_supported",
    ] {
        doc[key] = json!(true);
    }
    doc.to_string()
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
