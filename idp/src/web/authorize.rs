//! The authorization endpoint and the hosted login pages it leads to
//! (identifier, then password). GET and POST of each page side by side.

use super::{
    BROWSER_COOKIE, DEVICE_COOKIE, LANG_COOKIE, Peer, SESSION_COOKIE, cookie, error_page, locale,
    page as page_response, peer_addr, request_meta, see_other,
};
use crate::app::AppState;
use crate::theme::Locale;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use idp_core::domain::RequestMeta;
use idp_core::flow::{FlowError, FlowPage, StepInput, SubmitOutcome};
use idp_core::oidc::authorization::AuthorizeOutcome;
use idp_core::oidc::authorize::{AuthorizeError, RawParams, check_authorize_request};
use idp_core::oidc::response::{AuthorizationResponse, Delivery};
use serde::Deserialize;

const BROWSER_COOKIE_AGE: i64 = 400 * 24 * 3600;

/// Sends an authorization response to the client: a 303 with the
/// parameters in the query, or (form post response modes) a page whose form
/// posts them to the redirect URI, submitted by the theme's script (no
/// inline script: the CSP forbids it) or by the button without script.
pub(crate) fn deliver(state: &AppState, loc: Locale, response: &AuthorizationResponse) -> Response {
    match response.delivery {
        Delivery::Redirect => see_other(&response.location()),
        Delivery::FormPost => page_response(
            state,
            "default",
            loc,
            StatusCode::OK,
            "form_post.html",
            minijinja::context! {
                action => &response.redirect_uri,
                fields => response.params.iter().map(|(k, v)| minijinja::context! { name => k, value => v }).collect::<Vec<_>>(),
            },
        ),
    }
}

fn internal_error(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::INTERNAL_SERVER_ERROR,
        "error.internal",
        None,
    )
}

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
    peer: Peer,
    RawQuery(q): RawQuery,
) -> Response {
    authorize(state, jar, headers, peer, q.unwrap_or_default().as_bytes()).await
}

/// OIDC Core §3.1.2.1: the endpoint accepts POST with a form body too.
#[tracing::instrument(skip_all)]
pub(crate) async fn authorize_post(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    authorize(state, jar, headers, peer, &body).await
}

