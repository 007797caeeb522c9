//! The signed-in user's "authentication parameters" pages (`/account`):
//! profile and emails, password, sessions, what protects the account and its
//! recent activity. Second factors and recovery codes are in
//! `account_devices.rs` (`/account/devices`).
//!
//! # Signing in
//!
//! The pages sign users in through OpenID Connect like any portal, as the
//! built-in public client `account` (see `builtin_client` below): `/account/login`
//! keeps a random `state`, a nonce and a PKCE verifier in the short-lived
//! store (bound to the browser cookie) and redirects to `/authorize`; the
//! usual login pages run (or the SSO session answers at once); the code comes
//! back to `/account/callback`, which exchanges it in-process through the
//! provider's token service, checks the ID token's nonce and that its `sid`
//! is the session this browser now holds, and lands on `/account`. The code
//! exchange makes the return single use and bound to the PKCE verifier; the
//! pages themselves then work from the SSO session cookie.
//!
//! # Recent authentication
//!
//! Changing the password or the primary email needs an authentication less
//! than 10 minutes old
//! ([`idp_core::accounts::security::RECENT_AUTH_SECS`]). An older session is sent
//! through `/account/login?reauth=1`, which adds `max_age=0` to the
//! authorization request (OIDC Core §3.1.2.1: the user must authenticate
//! again, and the ID token's `auth_time` says when they did; the callback
//! checks it is after the request started).

use super::forms::{
    browser, csrf_ok, csrf_token, internal_error, lang_links, page_locale, theme_of, when,
};
use super::{
    BROWSER_COOKIE, DEVICE_COOKIE, Peer, SESSION_COOKIE, error_page, locale, page, peer_addr,
    request_meta, see_other,
};
use crate::app::AppState;
use crate::theme::Locale;
use anyhow::anyhow;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use idp_core::accounts::federated::UnlinkError;
use idp_core::accounts::security::{
    BackupEmailError, EmailChangeError, PasswordChangeError, PasswordProblems, pkce_s256,
};
use idp_core::client::{
    AccessTokenFormat, Client, ClientSecretHash, Lifetimes, TokenEndpointAuthMethod,
};
use idp_core::domain::{TokenHash, User};
use idp_core::ephemeral::Namespace;
use idp_core::oidc::authorize::RawParams;
use idp_core::password_policy::Rule;
use idp_core::secret::Secret;
use idp_core::sessions::SsoSession;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The client id of the account pages.
pub(crate) const CLIENT_ID: &str = "account";

/// Where a browser without a session is sent to sign in first.
pub(crate) const SIGN_IN_PATH: &str = "/account/login";

/// Recent events listed on the overview.
const RECENT_EVENTS: u64 = 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account", get(overview))
        .route("/account/login", get(login))
        .route("/account/callback", get(callback))
        .route(
            "/account/password",
            get(password_page).post(password_submit),
        )
        .route("/account/email", get(email_page).post(email_request))
        .route("/account/email/confirm", post(email_confirm))
        .route("/account/email/cancel", post(email_cancel))
        .route("/account/backup-email", post(backup_email))
        .route("/account/sessions/sign-out-others", post(sign_out_others))
        .route("/account/identities/unlink", post(unlink_identity))
}

/// The redirect URI of the account client.
fn callback_uri(issuer: &str) -> String {
    format!("{issuer}/account/callback")
}

