//! The device authorization grant (RFC 8628): the device authorization
//! endpoint, and the user-code page where the user types the code, confirms
//! what is asked, signs in through the requesting client's flow and
//! approves or denies. GET and POST of each page side by side.

use super::forms::{browser, csrf_ok, csrf_token};
use super::token::{ApiError, authenticated, form_params};
use super::{
    BROWSER_COOKIE, DEVICE_COOKIE, Peer, SESSION_COOKIE, error_page, locale, no_store, page,
    peer_addr, request_meta, see_other,
};
use crate::app::AppState;
use crate::theme::Locale;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use idp_core::oidc::authorization::AuthorizeOutcome;
use idp_core::oidc::device::{DeviceRequest, UserCodeLookup};
use serde::Deserialize;

/// The CSRF purpose of the user-code page's forms.
const CSRF_PURPOSE: &str = "device";

/// The user-code pages (the API endpoint is routed with the other APIs).
pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/device", get(code_page).post(code_submit))
        .route("/device/confirm", post(confirm))
        .route("/device/approve", get(approve_page).post(approve))
        .route("/device/qr", get(qr))
}

/// The device authorization endpoint (RFC 8628 §3.1): the client
/// authenticates as at the token endpoint (a public client by its
/// `client_id`); the codes as JSON (§3.2).
#[tracing::instrument(skip_all)]
pub(crate) async fn device_authorization(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let form = form_params(&headers, &body)?;
        let client = authenticated(&state, &headers, &form).await?;
        let answer = state
            .provider
            .device_authorizations
            .request(&client, &form)
            .await?;
        Ok(Json(answer).into_response())
    }
    .await;
    no_store(result.unwrap_or_else(IntoResponse::into_response))
}

#[derive(Deserialize)]
pub(crate) struct CodeQuery {
    #[serde(default)]
    user_code: Option<String>,
}

/// The code form: filled in from `verification_uri_complete`, never sent
/// by itself.
fn code_form(
    state: &AppState,
    browser: &str,
    loc: Locale,
    status: StatusCode,
    user_code: &str,
    error: Option<&str>,
) -> Response {
    page(
        state,
        "default",
        loc,
        status,
        "device.html",
        minijinja::context! {
            action => "/device",
            csrf => csrf_token(state, browser, CSRF_PURPOSE),
            user_code => user_code.chars().take(32).collect::<String>(),
            error => error,
        },
    )
}

/// The user-code page (RFC 8628 §3.3).
#[tracing::instrument(skip_all)]
pub(crate) async fn code_page(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (jar, b) = browser(&state, jar);
    let typed = q.user_code.unwrap_or_default();
    (
        jar,
        no_store(code_form(&state, &b, loc, StatusCode::OK, &typed, None)),
    )
        .into_response()
}

/// A posted form of these pages: parsed, its CSRF token checked, and the
/// browser cookie it must come with; else the page to answer with.
fn checked_form<F: serde::de::DeserializeOwned + HasCsrf>(
    state: &AppState,
    jar: &CookieJar,
    loc: Locale,
    body: &[u8],
) -> Result<(F, String), Box<Response>> {
    let Ok(form) = serde_urlencoded::from_bytes::<F>(body) else {
        return Err(Box::new(bad_request(state, loc)));
    };
    if !csrf_ok(state, jar, CSRF_PURPOSE, form.csrf()) {
        return Err(Box::new(csrf_refused(state, loc)));
    }
    let Some(b) = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned()) else {
        return Err(Box::new(csrf_refused(state, loc)));
    };
    Ok((form, b))
}

trait HasCsrf {
    fn csrf(&self) -> &str;
}

impl HasCsrf for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl HasCsrf for RequestForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Deserialize)]
pub(crate) struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
}

/// A typed user code: throttled; a right one shows what the device asks
/// for and who asks, to confirm before signing in.
#[tracing::instrument(skip_all)]
pub(crate) async fn code_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (form, b) = match checked_form::<CodeForm>(&state, &jar, loc, &body) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let found = state
        .provider
        .device_authorizations
        .find_typed(&form.user_code, &b, &meta)
        .await;
    match found {
        Ok(UserCodeLookup::Found(request)) => {
            no_store(decision_page(&state, &b, loc, &request, false))
        }
        Ok(UserCodeLookup::Unknown) => no_store(code_form(
            &state,
            &b,
            loc,
            StatusCode::BAD_REQUEST,
            &form.user_code,
            Some("device.error.unknown_code"),
        )),
        Ok(UserCodeLookup::Locked { until }) => {
            let fmt = time::macros::format_description!("[hour]:[minute] UTC");
            let retry_after = until.format(&fmt).unwrap_or_default();
            page(
                &state,
                "default",
                loc,
                StatusCode::TOO_MANY_REQUESTS,
                "error.html",
                minijinja::context! {
                    title => "device.title",
                    message => "device.error.locked",
                    detail => retry_after,
                    status => 429,
                },
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "user code look-up failed");
            internal(&state, loc)
        }
    }
}

