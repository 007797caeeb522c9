//! The account page's sign-in devices (`/account/devices`) as a browser, an
//! authenticator app and a security key see them: adding authenticator apps
//! (code computed from the key the page shows; a wrong code refused),
//! renaming and deleting them; the last second factor kept while MFA is
//! enforced (on the account or by an organization) and removable otherwise;
//! a WebAuthn key added with a real software authenticator and then used to
//! sign in; recovery codes regenerated (old ones refused at login, new ones
//! accepted); a remembered browser forgotten (the new-device check, with its
//! code read from a real SMTP server, comes back); a stale authentication
//! asked to sign in again; missing CSRF tokens and another user's ids
//! refused with nothing changed; every change audited.

mod support;

use idp_core::clock::Clock;
use idp_core::domain::{Membership, OrgId, OrgStatus, Organization, Role, StoredCredential, User};
use idp_mail::testing::SmtpSink;
use serde_json::{Value, json};
use support::*;
use time::OffsetDateTime;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

const EMAIL: &str = "alice@example.com";
/// `identifier, password, totp`.
const TOTP_CLIENT: &str = "totp";
/// `identifier, password, webauthn`.
const KEY_CLIENT: &str = "keys";
/// `identifier, password, recovery_code` (skipped without codes).
const CODES_CLIENT: &str = "codes";
/// `identifier, password`, then an emailed code from a browser not seen before.
const NEW_DEVICE_CLIENT: &str = "newdev";

fn clients() -> Vec<idp_core::client::Client> {
    vec![
        client_with_flows(
            TOTP_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "totp"]}]"#,
        ),
        client_with_flows(
            KEY_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "webauthn"]}]"#,
        ),
        client_with_flows(
            CODES_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "recovery_code"]}]"#,
        ),
        client_with_flows(
            NEW_DEVICE_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": ["email_code"], "when": "unknown_device"}]}]"#,
        ),
    ]
}

fn options() -> AppOptions {
    AppOptions {
        clients: clients(),
        // WebAuthn needs a host name as its relying-party id.
        localhost: true,
        ..AppOptions::default()
    }
}

// --- helpers ------------------------------------------------------------------

/// A browser with a recognisable user agent (shown in the browsers list and
/// recorded in the audit trail).
fn browser() -> Browser {
    Browser::with_agent("DevicesTest/1.0 (X11; Linux)")
}

/// Signs `email` in through the password-only client `conf`: the browser
/// then holds an SSO session.
async fn signed_in(app: &TestApp, email: &str) -> Browser {
    let b = browser();
    sign_in_again(app, &b, email).await;
    b
}

/// A fresh password login in `b` (`prompt=login`: a new `auth_time`).
async fn sign_in_again(app: &TestApp, b: &Browser, email: &str) {
    let to = b
        .login(
            app,
            &authorize_url(app, "conf", None, &[("prompt", "login")]),
            email,
            PASSWORD,
        )
        .await;
    assert!(
        to.starts_with(REDIRECT) && query_param(&to, "code").is_some(),
        "signed in: {to}"
    );
}