/// The built-in `account` client: public (PKCE), redirect URI
/// `{issuer}/account/callback`, default theme, and the flow identifier,
/// password, then a second factor for users who enrolled one (WebAuthn only
/// when the issuer is a host name: WebAuthn cannot bind to an IP address).
/// With `upstream`, its login page also offers the upstreams that list
/// `account` in their `clients` (a flow `["upstream"]` of the same level).
pub(crate) fn builtin_client(
    issuer: &str,
    upstream: bool,
    levels: &idp_core::assurance::Levels,
) -> anyhow::Result<Client> {
    let host_is_ip = url::Url::parse(issuer)
        .ok()
        .is_some_and(|u| matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))));
    let second = if host_is_ip {
        r#"["totp", "recovery_code"]"#
    } else {
        r#"["totp", "webauthn", "recovery_code"]"#
    };
    // The first declared level of AAL1: a password, then a second factor
    // only for users who enrolled one.
    let acr = levels
        .iter()
        .find(|l| l.aal == idp_core::assurance::Aal::Aal1 && !l.phishing_resistant)
        .map(|l| l.value.clone())
        .ok_or_else(|| {
            anyhow!("built-in client {CLIENT_ID}: no declared assurance level has aal = 1")
        })?;
    let upstream_flow = if upstream {
        format!(
            r#", {{"name": "upstream", "acr": "{acr}", "steps": ["upstream", {{"any": {second}, "when": "enrolled"}}]}}"#
        )
    } else {
        String::new()
    };
    let flows = format!(
        r#"[{{"name": "default", "acr": "{acr}", "steps": ["identifier", "password", {{"any": {second}, "when": "enrolled"}}]}}{upstream_flow}]"#
    );
    let specs: Vec<idp_core::policy::FlowSpec> = serde_json::from_str(&flows)?;
    let login = idp_core::policy::parse_policy(&specs, &idp_core::steps::registry(), levels)
        .map_err(|e| anyhow!("built-in client {CLIENT_ID}: login: {e}"))?;
    let secret_hash: Option<ClientSecretHash> = None;
    Ok(Client {
        id: idp_core::domain::ClientId(CLIENT_ID.into()),
        name: "Account".into(),
        auth_method: TokenEndpointAuthMethod::None,
        secret_hash,
        redirect_uris: vec![callback_uri(issuer)],
        post_logout_redirect_uris: Vec::new(),
        allow_authorization_code: true,
        allow_refresh_token: false,
        allow_client_credentials: false,
        scopes: ["openid".to_owned()].into_iter().collect(),
        theme: "default".into(),
        access_token_format: AccessTokenFormat::Jwt,
        id_token_alg: idp_core::keys::SigningAlg::ES256,
        access_token_alg: idp_core::keys::SigningAlg::ES256,
        require_pkce: true,
        lifetimes: Lifetimes::default(),
        login,
        account: Default::default(),
        protocol: Default::default(),
    })
}

/// A client file defining `client_id = "account"` replaces the built-in
/// client: it must accept the account pages' redirect URI.
pub(crate) fn check_client(c: &Client, issuer: &str) -> anyhow::Result<()> {
    let uri = callback_uri(issuer);
    if !c.allow_authorization_code || !c.redirect_uris.contains(&uri) {
        return Err(anyhow!(
            "client {CLIENT_ID}: redirect_uris: the account pages need {uri:?} (and the authorization_code grant)"
        ));
    }
    if !c.scopes.contains("openid") {
        return Err(anyhow!(
            "client {CLIENT_ID}: scopes: the account pages need \"openid\""
        ));
    }
    Ok(())
}

fn account_client(state: &AppState) -> Option<Arc<Client>> {
    state.provider.clients.get(CLIENT_ID)
}

fn theme_and_name(state: &AppState) -> (String, String) {
    theme_of(account_client(state).as_deref())
}

/// The signed-in user and their SSO session, or a redirect to sign in.
/// Returns the session cookie's value too (to tell this session from others).
/// A session opened at another portal counts only once it satisfies the
/// account client's own flow, evaluated now (its second factor, an
/// organization's enforced MFA): otherwise the browser signs in through it,
/// which asks only what is missing.
pub(crate) async fn signed_in(
    state: &AppState,
    jar: &CookieJar,
) -> Result<(User, SsoSession, String), Response> {
    let Some(cookie) = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()) else {
        return Err(see_other(SIGN_IN_PATH));
    };
    let session = match state.provider.sessions.find(&cookie).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(see_other(SIGN_IN_PATH)),
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return Err(see_other(SIGN_IN_PATH));
        }
    };
    let user = match state.provider.ports.users.find_by_id(session.user_id).await {
        Ok(Some(u)) if u.status == idp_core::domain::UserStatus::Active => u,
        Ok(_) => return Err(see_other(SIGN_IN_PATH)),
        Err(e) => {
            tracing::error!(error = %e, "user lookup failed");
            return Err(see_other(SIGN_IN_PATH));
        }
    };
    let Some(client) = account_client(state) else {
        return Err(see_other(SIGN_IN_PATH));
    };
    let device = jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned());
    match state
        .provider
        .runner
        .session_satisfies(
            &client,
            &session,
            TokenHash::of(&cookie),
            &user,
            device.as_deref(),
            None,
        )
        .await
    {
        Ok(true) => Ok((user, session, cookie)),
        Ok(false) => Err(see_other(SIGN_IN_PATH)),
        Err(e) => {
            tracing::error!(error = %e, "session evaluation failed");
            Err(see_other(SIGN_IN_PATH))
        }
    }
}

