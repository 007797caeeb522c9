//! Organization creation pages (`/organizations/new?client_id=`), reached
//! from a client's login page when the client allows it (`[account]
//! allow_org_creation`).
//!
//! 1. `GET /organizations/new`: the form: the account (an existing one and
//!    its password, or a new one), and the company (in France: its SIRET
//!    number; abroad: its name and country).
//! 2. `POST /organizations/new`: CSRF, per-IP throttle and proof-of-work
//!    checks, then the core checks the account and looks the company up;
//!    any problem re-shows the form with everything typed except the
//!    password. The request is kept server-side (short-lived store, bound to
//!    this browser) and the confirmation page shows the company as found.
//! 3. `POST /organizations/confirm`: creates the organization, pending
//!    validation by the platform operator; the creator becomes its
//!    administrator and is emailed.

use super::forms::{
    Fields, PublicPost, back_url, browser, challenge_json, client_of, csrf_token, internal_error,
    lang_links, page_locale, public_post, theme_of, with_client_query,
};
use super::{Peer, error_page, page};
use crate::app::AppState;
use crate::theme::Locale;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use idp_core::accounts::RecoveryError;
use idp_core::accounts::orgs::{CreatorInput, DomicileInput, OrgCreateError, OrgCreationInput};
use idp_core::challenge::ChallengeError;
use idp_core::client::Client;
use idp_core::company::SiretError;
use idp_core::secret::Secret;
use minijinja::value::Serde;
use minijinja::{Value, context};
use serde::Deserialize;
use std::collections::BTreeMap;

const NEW_PATH: &str = "/organizations/new";
const CONFIRM_PATH: &str = "/organizations/confirm";
const NEW_FORM: &str = "org-new";
const CONFIRM_FORM: &str = "org-confirm";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(NEW_PATH, get(new_page).post(new_submit))
        .route(CONFIRM_PATH, post(confirm_submit))
}

#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    client_id: Option<String>,
    lang: Option<String>,
}

/// What the creation form shows again after a problem (never the password).
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Typed {
    /// `existing` or `new`.
    account: String,
    email: String,
    name: String,
    /// `france` or `abroad`.
    domicile: String,
    siret: String,
    company_name: String,
    country: String,
}

impl Typed {
    fn from_fields(f: &Fields) -> Self {
        let pick = |v: String, allowed: [&str; 2]| {
            if allowed.contains(&v.as_str()) {
                v
            } else {
                allowed[0].to_owned()
            }
        };
        Self {
            account: pick(f.typed("account"), ["existing", "new"]),
            email: f.typed("email"),
            name: f.typed("name"),
            domicile: pick(f.typed("domicile"), ["france", "abroad"]),
            siret: f.typed("siret"),
            company_name: f.typed("company_name"),
            country: f.typed("country"),
        }
    }

    fn blank() -> Self {
        Self {
            account: "existing".into(),
            domicile: "france".into(),
            ..Self::default()
        }
    }
}

/// The creation form and what went wrong with it.
struct NewForm<'a> {
    client: Option<&'a Client>,
    typed: Typed,
    /// Field name -> message id.
    errors: BTreeMap<&'static str, &'static str>,
    /// Rules a new password broke.
    violations: Vec<Value>,
    /// A message about the whole form (registry outage, throttling...).
    notice: Option<&'static str>,
    /// Filled into the notice (`{minutes}`, `{retry_after}`).
    retry_after: Option<String>,
}

impl<'a> NewForm<'a> {
    fn new(client: Option<&'a Client>, typed: Typed) -> Self {
        Self {
            client,
            typed,
            errors: BTreeMap::new(),
            violations: Vec::new(),
            notice: None,
            retry_after: None,
        }
    }

    fn render(&self, state: &AppState, browser: &str, loc: Locale, status: StatusCode) -> Response {
        let (theme, client_name) = theme_of(self.client);
        let client_id = self.client.map(|c| c.id.0.as_str());
        let challenge = challenge_json(state);
        let rules = state
            .provider
            .organizations
            .signup_password_policy(self.client)
            .rules();
        page(
            state,
            &theme,
            loc,
            status,
            "org_new.html",
            context! {
                action => NEW_PATH,
                csrf => csrf_token(state, browser, NEW_FORM),
                client_id => client_id.unwrap_or(""),
                challenge => challenge,
                client_name => client_name,
                typed => Value::from(Serde(&self.typed)),
                errors => Value::from(Serde(&self.errors)),
                violations => self.violations.clone(),
                rules => Value::from(Serde(&rules)),
                notice => self.notice,
                retry_after => self.retry_after.clone(),
                back_url => back_url(self.client),
                lang_links => lang_links(NEW_PATH, &[("client_id", client_id)]),
            },
        )
    }
}

