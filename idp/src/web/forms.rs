//! What the pages outside login flows share (recovery, organization creation,
//! the account page): the browser cookie, CSRF tokens bound to it, and the
//! theme of the client a journey started from.

use super::{
    BROWSER_COOKIE, LANG_COOKIE, Peer, cookie, error_page, locale, peer_addr, request_meta,
};
use crate::app::AppState;
use crate::theme::Locale;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum_extra::extract::CookieJar;
use idp_core::client::Client;
use idp_core::domain::RequestMeta;
use minijinja::{Value, context};
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
    state.provider.accounts.form_token(browser, purpose)
}

/// Checks a posted CSRF token against the browser cookie.
pub(crate) fn csrf_ok(state: &AppState, jar: &CookieJar, purpose: &str, token: &str) -> bool {
    jar.get(BROWSER_COOKIE).is_some_and(|c| {
        state
            .provider
            .accounts
            .check_form_token(c.value(), purpose, token)
    })
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

/// The page locale, switched by `?lang=` (`en` or `fr`, remembered in the
/// language cookie); else the cookie or `Accept-Language`.
pub(crate) fn page_locale(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    lang: Option<&str>,
) -> (CookieJar, Locale) {
    match lang {
        Some(l @ ("en" | "fr")) => {
            let loc = if l == "fr" { Locale::Fr } else { Locale::En };
            (
                jar.add(cookie(state, LANG_COOKIE, l.to_owned(), 365 * 24 * 3600)),
                loc,
            )
        }
        _ => {
            let loc = locale(&jar, headers, None);
            (jar, loc)
        }
    }
}

/// Longest value kept from any typed field (an email is at most 254
/// characters).
pub(crate) const MAX_TYPED: usize = 254;

/// The posted fields of a public form, by name (the last value of a
/// repeated name wins).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Option<Self> {
        serde_urlencoded::from_bytes(body).ok().map(Self)
    }

    /// The field's value, or empty.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The field's value as kept for the form: trimmed, at most
    /// [`MAX_TYPED`] characters.
    pub(crate) fn typed(&self, name: &str) -> String {
        self.get(name).trim().chars().take(MAX_TYPED).collect()
    }
}

/// A public form's POST once its fields parse and its CSRF token checks:
/// the page locale, the fields, the client named in `client_id` with its
/// theme, the browser cookie and the request facts.
pub(crate) struct PublicPost {
    pub(crate) loc: Locale,
    pub(crate) fields: Fields,
    pub(crate) client: Option<Arc<Client>>,
    pub(crate) theme: String,
    pub(crate) client_name: String,
    pub(crate) jar: CookieJar,
    pub(crate) browser_id: String,
    pub(crate) meta: RequestMeta,
}

/// Parses a public form's POST and checks its CSRF token of `purpose`; else
/// the page to send (400 for an unreadable body, 403 for a bad token, in the
/// theme of the client named in the form), boxed as responses are large.
pub(crate) fn public_post(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    peer: &Peer,
    body: &[u8],
    purpose: &str,
) -> Result<PublicPost, Box<Response>> {
    let loc = locale(&jar, headers, None);
    let Some(fields) = Fields::parse(body) else {
        return Err(Box::new(bad_request(state, loc)));
    };
    let client = client_of(state, form_client_id(&fields));
    let (theme, client_name) = theme_of(client.as_deref());
    if !csrf_ok(state, &jar, purpose, fields.get("csrf")) {
        return Err(Box::new(csrf_refused(state, &theme, loc)));
    }
    let (jar, browser_id) = browser(state, jar);
    let meta = request_meta(state, headers, peer_addr(peer));
    Ok(PublicPost {
        loc,
        fields,
        client,
        theme,
        client_name,
        jar,
        browser_id,
        meta,
    })
}

/// The form's `client_id` field, when not empty.
pub(crate) fn form_client_id(fields: &Fields) -> Option<&str> {
    Some(fields.get("client_id")).filter(|s| !s.is_empty())
}

/// The page of an unreadable form (400, default theme).
pub(crate) fn bad_request(state: &AppState, loc: Locale) -> Response {
    error_page(
        state,
        "default",
        loc,
        StatusCode::BAD_REQUEST,
        "error.invalid_request",
        None,
    )
}

/// The page of a POST whose CSRF token does not check (403).
pub(crate) fn csrf_refused(state: &AppState, theme: &str, loc: Locale) -> Response {
    error_page(state, theme, loc, StatusCode::FORBIDDEN, "error.csrf", None)
}

/// Logs `e` as what failed (`what`) and answers with the internal error
/// page (500).
pub(crate) fn internal_error(
    state: &AppState,
    theme: &str,
    loc: Locale,
    what: &str,
    e: &dyn std::fmt::Display,
) -> Response {
    tracing::error!(error = %e, "{what}");
    error_page(
        state,
        theme,
        loc,
        StatusCode::INTERNAL_SERVER_ERROR,
        "error.internal",
        None,
    )
}

/// A fresh proof-of-work challenge as the forms embed it (JSON).
pub(crate) fn challenge_json(state: &AppState) -> String {
    serde_json::to_string(&state.provider.accounts.issue_challenge())
        .unwrap_or_else(|_| "{}".into())
}

/// Where "back to the application" leads: the origin of the client's first
/// redirect URI (its portal), when it is a web address.
pub(crate) fn back_url(client: Option<&Client>) -> Option<String> {
    let uri = client?.redirect_uris.first()?;
    let url = url::Url::parse(uri).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization() + "/")
}

/// `path` with `?client_id=` of `client`, if any.
pub(crate) fn with_client_query(path: &str, client: Option<&Client>) -> String {
    match client {
        Some(c) => {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("client_id", &c.id.0);
            format!("{path}?{}", q.finish())
        }
        None => path.to_owned(),
    }
}

/// Links switching the page at `path` to each language, keeping the given
/// query parameters (those with a value).
pub(crate) fn lang_links(path: &str, params: &[(&str, Option<&str>)]) -> Vec<Value> {
    ["en", "fr"]
        .iter()
        .map(|l| {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
            q.append_pair("lang", l);
            context! { lang => *l, href => format!("{path}?{}", q.finish()) }
        })
        .collect()
}

/// A time as the account pages show it: "2026-11-22 14:05 UTC".
pub(crate) fn when(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.format(&fmt).unwrap_or_default()
}
