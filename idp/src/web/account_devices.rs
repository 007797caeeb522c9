//! The signed-in user's second factors and remembered browsers
//! (`/account/devices`): list, add (authenticator app, security key or
//! passkey), rename and delete factors; see and regenerate recovery codes;
//! forget remembered browsers. The rules live in
//! `idp_core::accounts::devices`; this module parses, checks CSRF, calls it
//! and renders.
//!
//! Every page takes `?client_id=` (theme, and the client recorded in the
//! audit trail) and `?lang=`. Every POST carries a CSRF token bound to the
//! browser cookie (`web::forms`).

use super::account::{SIGN_IN_PATH, signed_in};
use super::forms::{browser, client_of, csrf_ok, csrf_token, page_locale, theme_of, when};
use super::{DEVICE_COOKIE, Peer, error_page, page, peer_addr, request_meta, see_other};
use crate::app::AppState;
use crate::theme::Locale;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use idp_core::accounts::devices::{
    AccountCx, Added, DeviceError, MAX_LABEL_CHARS, SecuritySummary,
};
use idp_core::client::Client;
use idp_core::domain::RequestMeta;
use idp_core::domain::User;
use idp_core::sessions::SsoSession;
use minijinja::context;
use serde::Deserialize;
use std::sync::Arc;
use uuid::Uuid;

/// The CSRF purpose of every form of these pages.
const CSRF_PURPOSE: &str = "account-devices";
const DEVICES_PATH: &str = "/account/devices";
const TOTP_PATH: &str = "/account/devices/totp/new";
const WEBAUTHN_PATH: &str = "/account/devices/webauthn/new";

/// The account pages' sign-in, coming back to `next` (with `reauth`: a
/// fresh authentication even with a session, `max_age=0`).
fn sign_in_url(next: &str, reauth: bool) -> String {
    let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    if reauth {
        format!("{SIGN_IN_PATH}?reauth=1&next={next}")
    } else {
        format!("{SIGN_IN_PATH}?next={next}")
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(DEVICES_PATH, get(devices_page))
        .route(TOTP_PATH, get(totp_page).post(totp_submit))
        .route(WEBAUTHN_PATH, get(webauthn_page).post(webauthn_submit))
        .route("/account/devices/recovery-codes", post(regenerate_codes))
        .route("/account/devices/{id}/rename", post(rename))
        .route("/account/devices/{id}/delete", post(delete))
        .route(
            "/account/devices/browsers/{id}/revoke",
            post(revoke_browser),
        )
}

/// Query parameters every page takes.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    client_id: Option<String>,
    lang: Option<String>,
    /// What the previous POST did (a notice), after its redirect.
    done: Option<String>,
}

/// Posted fields; all optional, so a form missing one gets a readable page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Posted {
    csrf: String,
    name: String,
    code: String,
    pending: String,
    credential: String,
}