/// The page naming the client and the scopes: before sign-in ("continue"),
/// or after it (approve or deny).
fn decision_page(
    state: &AppState,
    browser: &str,
    loc: Locale,
    request: &DeviceRequest,
    signed_in: bool,
) -> Response {
    page(
        state,
        &request.client.theme,
        loc,
        StatusCode::OK,
        "device_confirm.html",
        minijinja::context! {
            action => if signed_in { "/device/approve" } else { "/device/confirm" },
            csrf => csrf_token(state, browser, CSRF_PURPOSE),
            request => &request.id,
            client_name => &request.client.name,
            scopes => &request.scope,
            signed_in => signed_in,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    decision: String,
}

/// "Continue": the authorization becomes this browser's, and the client's
/// flow runs as for `/authorize` (a session that satisfies it is reused; one
/// that does not steps up).
#[tracing::instrument(skip_all)]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (form, b) = match checked_form::<RequestForm>(&state, &jar, loc, &body) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    let p = &state.provider;
    let (client, req) = match p.device_authorizations.claim(&form.request, &b).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return expired(&state, loc),
        Err(e) => {
            tracing::error!(error = %e, "device authorization claim failed");
            return internal(&state, loc);
        }
    };
    let session = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let device = jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match p
        .authorization
        .authorize(
            client,
            req,
            session.as_deref(),
            &b,
            device.as_deref(),
            &meta,
        )
        .await
    {
        // Nothing missing: the session's proofs satisfy the client's flow.
        Ok(AuthorizeOutcome::Respond(response)) => see_other(&response.location()),
        Ok(AuthorizeOutcome::Login(flow)) => see_other(&format!("/login/{}", flow.id)),
        Err(e) => {
            tracing::error!(error = %e, "device sign-in failed to start");
            internal(&state, loc)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ApproveQuery {
    #[serde(default)]
    request: String,
}

/// After sign-in: approve or deny.
#[tracing::instrument(skip_all)]
pub(crate) async fn approve_page(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    Query(q): Query<ApproveQuery>,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let Some(b) = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned()) else {
        return expired(&state, loc);
    };
    match state
        .provider
        .device_authorizations
        .awaiting_approval(&q.request, &b)
        .await
    {
        Ok(Some(request)) => no_store(decision_page(&state, &b, loc, &request, true)),
        Ok(None) => expired(&state, loc),
        Err(e) => {
            tracing::error!(error = %e, "device approval page failed");
            internal(&state, loc)
        }
    }
}

/// The user's decision; the device hears of it at its next poll.
#[tracing::instrument(skip_all)]
pub(crate) async fn approve(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (form, b) = match checked_form::<RequestForm>(&state, &jar, loc, &body) {
        Ok(checked) => checked,
        Err(page) => return *page,
    };
    let approved = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return bad_request(&state, loc),
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match state
        .provider
        .device_authorizations
        .decide(&form.request, &b, approved, &meta)
        .await
    {
        Ok(Some(request)) => page(
            &state,
            &request.client.theme,
            loc,
            StatusCode::OK,
            "device_done.html",
            minijinja::context! {
                approved => approved,
                client_name => &request.client.name,
            },
        ),
        Ok(None) => expired(&state, loc),
        Err(e) => {
            tracing::error!(error = %e, "device decision failed");
            internal(&state, loc)
        }
    }
}

/// The QR code of `verification_uri_complete` (RFC 8628 §3.3.1), for a
/// live user code only: an unknown one is a 404 after the same reads, and
/// counts as a wrong guess (a locked browser or address gets 404s).
#[tracing::instrument(skip_all)]
pub(crate) async fn qr(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Query(q): Query<CodeQuery>,
) -> Response {
    let d = &state.provider.device_authorizations;
    let typed = q.user_code.unwrap_or_default();
    let code = idp_core::oidc::device::UserCode::parse(&typed);
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let live = d.is_live(&typed, browser.as_deref(), &meta).await;
    match (code, live) {
        (Some(code), Ok(true)) => {
            let url = d.verification_uri_complete(&code.display());
            match crate::qr::svg(&url) {
                Some(svg) => no_store(
                    (
                        [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
                        svg,
                    )
                        .into_response(),
                ),
                None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        (_, Err(e)) => {
            tracing::error!(error = %e, "user code look-up failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        _ => no_store(StatusCode::NOT_FOUND.into_response()),
    }
}

fn bad_request(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::BAD_REQUEST,
        "error.invalid_request",
        None,
    )
}

fn csrf_refused(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::FORBIDDEN,
        "error.csrf",
        None,
    )
}

fn expired(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::BAD_REQUEST,
        "device.error.expired",
        None,
    )
}

fn internal(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::INTERNAL_SERVER_ERROR,
        "error.internal",
        None,
    )
}