async fn new_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
    jar: CookieJar,
    headers: HeaderMap,
) -> Response {
    let (jar, loc) = page_locale(&state, jar, &headers, q.lang.as_deref());
    let (jar, browser_id) = browser(&state, jar);
    let client = client_of(&state, q.client_id.as_deref());
    let form = NewForm::new(client.as_deref(), Typed::blank());
    (jar, form.render(&state, &browser_id, loc, StatusCode::OK)).into_response()
}

fn siret_error_key(e: SiretError) -> &'static str {
    match e {
        SiretError::WrongLength => "org.error.siret_length",
        SiretError::NotDigits => "org.error.siret_digits",
        SiretError::BadChecksum => "org.error.siret_checksum",
    }
}

async fn new_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
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
    } = match public_post(&state, jar, &headers, &peer, &body, NEW_FORM) {
        Ok(post) => post,
        Err(res) => return *res,
    };
    let client = client.as_deref();
    let typed = Typed::from_fields(&fields);
    let mut form = NewForm::new(client, typed.clone());
    let p = &state.provider;
    match p.accounts.throttle_recovery_ip(meta.ip.as_deref()).await {
        Ok(()) => {}
        Err(RecoveryError::Throttled(t)) => {
            form.notice = Some("recovery.throttled");
            let minutes = t.retry_after_secs.div_ceil(60);
            form.retry_after = Some(minutes.to_string());
            let mut res = form.render(&state, &browser_id, loc, StatusCode::TOO_MANY_REQUESTS);
            if let Ok(v) = HeaderValue::from_str(&(minutes * 60).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return (jar, res).into_response();
        }
        Err(e) => return internal(&state, &theme, loc, &e),
    }
    // Checks of the form itself, before any work.
    if typed.email.is_empty() {
        form.errors.insert("email", "org.error.email_invalid");
    }
    if fields.get("password").is_empty() {
        form.errors.insert("password", "org.error.password_missing");
    }
    if typed.account == "new" && typed.name.is_empty() {
        form.errors.insert("name", "org.error.name_invalid");
    }
    if typed.domicile == "france" {
        if let Err(e) = idp_core::company::Siret::parse(&typed.siret) {
            form.errors.insert("siret", siret_error_key(e));
        }
    } else {
        if idp_core::accounts::orgs::parse_name(&typed.company_name).is_none() {
            form.errors
                .insert("company_name", "org.error.company_name_invalid");
        }
        match idp_core::accounts::orgs::parse_country(&typed.country).as_deref() {
            None => {
                form.errors.insert("country", "org.error.country_invalid");
            }
            Some("FR") => {
                form.errors.insert("country", "org.error.country_france");
            }
            Some(_) => {}
        }
    }
    if !form.errors.is_empty() {
        let res = form.render(&state, &browser_id, loc, StatusCode::BAD_REQUEST);
        return (jar, res).into_response();
    }
    match p.accounts.verify_challenge(fields.get("altcha")).await {
        Ok(()) => {}
        Err(ChallengeError::Invalid) => {
            form.notice = Some("recovery.challenge_failed");
            let res = form.render(&state, &browser_id, loc, StatusCode::BAD_REQUEST);
            return (jar, res).into_response();
        }
        Err(ChallengeError::Core(e)) => return internal(&state, &theme, loc, &e),
    }
    let password = Secret::new(fields.get("password"));
    let account = if typed.account == "new" {
        CreatorInput::New {
            email: typed.email.clone(),
            name: typed.name.clone(),
            password,
        }
    } else {
        CreatorInput::Existing {
            email: typed.email.clone(),
            password,
        }
    };
    let domicile = if typed.domicile == "france" {
        DomicileInput::France {
            siret: typed.siret.clone(),
        }
    } else {
        DomicileInput::Abroad {
            name: typed.company_name.clone(),
            country: typed.country.clone(),
        }
    };
    let input = OrgCreationInput {
        account,
        domicile,
        client_id: client.map(|c| c.id.clone()),
        locale: loc.as_str().to_owned(),
        browser: browser_id.clone(),
    };
    let (id, request) = match p.organizations.prepare_organization(input, &meta).await {
        Ok(ok) => ok,
        Err(e) => {
            let status = match &e {
                OrgCreateError::RegistryUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                OrgCreateError::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
                OrgCreateError::Core(err) => return internal(&state, &theme, loc, err),
                _ => StatusCode::BAD_REQUEST,
            };
            match e {
                OrgCreateError::InvalidEmail => {
                    form.errors.insert("email", "org.error.email_invalid");
                }
                OrgCreateError::InvalidName => {
                    form.errors.insert("name", "org.error.name_invalid");
                }
                OrgCreateError::InvalidCredentials => {
                    form.notice = Some("org.error.invalid_credentials");
                }
                OrgCreateError::Locked { until } => {
                    let fmt = time::macros::format_description!("[hour]:[minute] UTC");
                    form.notice = Some("login.locked");
                    form.retry_after = until.format(&fmt).ok();
                }
                OrgCreateError::EmailTaken => {
                    form.errors.insert("email", "org.error.email_taken");
                }
                OrgCreateError::WeakPassword(v) => {
                    form.errors.insert("password", "org.error.password_rules");
                    form.violations = v.iter().map(|x| Value::from(Serde(x))).collect();
                }
                OrgCreateError::InvalidSiret(e) => {
                    form.errors.insert("siret", siret_error_key(e));
                }
                OrgCreateError::UnknownSiret => {
                    form.errors.insert("siret", "org.error.siret_unknown");
                }
                OrgCreateError::InactiveCompany => {
                    form.errors.insert("siret", "org.error.siret_closed");
                }
                OrgCreateError::SiretTaken => {
                    form.errors.insert("siret", "org.error.siret_taken");
                }
                OrgCreateError::RegistryUnavailable => {
                    form.notice = Some("org.error.registry_unavailable");
                }
                OrgCreateError::InvalidCompanyName => {
                    form.errors
                        .insert("company_name", "org.error.company_name_invalid");
                }
                OrgCreateError::InvalidCountry => {
                    form.errors.insert("country", "org.error.country_invalid");
                }
                OrgCreateError::FranceNeedsSiret => {
                    form.errors.insert("country", "org.error.country_france");
                }
                OrgCreateError::Expired | OrgCreateError::Core(_) => {
                    form.notice = Some("error.internal");
                }
            }
            let res = form.render(&state, &browser_id, loc, status);
            return (jar, res).into_response();
        }
    };
    let client_id = client.map(|c| c.id.0.as_str());
    let res = page(
        &state,
        &theme,
        loc,
        StatusCode::OK,
        "org_confirm.html",
        context! {
            action => CONFIRM_PATH,
            csrf => csrf_token(&state, &browser_id, CONFIRM_FORM),
            client_id => client_id.unwrap_or(""),
            request => id,
            client_name => client_name,
            org => context! {
                name => request.name,
                siret => request.siret.as_deref().map(format_siret),
                address => request.address,
                country => request.country,
            },
            email => request.email.as_str(),
            new_account => typed.account == "new",
            edit_url => with_client_query(NEW_PATH, client),
            back_url => back_url(client),
        },
    );
    (jar, res).into_response()
}