fn parse_posted(body: &[u8]) -> Posted {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

/// What every handler works with: the signed-in user, the page's theme,
/// locale and client, and the request facts.
struct Ctx {
    state: AppState,
    jar: CookieJar,
    user: User,
    session: SsoSession,
    /// The hash of the session cookie.
    session_key: idp_core::domain::TokenHash,
    /// The authentication is recent enough for a change.
    recent_auth: bool,
    browser: String,
    loc: Locale,
    client: Option<Arc<Client>>,
    theme: String,
    client_name: String,
    meta: RequestMeta,
    /// `?client_id=…` to carry to links and form actions, or empty.
    qs: String,
    /// Where to come back to after signing in (again).
    page_path: &'static str,
}

impl Ctx {
    /// The signed-in user and the page's setting, or the response to send
    /// (a redirect to sign in).
    async fn new(
        state: AppState,
        jar: CookieJar,
        headers: &HeaderMap,
        peer: &Peer,
        q: &PageQuery,
        page_path: &'static str,
    ) -> Result<Ctx, Response> {
        // No session: sign in, then come back here.
        let (user, session, cookie) = signed_in(&state, &jar)
            .await
            .map_err(|_| see_other(&sign_in_url(page_path, false)))?;
        let recent_auth = super::account::is_recent(&state, &jar, &user, &session, &cookie).await;
        let (jar, loc) = page_locale(&state, jar, headers, q.lang.as_deref());
        let (jar, browser) = browser(&state, jar);
        let client = client_of(&state, q.client_id.as_deref());
        let (theme, client_name) = theme_of(client.as_deref());
        let qs = client.as_ref().map_or_else(String::new, |c| {
            format!(
                "?{}",
                serde_urlencoded::to_string([("client_id", c.id.0.as_str())]).unwrap_or_default()
            )
        });
        let meta = request_meta(&state, headers, peer_addr(peer));
        Ok(Ctx {
            state,
            jar,
            user,
            session,
            session_key: idp_core::domain::TokenHash::of(&cookie),
            recent_auth,
            browser,
            loc,
            client,
            theme,
            client_name,
            meta,
            qs,
            page_path,
        })
    }

    fn account(&self) -> AccountCx<'_> {
        AccountCx {
            user: &self.user,
            session: &self.session,
            session_key: &self.session_key,
            recent_auth: self.recent_auth,
            meta: &self.meta,
            client: self.client.as_ref().map(|c| &c.id),
        }
    }

    fn csrf(&self) -> String {
        csrf_token(&self.state, &self.browser, CSRF_PURPOSE)
    }

    fn csrf_ok(&self, posted: &Posted) -> bool {
        csrf_ok(&self.state, &self.jar, CSRF_PURPOSE, &posted.csrf)
    }

    /// A path with the page's `?client_id=`.
    fn path(&self, path: &str) -> String {
        format!("{path}{}", self.qs)
    }

    fn reauth_url(&self) -> String {
        sign_in_url(self.page_path, true)
    }

    fn lang_links(&self, path: &str) -> Vec<minijinja::Value> {
        [("en", "English"), ("fr", "Français")]
            .iter()
            .map(|(l, label)| {
                let sep = if self.qs.is_empty() { '?' } else { '&' };
                context! { lang => *l, label => *label, href => format!("{}{sep}lang={l}", self.path(path)) }
            })
            .collect()
    }

    /// A themed page, with this request's cookies.
    fn render(self, status: StatusCode, template: &str, ctx: minijinja::Value) -> Response {
        let res = page(&self.state, &self.theme, self.loc, status, template, ctx);
        (self.jar, res).into_response()
    }

    fn error(self, status: StatusCode, message: &str) -> Response {
        let res = error_page(&self.state, &self.theme, self.loc, status, message, None);
        (self.jar, res).into_response()
    }

    fn internal(self, e: &dyn std::fmt::Display) -> Response {
        tracing::error!(error = %e, "account devices page failed");
        self.error(StatusCode::INTERNAL_SERVER_ERROR, "error.internal")
    }

    fn redirect(self, to: &str) -> Response {
        (self.jar, see_other(to)).into_response()
    }

    /// After a change: back to the list, with a notice.
    fn done(self, what: &str) -> Response {
        let sep = if self.qs.is_empty() { '?' } else { '&' };
        let to = format!("{}{sep}done={what}", self.path(DEVICES_PATH));
        self.redirect(&to)
    }
}

/// What the list page shows besides the summary: a notice, an error for the
/// whole page or for one factor's name field.
#[derive(Default)]
struct ListState<'a> {
    notice: Option<&'static str>,
    error: Option<&'static str>,
    reauth: bool,
    /// (factor id, typed name, message id)
    name_error: Option<(Uuid, &'a str, &'static str)>,
}