/// Whether the session's authentication is recent enough for a sensitive
/// change (the account flow's proofs younger than
/// [`idp_core::accounts::security::RECENT_AUTH_SECS`]).
pub(crate) async fn is_recent(
    state: &AppState,
    jar: &CookieJar,
    user: &User,
    session: &SsoSession,
    cookie: &str,
) -> bool {
    let Some(client) = account_client(state) else {
        return false;
    };
    let device = jar.get(DEVICE_COOKIE).map(|c| c.value().to_owned());
    state
        .provider
        .accounts
        .is_recent_auth(&client, session, cookie, user, device.as_deref())
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "recent authentication check failed");
            false
        })
}

/// `None` when the session authenticated recently enough for a sensitive
/// change; else the redirect that signs the user in again, then returns to
/// `next` (a path under `/account`).
pub(crate) async fn require_recent(
    state: &AppState,
    jar: &CookieJar,
    user: &User,
    session: &SsoSession,
    cookie: &str,
    next: &str,
) -> Option<Response> {
    if is_recent(state, jar, user, session, cookie).await {
        return None;
    }
    let next: String =
        url::form_urlencoded::byte_serialize(safe_next(Some(next)).as_bytes()).collect();
    Some(see_other(&format!("{SIGN_IN_PATH}?reauth=1&next={next}")))
}

/// Where to land after signing in: a path under `/account`, else `/account`.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/account" || n.starts_with("/account/"))
                && n.len() <= 100
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b)) =>
        {
            n
        }
        _ => "/account",
    }
}

fn when_unix(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(when)
        .unwrap_or_default()
}

/// A user agent as shown: at most 80 characters.
fn short_agent(ua: Option<&str>) -> String {
    let ua = ua.unwrap_or_default();
    if ua.chars().count() > 80 {
        format!("{}…", ua.chars().take(79).collect::<String>())
    } else {
        ua.to_owned()
    }
}

/// Audit event kinds with their own label (`account.event.<kind with _>`).
const LABELLED_EVENTS: &[&str] = &[
    "login.succeeded",
    "login.failed",
    "logout",
    "user.created",
    "password.changed",
    "password.change_failed",
    "password.reset",
    "password.defined",
    "email.change_requested",
    "email.changed",
    "email.change_failed",
    "backup_email.set",
    "backup_email.cleared",
    "session.revoked",
    "device.remembered",
    "recovery_codes.regenerated",
    "federation.linked",
    "federation.unlinked",
    "federation.refused",
];

fn event_label(kind: &str) -> String {
    if LABELLED_EVENTS.contains(&kind) {
        format!("account.event.{}", kind.replace('.', "_"))
    } else {
        "account.event.other".to_owned()
    }
}

/// Flash messages after a change (`/account?done=...`).
const DONE: &[&str] = &[
    "password_changed",
    "email_changed",
    "backup_email_set",
    "backup_email_cleared",
    "sessions_ended",
    "identity_unlinked",
];

fn internal(state: &AppState, loc: Locale, e: impl std::fmt::Display) -> Response {
    let (theme, _) = theme_and_name(state);
    internal_error(state, &theme, loc, "account page failed", &e)
}

/// A page of the account pages: its locale (switched by `lang`) and the
/// signed-in user and session; with `recent` (the page to come back to), the
/// authentication must also be recent. Else the response to send (a redirect
/// to sign in, with the language cookie).
async fn signed_in_page(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    lang: Option<&str>,
    recent: Option<&str>,
) -> Result<(CookieJar, Locale, User, SsoSession), Response> {
    let (jar, loc) = page_locale(state, jar, headers, lang);
    let (user, session, cookie) = match signed_in(state, &jar).await {
        Ok(s) => s,
        Err(r) => return Err((jar, r).into_response()),
    };
    if let Some(next) = recent
        && let Some(r) = require_recent(state, &jar, &user, &session, &cookie, next).await
    {
        return Err((jar, r).into_response());
    }
    Ok((jar, loc, user, session))
}

/// A POST of the account pages: its locale, once the CSRF token of
/// `purpose` checks and the browser is signed in; with `recent` (the page to
/// come back to), the authentication must also be recent. Else the response
/// to send (403, or a redirect to sign in).
async fn signed_in_post(
    state: &AppState,
    jar: &CookieJar,
    headers: &HeaderMap,
    purpose: &str,
    csrf: &str,
    recent: Option<&str>,
) -> Result<(Locale, User, SsoSession), Response> {
    let loc = locale(jar, headers, None);
    if !csrf_ok(state, jar, purpose, csrf) {
        let (theme, _) = theme_and_name(state);
        return Err(super::forms::csrf_refused(state, &theme, loc));
    }
    let (user, session, cookie) = signed_in(state, jar).await?;
    if let Some(next) = recent
        && let Some(r) = require_recent(state, jar, &user, &session, &cookie, next).await
    {
        return Err(r);
    }
    Ok((loc, user, session))
}

