//! The authorization endpoint and the hosted login pages it leads to
//! (identifier, then password). GET and POST of each page side by side.

use super::{
    BROWSER_COOKIE, LANG_COOKIE, Peer, SESSION_COOKIE, cookie, error_page, locale, page, peer_addr,
    request_meta, see_other,
};
use crate::app::AppState;
use crate::theme::Locale;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use idp_core::oidc::authorize::{AuthorizeError, RawParams, check_authorize_request};
use idp_core::oidc::login::{
    AuthorizeOutcome, FlowError, FlowStage, LoginFlow, PasswordOutcome, authorize_error_redirect,
};
use idp_core::secret::Secret;
use serde::Deserialize;

const BROWSER_COOKIE_AGE: i64 = 400 * 24 * 3600;

fn parse_pairs(raw: &[u8]) -> Option<RawParams> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
        .ok()
        .map(RawParams::new)
}

#[tracing::instrument(skip_all)]
pub(crate) async fn authorize_get(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    authorize(state, jar, headers, q.unwrap_or_default().as_bytes()).await
}

/// OIDC Core §3.1.2.1: the endpoint accepts POST with a form body too.
#[tracing::instrument(skip_all)]
pub(crate) async fn authorize_post(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorize(state, jar, headers, &body).await
}

async fn authorize(state: AppState, jar: CookieJar, headers: HeaderMap, raw: &[u8]) -> Response {
    let loc = locale(&jar, &headers, None);
    let Some(params) = parse_pairs(raw) else {
        return error_page(
            &state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.invalid_request",
            Some("malformed parameters"),
        );
    };
    let loc = locale(&jar, &headers, params.get("ui_locales"));
    let (client, req) = match check_authorize_request(&params, &state.provider.clients) {
        Ok(ok) => ok,
        Err(AuthorizeError::Page(e)) => {
            tracing::info!(error = %e, detail = e.detail.as_deref().unwrap_or(""), "authorization request refused");
            let msg = if e.description.contains("redirect_uri") {
                "error.invalid_redirect_uri"
            } else if e.description.contains("client") {
                "error.unknown_client"
            } else {
                "error.invalid_request"
            };
            return error_page(
                &state,
                "default",
                loc,
                StatusCode::BAD_REQUEST,
                msg,
                Some(&e.description),
            );
        }
        Err(AuthorizeError::Redirect {
            redirect_uri,
            state: st,
            error,
        }) => {
            tracing::info!(error = %error, "authorization request refused, redirecting");
            return see_other(&authorize_error_redirect(
                &state.provider.settings.issuer,
                &redirect_uri,
                st.as_deref(),
                &error,
            ));
        }
    };
    let (jar, browser) = match jar.get(BROWSER_COOKIE) {
        Some(c) if c.value().len() >= 32 => {
            let v = c.value().to_owned();
            (jar, v)
        }
        _ => {
            let v = idp_core::random::token();
            (
                jar.add(cookie(
                    &state,
                    BROWSER_COOKIE,
                    v.clone(),
                    BROWSER_COOKIE_AGE,
                )),
                v,
            )
        }
    };
    let session = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    match state
        .provider
        .authorize(client.clone(), req, session.as_deref(), &browser)
        .await
    {
        Ok(AuthorizeOutcome::Redirect(to)) => (jar, see_other(&to)).into_response(),
        Ok(AuthorizeOutcome::Login(flow)) => {
            (jar, see_other(&format!("/login/{}", flow.id))).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "authorize failed");
            error_page(
                &state,
                &client.theme,
                loc,
                StatusCode::INTERNAL_SERVER_ERROR,
                "error.internal",
                None,
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LangQuery {
    lang: Option<String>,
}

/// Shows the current step of a login flow.
#[tracing::instrument(skip_all)]
pub(crate) async fn login_page(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    Query(q): Query<LangQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let jar = match q.lang.as_deref() {
        Some(l @ ("en" | "fr")) => {
            jar.add(cookie(&state, LANG_COOKIE, l.to_owned(), 365 * 24 * 3600))
        }
        _ => jar,
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let flow = match state.provider.load_flow(&flow_id, browser.as_deref()).await {
        Ok(f) => f,
        Err(e) => return (jar.clone(), flow_error(&state, &jar, &headers, e)).into_response(),
    };
    let loc = match q.lang.as_deref() {
        Some("fr") => Locale::Fr,
        Some("en") => Locale::En,
        _ => locale(&jar, &headers, flow.request.ui_locales.as_deref()),
    };
    (
        jar,
        render_stage(&state, &flow, loc, StatusCode::OK, None, None),
    )
        .into_response()
}

fn render_stage(
    state: &AppState,
    flow: &LoginFlow,
    loc: Locale,
    status: StatusCode,
    error: Option<&str>,
    retry_after: Option<String>,
) -> Response {
    let client = state.provider.clients.get(&flow.request.client_id);
    let (theme, client_name) = client
        .as_ref()
        .map_or(("default".to_owned(), String::new()), |c| {
            (c.theme.clone(), c.name.clone())
        });
    let lang_links = [("en", "English"), ("fr", "Français")]
        .iter()
        .map(|(l, label)| minijinja::context! { lang => *l, label => *label, href => format!("/login/{}?lang={l}", flow.id) })
        .collect::<Vec<_>>();
    match &flow.stage {
        FlowStage::Password { identifier, .. } => page(
            state,
            &theme,
            loc,
            status,
            "password.html",
            minijinja::context! {
                action => format!("/login/{}/password", flow.id),
                change_identifier_url => format!("/login/{}/restart", flow.id),
                csrf => flow.csrf.clone(),
                identifier => identifier.clone(),
                error => error,
                retry_after => retry_after,
                client_name => client_name,
                forgot_password_url => "/forgot-password",
                lang_links => lang_links,
            },
        ),
        _ => page(
            state,
            &theme,
            loc,
            status,
            "identifier.html",
            minijinja::context! {
                action => format!("/login/{}/identifier", flow.id),
                csrf => flow.csrf.clone(),
                identifier => flow.request.login_hint.clone().unwrap_or_default(),
                error => error,
                client_name => client_name,
                forgot_password_url => "/forgot-password",
                forgot_identifier_url => "/forgot-identifier",
                lang_links => lang_links,
            },
        ),
    }
}

fn flow_error(state: &AppState, jar: &CookieJar, headers: &HeaderMap, e: FlowError) -> Response {
    let loc = locale(jar, headers, None);
    match e {
        FlowError::NotFound | FlowError::WrongBrowser => error_page(
            state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.flow_expired",
            None,
        ),
        FlowError::Csrf => error_page(
            state,
            "default",
            loc,
            StatusCode::FORBIDDEN,
            "error.csrf",
            None,
        ),
        FlowError::Conflict | FlowError::WrongStage => error_page(
            state,
            "default",
            loc,
            StatusCode::CONFLICT,
            "error.flow_expired",
            None,
        ),
        FlowError::Core(e) => {
            tracing::error!(error = %e, "login flow failed");
            error_page(
                state,
                "default",
                loc,
                StatusCode::INTERNAL_SERVER_ERROR,
                "error.internal",
                None,
            )
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct IdentifierForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    identifier: String,
}

#[tracing::instrument(skip_all)]
pub(crate) async fn submit_identifier(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<IdentifierForm>(&body) else {
        return error_page(
            &state,
            "default",
            locale(&jar, &headers, None),
            StatusCode::BAD_REQUEST,
            "error.invalid_request",
            None,
        );
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let p = &state.provider;
    match p
        .submit_identifier(&flow_id, browser.as_deref(), &form.csrf, &form.identifier)
        .await
    {
        Ok(Some(_)) => see_other(&format!("/login/{flow_id}")),
        Ok(None) => match p.load_flow(&flow_id, browser.as_deref()).await {
            Ok(flow) => {
                let loc = locale(&jar, &headers, flow.request.ui_locales.as_deref());
                render_stage(
                    &state,
                    &flow,
                    loc,
                    StatusCode::BAD_REQUEST,
                    Some("login.invalid_identifier"),
                    None,
                )
            }
            Err(e) => flow_error(&state, &jar, &headers, e),
        },
        Err(FlowError::WrongStage | FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

#[tracing::instrument(skip_all)]
pub(crate) async fn submit_password(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<PasswordForm>(&body) else {
        return error_page(
            &state,
            "default",
            locale(&jar, &headers, None),
            StatusCode::BAD_REQUEST,
            "error.invalid_request",
            None,
        );
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let password = Secret::new(form.password);
    match state
        .provider
        .submit_password(&flow_id, browser.as_deref(), &form.csrf, &password, &meta)
        .await
    {
        Ok(PasswordOutcome::Completed {
            redirect,
            session_cookie,
            session_ttl,
        }) => {
            let jar = jar.add(cookie(
                &state,
                SESSION_COOKIE,
                session_cookie,
                session_ttl.as_secs() as i64,
            ));
            (jar, see_other(&redirect)).into_response()
        }
        Ok(PasswordOutcome::Rejected(flow)) => {
            let loc = locale(&jar, &headers, flow.request.ui_locales.as_deref());
            render_stage(
                &state,
                &flow,
                loc,
                StatusCode::UNAUTHORIZED,
                Some("login.invalid_credentials"),
                None,
            )
        }
        Ok(PasswordOutcome::Locked(flow, until)) => {
            let loc = locale(&jar, &headers, flow.request.ui_locales.as_deref());
            let fmt = time::macros::format_description!("[hour]:[minute] UTC");
            let at = until.format(&fmt).ok();
            render_stage(
                &state,
                &flow,
                loc,
                StatusCode::TOO_MANY_REQUESTS,
                Some("login.locked"),
                at,
            )
        }
        Err(FlowError::WrongStage | FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// "Not you?": back to the identifier screen.
#[tracing::instrument(skip_all)]
pub(crate) async fn restart(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = serde_urlencoded::from_bytes::<CsrfForm>(&body).unwrap_or(CsrfForm {
        csrf: String::new(),
    });
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    match state
        .provider
        .restart_identifier(&flow_id, browser.as_deref(), &form.csrf)
        .await
    {
        Ok(_) | Err(FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

/// The "Not you?" link: a navigation that only moves the flow back to the
/// identifier screen (harmless, so no CSRF token; the browser binding holds).
#[tracing::instrument(skip_all)]
pub(crate) async fn restart_link(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let p = &state.provider;
    let flow = match p.load_flow(&flow_id, browser.as_deref()).await {
        Ok(f) => f,
        Err(e) => return flow_error(&state, &jar, &headers, e),
    };
    match p
        .restart_identifier(&flow_id, browser.as_deref(), &flow.csrf)
        .await
    {
        Ok(_) | Err(FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}
