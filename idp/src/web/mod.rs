//! HTTP: the router, security layers and what handlers share (cookies, the
//! client IP, themed pages). Handlers are thin: parse, call the core, render.

pub mod account;
pub mod account_devices;
pub mod admin;
pub mod authorize;
pub mod device;
pub mod discovery;
pub(crate) mod forms;
pub mod logout;
pub mod orgs;
pub mod recovery;
pub mod registration;
pub mod token;

use crate::app::AppState;
use crate::theme::{Locale, negotiate_locale};
use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use idp_core::domain::RequestMeta;
use std::net::SocketAddr;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

/// Templates every client theme must provide (checked at start-up).
pub const TEMPLATES: &[&str] = &[
    "identifier.html",
    "password.html",
    "error.html",
    "logout.html",
    "logged_out.html",
];

pub(crate) const BROWSER_COOKIE: &str = "idp_browser";
pub(crate) const SESSION_COOKIE: &str = "idp_session";
pub(crate) const LANG_COOKIE: &str = "idp_lang";
/// Remembers a browser after a new-device check (random; only its hash is stored).
pub(crate) const DEVICE_COOKIE: &str = "idp_device";

/// Largest request body accepted (forms and token requests are small).
const BODY_LIMIT: usize = 64 * 1024;

// No `form-action`: browsers (Chromium) apply it to the redirects that follow
// a form post too, and the last login step's post redirects to the client's
// redirect URI, another origin (found by the e2e suite).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> Router {
    let hsts = state.secure_cookies;
    // RFC 9700 §2.6: CORS on the token, metadata, JWKS, userinfo and revocation endpoints only.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    let api = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route("/jwks", get(discovery::jwks))
        .route("/token", post(token::token))
        .route("/par", post(token::pushed_authorization_request))
        .route("/device_authorization", post(device::device_authorization))
        .route("/userinfo", get(token::userinfo).post(token::userinfo))
        .route("/revoke", post(token::revoke))
        .layer(cors);
    let pages = Router::new()
        .route(
            "/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/login/{flow}", get(authorize::login_page))
        .route("/login/{flow}/method", post(authorize::choose_method))
        .route("/login/{flow}/federate", post(authorize::federate))
        .route(
            "/login/upstream/{upstream}/callback",
            get(authorize::upstream_callback),
        )
        .route("/login/callback", get(authorize::callback))
        .route("/login/{flow}/{step}", post(authorize::submit_step))
        .route(
            "/login/{flow}/restart",
            get(authorize::restart_link).post(authorize::restart),
        )
        .route(
            "/logout",
            get(logout::end_session_get).post(logout::end_session_post),
        )
        .route("/logout/confirm", post(logout::confirm))
        .route("/logged-out", get(logout::logged_out))
        .merge(recovery::routes())
        .merge(orgs::routes())
        .merge(account::routes())
        .merge(account_devices::routes())
        .merge(device::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            check_origin,
        ));
    Router::new()
        .merge(api)
        .merge(pages)
        // Bearer-token JSON API: no cookies, so no Origin check.
        .merge(admin::routes())
        .merge(registration::routes())
        .route("/introspect", post(token::introspect))
        .route("/assets/{theme}/{*path}", get(asset))
        .route("/healthz", get(healthz))
        .route("/", get(home))
        .fallback(not_found)
        // A plain response mapper, not `from_fn`: no boxed future, no
        // `Next` and no state clone per request.
        .layer(tower::util::MapResponseLayer::new(move |res: Response| {
            security_headers(res, hsts)
        }))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .with_state(state)
}

/// Headers on every response: no sniffing, no framing, no referrer, no
/// caching unless a handler chose otherwise; CSP on pages; HSTS when served
/// over HTTPS (`hsts`).
fn security_headers(mut res: Response, hsts: bool) -> Response {
    // Header names as constants: a name given as a string is parsed and
    // checked on every insert (3% of a token request's CPU, with perf).
    const COOP: header::HeaderName = header::HeaderName::from_static("cross-origin-opener-policy");
    let csp = match res.extensions().get::<logout::FrameSources>() {
        Some(frames) => frames.policy(CSP),
        None => HeaderValue::from_static(CSP),
    };
    let h = res.headers_mut();
    // Room for these at once rather than growing the map twice.
    h.reserve(8);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(COOP, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    if hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// Cross-site form posts are refused: a POST carrying an `Origin` (or
/// `Sec-Fetch-Site: cross-site`) from elsewhere never reaches a handler.
/// The per-flow CSRF token is the main defence; this is the second one.
async fn check_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() == axum::http::Method::POST {
        let h = req.headers();
        let bad_origin = h
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| o != state.origin.as_str() && o != "null");
        let cross_site =
            h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site");
        // RP-initiated logout may be POSTed by the RP's page.
        let is_logout = req.uri().path() == "/logout";
        if (bad_origin || cross_site) && !is_logout && req.uri().path() != "/authorize" {
            return error_page(
                &state,
                "default",
                Locale::En,
                StatusCode::FORBIDDEN,
                "error.csrf",
                None,
            );
        }
    }
    next.run(req).await
}