// ---------------------------------------------------------------------------
// Signing in

#[derive(Debug, Serialize, Deserialize)]
struct PendingLogin {
    verifier: String,
    nonce: String,
    /// Hash of the browser cookie that started it.
    browser: String,
    next: String,
    /// Unix seconds.
    started_at: i64,
    reauth: bool,
    /// Hash of the session cookie the browser held when it started: a new
    /// login replaces it, and the old session is then ended.
    replaced: Option<String>,
}

/// The pending sign-in is kept under the hash of its `state`.
fn pending_id(state_token: &str) -> String {
    TokenHash::of(state_token).as_str().to_owned()
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
    reauth: Option<String>,
}

/// Starts the OIDC login of the account pages.
async fn login(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (jar, browser_id) = browser(&state, jar);
    let state_token = idp_core::random::token();
    let reauth = q.reauth.as_deref() == Some("1");
    let pending = PendingLogin {
        verifier: idp_core::random::token(),
        nonce: idp_core::random::token(),
        browser: TokenHash::of(&browser_id).as_str().to_owned(),
        next: safe_next(q.next.as_deref()).to_owned(),
        started_at: state.provider.clock.now().unix_timestamp(),
        reauth,
        replaced: jar
            .get(SESSION_COOKIE)
            .map(|c| TokenHash::of(c.value()).as_str().to_owned()),
    };
    let ttl = Duration::from_secs(u64::from(state.provider.settings.flow_lifetime_secs));
    if let Err(e) = state
        .provider
        .records::<PendingLogin>(Namespace::AccountLogin)
        .put(&pending_id(&state_token), &pending, ttl)
        .await
    {
        return (jar, internal(&state, loc, e)).into_response();
    }
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair(
            "redirect_uri",
            &callback_uri(&state.provider.settings.issuer),
        )
        .append_pair("scope", "openid")
        .append_pair("state", &state_token)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &pkce_s256(&pending.verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("ui_locales", loc.as_str());
    if reauth {
        query.append_pair("max_age", "0");
    }
    (jar, see_other(&format!("/authorize?{}", query.finish()))).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The end of the account pages' OIDC login.
async fn callback(
    State(state): State<AppState>,
    Query(q): Query<CallbackQuery>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let (theme, _) = theme_and_name(&state);
    let refuse =
        |message: &str, status: StatusCode| error_page(&state, &theme, loc, status, message, None);
    let Some(state_token) = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 128)
    else {
        return refuse("account.login_expired", StatusCode::BAD_REQUEST);
    };
    let pending: PendingLogin = match state
        .provider
        .records::<PendingLogin>(Namespace::AccountLogin)
        .take(&pending_id(state_token))
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return refuse("account.login_expired", StatusCode::BAD_REQUEST),
        Err(e) => return internal(&state, loc, e),
    };
    let same_browser = jar
        .get(BROWSER_COOKIE)
        .is_some_and(|c| TokenHash::of(c.value()).as_str() == pending.browser);
    if !same_browser {
        return refuse("account.login_expired", StatusCode::BAD_REQUEST);
    }
    if let Some(error) = &q.error {
        tracing::info!(error = error.as_str(), "account sign-in did not complete");
        return refuse("account.login_failed", StatusCode::BAD_REQUEST);
    }
    let (Some(code), Some(_)) = (q.code.as_deref(), account_client(&state)) else {
        return refuse("account.login_failed", StatusCode::BAD_REQUEST);
    };
    let form = RawParams::new([
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code.to_owned()),
        (
            "redirect_uri".to_owned(),
            callback_uri(&state.provider.settings.issuer),
        ),
        ("code_verifier".to_owned(), pending.verifier.clone()),
        ("client_id".to_owned(), CLIENT_ID.to_owned()),
    ]);
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    // The account client is a public client of the same token endpoint.
    let answer = state
        .provider
        .token_endpoint
        .token(idp_core::oidc::token_endpoint::TokenRequest {
            auth: idp_core::oidc::client_auth::ClientAuthInput {
                form_client_id: Some(CLIENT_ID.to_owned()),
                ..Default::default()
            },
            form: &form,
            dpop: &[],
            url: &format!("{}/token", state.provider.settings.issuer),
            meta: &meta,
        })
        .await;
    let tokens = match answer.result {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(error = %e, "account sign-in: code exchange refused");
            return refuse("account.login_failed", StatusCode::BAD_REQUEST);
        }
    };
    let claims = tokens
        .id_token
        .as_deref()
        .and_then(|t| state.provider.keys.current().verify(t).ok())
        .map(|(claims, _)| claims);
    let Some(claims) = claims else {
        return internal(&state, loc, "account sign-in: no verifiable ID token");
    };
    let claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let auth_time = claims
        .get("auth_time")
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0);
    if claim("nonce").as_deref() != Some(pending.nonce.as_str())
        || (pending.reauth && auth_time < pending.started_at)
    {
        return refuse("account.login_failed", StatusCode::BAD_REQUEST);
    }
    // The session the code was issued from must be the one this browser holds.
    let current = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let session = match &current {
        Some(c) => state.provider.sessions.find(c).await,
        None => Ok(None),
    };
    match session {
        Ok(Some(s)) if Some(s.sid.as_str()) == claim("sid").as_deref() => {}
        Ok(_) => return refuse("account.login_failed", StatusCode::BAD_REQUEST),
        Err(e) => return internal(&state, loc, e),
    }
    let current_hash = current.as_deref().map(TokenHash::of);
    if let Some(old) = &pending.replaced
        && current_hash.as_ref().is_none_or(|h| h.as_str() != old)
        && let Err(e) = state.provider.accounts.forget_replaced_session(old).await
    {
        tracing::warn!(error = %e, "the replaced session could not be ended");
    }
    see_other(&pending.next)
}