async fn authorize(
    state: AppState,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    raw: &[u8],
) -> Response {
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
    let resolved = state.provider.request_objects.resolve(params).await;
    let (params, source) = match resolved {
        Ok(ok) => ok,
        Err(AuthorizeError::Page(e)) => {
            tracing::info!(error = %e, detail = e.detail.as_deref().unwrap_or(""), "authorization request refused");
            return error_page(
                &state,
                "default",
                loc,
                StatusCode::BAD_REQUEST,
                "error.invalid_request",
                Some(&e.description),
            );
        }
        Err(AuthorizeError::Redirect { .. }) => return internal_error(&state, loc),
    };
    let (client, req) = match check_authorize_request(
        &params,
        &state.provider.clients,
        &state.provider.resources,
        source,
    ) {
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
            mode,
            error,
        }) => {
            tracing::info!(error = %error, "authorization request refused, redirecting");
            // The client and redirect URI were checked before this error.
            let Some(client) = state
                .provider
                .clients
                .get(params.get("client_id").unwrap_or(""))
            else {
                return internal_error(&state, loc);
            };
            return match state.provider.authorization.error_response_to(
                &client,
                &redirect_uri,
                st.as_deref(),
                mode,
                &error,
            ) {
                Ok(response) => deliver(&state, loc, &response),
                Err(e) => {
                    tracing::error!(error = %e, "authorization error response failed");
                    internal_error(&state, loc)
                }
            };
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
    let device = jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match state
        .provider
        .authorization
        .authorize(
            client.clone(),
            req,
            session.as_deref(),
            &browser,
            device.as_deref(),
            &meta,
        )
        .await
    {
        Ok(AuthorizeOutcome::Respond(response)) => {
            (jar, deliver(&state, loc, &response)).into_response()
        }
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
    peer: Peer,
) -> Response {
    let jar = match q.lang.as_deref() {
        Some(l @ ("en" | "fr")) => {
            jar.add(cookie(&state, LANG_COOKIE, l.to_owned(), 365 * 24 * 3600))
        }
        _ => jar,
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    // Loaded once: for the page's language, then for the page.
    let flow = match state
        .provider
        .runner
        .load(&flow_id, browser.as_deref())
        .await
    {
        Ok(f) => f,
        Err(e) => return (jar.clone(), flow_error(&state, &jar, &headers, e)).into_response(),
    };
    let loc = match q.lang.as_deref() {
        Some("fr") => Locale::Fr,
        Some("en") => Locale::En,
        _ => locale(&jar, &headers, flow.request.ui_locales.as_deref()),
    };
    match state
        .provider
        .runner
        .page_of(flow, &meta, loc.as_str())
        .await
    {
        Ok(page) => (jar, render_page(&state, &page, loc, StatusCode::OK)).into_response(),
        Err(e) => (jar.clone(), flow_error(&state, &jar, &headers, e)).into_response(),
    }
}

/// Renders a flow page with its step's template.
fn render_page(state: &AppState, page: &FlowPage, loc: Locale, status: StatusCode) -> Response {
    let flow = &page.flow;
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
    let alternatives = page
        .alternatives
        .iter()
        .map(|k| minijinja::context! { method => k.as_str(), label => format!("method.{}", k.as_str()) })
        .collect::<Vec<_>>();
    let identifier = flow
        .identifier
        .clone()
        .or_else(|| {
            page.challenge
                .data
                .get("identifier")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .or_else(|| flow.request.login_hint.clone())
        .unwrap_or_default();
    let retry_after = page.locked_until.and_then(|until| {
        let fmt = time::macros::format_description!("[hour]:[minute] UTC");
        until.format(&fmt).ok()
    });
    let template = format!("{}.html", page.challenge.template);
    page_response(
        state,
        &theme,
        loc,
        status,
        &template,
        minijinja::context! {
            action => format!("/login/{}/{}", flow.id, page.step.as_str()),
            step => page.step.as_str(),
            csrf => flow.csrf.clone(),
            identifier => identifier,
            error => page.challenge.error,
            retry_after => retry_after,
            client_name => client_name,
            enrolling => page.enrolling,
            alternatives => alternatives,
            switch_action => format!("/login/{}/method", flow.id),
            change_identifier_url => format!("/login/{}/restart", flow.id),
            forgot_password_url => format!("/forgot-password?client_id={}", flow.request.client_id),
            forgot_identifier_url => format!("/forgot-identifier?client_id={}", flow.request.client_id),
            create_org_url => client.as_ref().filter(|c| c.account.allow_org_creation).map(|c| format!("/organizations/new?client_id={}", c.id)),
            upstreams => minijinja::Value::from(minijinja::value::Serde(&page.upstreams)),
            federate_action => format!("/login/{}/federate", flow.id),
            linking => flow.pending_link.as_ref().map(|l| l.display_name.clone()),
            lang_links => lang_links,
            data => minijinja::Value::from(minijinja::value::Serde(&page.challenge.data)),
        },
    )
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
        FlowError::OpenedElsewhere { client_id } => {
            let theme = state
                .provider
                .clients
                .get(&client_id)
                .map_or_else(|| "default".to_owned(), |c| c.theme.clone());
            error_page(
                state,
                &theme,
                loc,
                StatusCode::BAD_REQUEST,
                "error.opened_elsewhere",
                None,
            )
        }
        FlowError::UnknownCallback => error_page(
            state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.upstream_state",
            None,
        ),
        FlowError::NoUsableMethod => error_page(
            state,
            "default",
            loc,
            StatusCode::FORBIDDEN,
            "error.no_usable_method",
            None,
        ),
        FlowError::Core(e) => {
            tracing::error!(error = %e, "login flow failed");
            internal_error(state, loc)
        }
    }
}

/// A submission for one step of the flow (`/login/{flow}/{step}`).
#[tracing::instrument(skip_all, fields(step = %step))]
pub(crate) async fn submit_step(
    State(state): State<AppState>,
    Path((flow_id, step)): Path<(String, String)>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return error_page(
            &state,
            "default",
            locale(&jar, &headers, None),
            StatusCode::BAD_REQUEST,
            "error.invalid_request",
            None,
        );
    };
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let input = StepInput::new(fields.into_iter().filter(|(k, _)| k != "csrf"));
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let p = &state.provider;
    // Loaded once: for the page's language, then for the submission.
    let (loc, outcome) = match p.runner.load(&flow_id, browser.as_deref()).await {
        Ok(flow) => {
            let loc = locale(&jar, &headers, flow.request.ui_locales.as_deref());
            let outcome = p
                .runner
                .submit_to(flow, &csrf, &step, &input, &meta, loc.as_str())
                .await;
            (loc, outcome)
        }
        Err(e) => (locale(&jar, &headers, None), Err(e)),
    };
    outcome_response(&state, jar, &headers, &meta, &flow_id, loc, outcome).await
}

/// The response to what a submission (or a callback) led to; a completed
/// login opens or extends the session and issues the code.
async fn outcome_response(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    meta: &RequestMeta,
    flow_id: &str,
    loc: Locale,
    outcome: Result<SubmitOutcome, FlowError>,
) -> Response {
    match outcome {
        Ok(SubmitOutcome::Completed(completion)) => {
            let finished = match state.provider.authorization.finish(*completion, meta).await {
                Ok(f) => f,
                Err(e) => return flow_error(state, &jar, headers, FlowError::Core(e)),
            };
            let mut jar = jar;
            if let Some((value, ttl)) = finished.session_cookie {
                jar = jar.add(cookie(state, SESSION_COOKIE, value, ttl.as_secs() as i64));
            }
            if let Some((value, ttl)) = finished.device_cookie {
                jar = jar.add(cookie(state, DEVICE_COOKIE, value, ttl.as_secs() as i64));
            }
            (jar, deliver(state, loc, &finished.response)).into_response()
        }
        Ok(SubmitOutcome::Next) => see_other(&format!("/login/{flow_id}")),
        Ok(SubmitOutcome::Redirect(to)) => see_other(&to),
        Ok(SubmitOutcome::Show { page, failed }) => {
            let status = match (failed, page.locked_until.is_some(), page.challenge.error) {
                (_, true, _) => StatusCode::TOO_MANY_REQUESTS,
                (true, _, Some("login.invalid_identifier")) => StatusCode::BAD_REQUEST,
                (true, _, Some(e)) if e.starts_with("login.upstream.") => StatusCode::FORBIDDEN,
                (true, _, _) => StatusCode::UNAUTHORIZED,
                (false, _, _) => StatusCode::OK,
            };
            render_page(state, &page, loc, status)
        }
        Err(FlowError::WrongStage | FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(state, &jar, headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct FederateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    upstream: String,
}

/// "Continue with <upstream>" on an identifier page.
#[tracing::instrument(skip_all)]
pub(crate) async fn federate(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let form = serde_urlencoded::from_bytes::<FederateForm>(&body).unwrap_or(FederateForm {
        csrf: String::new(),
        upstream: String::new(),
    });
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let loc = locale(&jar, &headers, None);
    let outcome = state
        .provider
        .runner
        .federate(
            &flow_id,
            browser.as_deref(),
            &form.csrf,
            &form.upstream,
            &meta,
            loc.as_str(),
        )
        .await;
    outcome_response(&state, jar, &headers, &meta, &flow_id, loc, outcome).await
}

/// An upstream provider's answer: `state` names the login flow, which goes
/// on (or shows why the answer was refused).
#[tracing::instrument(skip_all, fields(upstream = %upstream))]
pub(crate) async fn upstream_callback(
    State(state): State<AppState>,
    Path(upstream): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    RawQuery(q): RawQuery,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let Ok(mut params) =
        serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or_default())
    else {
        return error_page(
            &state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.upstream_state",
            None,
        );
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    // The upstream's `state` names the flow (single use); the route names
    // the upstream, whatever the query says.
    let token = params
        .iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    params.retain(|(k, _)| k != "upstream");
    params.push(("upstream".to_owned(), upstream));
    match state
        .provider
        .runner
        .callback(&token, params, browser.as_deref(), &meta, loc.as_str())
        .await
    {
        Ok((flow_id, outcome)) => {
            outcome_response(&state, jar, &headers, &meta, &flow_id, loc, Ok(outcome)).await
        }
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

/// A link a step sent (an emailed sign-in link): `token` names the login
/// flow, which goes on in the browser that started it; opened elsewhere, a
/// page says where to open it, and the link stays usable there.
#[tracing::instrument(skip_all)]
pub(crate) async fn callback(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    RawQuery(q): RawQuery,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let params =
        serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or_default())
            .unwrap_or_default();
    let token = params
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match state
        .provider
        .runner
        .callback(&token, params, browser.as_deref(), &meta, loc.as_str())
        .await
    {
        Ok((flow_id, outcome)) => {
            outcome_response(&state, jar, &headers, &meta, &flow_id, loc, Ok(outcome)).await
        }
        Err(FlowError::UnknownCallback) => error_page(
            &state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.link_expired",
            None,
        ),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct MethodForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    method: String,
}

/// "Use another method".
#[tracing::instrument(skip_all)]
pub(crate) async fn choose_method(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let form = serde_urlencoded::from_bytes::<MethodForm>(&body).unwrap_or(MethodForm {
        csrf: String::new(),
        method: String::new(),
    });
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match state
        .provider
        .runner
        .choose_method(
            &flow_id,
            browser.as_deref(),
            &form.csrf,
            &form.method,
            &meta,
        )
        .await
    {
        Ok(()) | Err(FlowError::WrongStage | FlowError::Conflict) => {
            see_other(&format!("/login/{flow_id}"))
        }
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// "Not you?": back to the start of the flow.
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
        .runner
        .restart(&flow_id, browser.as_deref(), &form.csrf)
        .await
    {
        Ok(_) | Err(FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}

/// The "Not you?" link: a navigation that only takes the flow back to its
/// start (harmless, so no CSRF token; the browser binding holds).
#[tracing::instrument(skip_all)]
pub(crate) async fn restart_link(
    State(state): State<AppState>,
    Path(flow_id): Path<String>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let browser = jar.get(BROWSER_COOKIE).map(|c| c.value().to_owned());
    let p = &state.provider;
    let flow = match p.runner.load(&flow_id, browser.as_deref()).await {
        Ok(f) => f,
        Err(e) => return flow_error(&state, &jar, &headers, e),
    };
    match p
        .runner
        .restart(&flow_id, browser.as_deref(), &flow.csrf)
        .await
    {
        Ok(_) | Err(FlowError::Conflict) => see_other(&format!("/login/{flow_id}")),
        Err(e) => flow_error(&state, &jar, &headers, e),
    }
}
