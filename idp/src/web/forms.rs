//! What the pages outside login flows share (recovery, organization creation,
//! the account page): the browser cookie, CSRF tokens bound to it, and the
//! theme of the client a journey started from.

use super::{BROWSER_COOKIE, cookie};
use crate::app::AppState;
use axum_extra::extract::CookieJar;
use idp_core::oidc::client::Client;
use std::sync::Arc;

/// How long the random browser cookie lives.
pub(crate) const BROWSER_COOKIE_AGE: i64 = 400 * 24 * 3600;

/// The browser's random id, set when missing.
pub(crate) fn browser(state: &AppState, jar: CookieJar) -> (CookieJar, String) {
    match jar.get(BROWSER_COOKIE) {
        Some(c) if c.value().len() >= 32 => {
            let v = c.value().to_owned();
            (jar, v)
        }
        _ => {
            let v = idp_core::random::token();
            (
                jar.add(cookie(state, BROWSER_COOKIE, v.clone(), BROWSER_COOKIE_AGE)),
                v,
            )
        }
    }
}

/// The CSRF token for a form of `purpose` in this browser.
pub(crate) fn csrf_token(state: &AppState, browser: &str, purpose: &str) -> String {
    state.provider.form_token(browser, purpose)
}

/// Checks a posted CSRF token against the browser cookie.
pub(crate) fn csrf_ok(state: &AppState, jar: &CookieJar, purpose: &str, token: &str) -> bool {
    jar.get(BROWSER_COOKIE)
        .is_some_and(|c| state.provider.check_form_token(c.value(), purpose, token))
}

/// The client a journey started from (`?client_id=`), if registered.
pub(crate) fn client_of(state: &AppState, client_id: Option<&str>) -> Option<Arc<Client>> {
    client_id.and_then(|id| state.provider.clients.get(id))
}

/// Theme and display name for pages of a journey started from `client`.
pub(crate) fn theme_of(client: Option<&Client>) -> (String, String) {
    client.map_or(("default".to_owned(), String::new()), |c| {
        (c.theme.clone(), c.name.clone())
    })
}