// ---------------------------------------------------------------------------
// Overview

#[derive(Deserialize, Default)]
struct PageQuery {
    lang: Option<String>,
    done: Option<String>,
}

/// What the overview re-shows after a refused change: the backup email
/// typed and why it was refused, or why an unlink was refused.
#[derive(Default)]
struct Refused {
    backup_value: Option<String>,
    backup_error: Option<&'static str>,
    identity_error: Option<&'static str>,
}

async fn overview(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let (jar, loc, user, session) =
        match signed_in_page(&state, jar, &headers, q.lang.as_deref(), None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
    let done = q
        .done
        .as_deref()
        .filter(|d| DONE.contains(d))
        .map(|d| format!("account.done.{d}"));
    render_overview(&state, jar, loc, &user, &session, done, Refused::default()).await
}

async fn render_overview(
    state: &AppState,
    jar: CookieJar,
    loc: Locale,
    user: &User,
    session: &SsoSession,
    done: Option<String>,
    refused: Refused,
) -> Response {
    let (jar, browser_id) = browser(state, jar);
    let p = &state.provider;
    let gathered = async {
        Ok::<_, idp_core::error::CoreError>((
            p.accounts.list_sessions(user.id).await?,
            p.accounts.protection_status(user).await?,
            p.accounts.recent_activity(user.id, RECENT_EVENTS).await?,
            p.accounts.pending_email_change(user, session).await?,
            p.federated.linked_identities(user.id).await?,
        ))
    }
    .await;
    let (sessions, protection, events, pending, identities) = match gathered {
        Ok(g) => g,
        Err(e) => return (jar, internal(state, loc, e)).into_response(),
    };
    let other_sessions = sessions.iter().filter(|s| s.sid != session.sid).count();
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|s| {
            context! {
                started => when_unix(s.created_at),
                ip => s.ip.clone().unwrap_or_default(),
                browser => short_agent(s.user_agent.as_deref()),
                current => s.sid == session.sid,
            }
        })
        .collect();
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            context! {
                at => when(e.at),
                label => event_label(&e.kind),
                kind => e.kind.clone(),
                ip => e.ip.clone().unwrap_or_default(),
            }
        })
        .collect();
    let enforced: Vec<Value> = protection
        .enforced_by
        .iter()
        .map(|o| context! { name => o.name.clone(), kinds => o.kinds.join(", ") })
        .collect();
    let identities: Vec<Value> = identities
        .iter()
        .map(|l| {
            context! {
                upstream => l.upstream.clone(),
                name => p.federated.upstream_display_name(&l.upstream),
                email => l.email.clone(),
                linked => when(l.created_at),
            }
        })
        .collect();
    let (theme, client_name) = theme_and_name(state);
    let status = match (refused.backup_error, refused.identity_error) {
        (Some(_), _) => StatusCode::BAD_REQUEST,
        (None, Some(_)) => StatusCode::CONFLICT,
        (None, None) => StatusCode::OK,
    };
    let backup_value = refused.backup_value.unwrap_or_else(|| {
        user.backup_email
            .as_ref()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default()
    });
    let res = page(
        state,
        &theme,
        loc,
        status,
        "account.html",
        context! {
            client_name => client_name,
            lang_links => lang_links("/account", &[]),
            done => done,
            name => user.name.clone().unwrap_or_default(),
            email => user.email.as_str(),
            email_verified => user.email_verified,
            customer_id => user.customer_id.as_str(),
            pending_email => pending.map(|p| p.new_email.as_str().to_owned()),
            email_url => "/account/email",
            password_url => "/account/password",
            devices_url => "/account/devices",
            logout_url => "/logout",
            backup_email => user.backup_email.as_ref().map(|e| e.as_str().to_owned()),
            backup_value => backup_value,
            backup_error => refused.backup_error,
            backup_action => "/account/backup-email",
            csrf_backup => csrf_token(state, &browser_id, "account.backup_email"),
            sessions => sessions,
            other_sessions => other_sessions,
            sessions_action => "/account/sessions/sign-out-others",
            csrf_sessions => csrf_token(state, &browser_id, "account.sessions"),
            protection => context! {
                has_second_factor => protection.has_second_factor,
                totp_devices => protection.totp_devices.clone(),
                webauthn_keys => protection.webauthn_keys.clone(),
                phone_verified => protection.phone_verified,
                recovery_codes_left => protection.recovery_codes_left,
                mfa_required_on_account => protection.mfa_required_on_account,
                enforced_by => enforced,
            },
            events => events,
            identities => identities,
            identity_error => refused.identity_error,
            unlink_action => "/account/identities/unlink",
            csrf_identities => csrf_token(state, &browser_id, "account.identities"),
        },
    );
    (jar, res).into_response()
}