async fn get_page(app: &TestApp, b: &Browser, path: &str) -> (u16, String) {
    let res = b.get(&app.url(path)).await;
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// The POST form of a page whose action starts with `action`.
fn form_with_action(html: &str, action: &str) -> Form {
    let mut rest = html;
    while let Some(i) = rest.find("<form") {
        let tail = &rest[i..];
        let end = tail.find("</form>").expect("end of form") + "</form>".len();
        if let Some(form) = Form::parse(&tail[..end])
            && form.action.starts_with(action)
        {
            return form;
        }
        rest = &tail[end..];
    }
    panic!("no form posting to {action} in {html}")
}

/// Posts the form of `html` whose action starts with `action`, hidden
/// fields kept and `fields` set.
async fn post_form(
    app: &TestApp,
    b: &Browser,
    html: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let form = form_with_action(html, action);
    let mut values = form.fields.clone();
    for (k, v) in fields {
        match values.iter_mut().find(|(n, _)| n == k) {
            Some((_, val)) => *val = (*v).to_owned(),
            None => panic!("the form has no field {k}: {:?}", form.fields),
        }
    }
    b.http
        .post(app.url(&form.action))
        .header("origin", &app.issuer)
        .form(&values)
        .send()
        .await
        .expect("POST")
}

/// Moves the clock to one second into a fresh 30-second step.
fn align_clock(app: &TestApp) {
    let now = app.clock.now().unix_timestamp();
    app.clock
        .set(OffsetDateTime::from_unix_timestamp((now / 30 + 1) * 30 + 1).unwrap());
}

fn advance(app: &TestApp, secs: i64) {
    app.clock
        .set(app.clock.now() + time::Duration::seconds(secs));
}

fn code_now(app: &TestApp, key: &str) -> String {
    totp_code(key, clock_secs(app))
}

/// A six-digit code valid for no step of the ±1 window now.
fn wrong_code(app: &TestApp, key: &str) -> String {
    let totp = authenticator_app(key);
    let t = clock_secs(app);
    let valid: Vec<String> = [t - 30, t, t + 30]
        .iter()
        .map(|s| totp.generate(*s).to_string())
        .collect();
    (0..)
        .map(|i: u32| format!("{:06}", (123_456 + i * 7_919) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// The texts inside every `<tag class="{class}"...>…</tag>`.
fn texts_of(html: &str, tag: &str, class: &str) -> Vec<String> {
    let open = format!("<{tag} class=\"{class}\"");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let tail = &rest[i..];
        let start = tail.find('>').unwrap() + 1;
        let end = tail.find(&close).unwrap();
        found.push(tail[start..end].trim().to_owned());
        rest = &tail[end..];
    }
    found
}

fn shown_codes(html: &str) -> Vec<String> {
    texts_of(html, "code", "recovery-codes__code")
}

/// Factor names listed on the devices page.
fn listed_names(html: &str) -> Vec<String> {
    texts_of(html, "p", "notice__title")
}

async fn stored(app: &TestApp, user: &User, kind: &str) -> Vec<StoredCredential> {
    app.state
        .provider
        .ports
        .credentials
        .list_credentials(user.id, kind)
        .await
        .unwrap()
}

async fn audit_kinds(app: &TestApp, user: &User) -> Vec<(String, Value)> {
    app.state
        .provider
        .ports
        .audit
        .list_for_user(user.id, 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            if [
                "mfa.added",
                "mfa.removed",
                "mfa.renamed",
                "recovery_codes.regenerated",
                "device.revoked",
            ]
            .contains(&e.kind.as_str())
            {
                assert!(e.ip.is_some(), "{} has the client IP", e.kind);
            }
            (e.kind, e.detail)
        })
        .collect()
}

/// The key an enrollment page shows.
fn page_key(html: &str) -> String {
    let keys = texts_of(html, "code", "setup-key__value");
    assert_eq!(keys.len(), 1, "one key on the page: {html}");
    keys[0].clone()
}

/// Adds an authenticator app named `name` through the pages; returns its
/// key and the recovery codes shown (when it was the first factor).
async fn add_totp(app: &TestApp, b: &Browser, name: &str) -> (String, Vec<String>) {
    align_clock(app);
    let (status, html) = get_page(app, b, "/account/devices/totp/new").await;
    assert_eq!(status, 200, "{html}");
    let key = page_key(&html);
    let code = code_now(app, &key);
    let res = post_form(
        app,
        b,
        &html,
        "/account/devices/totp/new",
        &[("name", name), ("code", &code)],
    )
    .await;
    if res.status() == 303 {
        assert!(location(&res).starts_with("/account/devices?done=added"));
        return (key, Vec::new());
    }
    assert_eq!(res.status(), 200, "added");
    let html = res.text().await.unwrap();
    assert!(html.contains("It is your first one"), "{html}");
    let codes = shown_codes(&html);
    assert_eq!(codes.len(), 10, "{html}");
    (key, codes)
}

/// The devices page, asserting it is shown.
async fn devices(app: &TestApp, b: &Browser) -> String {
    let (status, html) = get_page(app, b, "/account/devices").await;
    assert_eq!(status, 200, "{html}");
    html
}

/// The id of the listed factor named `name`.
fn factor_id(html: &str, name: &str) -> String {
    let at = html
        .find(&format!(r#"<p class="notice__title">{name}</p>"#))
        .unwrap_or_else(|| panic!("{name} not listed in {html}"));
    let before = &html[..at];
    let open = before.rfind(r#"id="factor-"#).expect("factor item") + r#"id="factor-"#.len();
    before[open..open + 36].to_owned()
}

/// Identifier and password on `client` in a new browser; returns the browser
/// and the page of the step that follows.
async fn to_second_step(app: &TestApp, client: &str, email: &str) -> (Browser, String) {
    let b = browser();
    let html = second_step_page(app, &b, client, email, PASSWORD).await;
    (b, html)
}

/// Submits `code` on a code page; whether the login completed.
async fn code_accepted(app: &TestApp, b: &Browser, html: &str, code: &str) -> bool {
    let res = b.submit(app, html, &[("code", code)]).await;
    res.status() == 303 && query_param(&location(&res), "code").is_some()
}

async fn create_user(app: &TestApp, email: &str) -> User {
    user_with_password(app, email, None).await
}

/// A redirect's target as a full URL.
fn absolute(app: &TestApp, to: &str) -> String {
    if to.starts_with('/') {
        app.url(to)
    } else {
        to.to_owned()
    }
}

/// The "sign in again" link of a page.
fn reauth_link(html: &str) -> String {
    let start = html
        .find(r#"href="/account/login?reauth=1"#)
        .unwrap_or_else(|| panic!("no sign-in-again link in {html}"))
        + r#"href=""#.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

/// Follows a "sign in again" link through the account pages' login
/// (identifier, password, then a code of the app with `key`); returns the
/// page it comes back to.
async fn reauthenticate(app: &TestApp, b: &Browser, link: &str, key: &str) -> String {
    let (res, _) = b.follow(app, &app.url(link)).await;
    assert_eq!(res.status(), 200);
    let mut html = res.text().await.unwrap();
    if html.contains(r#"name="identifier""#) {
        let res = b.submit(app, &html, &[("identifier", EMAIL)]).await;
        assert_eq!(res.status(), 303);
        let (res, _) = b.follow(app, &absolute(app, &location(&res))).await;
        html = res.text().await.unwrap();
    }
    let res = b.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "password accepted");
    let (res, _) = b.follow(app, &absolute(app, &location(&res))).await;
    let html = res.text().await.unwrap();
    let res = b.submit(app, &html, &[("code", &code_now(app, key))]).await;
    assert_eq!(
        res.status(),
        303,
        "app code accepted: {}",
        res.text().await.unwrap_or_default()
    );
    let (res, url) = b.follow(app, &absolute(app, &location(&res))).await;
    assert_eq!(res.status(), 200, "{url}");
    res.text().await.unwrap()
}

// --- WebAuthn authenticator -------------------------------------------------

/// The options of a WebAuthn page, from its JSON data block.
fn page_options(html: &str) -> Value {
    let open = r#"<script type="application/json" id="webauthn-options">"#;
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no options block in {html}"))
        + open.len();
    let end = start + html[start..].find("</script>").expect("end of the block");
    serde_json::from_str(&html[start..end]).expect("options are JSON")
}

/// `navigator.credentials.create` for these options at this origin.
fn register(key: &mut SoftPasskey, origin: &str, options: &Value) -> String {
    let ccr: CreationChallengeResponse =
        serde_json::from_value(options.clone()).expect("creation options");
    let reg = key
        .do_registration(Url::parse(origin).unwrap(), ccr)
        .expect("the authenticator registers");
    serde_json::to_value(&reg).unwrap().to_string()
}

/// `navigator.credentials.get` for these options at this origin.
fn sign(key: &mut SoftPasskey, origin: &str, options: &Value) -> String {
    let rcr: RequestChallengeResponse =
        serde_json::from_value(options.clone()).expect("request options");
    let assertion = key
        .do_authentication(Url::parse(origin).unwrap(), rcr)
        .expect("the authenticator signs");
    serde_json::to_value(&assertion).unwrap().to_string()
}

// --- tests ------------------------------------------------------------------

async fn a_browser_without_a_session_is_sent_to_sign_in(app: &TestApp) {
    let b = browser();
    for path in [
        "/account/devices",
        "/account/devices/totp/new",
        "/account/devices/webauthn/new",
    ] {
        let res = b.get(&app.url(path)).await;
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(
            location(&res),
            format!("/account/login?next={}", path.replace('/', "%2F")),
            "signed in, then back to {path}"
        );
    }
    let res = b
        .http
        .post(app.url("/account/devices/recovery-codes"))
        .header("origin", &app.issuer)
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/login?next=%2Faccount%2Fdevices");
}

async fn authenticator_apps_are_added_renamed_listed_and_deleted(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    let html = devices(app, &b).await;
    assert!(html.contains("You have no authenticator app or security key yet."));
    assert!(html.contains("Recovery codes come with your first"));

    // A wrong code: refused, the same key shown again, the name kept, nothing stored.
    align_clock(app);
    let (_, html) = get_page(app, &b, "/account/devices/totp/new").await;
    let key = page_key(&html);
    assert!(html.contains(r#"<img class="qr-code" src="data:image/png;base64,"#));
    let res = post_form(
        app,
        &b,
        &html,
        "/account/devices/totp/new",
        &[("name", "Phone A"), ("code", &wrong_code(app, &key))],
    )
    .await;
    assert_eq!(res.status(), 400);
    let again = res.text().await.unwrap();
    assert!(again.contains("Incorrect or expired code."), "{again}");
    assert_eq!(page_key(&again), key, "the same seed");
    assert!(again.contains(r#"value="Phone A""#), "the name is kept");
    assert!(stored(app, &app.user, "totp").await.is_empty());
    // A bad name: refused on the name field, the code not used up.
    let res = post_form(
        app,
        &b,
        &again,
        "/account/devices/totp/new",
        &[("name", "  "), ("code", &code_now(app, &key))],
    )
    .await;
    assert_eq!(res.status(), 400);
    let again = res.text().await.unwrap();
    assert!(again.contains("Enter a name."), "{again}");
    assert!(stored(app, &app.user, "totp").await.is_empty());

    // The right code: the first factor, with its recovery codes shown once.
    let res = post_form(
        app,
        &b,
        &again,
        "/account/devices/totp/new",
        &[("name", "Phone A"), ("code", &code_now(app, &key))],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert_eq!(shown_codes(&html).len(), 10, "{html}");
    assert_eq!(stored(app, &app.user, "recovery_code").await.len(), 10);
    let devices_stored = stored(app, &app.user, "totp").await;
    assert_eq!(devices_stored.len(), 1);
    assert_eq!(devices_stored[0].label.as_deref(), Some("Phone A"));
    assert!(
        !devices_stored[0].secret.contains(&key.replace(' ', "")),
        "the seed is sealed"
    );
    // The confirmed seed is used up: posting it again creates nothing.
    let res = post_form(
        app,
        &b,
        &again,
        "/account/devices/totp/new",
        &[("name", "Phone A"), ("code", &code_now(app, &key))],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("This setup expired. Start again")
    );
    assert_eq!(stored(app, &app.user, "totp").await.len(), 1);

    // A second app: no new recovery codes.
    advance(app, 60);
    let (key_b, codes) = add_totp(app, &b, "Phone B").await;
    assert!(codes.is_empty());
    let (_, html) = get_page(app, &b, "/account/devices?done=added").await;
    assert!(html.contains("The sign-in method is added."));
    assert_eq!(listed_names(&html)[..2], ["Phone A", "Phone B"]);
    assert!(html.contains("Unused recovery codes: 10."));

    // Rename: bad names refused on that device's field, nothing changed.
    let id_a = factor_id(&html, "Phone A");
    let rename_a = format!("/account/devices/{id_a}/rename");
    for (bad, message) in [
        ("   ", "Enter a name."),
        (&*"x".repeat(65), "Use at most 64 characters."),
        ("bad\u{7}name", "without line breaks or control characters"),
    ] {
        let res = post_form(app, &b, &html, &rename_a, &[("name", bad)]).await;
        assert_eq!(res.status(), 400, "{bad:?}");
        let page = res.text().await.unwrap();
        assert!(page.contains(message), "{bad:?}: {page}");
        assert!(page.contains(&format!(r#"id="name-{id_a}-error""#)));
    }
    let res = post_form(app, &b, &html, &rename_a, &[("name", "  Work phone ")]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/devices?done=renamed");
    let (_, html) = get_page(app, &b, "/account/devices?done=renamed").await;
    assert!(html.contains("The name is changed."));
    let names = listed_names(&html);
    assert!(names.contains(&"Work phone".to_owned()) && names.contains(&"Phone B".to_owned()));
    assert!(!names.contains(&"Phone A".to_owned()));

    // Delete one: the other stays, and still signs in.
    let id_b = factor_id(&html, "Phone B");
    let res = post_form(
        app,
        &b,
        &html,
        &format!("/account/devices/{id_b}/delete"),
        &[],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/devices?done=removed");
    let left = stored(app, &app.user, "totp").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].label.as_deref(), Some("Work phone"));
    assert_eq!(
        stored(app, &app.user, "recovery_code").await.len(),
        10,
        "codes stay while a factor is left"
    );
    let (_, html) = get_page(app, &b, "/account/devices?done=removed").await;
    assert!(html.contains("The sign-in method is removed."));
    assert!(!listed_names(&html).contains(&"Phone B".to_owned()));

    // The deleted app no longer signs in; the kept one does.
    advance(app, 90);
    let (login, page) = to_second_step(app, TOTP_CLIENT, EMAIL).await;
    assert!(!code_accepted(app, &login, &page, &code_now(app, &key_b)).await);
    let page = login
        .get(&app.url(&format!(
            "/login/{}",
            Form::parse(&page)
                .unwrap()
                .action
                .split('/')
                .nth(2)
                .unwrap()
        )))
        .await
        .text()
        .await
        .unwrap();
    assert!(code_accepted(app, &login, &page, &code_now(app, &key)).await);

    let audit = audit_kinds(app, &app.user).await;
    let count = |k: &str| audit.iter().filter(|(kind, _)| kind == k).count();
    assert_eq!(count("mfa.added"), 2);
    assert_eq!(count("mfa.renamed"), 1);
    assert_eq!(count("mfa.removed"), 1);
    let (_, added) = audit.iter().find(|(k, _)| k == "mfa.added").unwrap();
    assert_eq!(added["method"], "totp");
    let all = serde_json::to_string(&audit.iter().map(|(_, d)| d).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(&key.replace(' ', "")), "no seed in the audit");
    let events = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 50)
        .await
        .unwrap();
    let removed = events.iter().find(|e| e.kind == "mfa.removed").unwrap();
    assert_eq!(
        removed.user_agent.as_deref(),
        Some("DevicesTest/1.0 (X11; Linux)")
    );
}

async fn the_last_factor_stays_while_mfa_is_enforced(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    add_totp(app, &b, "Only phone").await;
    let users = &app.state.provider.ports.users;

    // Enforced on the account: refused, with a clear message.
    users.set_mfa_required(app.user.id, true).await.unwrap();
    let html = devices(app, &b).await;
    assert!(html.contains("two-step verification is required for you"));
    let id = factor_id(&html, "Only phone");
    let delete = format!("/account/devices/{id}/delete");
    let res = post_form(app, &b, &html, &delete, &[]).await;
    assert_eq!(res.status(), 409);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("This is your last authenticator app or security key"),
        "{page}"
    );
    assert_eq!(stored(app, &app.user, "totp").await.len(), 1);

    // Enforced by an organization for one kind of login: refused too.
    users.set_mfa_required(app.user.id, false).await.unwrap();
    let orgs = &app.state.provider.ports.orgs;
    let org = Organization {
        id: OrgId::new_v7(),
        name: "Acme".into(),
        siret: None,
        country: "DE".into(),
        status: OrgStatus::Validated,
        created_by: app.user.id,
        created_at: app.clock.now(),
        decided_at: None,
        mfa_required_for: vec!["api".into()],
        password_policy: Default::default(),
    };
    orgs.create_org(
        &org,
        &Membership {
            org_id: org.id,
            user_id: app.user.id,
            roles: vec![Role::Member],
            created_at: app.clock.now(),
        },
    )
    .await
    .unwrap();
    let res = post_form(app, &b, &html, &delete, &[]).await;
    assert_eq!(res.status(), 409);
    assert_eq!(stored(app, &app.user, "totp").await.len(), 1);

    // Not enforced: allowed, and the recovery codes go with the last factor.
    orgs.update_security(org.id, &[], &Default::default())
        .await
        .unwrap();
    let html = devices(app, &b).await;
    assert!(!html.contains("two-step verification is required for you"));
    let res = post_form(app, &b, &html, &delete, &[]).await;
    assert_eq!(res.status(), 303);
    assert!(stored(app, &app.user, "totp").await.is_empty());
    assert!(stored(app, &app.user, "recovery_code").await.is_empty());
    let audit = audit_kinds(app, &app.user).await;
    let (_, removed) = audit.iter().find(|(k, _)| k == "mfa.removed").unwrap();
    assert_eq!(removed["recovery_codes_removed"], 10);
    let event = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 50)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "mfa.removed")
        .unwrap();
    assert_eq!(
        event.org_id,
        Some(org.id),
        "audited in the user's organization"
    );
}

async fn a_security_key_is_added_then_signs_in(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    let mut key = SoftPasskey::new(true);

    // No answer from the authenticator: refused, nothing stored, a new challenge.
    let (status, html) = get_page(app, &b, "/account/devices/webauthn/new").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"data-webauthn="create""#));
    assert!(html.contains(r#"<script src="/assets/default/webauthn.js" defer></script>"#));
    let options = page_options(&html);
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
    let res = post_form(
        app,
        &b,
        &html,
        "/account/devices/webauthn/new",
        &[("name", "YubiKey")],
    )
    .await;
    assert_eq!(res.status(), 400);
    let again = res.text().await.unwrap();
    assert!(
        again.contains("No answer came from a security key"),
        "{again}"
    );
    assert!(again.contains(r#"value="YubiKey""#), "the name is kept");
    assert_ne!(
        page_options(&again)["publicKey"]["challenge"],
        options["publicKey"]["challenge"]
    );
    assert!(stored(app, &app.user, "webauthn").await.is_empty());

    // An answer to the spent challenge is refused too.
    let stale = register(&mut SoftPasskey::new(true), &app.issuer, &options);
    let res = post_form(
        app,
        &b,
        &html,
        "/account/devices/webauthn/new",
        &[("name", "YubiKey"), ("credential", &stale)],
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(stored(app, &app.user, "webauthn").await.is_empty());

    // The authenticator answers the page's challenge: added, first factor.
    let credential = register(&mut key, &app.issuer, &page_options(&again));
    let res = post_form(
        app,
        &b,
        &again,
        "/account/devices/webauthn/new",
        &[("name", "YubiKey"), ("credential", &credential)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert_eq!(shown_codes(&html).len(), 10);
    let keys = stored(app, &app.user, "webauthn").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].label.as_deref(), Some("YubiKey"));
    let html = devices(app, &b).await;
    assert!(listed_names(&html).contains(&"YubiKey".to_owned()));
    assert!(html.contains("Security key or passkey"));
    assert!(html.contains("never used to sign in"));

    // The key signs in on a client that asks for one.
    let (login, page) = to_second_step(app, KEY_CLIENT, EMAIL).await;
    assert!(page.contains(r#"data-webauthn="get""#), "{page}");
    let assertion = sign(&mut key, &app.issuer, &page_options(&page));
    let res = login
        .submit(app, &page, &[("credential", &assertion)])
        .await;
    assert_eq!(res.status(), 303);
    assert!(query_param(&location(&res), "code").is_some());
    let html = devices(app, &b).await;
    assert!(!html.contains("never used to sign in"), "last use shown");

    let audit = audit_kinds(app, &app.user).await;
    let (_, added) = audit.iter().find(|(k, _)| k == "mfa.added").unwrap();
    assert_eq!(added["method"], "webauthn");
    assert_eq!(added["label"], "YubiKey");
}

async fn recovery_codes_are_regenerated(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    let (_, old_codes) = add_totp(app, &b, "Phone").await;
    assert_eq!(old_codes.len(), 10);
    // Use one: nine left.
    let (login, page) = to_second_step(app, CODES_CLIENT, EMAIL).await;
    assert!(code_accepted(app, &login, &page, &old_codes[0]).await);
    let html = devices(app, &b).await;
    assert!(html.contains("Unused recovery codes: 9."), "{html}");

    let res = post_form(app, &b, &html, "/account/devices/recovery-codes", &[]).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Your previous codes no longer work."));
    let new_codes = shown_codes(&page);
    assert_eq!(new_codes.len(), 10);
    assert!(new_codes.iter().all(|c| !old_codes.contains(c)));
    let html = devices(app, &b).await;
    assert!(html.contains("Unused recovery codes: 10."));
    assert!(
        !html.contains(&new_codes[0]),
        "the codes are shown only once"
    );

    // Old codes are refused at login; new ones work.
    let (login, page) = to_second_step(app, CODES_CLIENT, EMAIL).await;
    assert!(!code_accepted(app, &login, &page, &old_codes[1]).await);
    let (login, page) = to_second_step(app, CODES_CLIENT, EMAIL).await;
    assert!(code_accepted(app, &login, &page, &new_codes[3]).await);

    let audit = audit_kinds(app, &app.user).await;
    assert_eq!(
        audit
            .iter()
            .filter(|(k, _)| k == "recovery_codes.regenerated")
            .count(),
        2,
        "with the first factor, then on request"
    );
    let all = serde_json::to_string(&audit.iter().map(|(_, d)| d).collect::<Vec<_>>()).unwrap();
    assert!(
        new_codes.iter().all(|c| !all.contains(c.as_str())),
        "no code in the audit"
    );
}

async fn a_stale_authentication_must_sign_in_again(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    let (key_a, _) = add_totp(app, &b, "Phone A").await;
    add_totp(app, &b, "Phone B").await;
    let html = devices(app, &b).await;
    let id = factor_id(&html, "Phone B");
    advance(app, 11 * 60);

    // Adding: the pages ask to sign in again, and show no seed or challenge.
    for path in ["/account/devices/totp/new", "/account/devices/webauthn/new"] {
        let (status, page) = get_page(app, &b, path).await;
        assert_eq!(status, 403, "{path}");
        let link = format!(
            r#"<a href="/account/login?reauth=1&amp;next={}">Sign in again</a>"#,
            path.replace('/', "%2F")
        );
        assert!(page.contains(&link), "{path}: {page}");
        assert!(!page.contains("setup-key__value") && !page.contains("webauthn-options"));
    }
    // Deleting and new recovery codes: refused the same way, nothing changed.
    let html = devices(app, &b).await;
    let res = post_form(
        app,
        &b,
        &html,
        &format!("/account/devices/{id}/delete"),
        &[],
    )
    .await;
    assert_eq!(res.status(), 403);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("sign in again before you add or remove"),
        "{page}"
    );
    let link = reauth_link(&page);
    assert_eq!(link, "/account/login?reauth=1&next=%2Faccount%2Fdevices");
    assert_eq!(stored(app, &app.user, "totp").await.len(), 2);
    let codes_before = stored(app, &app.user, "recovery_code").await;
    let res = post_form(app, &b, &html, "/account/devices/recovery-codes", &[]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(stored(app, &app.user, "recovery_code").await, codes_before);
    // Renaming needs no fresh sign-in.
    let res = post_form(
        app,
        &b,
        &html,
        &format!("/account/devices/{id}/rename"),
        &[("name", "Old phone")],
    )
    .await;
    assert_eq!(res.status(), 303);

    // After signing in again through the link (password and app), the
    // list is back and the deletion goes through.
    let html = reauthenticate(app, &b, &link, &key_a).await;
    assert!(html.contains("Sign-in devices"), "{html}");
    let res = post_form(
        app,
        &b,
        &html,
        &format!("/account/devices/{id}/delete"),
        &[],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(stored(app, &app.user, "totp").await.len(), 1);
}

async fn forms_without_the_csrf_token_are_refused(app: &TestApp) {
    let b = signed_in(app, EMAIL).await;
    let (key, _) = add_totp(app, &b, "Phone A").await;
    add_totp(app, &b, "Phone B").await;
    // Another browser's valid token is worthless here (that browser signs
    // in to the account pages with the app, which they now ask).
    let other = browser();
    advance(app, 30);
    let other_html = reauthenticate(app, &other, "/account/devices", &key).await;
    let other_token = form_with_action(&other_html, "/account/devices/recovery-codes")
        .fields
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    let html = devices(app, &b).await;
    let id = factor_id(&html, "Phone A");
    let before = stored(app, &app.user, "totp").await;
    let codes_before = stored(app, &app.user, "recovery_code").await;
    for token in [None, Some(""), Some("forged"), Some(other_token.as_str())] {
        for (path, extra) in [
            (
                format!("/account/devices/{id}/rename"),
                vec![("name", "Hacked")],
            ),
            (format!("/account/devices/{id}/delete"), vec![]),
            ("/account/devices/recovery-codes".to_owned(), vec![]),
        ] {
            let mut form: Vec<(&str, &str)> = extra.clone();
            if let Some(t) = token {
                form.push(("csrf", t));
            }
            let res = b
                .http
                .post(app.url(&path))
                .header("origin", &app.issuer)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 403, "{path} with {token:?}");
            assert!(res.text().await.unwrap().contains("Something went wrong"));
        }
    }
    let res = b
        .http
        .post(app.url("/account/devices/totp/new"))
        .header("origin", &app.issuer)
        .form(&[("name", "X"), ("code", "123456"), ("pending", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(stored(app, &app.user, "totp").await, before);
    assert_eq!(stored(app, &app.user, "recovery_code").await, codes_before);
}

async fn another_users_devices_cannot_be_touched(app: &TestApp) {
    let bob = create_user(app, "bob@example.com").await;
    let bob_browser = signed_in(app, "bob@example.com").await;
    add_totp(app, &bob_browser, "Bob phone").await;
    let bob_html = devices(app, &bob_browser).await;
    let bob_id = factor_id(&bob_html, "Bob phone");
    let bob_before = stored(app, &bob, "totp").await;

    let alice = signed_in(app, EMAIL).await;
    add_totp(app, &alice, "Alice phone").await;
    let html = devices(app, &alice).await;
    assert!(!html.contains("Bob phone") && !html.contains(&bob_id));
    // Alice's own forms, aimed at Bob's device: not found, nothing changed.
    let csrf = form_with_action(&html, "/account/devices/recovery-codes")
        .fields
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    for (path, form) in [
        (
            format!("/account/devices/{bob_id}/rename"),
            vec![("csrf", csrf.as_str()), ("name", "Mine now")],
        ),
        (
            format!("/account/devices/{bob_id}/delete"),
            vec![("csrf", csrf.as_str())],
        ),
        (
            "/account/devices/not-a-uuid/delete".to_owned(),
            vec![("csrf", csrf.as_str())],
        ),
        (
            format!("/account/devices/browsers/{bob_id}/revoke"),
            vec![("csrf", csrf.as_str())],
        ),
    ] {
        let res = alice
            .http
            .post(app.url(&path))
            .header("origin", &app.issuer)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
    }
    assert_eq!(stored(app, &bob, "totp").await, bob_before);
    let bob_html = devices(app, &bob_browser).await;
    assert!(listed_names(&bob_html).contains(&"Bob phone".to_owned()));
    // A recovery code of Alice's is not a factor she can rename or delete.
    let code_id = stored(app, &app.user, "recovery_code").await[0].id;
    let res = alice
        .http
        .post(app.url(&format!("/account/devices/{code_id}/delete")))
        .header("origin", &app.issuer)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(stored(app, &app.user, "recovery_code").await.len(), 10);
}

matrix_with!(
    crate::options(),
    |_| {};
    a_browser_without_a_session_is_sent_to_sign_in,
    authenticator_apps_are_added_renamed_listed_and_deleted,
    the_last_factor_stays_while_mfa_is_enforced,
    a_security_key_is_added_then_signs_in,
    recovery_codes_are_regenerated,
    a_stale_authentication_must_sign_in_again,
    forms_without_the_csrf_token_are_refused,
    another_users_devices_cannot_be_touched,
);

// --- remembered browsers, with codes from a real SMTP server ------------------

fn six_digits(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no 6-digit code in {text}"))
        .to_owned()
}

/// A login on [`NEW_DEVICE_CLIENT`] in `b`: identifier, password, then the
/// emailed code when the browser is new (read from the SMTP server).
/// Returns whether a code was asked.
async fn new_device_login(app: &TestApp, b: &Browser, sink: &SmtpSink) -> bool {
    let to = b
        .login(
            app,
            &authorize_url(app, NEW_DEVICE_CLIENT, None, &[("prompt", "login")]),
            EMAIL,
            PASSWORD,
        )
        .await;
    if to.starts_with(REDIRECT) {
        return false;
    }
    let (res, _) = b.follow(app, &app.url(&to)).await;
    let html = res.text().await.unwrap();
    let mails = sink.messages();
    let mail = mails.last().expect("a code was emailed");
    assert!(mail.header("To").unwrap().contains("Alice@Example.com"));
    let code = six_digits(mail.text.as_deref().unwrap());
    assert!(
        code_accepted(app, b, &html, &code).await,
        "emailed code accepted"
    );
    true
}

async fn a_remembered_browser_is_forgotten(backend: Backend) {
    let sink = SmtpSink::start();
    let smtp_port = sink.port();
    let app = spawn_app_with_smtp(
        backend,
        options(),
        "Portal <no-reply@portal.example>",
        smtp_port,
        |_| {},
    )
    .await;
    let b = browser();
    assert!(
        new_device_login(&app, &b, &sink).await,
        "a new browser is checked"
    );
    assert!(!new_device_login(&app, &b, &sink).await, "then remembered");
    let emails = sink.messages().len();

    let html = devices(&app, &b).await;
    assert!(html.contains("Remembered browsers"));
    assert!(
        html.contains(r#"<p class="notice__title">DevicesTest/1.0 (X11; Linux)</p>"#),
        "{html}"
    );
    assert!(html.contains("<p>This browser</p>"));
    let known = app
        .state
        .provider
        .ports
        .devices
        .list_devices(app.user.id)
        .await
        .unwrap();
    assert_eq!(known.len(), 1);
    let revoke = format!("/account/devices/browsers/{}/revoke", known[0].id);
    let before = html;
    let res = post_form(&app, &b, &before, &revoke, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/account/devices?done=revoked");
    let (_, html) = get_page(&app, &b, "/account/devices?done=revoked").await;
    assert!(html.contains("The browser is forgotten."));
    assert!(html.contains("No remembered browser."));
    // Revoking it again (the form of the earlier page): not found.
    let res = post_form(&app, &b, &before, &revoke, &[]).await;
    assert_eq!(res.status(), 404);

    // The next login from this browser is checked again, by email.
    assert!(new_device_login(&app, &b, &sink).await, "checked again");
    assert_eq!(sink.messages().len(), emails + 1);
    let audit = audit_kinds(&app, &app.user).await;
    let (_, revoked) = audit.iter().find(|(k, _)| k == "device.revoked").unwrap();
    assert_eq!(revoked["device"], json!(known[0].id));
    app.cleanup().await;
}

on_both_backends!(a_remembered_browser_is_forgotten);
