//! Recovery pages: "forgot password?" (`/forgot-password`), "forgot
//! identifier?" (`/forgot-identifier`), and choosing a password from an
//! emailed link (`/reset-password` for reset links, `/set-password` for
//! invitation links; both pages serve either kind).
//!
//! The two public forms are CSRF-checked, throttled per client IP and carry
//! a proof-of-work challenge (solved by `altcha.js`). Whatever was typed,
//! they answer with the same page, and the core does the lookup and the
//! email in the background, so an answer says nothing about any account.

use super::forms::{
    Fields, PublicPost, back_url, bad_request, browser, challenge_json, client_of, csrf_ok,
    csrf_refused, csrf_token, form_client_id, internal_error, lang_links, page_locale, public_post,
    theme_of, with_client_query,
};
use super::{Peer, locale, page, peer_addr, request_meta};
use crate::app::AppState;
use crate::theme::Locale;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_extra::extract::CookieJar;
use idp_core::accounts::RecoveryError;
use idp_core::accounts::links::LinkPurpose;
use idp_core::accounts::recovery::{RecoveryTarget, SetPasswordError};
use idp_core::challenge::ChallengeError;
use idp_core::client::Client;
use idp_core::domain::Email;
use idp_core::secret::Secret;
use minijinja::{Value, context};
use serde::Deserialize;
use std::sync::Arc;

const FORGOT_PASSWORD: &str = "forgot-password";
const FORGOT_IDENTIFIER: &str = "forgot-identifier";
const SET_PASSWORD: &str = "set-password";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/forgot-password",
            get(forgot_password_page).post(forgot_password_submit),
        )
        .route(
            "/forgot-identifier",
            get(forgot_identifier_page).post(forgot_identifier_submit),
        )
        .route(
            "/reset-password",
            get(set_password_page).post(set_password_submit),
        )
        .route(
            "/set-password",
            get(set_password_page).post(set_password_submit),
        )
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageQuery {
    client_id: Option<String>,
    lang: Option<String>,
    token: Option<String>,
}

/// A public recovery form: which one, what was typed, what went wrong.
struct RecoveryForm<'a> {
    purpose: &'static str,
    client: Option<&'a Client>,
    typed: &'a str,
    /// A message id; `field_error` says whether it is about the typed value.
    error: Option<&'static str>,
    field_error: bool,
    /// With "recovery.throttled": seconds until requests pass again.
    retry_after_secs: Option<u64>,
}

impl RecoveryForm<'_> {
    fn render(&self, state: &AppState, browser: &str, loc: Locale, status: StatusCode) -> Response {
        let (theme, client_name) = theme_of(self.client);
        let challenge = challenge_json(state);
        let path = format!("/{}", self.purpose);
        let client_id = self.client.map(|c| c.id.0.as_str());
        let template = if self.purpose == FORGOT_PASSWORD {
            "forgot_password.html"
        } else {
            "forgot_identifier.html"
        };
        let mut res = page(
            state,
            &theme,
            loc,
            status,
            template,
            context! {
                action => path.clone(),
                csrf => csrf_token(state, browser, self.purpose),
                client_id => client_id.unwrap_or(""),
                typed => self.typed,
                error => self.error,
                field_error => self.field_error,
                retry_after => self.retry_after_secs.map(|s| s.div_ceil(60)),
                challenge => challenge,
                client_name => client_name,
                back_url => back_url(self.client),
                lang_links => lang_links(&path, &[("client_id", client_id)]),
            },
        );
        if let Some(secs) = self.retry_after_secs {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

async fn forgot_password_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    form_page(&state, q, jar, &headers, FORGOT_PASSWORD)
}

async fn forgot_identifier_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    form_page(&state, q, jar, &headers, FORGOT_IDENTIFIER)
}

fn form_page(
    state: &AppState,
    q: PageQuery,
    jar: CookieJar,
    headers: &HeaderMap,
    purpose: &'static str,
) -> Response {
    let (jar, loc) = page_locale(state, jar, headers, q.lang.as_deref());
    let (jar, browser_id) = browser(state, jar);
    let client = client_of(state, q.client_id.as_deref());
    let form = RecoveryForm {
        purpose,
        client: client.as_deref(),
        typed: "",
        error: None,
        field_error: false,
        retry_after_secs: None,
    };
    (jar, form.render(state, &browser_id, loc, StatusCode::OK)).into_response()
}

async fn forgot_password_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    recovery_submit(&state, jar, &headers, &peer, &body, FORGOT_PASSWORD).await
}

async fn forgot_identifier_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    recovery_submit(&state, jar, &headers, &peer, &body, FORGOT_IDENTIFIER).await
}

/// What a recovery form asks for, once its input is known to be well formed.
enum Request {
    Reset(RecoveryTarget),
    Reminder(Email),
}