/// `12345678901234` as `123 456 789 01234` (SIREN, then establishment).
fn format_siret(s: &str) -> String {
    if s.len() == 14 && s.is_ascii() {
        format!("{} {} {} {}", &s[..3], &s[3..6], &s[6..9], &s[9..])
    } else {
        s.to_owned()
    }
}

async fn confirm_submit(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    peer: Peer,
    body: Bytes,
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
    } = match public_post(&state, jar, &headers, &peer, &body, CONFIRM_FORM) {
        Ok(post) => post,
        Err(res) => return *res,
    };
    let client = client.as_deref();
    match state
        .provider
        .organizations
        .confirm_organization(fields.get("request"), &browser_id, &meta)
        .await
    {
        Ok((org, user)) => {
            let res = page(
                &state,
                &theme,
                loc,
                StatusCode::OK,
                "org_created.html",
                context! {
                    org_name => org.name,
                    email => user.email.as_str(),
                    customer_id => user.customer_id.as_str(),
                    client_name => client_name,
                    back_url => back_url(client),
                },
            );
            (jar, res).into_response()
        }
        Err(e) => {
            let (status, message) = match e {
                OrgCreateError::SiretTaken => (StatusCode::CONFLICT, "org.error.siret_taken"),
                OrgCreateError::EmailTaken => (StatusCode::CONFLICT, "org.error.email_taken"),
                OrgCreateError::Expired => (StatusCode::BAD_REQUEST, "org.error.expired"),
                other => return internal(&state, &theme, loc, &other),
            };
            let res = error_page(&state, &theme, loc, status, message, None);
            (jar, res).into_response()
        }
    }
}

fn internal(state: &AppState, theme: &str, loc: Locale, e: &dyn std::fmt::Display) -> Response {
    internal_error(state, theme, loc, "organization creation failed", e)
}
