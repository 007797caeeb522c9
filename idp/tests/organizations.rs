//! Organizations over HTTP: creation from a client's login page (a French
//! company looked up by SIRET in the bundled registry, a foreign one by name
//! and country; an existing account proving its password or a new account),
//! with the creator's email read from a real SMTP server process; what the
//! form says about bad SIRET numbers, an unknown or closed company and a
//! registry outage (nothing typed is lost); no enumeration through the
//! account check; validation and rejection by the platform operator (admin
//! API and CLI) with the members' emails; the `organizations` claim (pending,
//! then validated); members created by an administrator and their invitation
//! link; roles and the last administrator; enforced MFA per authentication
//! kind; security settings with per-rule errors; and authorization: a member
//! of one organization can do nothing in another.

mod support;

use async_trait::async_trait;
use base64::Engine;
use idp_core::accounts::orgs::{CreatorInput, DomicileInput, OrgCreationInput};
use idp_core::client::{Client, ClientAccountSettings};
use idp_core::company::{Company, CompanyRegistry, RegistryError, Siret};
use idp_core::domain::RequestMeta;
use idp_core::domain::{ClientId, Email, OrgId, OrgStatus, Organization, User};
use idp_core::notify::Message;
use idp_core::secret::Secret;
use idp_mail::testing::SmtpSink;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use support::*;

/// Console logins (`auth_kind = "console"`), "create an organization" shown,
/// a second factor only for accounts that must use one.
const PORTAL: &str = "portal";
/// The same flow, but its logins count as `api`.
const API_PORTAL: &str = "apiportal";
/// A `platform_admin` client: its client_credentials tokens validate organizations.
const OPERATOR: &str = "operator";
const MFA_FLOW: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": ["totp", "webauthn"], "when": "mfa_required"}]}]"#;

/// In the bundled registry: GOOGLE FRANCE, active.
const GOOGLE: &str = "44306184100047";
/// In the bundled registry: TOTALENERGIES SE, active.
const TOTAL: &str = "54205118000066";
/// In the bundled registry: CCF, closed.
const CLOSED: &str = "30057319300061";

fn clients() -> Vec<Client> {
    let mut portal = client_with_flows(PORTAL, MFA_FLOW);
    portal.account = ClientAccountSettings {
        allow_org_creation: true,
        auth_kind: "console".into(),
        ..ClientAccountSettings::default()
    };
    let mut api = client_with_flows(API_PORTAL, MFA_FLOW);
    api.account.auth_kind = "api".into();
    let mut operator = client_with_flows(OPERATOR, MFA_FLOW);
    operator.account.platform_admin = true;
    vec![portal, api, operator]
}

fn options() -> AppOptions {
    AppOptions {
        clients: clients(),
        // WebAuthn (in the flows) needs a host name as its relying-party id.
        localhost: true,
        ..AppOptions::default()
    }
}

// ---------------------------------------------------------------- helpers

/// Waits for a message to `email` that `pick` recognizes.
async fn wait_message<T>(
    app: &TestApp,
    email: &str,
    what: &str,
    pick: impl Fn(&Message) -> Option<T>,
) -> T {
    wait_for(what, || messages_to(app, email).iter().find_map(&pick)).await
}

/// The value of the input named `name` (None when it has no value attribute).
fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!(r#"name="{name}""#))?;
    let tag_start = html[..at].rfind("<input")?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let v = tag.split(" value=\"").nth(1)?;
    Some(v[..v.find('"')?].to_owned())
}

/// GETs the creation form of `client`.
async fn org_form(app: &TestApp, browser: &Browser, client: &str) -> String {
    client_page(app, browser, "/organizations/new", client).await
}

/// Fills the creation form, solves its challenge, posts it: (status, HTML).
async fn submit_org(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let res = submit_with_challenge(app, browser, html, fields).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

fn existing(email: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("account", "existing".into()),
        ("email", email.into()),
        ("password", password.into()),
    ]
}

fn france(siret: &str) -> Vec<(&'static str, String)> {
    vec![("domicile", "france".into()), ("siret", siret.into())]
}

fn abroad(name: &str, country: &str) -> Vec<(&'static str, String)> {
    vec![
        ("domicile", "abroad".into()),
        ("company_name", name.into()),
        ("country", country.into()),
    ]
}