async fn recovery_submit(
    state: &AppState,
    jar: CookieJar,
    headers: &HeaderMap,
    peer: &Peer,
    body: &[u8],
    purpose: &'static str,
) -> Response {
    let PublicPost {
        loc,
        fields,
        client,
        theme,
        client_name,
        jar,
        browser_id,
        meta,
    } = match public_post(state, jar, headers, peer, body, purpose) {
        Ok(post) => post,
        Err(res) => return *res,
    };
    let client = client.as_deref();
    let field = if purpose == FORGOT_PASSWORD {
        "identifier"
    } else {
        "email"
    };
    let typed = fields.typed(field);
    let mut form = RecoveryForm {
        purpose,
        client,
        typed: &typed,
        error: None,
        field_error: false,
        retry_after_secs: None,
    };
    let p = &state.provider;
    match p.accounts.throttle_recovery_ip(meta.ip.as_deref()).await {
        Ok(()) => {}
        Err(RecoveryError::Throttled(t)) => {
            form.error = Some("recovery.throttled");
            form.retry_after_secs = Some(t.retry_after_secs);
            let res = form.render(state, &browser_id, loc, StatusCode::TOO_MANY_REQUESTS);
            return (jar, res).into_response();
        }
        Err(e) => return internal(state, &theme, loc, &e),
    }
    let request = if purpose == FORGOT_PASSWORD {
        RecoveryTarget::parse(&typed).map(Request::Reset)
    } else {
        Email::parse(&typed).ok().map(Request::Reminder)
    };
    let Some(request) = request else {
        form.error = Some(if purpose == FORGOT_PASSWORD {
            "recovery.identifier_invalid"
        } else {
            "recovery.email_invalid"
        });
        form.field_error = true;
        let res = form.render(state, &browser_id, loc, StatusCode::BAD_REQUEST);
        return (jar, res).into_response();
    };
    match p.accounts.verify_challenge(fields.get("altcha")).await {
        Ok(()) => {}
        Err(ChallengeError::Invalid) => {
            form.error = Some("recovery.challenge_failed");
            let res = form.render(state, &browser_id, loc, StatusCode::BAD_REQUEST);
            return (jar, res).into_response();
        }
        Err(ChallengeError::Core(e)) => return internal(state, &theme, loc, &e),
    }
    // The work and the email happen in the background: the answer below is
    // the same, and as fast, whether or not an account matched.
    match request {
        Request::Reset(target) => {
            drop(
                p.accounts
                    .request_password_reset(&target, client, loc.as_str(), &meta),
            );
        }
        Request::Reminder(email) => {
            drop(
                p.accounts
                    .request_identifier_reminder(&email, client, loc.as_str(), &meta),
            );
        }
    }
    let res = page(
        state,
        &theme,
        loc,
        StatusCode::OK,
        "recovery_sent.html",
        context! {
            kind => if purpose == FORGOT_PASSWORD { "password" } else { "identifier" },
            client_name => client_name,
            again_url => with_client_query(&format!("/{purpose}"), client),
            back_url => back_url(client),
        },
    );
    (jar, res).into_response()
}

fn internal(state: &AppState, theme: &str, loc: Locale, e: &dyn std::fmt::Display) -> Response {
    internal_error(state, theme, loc, "recovery request failed", e)
}

/// A serializable value for a template context.
fn ser<T: serde::Serialize>(v: &T) -> Value {
    Value::from(minijinja::value::Serde(v))
}

/// The link's purpose as the page names it (`reset` or `invitation`).
fn purpose_name(purpose: LinkPurpose) -> &'static str {
    purpose.as_str()
}

/// The purpose a path announces, for the page of an invalid link.
fn purpose_of_path(path: &str) -> LinkPurpose {
    if path == "/set-password" {
        LinkPurpose::Invitation
    } else {
        LinkPurpose::Reset
    }
}

/// The password form of a valid link.
struct PasswordForm<'a> {
    path: &'a str,
    token: &'a str,
    link: &'a idp_core::accounts::recovery::PasswordLink,
    client: Option<&'a Client>,
    violations: Vec<Value>,
    mismatch: bool,
}

impl PasswordForm<'_> {
    fn render(&self, state: &AppState, browser: &str, loc: Locale, status: StatusCode) -> Response {
        let (theme, client_name) = theme_of(self.client);
        let client_id = self.client.map(|c| c.id.0.as_str());
        page(
            state,
            &theme,
            loc,
            status,
            "reset_password.html",
            context! {
                action => self.path,
                csrf => csrf_token(state, browser, SET_PASSWORD),
                token => self.token,
                client_id => client_id.unwrap_or(""),
                purpose => purpose_name(self.link.purpose),
                account => self.link.user.email.as_str(),
                password_rules => ser(&self.link.policy.rules()),
                                violations => self.violations.clone(),
                mismatch => self.mismatch,
                client_name => client_name,
                lang_links => lang_links(self.path, &[("token", Some(self.token)), ("client_id", client_id)]),
            },
        )
    }
}