async fn render_list(cx: Ctx, status: StatusCode, list: ListState<'_>) -> Response {
    let device_cookie = cx.jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned());
    let summary: SecuritySummary = match cx
        .state
        .provider
        .devices
        .security_summary(&cx.user, device_cookie.as_deref())
        .await
    {
        Ok(s) => s,
        Err(e) => return cx.internal(&e),
    };
    let factors: Vec<minijinja::Value> = summary
        .factors
        .iter()
        .map(|f| {
            let (name_value, name_error) = match list.name_error {
                Some((id, typed, error)) if id == f.id => (typed.to_owned(), Some(error)),
                _ => (f.label.clone(), None),
            };
            context! {
                id => f.id.to_string(),
                method_label => format!("method.{}", f.kind.as_str()),
                label => f.label.clone(),
                created => when(f.created_at),
                last_used => f.last_used_at.map(when),
                rename_action => cx.path(&format!("/account/devices/{}/rename", f.id)),
                delete_action => cx.path(&format!("/account/devices/{}/delete", f.id)),
                name_value => name_value,
                name_error => name_error,
            }
        })
        .collect();
    let browsers: Vec<minijinja::Value> = summary
        .browsers
        .iter()
        .map(|b| {
            context! {
                label => b.label.clone(),
                current => b.current,
                created => when(b.created_at),
                last_seen => when(b.last_seen_at),
                revoke_action => cx.path(&format!("/account/devices/browsers/{}/revoke", b.id)),
            }
        })
        .collect();
    let ctx = context! {
        csrf => cx.csrf(),
        client_name => cx.client_name.clone(),
        lang_links => cx.lang_links(DEVICES_PATH),
        back_url => cx.path("/account"),
        notice => list.notice,
        error => list.error,
        reauth_url => list.reauth.then(|| cx.reauth_url()),
        mfa_enforced => summary.mfa_enforced,
        name_max => MAX_LABEL_CHARS,
        factors => factors,
        add_totp_url => cx.path(TOTP_PATH),
        add_webauthn_url => cx.path(WEBAUTHN_PATH),
        recovery_codes_left => summary.recovery_codes_left,
        regenerate_action => cx.path("/account/devices/recovery-codes"),
        browsers => browsers,
    };
    cx.render(status, "account_devices.html", ctx)
}

/// `GET /account/devices`
async fn devices_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    let cx = match Ctx::new(state, jar, &headers, &peer, &q, DEVICES_PATH).await {
        Ok(cx) => cx,
        Err(res) => return res,
    };
    let notice = match q.done.as_deref() {
        Some("added") => Some("account_devices.done.added"),
        Some("renamed") => Some("account_devices.done.renamed"),
        Some("removed") => Some("account_devices.done.removed"),
        Some("revoked") => Some("account_devices.done.revoked"),
        _ => None,
    };
    render_list(
        cx,
        StatusCode::OK,
        ListState {
            notice,
            ..ListState::default()
        },
    )
    .await
}

/// A POST's context and fields once the user is signed in and the CSRF
/// token checked.
async fn posted_cx(
    state: AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    peer: &Peer,
    q: &PageQuery,
    body: &[u8],
) -> Result<(Ctx, Posted), Response> {
    let posted = parse_posted(body);
    let cx = Ctx::new(state, jar, headers, peer, q, DEVICES_PATH).await?;
    if !cx.csrf_ok(&posted) {
        return Err(cx.error(StatusCode::FORBIDDEN, "error.csrf"));
    }
    Ok((cx, posted))
}

/// [`posted_cx`] for a POST about one factor or browser: its `id` from the
/// path too, or 404 when it is not one.
async fn posted_cx_for(
    state: AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    peer: &Peer,
    q: &PageQuery,
    body: &[u8],
    id: &str,
) -> Result<(Ctx, Posted, Uuid), Response> {
    let (cx, posted) = posted_cx(state, jar, headers, peer, q, body).await?;
    match parse_id(id) {
        Some(id) => Ok((cx, posted, id)),
        None => Err(cx.error(StatusCode::NOT_FOUND, "error.not_found")),
    }
}

/// The recovery codes page (shown once).
fn codes_page(cx: Ctx, codes: Vec<String>, reason: &str) -> Response {
    let ctx = context! {
        client_name => cx.client_name.clone(),
        lang_links => Vec::<minijinja::Value>::new(),
        codes => codes,
        reason => reason,
        continue_url => cx.path(DEVICES_PATH),
    };
    cx.render(StatusCode::OK, "account_recovery_codes.html", ctx)
}

/// After a factor was added: its recovery codes if it was the first one,
/// else back to the list.
fn after_added(cx: Ctx, added: Added) -> Response {
    match added.recovery_codes {
        Some(codes) => codes_page(cx, codes, "first_factor"),
        None => cx.done("added"),
    }
}

// --- authenticator app ------------------------------------------------------

