//! RP-initiated logout: with a valid id_token_hint for the current session
//! the session ends at once; otherwise the user confirms on a page (CSRF
//! protected) first. Ending the session queues the back-channel logout
//! tokens of its clients (see `idp_core::oidc::logout_channels`); when some
//! of them registered a front-channel logout URI, a page loads each in an
//! iframe (its CSP `frame-src` allowing exactly their origins) before going
//! on to the post-logout redirect.

use super::{
    BROWSER_COOKIE, Peer, SESSION_COOKIE, error_page, locale, page, peer_addr, removal,
    request_meta, see_other,
};
use crate::app::AppState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use idp_core::domain::TokenHash;
use idp_core::ephemeral::Namespace;
use idp_core::oidc::authorize::RawParams;
use idp_core::oidc::logout::LogoutPlan;
use idp_core::oidc::logout_channels::frontchannel_url;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A logout waiting for the user's confirmation, under `logout:<csrf token>`.
#[derive(Serialize, Deserialize)]
struct PendingLogout {
    redirect: Option<String>,
    browser: Option<TokenHash>,
    /// The requesting client's theme (absent in records of older releases).
    #[serde(default)]
    theme: Option<String>,
}

/// The origins a page frames: its CSP gets `frame-src` with exactly these
/// (set as a response extension; `security_headers` writes the header).
#[derive(Debug, Clone)]
pub(crate) struct FrameSources(Vec<String>);

impl FrameSources {
    /// The origins (scheme, host, port) of `urls`, each once.
    fn of(urls: &[String]) -> Self {
        let mut origins: Vec<String> = urls
            .iter()
            .filter_map(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
            .filter(|o| o != "null")
            .collect();
        origins.sort();
        origins.dedup();
        Self(origins)
    }

    /// `base` (which has no `frame-src`) with `frame-src` listing the origins.
    pub(crate) fn policy(&self, base: &str) -> axum::http::HeaderValue {
        let policy = format!("{base}; frame-src {}", self.0.join(" "));
        axum::http::HeaderValue::from_str(&policy)
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("default-src 'none'"))
    }
}

#[tracing::instrument(skip_all)]
pub(crate) async fn end_session_get(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    RawQuery(q): RawQuery,
) -> Response {
    end_session(state, jar, headers, peer, q.unwrap_or_default().as_bytes()).await
}

#[tracing::instrument(skip_all)]
pub(crate) async fn end_session_post(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    end_session(state, jar, headers, peer, &body).await
}

async fn end_session(
    state: AppState,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    raw: &[u8],
) -> Response {
    let params = serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw)
        .ok()
        .map(RawParams::new);
    let loc = locale(
        &jar,
        &headers,
        params.as_ref().and_then(|p| p.get("ui_locales")),
    );
    let Some(params) = params else {
        return error_page(
            &state,
            "default",
            loc,
            StatusCode::BAD_REQUEST,
            "error.invalid_request",
            None,
        );
    };
    let plan: LogoutPlan = match state.provider.authorization.check_logout_request(&params) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "logout request refused");
            return error_page(
                &state,
                "default",
                loc,
                StatusCode::BAD_REQUEST,
                "error.invalid_request",
                Some(&e.description),
            );
        }
    };
    let theme = plan
        .client
        .as_ref()
        .map_or_else(|| "default".to_owned(), |c| c.theme.clone());
    let session_cookie = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    let session = match &session_cookie {
        Some(c) => state.provider.sessions.find(c).await.ok().flatten(),
        None => None,
    };
    let confirmed_by_rp = plan.hint_valid
        && session
            .as_ref()
            .is_none_or(|s| plan.hint_sid.as_deref().is_none_or(|h| h == s.sid));
    if confirmed_by_rp || session.is_none() {
        return finish(
            &state,
            jar,
            &headers,
            &peer,
            session_cookie.as_deref(),
            plan.redirect.as_deref(),
            &theme,
        )
        .await;
    }
    let csrf = idp_core::random::token();
    let pending = PendingLogout {
        redirect: plan.redirect.clone(),
        browser: jar.get(BROWSER_COOKIE).map(|c| TokenHash::of(c.value())),
        theme: Some(theme.clone()),
    };
    if let Err(e) = state
        .provider
        .records::<PendingLogout>(Namespace::LogoutConfirmation)
        .put(
            TokenHash::of(&csrf).as_str(),
            &pending,
            Duration::from_secs(600),
        )
        .await
    {
        tracing::error!(error = %e, "cannot store pending logout");
        return error_page(
            &state,
            &theme,
            loc,
            StatusCode::INTERNAL_SERVER_ERROR,
            "error.internal",
            None,
        );
    }
    page(
        &state,
        &theme,
        loc,
        StatusCode::OK,
        "logout.html",
        minijinja::context! {
            action => "/logout/confirm",
            csrf => csrf,
            client_name => plan.client.as_ref().map(|c| c.name.clone()),
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    csrf: String,
}

#[tracing::instrument(skip_all)]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let form = serde_urlencoded::from_bytes::<ConfirmForm>(&body).unwrap_or(ConfirmForm {
        csrf: String::new(),
    });
    let pending: Option<PendingLogout> = if form.csrf.is_empty() {
        None
    } else {
        state
            .provider
            .records::<PendingLogout>(Namespace::LogoutConfirmation)
            .take(TokenHash::of(&form.csrf).as_str())
            .await
            .ok()
            .flatten()
    };
    let browser = jar.get(BROWSER_COOKIE).map(|c| TokenHash::of(c.value()));
    let Some(pending) = pending.filter(|p| p.browser == browser) else {
        return error_page(
            &state,
            "default",
            loc,
            StatusCode::FORBIDDEN,
            "error.csrf",
            None,
        );
    };
    let session_cookie = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned());
    finish(
        &state,
        jar,
        &headers,
        &peer,
        session_cookie.as_deref(),
        pending.redirect.as_deref(),
        pending.theme.as_deref().unwrap_or("default"),
    )
    .await
}

async fn finish(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    peer: &Peer,
    session_cookie: Option<&str>,
    redirect: Option<&str>,
    theme: &str,
) -> Response {
    let mut frames = Vec::new();
    if let Some(c) = session_cookie {
        let meta = request_meta(state, headers, peer_addr(peer));
        match state.provider.sessions.end(c, &meta).await {
            Ok(Some(ended)) => {
                frames = ended
                    .clients
                    .iter()
                    .filter_map(|id| state.provider.clients.get(id))
                    .filter_map(|c| {
                        frontchannel_url(&c, &state.provider.settings.issuer, &ended.sid)
                    })
                    .collect();
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "ending the session failed");
                return error_page(
                    state,
                    "default",
                    locale(&jar, headers, None),
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "error.internal",
                    None,
                );
            }
        }
    }
    let continue_url = redirect.unwrap_or("/logged-out");
    let jar = jar.add(removal(state, SESSION_COOKIE));
    if frames.is_empty() {
        return (jar, see_other(continue_url)).into_response();
    }
    let loc = locale(&jar, headers, None);
    let mut res = page(
        state,
        theme,
        loc,
        StatusCode::OK,
        "logout_channels.html",
        minijinja::context! {
            frames => frames.clone(),
            continue_url => continue_url,
        },
    );
    res.extensions_mut().insert(FrameSources::of(&frames));
    (jar, res).into_response()
}

pub(crate) async fn logged_out(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let loc = locale(&jar, &headers, None);
    page(
        &state,
        "default",
        loc,
        StatusCode::OK,
        "logged_out.html",
        minijinja::context! {},
    )
}
