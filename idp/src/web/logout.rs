//! RP-initiated logout: with a valid id_token_hint for the current session
//! the session ends at once; otherwise the user confirms on a page (CSRF
//! protected) first.

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
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A logout waiting for the user's confirmation, under `logout:<csrf token>`.
#[derive(Serialize, Deserialize)]
struct PendingLogout {
    redirect: Option<String>,
    browser: Option<TokenHash>,
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
        )
        .await;
    }
    let csrf = idp_core::random::token();
    let pending = PendingLogout {
        redirect: plan.redirect.clone(),
        browser: jar.get(BROWSER_COOKIE).map(|c| TokenHash::of(c.value())),
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
) -> Response {
    if let Some(c) = session_cookie {
        let meta = request_meta(state, headers, peer_addr(peer));
        if let Err(e) = state.provider.sessions.end(c, &meta).await {
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
    let jar = jar.add(removal(state, SESSION_COOKIE));
    (jar, see_other(redirect.unwrap_or("/logged-out"))).into_response()
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
