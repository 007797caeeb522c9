//! The client registration endpoint (RFC 7591 §3) and the client
//! configuration endpoint (RFC 7592 §2), JSON in and out. Not found unless
//! `[registration] enabled = true`.

use super::{Peer, no_store, peer_addr, request_meta};
use crate::app::AppState;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use idp_core::registration::{RegistrationError, bearer};
use serde_json::json;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/register", post(register)).route(
        "/register/{client_id}",
        get(read).put(update).delete(delete),
    )
}

/// The discovery document `doc` with `registration_endpoint` (RFC 8414 §2).
pub fn advertise(doc: &str, issuer: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(doc).expect("discovery is JSON");
    v["registration_endpoint"] = json!(format!("{}/register", issuer.trim_end_matches('/')));
    v.to_string()
}

/// RFC 7591 §3.2.2 errors; `invalid_token` as RFC 6750 §3.1 (401 with a
/// `WWW-Authenticate` challenge).
fn error(e: RegistrationError) -> Response {
    tracing::info!(
        error = e.code,
        detail = e.description.as_str(),
        "registration refused"
    );
    let status = match e.code {
        "invalid_token" => StatusCode::UNAUTHORIZED,
        "temporarily_unavailable" => StatusCode::TOO_MANY_REQUESTS,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut res = (
        status,
        Json(json!({"error": e.code, "error_description": e.description})),
    )
        .into_response();
    if let Some(secs) = e.retry_after {
        // RFC 9110 §10.2.3.
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    no_store(res)
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

fn token(headers: &HeaderMap) -> Option<&str> {
    bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let r = &state.registration;
    if !r.enabled() {
        return not_found();
    }
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match r.register(token(&headers), &body, meta.ip.as_deref()).await {
        Ok(info) => no_store((StatusCode::CREATED, Json(info)).into_response()),
        Err(e) => error(e),
    }
}

async fn read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = &state.registration;
    if !r.enabled() {
        return not_found();
    }
    match r.read(&client_id, token(&headers)).await {
        Ok(info) => no_store(Json(info).into_response()),
        Err(e) => error(e),
    }
}

async fn update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = &state.registration;
    if !r.enabled() {
        return not_found();
    }
    match r.update(&client_id, token(&headers), &body).await {
        Ok(info) => no_store(Json(info).into_response()),
        Err(e) => error(e),
    }
}

async fn delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = &state.registration;
    if !r.enabled() {
        return not_found();
    }
    match r.delete(&client_id, token(&headers)).await {
        Ok(()) => no_store(StatusCode::NO_CONTENT.into_response()),
        Err(e) => error(e),
    }
}