/// Renders the TOTP page for a pending enrollment, or asks to sign in again.
fn totp_form(
    cx: Ctx,
    status: StatusCode,
    pending: Option<&idp_core::accounts::devices::PendingTotp>,
    name: &str,
    error: Option<&'static str>,
) -> Response {
    let reauth = pending.is_none();
    let ctx = context! {
        csrf => cx.csrf(),
        client_name => cx.client_name.clone(),
        lang_links => cx.lang_links(TOTP_PATH),
        back_url => cx.path(DEVICES_PATH),
        error => error,
        name_error => error.is_some_and(DeviceError::is_name_error),
        reauth_url => reauth.then(|| cx.reauth_url()),
        action => cx.path(TOTP_PATH),
        pending => pending.map(|p| p.id.clone()),
        qr => pending.map(|p| p.setup.qr.clone()),
        key => pending.map(|p| p.setup.key.clone()),
        account => pending.map(|p| p.setup.account.clone()),
        name => name,
        name_max => MAX_LABEL_CHARS,
    };
    cx.render(status, "account_totp_new.html", ctx)
}

/// A fresh TOTP enrollment page (with `error` when the previous one expired).
async fn new_totp(cx: Ctx, status: StatusCode, error: Option<&'static str>) -> Response {
    match cx.state.provider.devices.begin_totp(&cx.account()).await {
        Ok(pending) => totp_form(cx, status, Some(&pending), "", error),
        Err(DeviceError::ReauthRequired) => totp_form(cx, StatusCode::FORBIDDEN, None, "", None),
        Err(e) => cx.internal(&e),
    }
}

/// `GET /account/devices/totp/new`
async fn totp_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    match Ctx::new(state, jar, &headers, &peer, &q, TOTP_PATH).await {
        Ok(cx) => new_totp(cx, StatusCode::OK, None).await,
        Err(res) => res,
    }
}

/// `POST /account/devices/totp/new`: name, first code, pending id.
async fn totp_submit(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, posted) = match posted_cx(state, jar, &headers, &peer, &q, &body).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    let result = provider
        .devices
        .finish_totp(&cx.account(), &posted.pending, &posted.name, &posted.code)
        .await;
    match result {
        Ok(added) => after_added(cx, added),
        Err(DeviceError::Invalid(error)) => {
            // The same seed again: the user may have scanned it already.
            match provider
                .devices
                .pending_totp(&cx.user, &posted.pending)
                .await
            {
                Ok(pending) => totp_form(
                    cx,
                    StatusCode::BAD_REQUEST,
                    Some(&pending),
                    &posted.name,
                    Some(error),
                ),
                Err(DeviceError::Expired) => {
                    new_totp(
                        cx,
                        StatusCode::BAD_REQUEST,
                        Some("account_devices.setup_expired"),
                    )
                    .await
                }
                Err(e) => cx.internal(&e),
            }
        }
        Err(DeviceError::Expired) => {
            new_totp(
                cx,
                StatusCode::BAD_REQUEST,
                Some("account_devices.setup_expired"),
            )
            .await
        }
        Err(DeviceError::ReauthRequired) => totp_form(cx, StatusCode::FORBIDDEN, None, "", None),
        Err(e) => cx.internal(&e),
    }
}

// --- security key or passkey ------------------------------------------------

/// A fresh registration page (options, pending id), or a request to sign
/// in again. `name` and `error` come from a refused attempt.
async fn webauthn_form(
    cx: Ctx,
    status: StatusCode,
    name: &str,
    error: Option<&'static str>,
) -> Response {
    let provider = cx.state.provider.clone();
    let pending = match provider.devices.begin_webauthn(&cx.account()).await {
        Ok(p) => Some(p),
        Err(DeviceError::ReauthRequired) => None,
        Err(e) => return cx.internal(&e),
    };
    let reauth = pending.is_none();
    let ctx = context! {
        csrf => cx.csrf(),
        client_name => cx.client_name.clone(),
        lang_links => cx.lang_links(WEBAUTHN_PATH),
        back_url => cx.path(DEVICES_PATH),
        error => error,
        name_error => error.is_some_and(DeviceError::is_name_error),
        reauth_url => reauth.then(|| cx.reauth_url()),
        action => cx.path(WEBAUTHN_PATH),
        pending => pending.as_ref().map(|p| p.id.clone()),
        options => pending.as_ref().map(|p| minijinja::Value::from(minijinja::value::Serde(&p.options))),
        name => name,
        name_max => MAX_LABEL_CHARS,
    };
    let status = if reauth {
        StatusCode::FORBIDDEN
    } else {
        status
    };
    cx.render(status, "account_webauthn_new.html", ctx)
}