fn fields<'a>(parts: &'a [Vec<(&'static str, String)>]) -> Vec<(&'a str, &'a str)> {
    parts
        .iter()
        .flatten()
        .map(|(k, v)| (*k, v.as_str()))
        .collect()
}

/// Creates an organization through the pages: (confirmation page, created page).
async fn create_through_pages(
    app: &TestApp,
    browser: &Browser,
    parts: &[Vec<(&'static str, String)>],
) -> (String, String) {
    let html = org_form(app, browser, PORTAL).await;
    let (status, confirm) = submit_org(app, browser, &html, &fields(parts)).await;
    assert_eq!(status, 200, "{confirm}");
    assert!(confirm.contains("Confirm your organization"), "{confirm}");
    let res = browser.submit(app, &confirm, &[]).await;
    assert_eq!(res.status(), 200);
    let created = res.text().await.unwrap();
    assert!(created.contains("Organization created"), "{created}");
    (confirm, created)
}

/// Creates an organization through the core (setup of other journeys).
async fn create_org(
    app: &TestApp,
    email: &str,
    password: &str,
    domicile: DomicileInput,
) -> Organization {
    let p = &app.state.provider;
    let (id, _) = p
        .organizations
        .prepare_organization(
            OrgCreationInput {
                account: CreatorInput::Existing {
                    email: email.into(),
                    password: Secret::new(password),
                },
                domicile,
                client_id: Some(ClientId(PORTAL.into())),
                locale: "en".into(),
                browser: "test-browser".into(),
            },
            &RequestMeta::default(),
        )
        .await
        .expect("prepared");
    p.organizations
        .confirm_organization(&id, "test-browser", &RequestMeta::default())
        .await
        .expect("created")
        .0
}

async fn user(app: &TestApp, email: &str, name: &str) -> User {
    user_with_password(app, email, Some(name)).await
}

/// An authorization URL of `client` asking for the admin API too.
fn admin_authorize_url(app: &TestApp, client: &str, challenge: &str) -> String {
    authorize_url(app, client, Some(challenge), &[]).replace(
        "scope=openid+email+profile",
        "scope=openid+email+profile+admin_api",
    )
}

/// Signs in to `client` (asking for the admin API too) and exchanges the
/// code: the token response.
async fn sign_in(app: &TestApp, client: &str, email: &str, password: &str) -> Value {
    let (verifier, challenge) = pkce();
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &admin_authorize_url(app, client, &challenge),
            email,
            password,
        )
        .await;
    assert!(to.starts_with(REDIRECT), "signed in: {to}");
    let code = query_param(&to, "code").expect("a code");
    exchange_code(app, client, &code, Some(&verifier)).await
}

/// An access token of `email` (through `portal`).
async fn access_token(app: &TestApp, email: &str) -> String {
    sign_in(app, PORTAL, email, PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// A client_credentials token of `client`.
async fn client_token(app: &TestApp, client: &str) -> String {
    let (status, v) = token_request(
        app,
        client,
        &[("grant_type", "client_credentials"), ("scope", "admin_api")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// Calls the admin API: (status, JSON body or Null).
async fn api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    api(app, reqwest::Method::GET, path, Some(token), None).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    api(app, reqwest::Method::POST, path, Some(token), Some(body)).await
}

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (u16, Value) {
    api(app, reqwest::Method::PUT, path, Some(token), Some(body)).await
}

async fn delete(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    api(app, reqwest::Method::DELETE, path, Some(token), None).await
}

fn org_path(org: OrgId, rest: &str) -> String {
    format!("/admin/api/organizations/{org}{rest}")
}

/// The organizations claim of an ID token, as (name, status, roles).
fn org_claims(id_token: &str) -> Vec<(String, String, Vec<String>)> {
    claims(id_token)["organizations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap().to_owned(),
                        o["status"].as_str().unwrap().to_owned(),
                        o["roles"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| r.as_str().unwrap().to_owned())
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A registry that can be taken down, in front of the bundled one.
#[derive(Default)]
struct FlakyRegistry {
    down: AtomicBool,
}

#[async_trait]
impl CompanyRegistry for FlakyRegistry {
    async fn lookup(&self, siret: &Siret) -> Result<Option<Company>, RegistryError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RegistryError::Unavailable("connection refused".into()));
        }
        idp_company_registry::BundledRegistry.lookup(siret).await
    }
}

/// A 14-digit number with a valid Luhn key that no bundled company has.
fn unknown_valid_siret() -> String {
    let base = "12345678900";
    for tail in 0..1000 {
        let candidate = format!("{base}{tail:03}");
        if Siret::parse(&candidate).is_ok() {
            return candidate;
        }
    }
    unreachable!("a Luhn-valid number exists in any 10 consecutive ones")
}

// ---------------------------------------------------------------- journeys

/// A French company, from the login page's link, with an existing account;
/// the creator's email comes from a real SMTP server; the operator validates
/// through the admin API and the members are emailed; tokens show the status.
async fn france_end_to_end(backend: Backend) {
    let sink = SmtpSink::start();
    let port = sink.port();
    let app = spawn_app_with_smtp(
        backend,
        options(),
        "Sign-in <no-reply@idp.example>",
        port,
        cheap_challenges,
    )
    .await;

    // The login page links to the creation page.
    let browser = Browser::new();
    let (res, _) = browser
        .follow(&app, &authorize_url(&app, PORTAL, None, &[]))
        .await;
    let login = res.text().await.unwrap();
    let link = format!(r#"<a href="/organizations/new?client_id={PORTAL}">Create an organization"#);
    assert!(login.contains(&link), "{login}");
    let (res, _) = browser
        .follow(&app, &authorize_url(&app, "conf", None, &[]))
        .await;
    assert!(
        !res.text().await.unwrap().contains("/organizations/new"),
        "only clients that allow it show the link"
    );

    let html = org_form(&app, &browser, PORTAL).await;
    assert!(html.contains("/assets/default/altcha.js"), "{html}");
    let parts = [
        existing("alice@example.com", PASSWORD),
        france("443 061 841 00047"),
    ];
    let (status, confirm) = submit_org(&app, &browser, &html, &fields(&parts)).await;
    assert_eq!(status, 200, "{confirm}");
    assert!(confirm.contains("GOOGLE FRANCE"), "{confirm}");
    assert!(confirm.contains("443 061 841 00047"), "{confirm}");
    assert!(
        confirm.contains("8 RUE DE LONDRES, 75009 PARIS"),
        "{confirm}"
    );
    assert!(confirm.contains("Alice@Example.com"), "{confirm}");
    let res = browser.submit(&app, &confirm, &[]).await;
    assert_eq!(res.status(), 200);
    let created = res.text().await.unwrap();
    assert!(
        created.contains("The organization GOOGLE FRANCE is created."),
        "{created}"
    );
    assert!(created.contains(app.user.customer_id.as_str()), "{created}");
    // Confirming twice creates nothing more.
    let res = browser.submit(&app, &confirm, &[]).await;
    assert_eq!(res.status(), 400);

    let p = &app.state.provider;
    let orgs = p.ports.orgs.list_orgs(None, 10, 0).await.unwrap();
    assert_eq!(orgs.len(), 1);
    let org = &orgs[0];
    assert_eq!(org.status, OrgStatus::Pending);
    assert_eq!(org.siret.as_deref(), Some(GOOGLE));
    assert_eq!(org.country, "FR");
    assert_eq!(org.created_by, app.user.id);
    let events = p.ports.audit.list_for_org(org.id, 10).await.unwrap();
    let ev = events
        .iter()
        .find(|e| e.kind == "organization.created")
        .expect("audited");
    assert_eq!(ev.user_id, Some(app.user.id));
    assert_eq!(ev.client_id, Some(ClientId(PORTAL.into())));
    assert_eq!(ev.detail["org_id"], json!(org.id));
    assert!(ev.ip.is_some());

    let mail = wait_for("the creation email in the SMTP server", || {
        sink.messages().into_iter().next()
    })
    .await;
    assert!(mail.header("To").unwrap().contains("Alice@Example.com"));
    assert_eq!(
        mail.header("Subject"),
        Some("Your organization GOOGLE FRANCE is pending validation")
    );
    let text = mail.text.as_deref().unwrap();
    assert!(
        text.contains("created on Portal portal with you as its administrator"),
        "{text}"
    );

    // Tokens show the organization pending, with the creator's role.
    let tokens = sign_in(&app, PORTAL, "alice@example.com", PASSWORD).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert_eq!(
        org_claims(id_token),
        [(
            "GOOGLE FRANCE".to_owned(),
            "pending".to_owned(),
            vec!["administrator".to_owned()]
        )]
    );
    assert_eq!(claims(id_token)["organizations"][0]["id"], json!(org.id));

    // The operator validates it; the member is emailed.
    let op = client_token(&app, OPERATOR).await;
    let (status, body) = get(&app, "/admin/api/organizations?status=pending", &op).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["organizations"][0]["id"], json!(org.id));
    let (status, body) = post(&app, &org_path(org.id, "/validate"), &op, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "validated");
    let mail = wait_for("the validation email", || {
        sink.messages().into_iter().nth(1)
    })
    .await;
    assert_eq!(
        mail.header("Subject"),
        Some("Your organization GOOGLE FRANCE is validated")
    );
    let events = p.ports.audit.list_for_org(org.id, 10).await.unwrap();
    let ev = events
        .iter()
        .find(|e| e.kind == "organization.validated")
        .expect("audited");
    assert_eq!(ev.client_id, Some(ClientId(OPERATOR.into())));

    // New tokens (ID token and userinfo) show it validated.
    let tokens = sign_in(&app, PORTAL, "alice@example.com", PASSWORD).await;
    assert_eq!(
        org_claims(tokens["id_token"].as_str().unwrap())[0].1,
        "validated"
    );
    let res = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["organizations"][0]["status"], "validated", "{info}");
    assert_eq!(info["organizations"][0]["roles"], json!(["administrator"]));

    // Alice adds a member; the invitation arrives by SMTP and its link works.
    let (status, body) = post(
        &app,
        &org_path(org.id, "/members"),
        tokens["access_token"].as_str().unwrap(),
        json!({"email": "carol@example.com", "name": "Carol", "roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mail = wait_for("the invitation email", || {
        sink.messages().into_iter().find(|m| {
            m.header("To")
                .is_some_and(|t| t.contains("carol@example.com"))
        })
    })
    .await;
    assert_eq!(
        mail.header("Subject"),
        Some("Your Portal portal account for GOOGLE FRANCE")
    );
    let text = mail.text.as_deref().unwrap();
    assert!(
        text.contains(body["customer_id"].as_str().unwrap()),
        "{text}"
    );
    let url = text
        .split_whitespace()
        .find(|w| w.starts_with(&app.url("/reset-password?token=")))
        .expect("the link in the email")
        .to_owned();
    let carol = Browser::new();
    let res = carol.get(&url).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let res = carol
        .submit(
            &app,
            &html,
            &[
                ("password", "a sunny passphrase 77"),
                ("confirmation", "a sunny passphrase 77"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    let tokens = sign_in(&app, PORTAL, "carol@example.com", "a sunny passphrase 77").await;
    assert_eq!(
        org_claims(tokens["id_token"].as_str().unwrap()),
        [(
            "GOOGLE FRANCE".to_owned(),
            "validated".to_owned(),
            vec!["member".to_owned()]
        )]
    );
    // The link worked once.
    let res = Browser::new().get(&url).await;
    assert_eq!(res.status(), 400);

    // Without the profile scope, no organizations claim.
    let (verifier, challenge) = pkce();
    let mut url = authorize_url(&app, PORTAL, Some(&challenge), &[]);
    url = url.replace("scope=openid+email+profile", "scope=openid+email");
    let to = Browser::new()
        .login(&app, &url, "alice@example.com", PASSWORD)
        .await;
    let (_, tokens) = token_request(
        &app,
        PORTAL,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query_param(&to, "code").unwrap()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert!(
        claims(tokens["id_token"].as_str().unwrap())
            .get("organizations")
            .is_none()
    );
    app.cleanup().await;
}

on_both_backends!(france_end_to_end);

/// Abroad, with a new account: the new password follows the rules (each
/// broken rule listed), an address with an account is refused for a new
/// one, France is not "abroad"; the new account signs in.
async fn abroad_with_a_new_account(app: &TestApp) {
    let browser = Browser::new();
    let new_account = |password: &str, email: &str| {
        vec![
            ("account", "new".to_owned()),
            ("email", email.to_owned()),
            ("name", "Bob Builder".to_owned()),
            ("password", password.to_owned()),
        ]
    };
    // A weak password: every broken rule is listed, what was typed stays.
    let html = org_form(app, &browser, PORTAL).await;
    let parts = [
        new_account("qwerty", "bob@example.de"),
        abroad("Beispiel GmbH", "de"),
    ];
    let (status, page) = submit_org(app, &browser, &html, &fields(&parts)).await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("This password does not follow the rules"),
        "{page}"
    );
    let errors = &page[page.find(r#"id="password-error""#).unwrap()..];
    let errors = &errors[..errors.find("</div>").unwrap()];
    assert!(
        errors.matches("<li>").count() >= 2,
        "one line per rule: {errors}"
    );
    assert_eq!(
        input_value(&page, "email").as_deref(),
        Some("bob@example.de")
    );
    assert_eq!(
        input_value(&page, "company_name").as_deref(),
        Some("Beispiel GmbH")
    );
    assert_eq!(input_value(&page, "country").as_deref(), Some("de"));
    assert!(page.contains(r#"id="account-new" name="account" type="radio" value="new" checked"#));
    assert!(
        input_value(&page, "password").is_none(),
        "the password is never sent back"
    );

    // An address that has an account cannot be a new account.
    let parts = [
        new_account("a fine passphrase 42", "ALICE@example.com"),
        abroad("Beispiel GmbH", "DE"),
    ];
    let (status, page) = submit_org(app, &browser, &page, &fields(&parts)).await;
    assert_eq!(status, 400);
    assert!(
        page.contains("An account already uses this email address"),
        "{page}"
    );

    // France is not abroad; an unknown country code is refused.
    for (country, message) in [
        ("FR", "choose “Domiciled in France”"),
        ("XX", "Enter a two-letter country code"),
    ] {
        let parts = [
            new_account("a fine passphrase 42", "bob@example.de"),
            abroad("Beispiel GmbH", country),
        ];
        let (status, page) = submit_org(app, &browser, &page, &fields(&parts)).await;
        assert_eq!(status, 400);
        assert!(page.contains(message), "{page}");
    }

    let parts = [
        new_account("a fine passphrase 42", "bob@example.de"),
        abroad("Beispiel GmbH", "de"),
    ];
    let (confirm, created) = create_through_pages(app, &browser, &parts).await;
    assert!(
        confirm.contains("Beispiel GmbH") && confirm.contains("DE"),
        "{confirm}"
    );
    assert!(confirm.contains("(new account)"), "{confirm}");
    assert!(created.contains("The organization Beispiel GmbH is created."));
    let org = &app
        .state
        .provider
        .ports
        .orgs
        .list_orgs(None, 10, 0)
        .await
        .unwrap()[0];
    assert_eq!((org.country.as_str(), org.siret.as_deref()), ("DE", None));
    let bob = app
        .state
        .provider
        .ports
        .users
        .find_by_email(&Email::parse("bob@example.de").unwrap())
        .await
        .unwrap()
        .expect("account created");
    assert_eq!(bob.name.as_deref(), Some("Bob Builder"));
    assert_eq!(org.created_by, bob.id);
    wait_message(app, "bob@example.de", "the creation email", |m| match m {
        Message::OrganizationCreated { org_name } => Some(org_name.clone()),
        _ => None,
    })
    .await;
    // A confirmation belongs to the browser that asked for it, and works once.
    let p = &app.state.provider;
    let (id, _) = p
        .organizations
        .prepare_organization(
            OrgCreationInput {
                account: CreatorInput::Existing {
                    email: "bob@example.de".into(),
                    password: Secret::new("a fine passphrase 42"),
                },
                domicile: DomicileInput::Abroad {
                    name: "Zweite GmbH".into(),
                    country: "AT".into(),
                },
                client_id: None,
                locale: "en".into(),
                browser: "browser-1".into(),
            },
            &RequestMeta::default(),
        )
        .await
        .unwrap();
    assert!(
        p.organizations
            .confirm_organization(&id, "browser-2", &RequestMeta::default())
            .await
            .is_err()
    );
    assert!(
        p.organizations
            .confirm_organization(&id, "browser-1", &RequestMeta::default())
            .await
            .is_ok()
    );
    assert!(
        p.organizations
            .confirm_organization(&id, "browser-1", &RequestMeta::default())
            .await
            .is_err()
    );
    let tokens = sign_in(app, PORTAL, "bob@example.de", "a fine passphrase 42").await;
    let names: Vec<String> = org_claims(tokens["id_token"].as_str().unwrap())
        .into_iter()
        .map(|(name, status, roles)| format!("{name} {status} {}", roles.join(",")))
        .collect();
    assert_eq!(
        names,
        [
            "Beispiel GmbH pending administrator",
            "Zweite GmbH pending administrator"
        ]
    );
}

/// Bad SIRET numbers get a precise message on the field, with the typed
/// value kept; an unknown and a closed establishment are refused; nothing is
/// created.
async fn siret_problems_are_explained(app: &TestApp) {
    let browser = Browser::new();
    let mut html = org_form(app, &browser, PORTAL).await;
    let unknown = unknown_valid_siret();
    for (siret, message) in [
        (
            "443 061 841 00048",
            "This is not a valid SIRET number: check for a typing mistake.",
        ),
        ("4430618410004", "A SIRET number has exactly 14 digits."),
        ("4430618410004A", "A SIRET number contains only digits"),
        (
            unknown.as_str(),
            "No establishment with this SIRET number exists",
        ),
        (CLOSED, "This establishment is closed"),
    ] {
        let parts = [existing("alice@example.com", PASSWORD), france(siret)];
        let (status, page) = submit_org(app, &browser, &html, &fields(&parts)).await;
        assert_eq!(status, 400, "{siret}: {page}");
        assert!(page.contains(message), "{siret}: {page}");
        assert!(page.contains(r#"id="siret-error""#), "{page}");
        assert_eq!(input_value(&page, "siret").as_deref(), Some(siret));
        assert_eq!(
            input_value(&page, "email").as_deref(),
            Some("alice@example.com")
        );
        html = page;
    }
    assert!(
        app.state
            .provider
            .ports
            .orgs
            .list_orgs(None, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // A SIRET already registered by a pending organization.
    create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: TOTAL.into(),
        },
    )
    .await;
    let parts = [existing("alice@example.com", PASSWORD), france(TOTAL)];
    let (status, confirm) = submit_org(app, &browser, &html, &fields(&parts)).await;
    assert_eq!(status, 200, "{confirm}");
    let res = browser.submit(app, &confirm, &[]).await;
    assert_eq!(res.status(), 409);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("already registered for this SIRET")
    );
}

/// A registry outage: a clear message, everything typed kept but the
/// password, and a retry works.
async fn registry_outage_keeps_what_was_typed(backend: Backend) {
    let registry = Arc::new(FlakyRegistry::default());
    registry.down.store(true, Ordering::SeqCst);
    let options = AppOptions {
        registry: Some(registry.clone()),
        ..options()
    };
    let app = spawn_app_adjusted(backend, options, cheap_challenges).await;
    let browser = Browser::with_language("fr");
    let html = org_form(&app, &browser, PORTAL).await;
    let parts = [existing("alice@example.com", PASSWORD), france(GOOGLE)];
    let (status, page) = submit_org(&app, &browser, &html, &fields(&parts)).await;
    assert_eq!(status, 503, "{page}");
    assert!(
        page.contains("Le répertoire des entreprises ne répond pas"),
        "{page}"
    );
    assert!(
        page.contains("Rien de ce que vous avez saisi n’est perdu"),
        "{page}"
    );
    assert_eq!(input_value(&page, "siret").as_deref(), Some(GOOGLE));
    assert_eq!(
        input_value(&page, "email").as_deref(),
        Some("alice@example.com")
    );
    assert!(input_value(&page, "password").is_none());
    assert!(
        app.state
            .provider
            .ports
            .orgs
            .list_orgs(None, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // Back up: the same form, with the password typed again, goes through.
    registry.down.store(false, Ordering::SeqCst);
    let (status, confirm) = submit_org(&app, &browser, &page, &fields(&parts)).await;
    assert_eq!(status, 200, "{confirm}");
    assert!(confirm.contains("GOOGLE FRANCE"), "{confirm}");
    app.cleanup().await;
}

on_both_backends!(registry_outage_keeps_what_was_typed);

/// A wrong password for an existing account and an unknown email get the
/// same page; failures are counted like the login's, and lock.
async fn wrong_password_and_unknown_email_look_the_same(app: &TestApp) {
    let normalize = |page: &str, email: &str| {
        let mut out = page.replace(email, "EMAIL");
        for name in ["csrf"] {
            if let Some(v) = input_value(page, name) {
                out = out.replace(&v, "X");
            }
        }
        let start = out.find("data-challenge=\"").unwrap() + 16;
        let end = start + out[start..].find('"').unwrap();
        out.replace_range(start..end, "C");
        out
    };
    let mut pages = Vec::new();
    for email in ["alice@example.com", "nobody@example.com"] {
        let browser = Browser::new();
        let html = org_form(app, &browser, PORTAL).await;
        let parts = [existing(email, "not the password"), france(GOOGLE)];
        let (status, page) = submit_org(app, &browser, &html, &fields(&parts)).await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("Incorrect email or password"), "{page}");
        pages.push(normalize(&page, email));
    }
    assert_eq!(pages[0], pages[1]);
    assert!(
        app.state
            .provider
            .ports
            .orgs
            .list_orgs(None, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // Four more failures lock the account (shared with the login's counter).
    let browser = Browser::new();
    let mut html = org_form(app, &browser, PORTAL).await;
    for _ in 0..4 {
        let parts = [existing("alice@example.com", "still wrong"), france(GOOGLE)];
        html = submit_org(app, &browser, &html, &fields(&parts)).await.1;
    }
    let parts = [existing("alice@example.com", PASSWORD), france(GOOGLE)];
    let (status, page) = submit_org(app, &browser, &html, &fields(&parts)).await;
    assert_eq!(status, 429, "{page}");
    assert!(
        page.contains("Too many attempts. Try again after"),
        "{page}"
    );
}

/// The operator's API and CLI: list, validate, reject (emails), conflicts;
/// only a platform_admin client may do it.
async fn operator_validates_and_rejects(app: &TestApp) {
    let bob = user(app, "bob@example.com", "Bob").await;
    let a = create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: GOOGLE.into(),
        },
    )
    .await;
    let b = create_org(
        app,
        "bob@example.com",
        PASSWORD,
        DomicileInput::Abroad {
            name: "Bob Ltd".into(),
            country: "GB".into(),
        },
    )
    .await;
    assert_eq!(b.created_by, bob.id);
    let p = &app.state.provider;

    // The CLI lists and validates.
    let out = idp::cli::run_org_command(
        p,
        idp::cli::parse_org_command(["list", "--status", "pending"]).unwrap(),
    )
    .await
    .unwrap();
    assert!(
        out.contains(&a.id.to_string()) && out.contains(&b.id.to_string()),
        "{out}"
    );
    assert!(
        out.contains("GOOGLE FRANCE") && out.contains("Bob Ltd"),
        "{out}"
    );
    let out = idp::cli::run_org_command(
        p,
        idp::cli::parse_org_command(["validate", &a.id.to_string()]).unwrap(),
    )
    .await
    .unwrap();
    assert!(out.contains("validated"), "{out}");
    wait_message(
        app,
        "Alice@Example.com",
        "the validation email",
        |m| match m {
            Message::OrganizationValidated { org_name } => Some(org_name.clone()),
            _ => None,
        },
    )
    .await;
    let err = idp::cli::run_org_command(
        p,
        idp::cli::parse_org_command(["validate", &a.id.to_string()]).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already validated"), "{err}");
    assert!(idp::cli::parse_org_command(["validate"]).is_err());
    let err =
        idp::cli::run_org_command(p, idp::cli::parse_org_command(["reject", "nope"]).unwrap())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("not an organization id"), "{err}");

    // The API: a non-platform client, a user and no token are refused.
    let conf = client_token(app, "conf").await;
    let alice = access_token(app, "alice@example.com").await;
    for token in [&conf, &alice] {
        let (status, body) = post(app, &org_path(b.id, "/reject"), token, json!({})).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "forbidden");
        let (status, _) = get(app, "/admin/api/organizations", token).await;
        assert_eq!(status, 403);
    }
    let (status, body) = api(
        app,
        reqwest::Method::POST,
        &org_path(b.id, "/reject"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_token");
    let (status, _) = api(
        app,
        reqwest::Method::GET,
        "/admin/api/organizations",
        Some("forged"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    let op = client_token(app, OPERATOR).await;
    let (status, body) = get(app, "/admin/api/organizations?status=bogus", &op).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, body) = get(app, "/admin/api/organizations?status=validated", &op).await;
    assert_eq!(status, 200);
    assert_eq!(body["organizations"].as_array().unwrap().len(), 1);
    let (status, body) = post(app, &org_path(b.id, "/reject"), &op, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "rejected");
    wait_message(app, "bob@example.com", "the rejection email", |m| match m {
        Message::OrganizationRejected { org_name } => Some(org_name.clone()),
        _ => None,
    })
    .await;
    let (status, body) = post(app, &org_path(b.id, "/validate"), &op, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "conflict");
    let (status, _) = post(
        app,
        &org_path(OrgId(uuid::Uuid::now_v7()), "/validate"),
        &op,
        json!({}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = get(app, &org_path(b.id, ""), &op).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("rejected")));
    assert!(
        p.ports
            .audit
            .list_for_org(b.id, 10)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "organization.rejected")
    );
}

/// Members: created by the administrator (invitation link that works),
/// existing accounts added, roles, the last administrator kept, and every
/// member emailed at validation.
async fn members_and_roles(app: &TestApp) {
    let org = create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: GOOGLE.into(),
        },
    )
    .await;
    let dave = user(app, "dave@example.com", "Dave").await;
    let alice = access_token(app, "alice@example.com").await;
    let members = org_path(org.id, "/members");

    let (status, body) = post(
        app,
        &members,
        &alice,
        json!({"email": "Carol@Example.com", "name": "Carol", "roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], true);
    let carol_id = body["user_id"].as_str().unwrap().to_owned();
    let (url, hours, org_name, customer_id) =
        wait_message(app, "Carol@Example.com", "the invitation", |m| match m {
            Message::InvitationLink {
                url,
                valid_hours,
                org_name,
                customer_id,
            } => Some((
                url.clone(),
                *valid_hours,
                org_name.clone(),
                customer_id.clone(),
            )),
            _ => None,
        })
        .await;
    assert_eq!((hours, org_name.as_str()), (24, "GOOGLE FRANCE"));
    assert!(url.starts_with(&app.url("/reset-password?token=")), "{url}");
    assert_eq!(customer_id, body["customer_id"].as_str().unwrap());

    // Existing account: added, no invitation; twice is a conflict.
    let (status, body) = post(
        app,
        &members,
        &alice,
        json!({"email": "dave@example.com", "roles": ["member", "security_manager"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], false);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("existing account")
    );
    assert!(
        !messages_to(app, "dave@example.com")
            .iter()
            .any(|m| matches!(m, Message::InvitationLink { .. }))
    );
    let (status, _) = post(
        app,
        &members,
        &alice,
        json!({"email": "dave@example.com", "roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 409);
    for bad in [
        json!({"email": "x@example.com", "roles": []}),
        json!({"email": "x@example.com", "roles": ["owner"]}),
        json!({"email": "not an email", "roles": ["member"]}),
        json!({"email": "x@example.com"}),
    ] {
        let (status, body) = post(app, &members, &alice, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_request");
    }

    // Carol follows the link and defines her password, then signs in.
    let browser = Browser::new();
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let res = browser
        .submit(
            app,
            &html,
            &[
                ("password", "a sunny passphrase 77"),
                ("confirmation", "a sunny passphrase 77"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let tokens = sign_in(app, PORTAL, "carol@example.com", "a sunny passphrase 77").await;
    assert_eq!(
        org_claims(tokens["id_token"].as_str().unwrap()),
        [(
            "GOOGLE FRANCE".to_owned(),
            "pending".to_owned(),
            vec!["member".to_owned()]
        )]
    );

    // Roles.
    let (status, body) = get(app, &members, &alice).await;
    assert_eq!(status, 200);
    let listed = body["members"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["roles"], json!(["administrator"]));
    let roles_of = |id: &str| org_path(org.id, &format!("/members/{id}/roles"));
    let (status, body) = put(
        app,
        &roles_of(&carol_id),
        &alice,
        json!({"roles": ["administrator"]}),
    )
    .await;
    assert_eq!(
        (status, body["roles"].clone()),
        (200, json!(["administrator"]))
    );
    // Alice may step down now that Carol administers too; Carol may not then.
    let carol = access_token_for(app, "carol@example.com", "a sunny passphrase 77").await;
    let alice_id = app.user.id.to_string();
    let (status, _) = put(
        app,
        &roles_of(&alice_id),
        &carol,
        json!({"roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = put(
        app,
        &roles_of(&carol_id),
        &carol,
        json!({"roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("at least one administrator")
    );
    let (status, _) = delete(
        app,
        &org_path(org.id, &format!("/members/{carol_id}")),
        &carol,
    )
    .await;
    assert_eq!(status, 409);
    // Alice, a member now, may no longer manage members.
    let (status, _) = get(app, &members, &alice).await;
    assert_eq!(status, 403);
    let (status, _) = delete(
        app,
        &org_path(org.id, &format!("/members/{}", dave.id)),
        &carol,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = delete(
        app,
        &org_path(org.id, &format!("/members/{}", dave.id)),
        &carol,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = put(
        app,
        &roles_of("not-a-uuid"),
        &carol,
        json!({"roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 404);

    // Validation emails every member.
    let op = client_token(app, OPERATOR).await;
    let (status, _) = post(app, &org_path(org.id, "/validate"), &op, json!({})).await;
    assert_eq!(status, 200);
    for email in ["Alice@Example.com", "Carol@Example.com"] {
        wait_message(app, email, "the validation email", |m| {
            matches!(m, Message::OrganizationValidated { .. }).then_some(())
        })
        .await;
    }
    assert!(
        !messages_to(app, "dave@example.com")
            .iter()
            .any(|m| matches!(m, Message::OrganizationValidated { .. }))
    );

    // The CLI adds members too.
    let out = idp::cli::run_org_command(
        &app.state.provider,
        idp::cli::parse_org_command([
            "add-member",
            &org.id.to_string(),
            "erin@example.com",
            "--name",
            "Erin",
            "--role",
            "security_manager",
        ])
        .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        out.contains("emailed a link to define its password"),
        "{out}"
    );
    let erin_url = wait_message(app, "erin@example.com", "Erin's invitation", |m| match m {
        Message::InvitationLink { url, .. } => Some(url.clone()),
        _ => None,
    })
    .await;

    // The audit trail lists it all.
    let (status, body) = get(app, &org_path(org.id, "/audit"), &carol).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "organization.created",
        "organization.member_added",
        "organization.roles_changed",
        "organization.member_removed",
        "organization.validated",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // The invitation lives `[accounts] invite_link_hours` (24 by default).
    let token = query_param(&erin_url, "token").unwrap();
    let p = &app.state.provider;
    app.clock.advance(time::Duration::seconds(24 * 3600 - 60));
    assert!(p.accounts.links.check_link(&token).await.unwrap().is_some());
    app.clock.advance(time::Duration::seconds(120));
    assert!(p.accounts.links.check_link(&token).await.unwrap().is_none());
}

async fn access_token_for(app: &TestApp, email: &str, password: &str) -> String {
    sign_in(app, PORTAL, email, password).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A security manager enforces MFA for console logins: a member without a
/// second factor must enroll one at the next console login, while API logins
/// are unaffected. Settings breaking rules get one message per rule.
async fn enforced_mfa_per_kind(app: &TestApp) {
    let org = create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: GOOGLE.into(),
        },
    )
    .await;
    user(app, "dave@example.com", "Dave").await;
    user(app, "erin@example.com", "Erin").await;
    let alice = access_token(app, "alice@example.com").await;
    let members = org_path(org.id, "/members");
    for (email, role) in [
        ("dave@example.com", "member"),
        ("erin@example.com", "security_manager"),
    ] {
        let (status, _) = post(
            app,
            &members,
            &alice,
            json!({"email": email, "roles": [role]}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let erin = access_token(app, "erin@example.com").await;
    let dave = access_token(app, "dave@example.com").await;
    let security = org_path(org.id, "/security");

    let (status, body) = get(app, &security, &erin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mfa_required_for"], json!([]));
    // A plain member may not touch it, nor turn it off for themselves.
    let (status, _) = get(app, &security, &dave).await;
    assert_eq!(status, 403);
    let (status, _) = put(
        app,
        &security,
        &dave,
        json!({"mfa_required_for": [], "password_policy": {}}),
    )
    .await;
    assert_eq!(status, 403);

    // Rules broken: one message each, nothing stored.
    let (status, body) = put(
        app,
        &security,
        &erin,
        json!({"mfa_required_for": ["console", "Not A Kind"], "password_policy": {"min_length": 4, "max_length": 20}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request");
    let fields: Vec<&str> = body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "mfa_required_for[1]",
            "password_policy.max_length",
            "password_policy.min_length"
        ]
    );
    assert!(
        body["rules"][1]["message"]
            .as_str()
            .unwrap()
            .contains("at least 64"),
        "{body}"
    );
    let (status, body) = put(
        app,
        &security,
        &erin,
        json!({"mfa_required_for": ["console"], "unknown": 1}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, body) = get(app, &security, &erin).await;
    assert_eq!(body["mfa_required_for"], json!([]));

    let (status, body) = put(
        app,
        &security,
        &erin,
        json!({"mfa_required_for": ["console"], "password_policy": {"min_length": 12}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mfa_required_for"], json!(["console"]));
    assert_eq!(body["password_policy"]["min_length"], 12);
    let events = app
        .state
        .provider
        .ports
        .audit
        .list_for_org(org.id, 20)
        .await
        .unwrap();
    let ev = events
        .iter()
        .find(|e| e.kind == "organization.policy_changed")
        .expect("audited");
    assert_eq!(ev.detail["mfa_required_for"]["to"], json!(["console"]));

    // Dave signs in to the console: the second factor must be enrolled.
    let browser = Browser::new();
    let (res, _) = browser
        .follow(app, &authorize_url(app, PORTAL, None, &[]))
        .await;
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", "dave@example.com")])
        .await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303);
    let next = location(&res);
    assert!(!next.starts_with(REDIRECT), "not signed in yet: {next}");
    let (res, _) = browser.follow(app, &app.url(&next)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("Set up an authenticator app"), "{html}");

    // API logins are not affected.
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &authorize_url(app, API_PORTAL, None, &[]),
            "dave@example.com",
            PASSWORD,
        )
        .await;
    assert!(to.starts_with(REDIRECT), "{to}");
}

/// Signs in to `client` when the flow makes the user enroll an authenticator
/// app (asking for the admin API too): identifier, password, the app's
/// enrollment and the recovery codes; the token response.
async fn sign_in_enrolling_an_app(app: &TestApp, client: &str, email: &str) -> Value {
    let (verifier, challenge) = pkce();
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &admin_authorize_url(app, client, &challenge),
            email,
            PASSWORD,
        )
        .await;
    let (res, _) = browser.follow(app, &app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("Set up an authenticator app"), "{html}");
    let key = totp_key(&html).expect("the key shown");
    let res = browser
        .submit(app, &html, &[("code", &totp_code(&key, clock_secs(app)))])
        .await;
    assert_eq!(res.status(), 200, "the recovery codes follow");
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("acknowledge", "1")]).await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "signed in: {to}");
    let code = query_param(&to, "code").expect("a code");
    exchange_code(app, client, &code, Some(&verifier)).await
}

/// The admin API takes only tokens issued for it (the `admin_api` scope),
/// and an organization that enforces a second factor is managed only with a
/// sign-in that used one: a password-only administrator is refused with
/// RFC 9470's `insufficient_user_authentication`, and nothing changes.
async fn the_admin_api_takes_its_own_tokens_and_mfa_where_enforced(app: &TestApp) {
    let org = create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: GOOGLE.into(),
        },
    )
    .await;
    let security = org_path(org.id, "/security");
    let alice = access_token(app, "alice@example.com").await;
    let (status, body) = put(
        app,
        &security,
        &alice,
        json!({"mfa_required_for": ["console"], "password_policy": {}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let enforced = || async {
        app.state
            .provider
            .ports
            .orgs
            .find_org(org.id)
            .await
            .unwrap()
            .unwrap()
            .mfa_required_for
    };
    let off = json!({"mfa_required_for": [], "password_policy": {}});

    // A token a portal got for itself (no admin_api scope): refused.
    let (verifier, challenge) = pkce();
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &authorize_url(app, API_PORTAL, Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&to, "code").unwrap();
    let portal_token = exchange_code(app, API_PORTAL, &code, Some(&verifier)).await;
    let portal_token = portal_token["access_token"].as_str().unwrap();
    let (status, body) = put(app, &security, portal_token, off.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_token");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("admin_api"),
        "{body}"
    );

    // A password-only sign-in at a client of another kind (no second
    // factor asked there), with the admin API's scope: refused, step-up.
    let api_admin = sign_in(app, API_PORTAL, "alice@example.com", PASSWORD).await;
    assert_eq!(
        claims(api_admin["id_token"].as_str().unwrap())["amr"],
        json!(["pwd"])
    );
    let token = api_admin["access_token"].as_str().unwrap();
    let res = reqwest::Client::new()
        .put(app.url(&security))
        .bearer_auth(token)
        .json(&off)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "RFC 9470: 401 with the challenge");
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    let (status, _) = get(app, &org_path(org.id, "/members"), token).await;
    assert_eq!(status, 401, "reading needs it too");
    assert_eq!(enforced().await, ["console"], "nothing changed");

    // At a console client the second factor is enforced at sign-in (an app
    // is enrolled): that token may manage the organization.
    let console = sign_in_enrolling_an_app(app, PORTAL, "alice@example.com").await;
    let amr = claims(console["id_token"].as_str().unwrap())["amr"].clone();
    assert!(amr.as_array().unwrap().contains(&json!("mfa")), "{amr}");
    let token = console["access_token"].as_str().unwrap();
    let (status, body) = put(app, &security, token, off).await;
    assert_eq!(status, 200, "{body}");
    assert!(enforced().await.is_empty());
}

/// A security manager or administrator of one organization gets 403 on every
/// endpoint of another; a plain member gets 403 on the admin endpoints.
async fn no_access_to_another_organization(app: &TestApp) {
    let a = create_org(
        app,
        "alice@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: GOOGLE.into(),
        },
    )
    .await;
    let bob = user(app, "bob@example.com", "Bob").await;
    let b = create_org(
        app,
        "bob@example.com",
        PASSWORD,
        DomicileInput::France {
            siret: TOTAL.into(),
        },
    )
    .await;
    user(app, "sam@example.com", "Sam").await;
    user(app, "mia@example.com", "Mia").await;
    let alice = access_token(app, "alice@example.com").await;
    for (email, role) in [
        ("sam@example.com", "security_manager"),
        ("mia@example.com", "member"),
    ] {
        let (status, _) = post(
            app,
            &org_path(a.id, "/members"),
            &alice,
            json!({"email": email, "roles": [role]}),
        )
        .await;
        assert_eq!(status, 201);
    }
    let sam = access_token(app, "sam@example.com").await;
    let mia = access_token(app, "mia@example.com").await;
    let bob_member = format!("/members/{}", bob.id);
    let bob_roles = format!("/members/{}/roles", bob.id);
    let endpoints = |org: OrgId| {
        vec![
            (reqwest::Method::GET, org_path(org, ""), None),
            (reqwest::Method::GET, org_path(org, "/members"), None),
            (
                reqwest::Method::POST,
                org_path(org, "/members"),
                Some(json!({"email": "x@example.com", "roles": ["member"]})),
            ),
            (
                reqwest::Method::PUT,
                org_path(org, &bob_roles),
                Some(json!({"roles": ["member"]})),
            ),
            (reqwest::Method::DELETE, org_path(org, &bob_member), None),
            (reqwest::Method::GET, org_path(org, "/security"), None),
            (
                reqwest::Method::PUT,
                org_path(org, "/security"),
                Some(json!({"mfa_required_for": [], "password_policy": {}})),
            ),
            (reqwest::Method::GET, org_path(org, "/audit"), None),
            (
                reqwest::Method::POST,
                org_path(org, "/validate"),
                Some(json!({})),
            ),
            (
                reqwest::Method::POST,
                org_path(org, "/reject"),
                Some(json!({})),
            ),
        ]
    };
    for (who, token) in [
        ("administrator", &alice),
        ("security manager", &sam),
        ("member", &mia),
    ] {
        for (method, path, body) in endpoints(b.id) {
            let (status, answer) = api(app, method.clone(), &path, Some(token), body).await;
            assert_eq!(status, 403, "{who}: {method} {path}: {answer}");
            assert_eq!(answer["error"], "forbidden");
        }
        // An organization that does not exist looks the same.
        let (status, _) = get(app, &org_path(OrgId(uuid::Uuid::now_v7()), ""), token).await;
        assert_eq!(status, 403, "{who}");
    }
    // A plain member of A: only the organization itself.
    let (status, body) = get(app, &org_path(a.id, ""), &mia).await;
    assert_eq!(status, 200);
    assert_eq!(body["your_roles"], json!(["member"]));
    for (method, path, body) in endpoints(a.id).into_iter().skip(1) {
        let (status, _) = api(app, method.clone(), &path, Some(&mia), body).await;
        assert_eq!(status, 403, "member: {method} {path}");
    }
    // The security manager of A: security and audit, not members.
    let (status, _) = get(app, &org_path(a.id, "/security"), &sam).await;
    assert_eq!(status, 200);
    let (status, _) = get(app, &org_path(a.id, "/audit"), &sam).await;
    assert_eq!(status, 200);
    let (status, _) = post(
        app,
        &org_path(a.id, "/members"),
        &sam,
        json!({"email": "y@example.com", "roles": ["member"]}),
    )
    .await;
    assert_eq!(status, 403);
    // No token: 401 everywhere.
    for (method, path, body) in endpoints(a.id) {
        let (status, answer) = api(app, method.clone(), &path, None, body).await;
        assert_eq!(status, 401, "{method} {path}");
        assert_eq!(answer["error"], "invalid_token");
    }
    // B is untouched.
    let b_now = app
        .state
        .provider
        .ports
        .orgs
        .find_org(b.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b_now.status, OrgStatus::Pending);
    assert_eq!(
        app.state
            .provider
            .ports
            .orgs
            .list_members(b.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

matrix_with!(
    pages: crate::options(), crate::cheap_challenges;
    abroad_with_a_new_account,
    siret_problems_are_explained,
    wrong_password_and_unknown_email_look_the_same,
);

matrix_with!(
    api: crate::options(), crate::cheap_challenges;
    operator_validates_and_rejects,
    members_and_roles,
    enforced_mfa_per_kind,
    no_access_to_another_organization,
    the_admin_api_takes_its_own_tokens_and_mfa_where_enforced,
);

/// The example portals the demo runs: the customer space and the cloud
/// console offer "create an organization", the marketplace does not.
#[test]
fn example_clients_offer_organization_creation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clients");
    let clients = idp::config::load_clients(Some(&dir), &idp_core::assurance::Levels::builtin())
        .expect("the example clients load");
    for (id, allowed) in [
        ("customer-space", true),
        ("cloud-console", true),
        ("marketplace", false),
    ] {
        let c = clients.get(id).unwrap_or_else(|| panic!("{id} exists"));
        assert_eq!(c.account.allow_org_creation, allowed, "{id}");
        assert!(!c.account.platform_admin, "{id}");
    }
}

/// `idp org ...` as the built binary, on a fresh SQLite configuration: the
/// listing's header, and errors naming what is wrong.
#[test]
fn the_org_commands_of_the_binary() {
    let dir = std::env::temp_dir().join(format!("idp-org-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("clients")).unwrap();
    let _cleanup = TempDir(dir.clone());
    let data = toml::Value::String(dir.join("data").to_str().unwrap().to_owned());
    std::fs::write(
        dir.join("idp.toml"),
        format!("data_dir = {data}\nclients_dir = \"clients\"\n"),
    )
    .unwrap();
    let idp = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_idp"));
        cmd.current_dir(&dir)
            .arg("--config")
            .arg(dir.join("idp.toml"))
            .args(args);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("IDP_") {
                cmd.env_remove(k);
            }
        }
        cmd.output().expect("run the idp binary")
    };
    let out = idp(&["org", "list", "--status", "pending"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("id ") && stdout.contains("status"),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 1, "no organization yet: {stdout}");

    let out = idp(&["org", "list", "--status", "approved"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--status: expected pending, validated or rejected")
    );
    let unknown = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["org", "validate", unknown.as_str()],
        vec![
            "org",
            "add-member",
            unknown.as_str(),
            "x@example.com",
            "--role",
            "member",
        ],
    ] {
        let out = idp(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no such organization"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = idp(&[
        "org",
        "add-member",
        unknown.as_str(),
        "x@example.com",
        "--role",
        "owner",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role: unknown role"));
}