/// Request facts for throttling and audit.
pub(crate) fn request_meta(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> RequestMeta {
    let forwarded = state
        .trust_forwarded_for
        .then(|| {
            headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                // The entry our proxy appended: the rightmost one.
                .and_then(|v| v.rsplit(',').next())
                .map(|s| s.trim().to_owned())
        })
        .flatten();
    RequestMeta {
        ip: forwarded.or_else(|| peer.map(|p| p.ip().to_string())),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    }
}

pub(crate) type Peer = ConnectInfo<SocketAddr>;

pub(crate) fn peer_addr(p: &Peer) -> Option<SocketAddr> {
    Some(p.0)
}

/// The page locale: `?lang=` switch (remembered in a cookie), then the
/// authorization request's ui_locales, then Accept-Language.
pub(crate) fn locale(jar: &CookieJar, headers: &HeaderMap, ui_locales: Option<&str>) -> Locale {
    let chosen = jar.get(LANG_COOKIE).map(|c| c.value().to_owned());
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    match chosen.as_deref() {
        Some(l @ ("en" | "fr")) => negotiate_locale(Some(l), None),
        _ => negotiate_locale(ui_locales, accept),
    }
}

pub(crate) fn cookie(
    state: &AppState,
    name: &'static str,
    value: String,
    max_age_secs: i64,
) -> Cookie<'static> {
    let mut c = Cookie::new(name, value);
    c.set_http_only(true);
    c.set_secure(state.secure_cookies);
    c.set_same_site(SameSite::Lax);
    c.set_path("/");
    c.set_max_age(time::Duration::seconds(max_age_secs));
    c
}

pub(crate) fn removal(state: &AppState, name: &'static str) -> Cookie<'static> {
    let mut c = cookie(state, name, String::new(), 0);
    c.make_removal();
    c
}

/// Renders a themed page; a rendering failure becomes the plain error page.
pub(crate) fn page(
    state: &AppState,
    theme: &str,
    locale: Locale,
    status: StatusCode,
    template: &str,
    ctx: minijinja::Value,
) -> Response {
    match state.themes.render(theme, template, locale, ctx) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, template, theme, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Internal error.</p>"),
            )
                .into_response()
        }
    }
}

pub(crate) fn error_page(
    state: &AppState,
    theme: &str,
    locale: Locale,
    status: StatusCode,
    message: &str,
    detail: Option<&str>,
) -> Response {
    page(
        state,
        theme,
        locale,
        status,
        "error.html",
        minijinja::context! {
            title => "error.title",
            message => message,
            detail => detail,
            status => status.as_u16(),
        },
    )
}

/// 303 See Other: never re-posts a form's credentials (RFC 9700 §4.12).
pub(crate) fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

async fn asset(
    State(state): State<AppState>,
    Path((theme, path)): Path<(String, String)>,
) -> Response {
    match state.themes.asset(&theme, &path) {
        Some((ctype, bytes)) => (
            [
                (header::CONTENT_TYPE, ctype),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            bytes.into_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    let (store_ok, db_ok) = state.provider.health().await;
    if store_ok && db_ok {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
    }
}

async fn home(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "OpenID Connect provider. Discovery: {}/.well-known/openid-configuration\n",
            state.provider.settings.issuer
        ),
    )
        .into_response()
}

async fn not_found(State(state): State<AppState>, jar: CookieJar, headers: HeaderMap) -> Response {
    error_page(
        &state,
        "default",
        locale(&jar, &headers, None),
        StatusCode::NOT_FOUND,
        "error.not_found",
        None,
    )
}

/// An answer that must not be cached: it carries tokens or secrets (RFC 6749
/// §5.1, RFC 7591 §3.2.1, RFC 8628 §3.2).
pub(crate) fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        axum::http::header::PRAGMA,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    res
}