/// `GET /account/devices/webauthn/new`
async fn webauthn_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    match Ctx::new(state, jar, &headers, &peer, &q, WEBAUTHN_PATH).await {
        Ok(cx) => webauthn_form(cx, StatusCode::OK, "", None).await,
        Err(res) => res,
    }
}

/// `POST /account/devices/webauthn/new`: name, pending id, and the
/// credential JSON `webauthn.js` puts in the form.
async fn webauthn_submit(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, posted) = match posted_cx(state, jar, &headers, &peer, &q, &body).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    let result = provider
        .devices
        .finish_webauthn(
            &cx.account(),
            &posted.pending,
            &posted.name,
            &posted.credential,
        )
        .await;
    match result {
        Ok(added) => after_added(cx, added),
        Err(DeviceError::Invalid(error)) => {
            webauthn_form(cx, StatusCode::BAD_REQUEST, &posted.name, Some(error)).await
        }
        Err(DeviceError::Expired) => {
            webauthn_form(
                cx,
                StatusCode::BAD_REQUEST,
                &posted.name,
                Some("account_devices.setup_expired"),
            )
            .await
        }
        Err(DeviceError::ReauthRequired) => {
            webauthn_form(cx, StatusCode::FORBIDDEN, "", None).await
        }
        Err(e) => cx.internal(&e),
    }
}

// --- rename, delete, recovery codes, browsers -------------------------------

fn parse_id(raw: &str) -> Option<Uuid> {
    Uuid::parse_str(raw).ok()
}

/// `POST /account/devices/{id}/rename`
async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, posted, id) = match posted_cx_for(state, jar, &headers, &peer, &q, &body, &id).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    match provider
        .devices
        .rename_factor(&cx.account(), id, &posted.name)
        .await
    {
        Ok(_) => cx.done("renamed"),
        Err(DeviceError::Invalid(error)) => {
            let list = ListState {
                name_error: Some((id, &posted.name, error)),
                ..ListState::default()
            };
            render_list(cx, StatusCode::BAD_REQUEST, list).await
        }
        Err(e) => refused(cx, e).await,
    }
}

/// `POST /account/devices/{id}/delete`
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, _, id) = match posted_cx_for(state, jar, &headers, &peer, &q, &body, &id).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    match provider.devices.delete_factor(&cx.account(), id).await {
        Ok(_) => cx.done("removed"),
        Err(e) => refused(cx, e).await,
    }
}

/// `POST /account/devices/recovery-codes`
async fn regenerate_codes(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, _) = match posted_cx(state, jar, &headers, &peer, &q, &body).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    match provider.devices.regenerate_codes(&cx.account()).await {
        Ok(codes) => codes_page(cx, codes, "regenerated"),
        Err(e) => refused(cx, e).await,
    }
}

/// `POST /account/devices/browsers/{id}/revoke`
async fn revoke_browser(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let (cx, _, id) = match posted_cx_for(state, jar, &headers, &peer, &q, &body, &id).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let provider = cx.state.provider.clone();
    match provider.devices.revoke_browser(&cx.account(), id).await {
        Ok(()) => cx.done("revoked"),
        Err(e) => refused(cx, e).await,
    }
}

/// A refused change on the list page: not found, sign in again, the last
/// factor, busy, or a rule.
async fn refused(cx: Ctx, e: DeviceError) -> Response {
    let (status, list) = match e {
        DeviceError::NotFound => return cx.error(StatusCode::NOT_FOUND, "error.not_found"),
        DeviceError::ReauthRequired => (
            StatusCode::FORBIDDEN,
            ListState {
                reauth: true,
                ..ListState::default()
            },
        ),
        DeviceError::LastFactor => (
            StatusCode::CONFLICT,
            ListState {
                error: Some("account_devices.last_factor"),
                ..ListState::default()
            },
        ),
        DeviceError::Busy => (
            StatusCode::CONFLICT,
            ListState {
                error: Some("account_devices.busy"),
                ..ListState::default()
            },
        ),
        DeviceError::Invalid(error) => (
            StatusCode::BAD_REQUEST,
            ListState {
                error: Some(error),
                ..ListState::default()
            },
        ),
        DeviceError::Expired | DeviceError::Core(_) => return cx.internal(&e),
    };
    render_list(cx, status, list).await
}