#[derive(Deserialize)]
struct BackupEmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    backup_email: String,
    /// "1" for the "remove" button.
    #[serde(default)]
    clear: String,
}

async fn backup_email(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<BackupEmailForm>,
) -> Response {
    let (loc, user, session) = match signed_in_post(
        &state,
        &jar,
        &headers,
        "account.backup_email",
        &f.csrf,
        None,
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let address = (f.clear != "1").then_some(f.backup_email.as_str());
    let client = account_client(&state);
    match state
        .provider
        .accounts
        .set_backup_email(&user, address, client.as_deref(), &meta)
        .await
    {
        Ok(Some(_)) => see_other("/account?done=backup_email_set"),
        Ok(None) => see_other("/account?done=backup_email_cleared"),
        Err(e) => {
            let error = match e {
                BackupEmailError::InvalidAddress => "account.backup.invalid",
                BackupEmailError::SameAsPrimary => "account.backup.same_as_primary",
                BackupEmailError::Core(e) => return internal(&state, loc, e),
            };
            let refused = Refused {
                backup_value: Some(f.backup_email.clone()),
                backup_error: Some(error),
                identity_error: None,
            };
            render_overview(&state, jar, loc, &user, &session, None, refused).await
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn sign_out_others(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let (loc, user, session) =
        match signed_in_post(&state, &jar, &headers, "account.sessions", &f.csrf, None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    match state
        .provider
        .accounts
        .sign_out_other_sessions(&user, &session.sid, &meta)
        .await
    {
        Ok(_) => see_other("/account?done=sessions_ended"),
        Err(e) => internal(&state, loc, e),
    }
}

#[derive(Deserialize)]
struct UnlinkForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    upstream: String,
}

/// Unlinks a sign-in service (a recent sign-in needed), unless it is the
/// account's only way to sign in.
async fn unlink_identity(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<UnlinkForm>,
) -> Response {
    let (loc, user, session) = match signed_in_post(
        &state,
        &jar,
        &headers,
        "account.identities",
        &f.csrf,
        Some("/account"),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let error = match state
        .provider
        .federated
        .unlink_identity(user.id, &f.upstream, &meta)
        .await
    {
        Ok(()) => return see_other("/account?done=identity_unlinked"),
        Err(UnlinkError::NotLinked) => "account.identities.not_linked",
        Err(UnlinkError::LastWayToSignIn) => "account.identities.last_way",
        Err(UnlinkError::Core(e)) => return internal(&state, loc, e),
    };
    render_overview(
        &state,
        jar,
        loc,
        &user,
        &session,
        None,
        Refused {
            identity_error: Some(error),
            ..Refused::default()
        },
    )
    .await
}

// ---------------------------------------------------------------------------
// Password

/// A rule or violation as the templates translate it.
fn rule_value(r: &Rule) -> Value {
    Value::from(minijinja::value::Serde(r))
}

struct PasswordView {
    problems: PasswordProblems,
    locked_minutes: Option<u64>,
}

async fn render_password(
    state: &AppState,
    jar: CookieJar,
    loc: Locale,
    user: &User,
    view: Option<PasswordView>,
) -> Response {
    let (jar, browser_id) = browser(state, jar);
    let client = account_client(state);
    let p = &state.provider;
    let (policy, has_password) = match async {
        Ok::<_, idp_core::error::CoreError>((
            p.accounts
                .password_policy_for_user(client.as_deref(), user)
                .await?,
            p.accounts.has_password(user.id).await?,
        ))
    }
    .await
    {
        Ok(x) => x,
        Err(e) => return (jar, internal(state, loc, e)).into_response(),
    };
    let rules: Vec<Value> = policy.rules().iter().map(rule_value).collect();
    let (theme, client_name) = theme_and_name(state);
    let (status, current_error, mismatch, violations, locked) = match &view {
        None => (StatusCode::OK, false, false, Vec::new(), None),
        Some(v) => (
            if v.locked_minutes.is_some() {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::BAD_REQUEST
            },
            v.problems.current_wrong,
            v.problems.mismatch,
            v.problems
                .violations
                .iter()
                .map(|v| Value::from(minijinja::value::Serde(v)))
                .collect(),
            v.locked_minutes,
        ),
    };
    let res = page(
        state,
        &theme,
        loc,
        status,
        "account_password.html",
        context! {
            client_name => client_name,
            lang_links => lang_links("/account/password", &[]),
            action => "/account/password",
            csrf => csrf_token(state, &browser_id, "account.password"),
            account => user.email.as_str(),
            has_password => has_password,
            rules => rules,
            current_error => current_error,
            mismatch => mismatch,
            violations => violations,
            locked_minutes => locked,
            back_url => "/account",
        },
    );
    (jar, res).into_response()
}

async fn password_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let (jar, loc, user, _) = match signed_in_page(
        &state,
        jar,
        &headers,
        q.lang.as_deref(),
        Some("/account/password"),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_password(&state, jar, loc, &user, None).await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirmation: String,
}

async fn password_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<PasswordForm>,
) -> Response {
    let (loc, user, _) = match signed_in_post(
        &state,
        &jar,
        &headers,
        "account.password",
        &f.csrf,
        Some("/account/password"),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let client = account_client(&state);
    let result = state
        .provider
        .accounts
        .change_password(
            &user,
            client.as_deref(),
            &Secret::new(f.current_password),
            &Secret::new(f.new_password),
            &Secret::new(f.confirmation),
            user.locale.as_deref().unwrap_or(loc.as_str()),
            &meta,
        )
        .await;
    let view = match result {
        Ok(()) => return see_other("/account?done=password_changed"),
        Err(PasswordChangeError::Invalid(problems)) => PasswordView {
            problems,
            locked_minutes: None,
        },
        Err(PasswordChangeError::Locked { retry_after_secs }) => PasswordView {
            problems: PasswordProblems::default(),
            locked_minutes: Some(retry_after_secs.div_ceil(60)),
        },
        Err(PasswordChangeError::Core(e)) => return internal(&state, loc, e),
    };
    render_password(&state, jar, loc, &user, Some(view)).await
}

// ---------------------------------------------------------------------------
// Primary email

/// What the email page shows: the address form, or the code form of a
/// pending change.
#[derive(Default)]
struct EmailView {
    /// The address typed (kept on an error).
    typed: Option<String>,
    address_error: Option<&'static str>,
    code_error: Option<&'static str>,
}

async fn render_email(
    state: &AppState,
    jar: CookieJar,
    loc: Locale,
    user: &User,
    session: &SsoSession,
    view: EmailView,
) -> Response {
    let (jar, browser_id) = browser(state, jar);
    let pending = match state
        .provider
        .accounts
        .pending_email_change(user, session)
        .await
    {
        Ok(p) => p,
        Err(e) => return (jar, internal(state, loc, e)).into_response(),
    };
    let (theme, client_name) = theme_and_name(state);
    let status = if view.address_error.is_some() || view.code_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let res = page(
        state,
        &theme,
        loc,
        status,
        "account_email.html",
        context! {
            client_name => client_name,
            lang_links => lang_links("/account/email", &[]),
            current_email => user.email.as_str(),
            pending_email => pending.as_ref().map(|p| p.new_email.as_str().to_owned()),
            valid_minutes => pending.as_ref().map(|p| p.valid_minutes),
            request_action => "/account/email",
            confirm_action => "/account/email/confirm",
            cancel_action => "/account/email/cancel",
            csrf => csrf_token(state, &browser_id, "account.email"),
            new_email => view.typed.unwrap_or_default(),
            address_error => view.address_error,
            code_error => view.code_error,
            back_url => "/account",
        },
    );
    (jar, res).into_response()
}

async fn email_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let (jar, loc, user, session) = match signed_in_page(
        &state,
        jar,
        &headers,
        q.lang.as_deref(),
        Some("/account/email"),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_email(&state, jar, loc, &user, &session, EmailView::default()).await
}

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_email: String,
}

async fn email_request(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<EmailForm>,
) -> Response {
    let (loc, user, session) = match signed_in_post(
        &state,
        &jar,
        &headers,
        "account.email",
        &f.csrf,
        Some("/account/email"),
    )
    .await
    {
        Ok(s) => s,
        Err(r) => return r,
    };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let client = account_client(&state);
    let result = state
        .provider
        .accounts
        .request_email_change(
            &user,
            &session,
            &f.new_email,
            client.as_deref(),
            user.locale.as_deref().unwrap_or(loc.as_str()),
            &meta,
        )
        .await;
    let error = match result {
        Ok(_) => return see_other("/account/email"),
        Err(EmailChangeError::InvalidAddress) => "account.email.invalid",
        Err(EmailChangeError::SameAddress) => "account.email.same",
        Err(EmailChangeError::TooManyCodes) => "account.email.too_many_codes",
        Err(EmailChangeError::SendFailed) => "account.email.send_failed",
        Err(e) => return internal(&state, loc, e),
    };
    let view = EmailView {
        typed: Some(f.new_email),
        address_error: Some(error),
        code_error: None,
    };
    render_email(&state, jar, loc, &user, &session, view).await
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn email_confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    Form(f): Form<CodeForm>,
) -> Response {
    let (loc, user, session) =
        match signed_in_post(&state, &jar, &headers, "account.email", &f.csrf, None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let client = account_client(&state);
    let result = state
        .provider
        .accounts
        .confirm_email_change(
            &user,
            &session,
            &f.code,
            client.as_deref(),
            user.locale.as_deref().unwrap_or(loc.as_str()),
            &meta,
        )
        .await;
    let view = match result {
        Ok(_) => return see_other("/account?done=email_changed"),
        Err(EmailChangeError::WrongCode) => EmailView {
            code_error: Some("account.email.wrong_code"),
            ..EmailView::default()
        },
        // The pending change is gone: back to the address form.
        Err(EmailChangeError::Expired { address }) => EmailView {
            typed: Some(address.as_str().to_owned()),
            address_error: Some("account.email.expired"),
            ..EmailView::default()
        },
        Err(EmailChangeError::TooManyAttempts { address }) => EmailView {
            typed: Some(address.as_str().to_owned()),
            address_error: Some("account.email.too_many_attempts"),
            ..EmailView::default()
        },
        Err(EmailChangeError::AddressInUse { address }) => EmailView {
            typed: Some(address.as_str().to_owned()),
            address_error: Some("account.email.in_use"),
            ..EmailView::default()
        },
        Err(EmailChangeError::NothingPending) => EmailView {
            address_error: Some("account.email.nothing_pending"),
            ..EmailView::default()
        },
        Err(e) => return internal(&state, loc, e),
    };
    render_email(&state, jar, loc, &user, &session, view).await
}

async fn email_cancel(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let (loc, user, _) =
        match signed_in_post(&state, &jar, &headers, "account.email", &f.csrf, None).await {
            Ok(s) => s,
            Err(r) => return r,
        };
    match state.provider.accounts.cancel_email_change(&user).await {
        Ok(()) => see_other("/account/email"),
        Err(e) => internal(&state, loc, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_under_account() {
        assert_eq!(safe_next(Some("/account/password")), "/account/password");
        assert_eq!(safe_next(Some("/account")), "/account");
        assert_eq!(safe_next(Some("/accounting")), "/account");
        assert_eq!(safe_next(Some("//evil.example/account")), "/account");
        assert_eq!(safe_next(Some("https://evil.example/")), "/account");
        assert_eq!(safe_next(Some("/account/../logout")), "/account");
        assert_eq!(safe_next(Some("/account?x=1")), "/account");
        assert_eq!(safe_next(None), "/account");
    }

    #[test]
    fn the_builtin_client_follows_the_issuer() {
        let c = builtin_client(
            "http://localhost:8080",
            true,
            &idp_core::assurance::Levels::builtin(),
        )
        .expect("valid");
        assert!(c.is_public() && c.pkce_required());
        assert_eq!(c.redirect_uris, ["http://localhost:8080/account/callback"]);
        assert!(c.login.methods().any(|m| m.as_str() == "webauthn"));
        let c = builtin_client(
            "http://127.0.0.1:8080",
            false,
            &idp_core::assurance::Levels::builtin(),
        )
        .expect("valid");
        assert!(!c.login.methods().any(|m| m.as_str() == "webauthn"));
        assert!(check_client(&c, "http://127.0.0.1:8080").is_ok());
        assert!(check_client(&c, "https://login.example.com").is_err());
    }
}