/// The page of a link that cannot be used (status 400).
fn invalid_link_page(
    state: &AppState,
    loc: Locale,
    purpose: LinkPurpose,
    client: Option<&Client>,
) -> Response {
    let (theme, client_name) = theme_of(client);
    page(
        state,
        &theme,
        loc,
        StatusCode::BAD_REQUEST,
        "reset_password.html",
        context! {
            invalid_link => true,
            purpose => purpose_name(purpose),
            client_name => client_name,
            again_url => with_client_query("/forgot-password", client),
            back_url => back_url(client),
        },
    )
}

/// The client a link was sent for (it themes the pages and its rules
/// apply), else the one named in the query.
fn link_client(
    state: &AppState,
    link_client_id: Option<&idp_core::domain::ClientId>,
    query_client_id: Option<&str>,
) -> Option<Arc<Client>> {
    link_client_id
        .and_then(|id| state.provider.clients.get(&id.0))
        .or_else(|| client_of(state, query_client_id))
}

async fn set_password_page(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let (jar, loc) = page_locale(&state, jar, &headers, q.lang.as_deref());
    let (jar, browser_id) = browser(&state, jar);
    let path = uri.path().to_owned();
    let token = q.token.unwrap_or_default();
    let link = match state.provider.accounts.password_link(&token).await {
        Ok(l) => l,
        Err(e) => return internal(&state, "default", loc, &e),
    };
    let Some(link) = link else {
        let client = client_of(&state, q.client_id.as_deref());
        let res = invalid_link_page(&state, loc, purpose_of_path(&path), client.as_deref());
        return (jar, res).into_response();
    };
    let client = link_client(&state, link.client_id.as_ref(), q.client_id.as_deref());
    let form = PasswordForm {
        path: &path,
        token: &token,
        link: &link,
        client: client.as_deref(),
        violations: Vec::new(),
        mismatch: false,
    };
    (jar, form.render(&state, &browser_id, loc, StatusCode::OK)).into_response()
}

async fn set_password_submit(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
) -> Response {
    let loc = locale(&jar, &headers, None);
    let Some(fields) = Fields::parse(&body) else {
        return bad_request(&state, loc);
    };
    let path = uri.path().to_owned();
    let token = fields.get("token").to_owned();
    let query_client = form_client_id(&fields);
    if !csrf_ok(&state, &jar, SET_PASSWORD, fields.get("csrf")) {
        let client = client_of(&state, query_client);
        let (theme, _) = theme_of(client.as_deref());
        return csrf_refused(&state, &theme, loc);
    }
    let (jar, browser_id) = browser(&state, jar);
    let meta = request_meta(&state, &headers, peer_addr(&peer));
    let password = Secret::new(fields.get("password"));
    let confirmation = Secret::new(fields.get("confirmation"));
    let p = &state.provider;
    match p
        .accounts
        .set_password_from_link(&token, &password, &confirmation, loc.as_str(), &meta)
        .await
    {
        Ok(info) => {
            let client = link_client(&state, info.client_id.as_ref(), query_client);
            let (theme, client_name) = theme_of(client.as_deref());
            let res = page(
                &state,
                &theme,
                loc,
                StatusCode::OK,
                "password_changed.html",
                context! {
                    purpose => purpose_name(info.purpose),
                    customer_id => info.user.customer_id.as_str(),
                    client_name => client_name,
                    back_url => back_url(client.as_deref()),
                },
            );
            (jar, res).into_response()
        }
        Err(SetPasswordError::Rejected {
            violations,
            mismatch,
        }) => {
            // Only a valid link gets here; read it again for the page.
            let link = match p.accounts.password_link(&token).await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    let client = client_of(&state, query_client);
                    let res =
                        invalid_link_page(&state, loc, purpose_of_path(&path), client.as_deref());
                    return (jar, res).into_response();
                }
                Err(e) => return internal(&state, "default", loc, &e),
            };
            let client = link_client(&state, link.client_id.as_ref(), query_client);
            let form = PasswordForm {
                path: &path,
                token: &token,
                link: &link,
                client: client.as_deref(),
                violations: violations.iter().map(ser).collect(),
                mismatch,
            };
            let res = form.render(&state, &browser_id, loc, StatusCode::BAD_REQUEST);
            (jar, res).into_response()
        }
        Err(SetPasswordError::InvalidLink) => {
            let client = client_of(&state, query_client);
            let res = invalid_link_page(&state, loc, purpose_of_path(&path), client.as_deref());
            (jar, res).into_response()
        }
        Err(SetPasswordError::Core(e)) => internal(&state, "default", loc, &e),
    }
}
