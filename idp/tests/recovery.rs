//! Recovery journeys over HTTP: "forgot password?" with the emailed reset
//! link (read from a real SMTP server process, and from the outbox), the
//! link's lifetime (5 minutes by default, per client when set), single use,
//! replacement by a newer link or by a password change, the new password's
//! confirmation and rules, second factors kept by a reset, "forgot
//! identifier?", the invitation link of a new member (24 hours), and what
//! protects the public forms: identical answers for known and unknown
//! accounts given before any email is delivered, the proof-of-work
//! challenge, CSRF, the per-IP throttle and the per-account email cap.
//!
//! Emails are delivered in the background (so that answers do not depend on
//! the account); `wait_for` polls for them with a deadline.

mod support;

use base64::Engine;
use idp_core::accounts::links::LinkPurpose;
use idp_core::accounts::recovery::RecoveryTarget;
use idp_core::client::Client;
use idp_core::domain::RequestMeta;
use idp_core::domain::{ClientId, Email};
use idp_core::notify::{Message, Recipient};
use idp_core::password_policy::PasswordPolicy;
use idp_core::secret::Secret;
use idp_mail::testing::SmtpSink;
use std::time::Duration;
use support::*;

const NEW_PASSWORD: &str = "a brand new passphrase 42";
const EMAIL: &str = "alice@example.com";

/// Reset links from this client live 30 minutes.
const LONG_CLIENT: &str = "long";
/// A client whose password rules are strict.
const STRICT_CLIENT: &str = "strict";
/// `identifier, password, totp`: enrolls TOTP at the first login.
const TOTP_CLIENT: &str = "totp";
/// `identifier, password, totp when enrolled`.
const OPTIONAL_TOTP_CLIENT: &str = "totp_opt";

fn clients() -> Vec<Client> {
    let mut long = client_with_flows(
        LONG_CLIENT,
        r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
    );
    long.account.reset_link_minutes = Some(30);
    let mut strict = client_with_flows(
        STRICT_CLIENT,
        r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
    );
    strict.account.password_policy = PasswordPolicy {
        min_length: 12,
        require_uppercase: true,
        require_digit: true,
        require_special: true,
        ..PasswordPolicy::default()
    };
    vec![
        long,
        strict,
        client_with_flows(
            TOTP_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "totp"]}]"#,
        ),
        client_with_flows(
            OPTIONAL_TOTP_CLIENT,
            r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": ["totp"], "when": "enrolled"}]}]"#,
        ),
    ]
}

fn options() -> AppOptions {
    AppOptions {
        clients: clients(),
        ..AppOptions::default()
    }
}

// ---------------------------------------------------------------- helpers

fn alice(app: &TestApp) -> Recipient {
    Recipient::Email(app.user.email.as_str().to_owned())
}

/// Every message sent to Alice so far.
fn alice_messages(app: &TestApp) -> Vec<Message> {
    messages_to(app, app.user.email.as_str())
}

/// Waits until Alice has received `n` messages; returns the last one.
async fn nth_message(app: &TestApp, n: usize) -> Message {
    wait_for(&format!("message #{n} to Alice"), || {
        let all = alice_messages(app);
        (all.len() >= n).then(|| all[n - 1].clone())
    })
    .await
}

/// The URL of a reset link message.
fn reset_url(message: &Message) -> (String, u32) {
    match message {
        Message::PasswordResetLink { url, valid_minutes } => (url.clone(), *valid_minutes),
        other => panic!("expected a reset link, got {other:?}"),
    }
}

/// The first `href` of a page that starts with `prefix`.
fn link_to(html: &str, prefix: &str) -> String {
    let needle = format!("href=\"{prefix}");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no link to {prefix} in {html}"))
        + 6;
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

/// GETs a recovery form (`/forgot-password` or `/forgot-identifier`).
async fn form(app: &TestApp, browser: &Browser, path: &str, client: &str) -> String {
    client_page(app, browser, path, client).await
}

/// Fills a recovery form with `value`, solves its challenge and posts it.
async fn submit_form(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    value: &str,
) -> reqwest::Response {
    let field = if html.contains(r#"name="identifier""#) {
        "identifier"
    } else {
        "email"
    };
    submit_with_challenge(app, browser, html, &[(field, value)]).await
}

/// Asks for a reset link for `identifier` from `client`; returns the answer page.
async fn forgot_password(app: &TestApp, identifier: &str, client: &str) -> (u16, String) {
    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-password", client).await;
    let res = submit_form(app, &browser, &html, identifier).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Asks for a reset link for Alice from `client` and waits for it (message #n).
async fn reset_link(app: &TestApp, client: &str, n: usize) -> (String, u32) {
    let (status, html) = forgot_password(app, EMAIL, client).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Check your email"), "{html}");
    reset_url(&nth_message(app, n).await)
}

/// Opens a link's page; (status, HTML).
async fn open(browser: &Browser, url: &str) -> (u16, String) {
    let res = browser.get(url).await;
    (res.status().as_u16(), res.text().await.unwrap())
}

/// Opens a link and submits a password and confirmation; (status, HTML).
async fn set_password(
    url: &str,
    app: &TestApp,
    password: &str,
    confirmation: &str,
) -> (u16, String) {
    let browser = Browser::new();
    let (status, html) = open(&browser, url).await;
    assert_eq!(status, 200, "the link's page: {html}");
    let res = browser
        .submit(
            app,
            &html,
            &[("password", password), ("confirmation", confirmation)],
        )
        .await;
    (res.status().as_u16(), res.text().await.unwrap())
}

fn assert_invalid_link_page(status: u16, html: &str, client: &str) {
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("This link cannot be used"), "{html}");
    assert!(
        html.contains(&format!(
            r#"<a href="/forgot-password?client_id={client}">Ask for a new link</a>"#
        )),
        "a way to ask for a new link: {html}"
    );
    assert!(!html.contains("name=\"password\""), "{html}");
}

/// Whether Alice signs in to `conf` with `password` (identifier, password).
async fn signs_in(app: &TestApp, password: &str) -> bool {
    let browser = Browser::new();
    let (res, _) = browser
        .follow(app, &authorize_url(app, "conf", None, &[]))
        .await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("identifier", EMAIL)]).await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", password)]).await;
    res.status() == 303
        && location(&res).starts_with(REDIRECT)
        && query_param(&location(&res), "code").is_some()
}

async fn audit_kinds(app: &TestApp) -> Vec<String> {
    app.state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

// ------------------------------------------- the journey through real SMTP

async fn reset_journey_through_smtp(backend: Backend) {
    let sink = SmtpSink::start();
    let port = sink.port();
    let app = spawn_app_with_smtp(
        backend,
        options(),
        "Sign-in <no-reply@idp.example>",
        port,
        crate::cheap_challenges,
    )
    .await;

    // From the login page's link, in French.
    let browser = Browser::with_language("fr");
    let (res, _) = browser
        .follow(&app, &authorize_url(&app, "conf", None, &[]))
        .await;
    let login = res.text().await.unwrap();
    let href = link_to(&login, "/forgot-password");
    assert_eq!(href, "/forgot-password?client_id=conf");
    let res = browser.get(&app.url(&href)).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Réinitialiser votre mot de passe"), "{html}");
    assert!(html.contains("/assets/default/altcha.js"), "{html}");
    let res = submit_form(&app, &browser, &html, "Alice@Example.com").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Consultez vos e-mails"), "{page}");

    let mail = wait_for("the reset email in the SMTP server", || {
        sink.messages().into_iter().next()
    })
    .await;
    assert!(mail.header("To").unwrap().contains("Alice@Example.com"));
    assert!(
        mail.header("Subject")
            .unwrap()
            .contains("Réinitialisez votre mot de passe Portal conf"),
        "{:?}",
        mail.header("Subject")
    );
    let text = mail.text.as_deref().expect("a text part");
    assert!(text.contains("expire dans 5\u{a0}minutes"), "{text}");
    let url = text
        .split_whitespace()
        .find(|w| w.starts_with(&app.url("/reset-password?token=")))
        .unwrap_or_else(|| panic!("no link in {text}"))
        .to_owned();
    assert!(url.ends_with("&client_id=conf"), "{url}");
    let html_part = mail.html.as_deref().expect("an HTML part");
    assert!(
        html_part.contains(&format!(r#"href="{}""#, url.replace('&', "&amp;"))),
        "{html_part}"
    );

    // Follow the link, choose a new password.
    let (status, page) = open(&browser, &url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Choisir un nouveau mot de passe"), "{page}");
    assert!(page.contains(r#"value="Alice@Example.com""#), "{page}");
    let res = browser
        .submit(
            &app,
            &page,
            &[("password", NEW_PASSWORD), ("confirmation", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 200);
    let done = res.text().await.unwrap();
    assert!(done.contains("Votre mot de passe est changé"), "{done}");

    // The notice that the password changed arrives too.
    let notice = wait_for("the password-changed email", || {
        sink.messages().into_iter().nth(1)
    })
    .await;
    assert!(
        notice
            .header("Subject")
            .unwrap()
            .contains("Votre mot de passe Portal conf a été changé"),
        "{:?}",
        notice.header("Subject")
    );

    assert!(signs_in(&app, NEW_PASSWORD).await, "the new password works");

    // "Forgot identifier?" from the login page, in English, through SMTP too.
    let browser = Browser::new();
    let (res, _) = browser
        .follow(&app, &authorize_url(&app, "conf", None, &[]))
        .await;
    let href = link_to(&res.text().await.unwrap(), "/forgot-identifier");
    let html = browser.get(&app.url(&href)).await.text().await.unwrap();
    let res = submit_form(&app, &browser, &html, "alice@example.com").await;
    assert_eq!(res.status(), 200);
    let reminder = wait_for("the identifier email", || {
        sink.messages().into_iter().nth(2)
    })
    .await;
    assert!(
        reminder
            .header("Subject")
            .unwrap()
            .contains("Your customer identifier for Portal conf"),
        "{:?}",
        reminder.header("Subject")
    );
    assert!(
        reminder
            .text
            .as_deref()
            .unwrap()
            .contains(app.user.customer_id.as_str())
    );
    assert!(!signs_in(&app, PASSWORD).await, "the old one does not");
    let kinds = audit_kinds(&app).await;
    assert!(
        kinds.contains(&"password.reset_requested".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"password.reset".to_owned()), "{kinds:?}");
    app.cleanup().await;
}

on_both_backends!(reset_journey_through_smtp);

// ------------------------------------------------------- the link itself

async fn reset_link_expires_after_five_minutes(app: &TestApp) {
    let (url, minutes) = reset_link(app, "conf", 1).await;
    assert_eq!(minutes, 5);
    let browser = Browser::new();
    app.clock.advance(time::Duration::seconds(4 * 60 + 50));
    let (status, page) = open(&browser, &url).await;
    assert_eq!(status, 200, "still valid");
    app.clock.advance(time::Duration::seconds(11));
    let (status, html) = open(&browser, &url).await;
    assert_invalid_link_page(status, &html, "conf");
    // Submitting the form loaded before the expiry does not help either.
    let res = browser
        .submit(
            app,
            &page,
            &[("password", NEW_PASSWORD), ("confirmation", NEW_PASSWORD)],
        )
        .await;
    let status = res.status().as_u16();
    assert_invalid_link_page(status, &res.text().await.unwrap(), "conf");
    assert!(signs_in(app, PASSWORD).await, "the password did not change");
}

async fn a_client_sets_its_own_link_lifetime(app: &TestApp) {
    let (url, minutes) = reset_link(app, LONG_CLIENT, 1).await;
    assert_eq!(minutes, 30);
    let browser = Browser::new();
    app.clock.advance(time::Duration::minutes(29));
    assert_eq!(open(&browser, &url).await.0, 200, "valid after 29 minutes");
    app.clock.advance(time::Duration::minutes(1));
    let (status, html) = open(&browser, &url).await;
    assert_invalid_link_page(status, &html, LONG_CLIENT);
}

async fn a_link_works_once(app: &TestApp) {
    let (url, _) = reset_link(app, "conf", 1).await;
    let browser = Browser::new();
    let (_, page) = open(&browser, &url).await;
    let res = browser
        .submit(
            app,
            &page,
            &[("password", NEW_PASSWORD), ("confirmation", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 200);
    // The same form posted again, and the link opened again.
    let res = browser
        .submit(
            app,
            &page,
            &[
                ("password", "yet another passphrase 7"),
                ("confirmation", "yet another passphrase 7"),
            ],
        )
        .await;
    let status = res.status().as_u16();
    assert_invalid_link_page(status, &res.text().await.unwrap(), "conf");
    let (status, html) = open(&browser, &url).await;
    assert_invalid_link_page(status, &html, "conf");
    assert!(signs_in(app, NEW_PASSWORD).await);
}

async fn a_newer_link_replaces_the_older(app: &TestApp) {
    let (first, _) = reset_link(app, "conf", 1).await;
    let (second, _) = reset_link(app, "conf", 2).await;
    assert_ne!(first, second);
    let browser = Browser::new();
    let (status, html) = open(&browser, &first).await;
    assert_invalid_link_page(status, &html, "conf");
    let (status, html) = set_password(&second, app, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, 200, "{html}");
}

async fn a_password_change_invalidates_the_link(app: &TestApp) {
    let (url, _) = reset_link(app, "conf", 1).await;
    app.clock.advance(time::Duration::seconds(1));
    app.state
        .provider
        .accounts
        .set_password(app.user.id, &Secret::new("changed elsewhere 123"))
        .await
        .unwrap();
    let (status, html) = open(&Browser::new(), &url).await;
    assert_invalid_link_page(status, &html, "conf");
    assert!(signs_in(app, "changed elsewhere 123").await);
}

/// The `<li>` texts of the page's password error list.
fn password_errors(html: &str) -> Vec<String> {
    let Some(start) = html.find(r#"id="password-error">"#) else {
        return Vec::new();
    };
    let list = &html[start..start + html[start..].find("</ul>").unwrap()];
    list.split("<li>")
        .skip(1)
        .map(|item| item[..item.find("</li>").unwrap()].to_owned())
        .collect()
}

async fn mismatch_and_rule_violations_keep_the_link(app: &TestApp) {
    let (url, _) = reset_link(app, STRICT_CLIENT, 1).await;
    let browser = Browser::new();
    let (_, page) = open(&browser, &url).await;
    // The rules are shown next to the field.
    assert!(page.contains(r#"id="password-rules""#), "{page}");
    assert!(
        page.contains(r#"aria-describedby="password-rules""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-password-meter="password-rules""#),
        "{page}"
    );
    assert!(
        page.contains(r#"data-rule="password.rule.uppercase""#),
        "{page}"
    );
    assert!(
        page.contains("/password-meter.js"),
        "the strength meter: {page}"
    );

    // Confirmation differs: its own message; nothing typed is echoed.
    let res = browser
        .submit(
            app,
            &page,
            &[
                ("password", "Good-Password-2024!"),
                ("confirmation", "Good-Password-2024?"),
            ],
        )
        .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("The two passwords are different."), "{html}");
    assert!(html.contains(r#"id="confirmation-error""#), "{html}");
    assert!(!html.contains("Good-Password"), "passwords are not echoed");
    assert!(password_errors(&html).is_empty(), "{html}");

    // Each broken rule gets its own message.
    let res = browser
        .submit(
            app,
            &html,
            &[("password", "short"), ("confirmation", "short")],
        )
        .await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    let errors = password_errors(&html);
    let expected = PasswordPolicy {
        min_length: 12,
        require_uppercase: true,
        require_digit: true,
        require_special: true,
        ..PasswordPolicy::default()
    }
    .check("short", &[]);
    assert_eq!(errors.len(), expected.len(), "{errors:?}");
    assert!(expected.len() >= 4, "{expected:?}");
    for (shown, violation) in errors.iter().zip(&expected) {
        assert!(
            !shown.is_empty() && !shown.starts_with("password.rule."),
            "a translated message for {violation:?}: {shown}"
        );
    }
    assert!(html.contains(r#"aria-invalid="true""#), "{html}");
    assert!(!html.contains("The two passwords are different."), "{html}");

    // Nothing changed: the old password works and the link is still usable.
    assert!(signs_in(app, PASSWORD).await, "old password still works");
    let res = browser
        .submit(
            app,
            &html,
            &[
                ("password", "Strong-Enough-2024!"),
                ("confirmation", "Strong-Enough-2024!"),
            ],
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(signs_in(app, "Strong-Enough-2024!").await);
}

async fn a_common_password_is_refused(app: &TestApp) {
    let common = "1qaz2wsx3edc";
    assert!(idp_core::password_policy::is_common_password(common));
    let (url, _) = reset_link(app, "conf", 1).await;
    let (status, html) = set_password(&url, app, common, common).await;
    assert_eq!(status, 400, "{html}");
    assert_eq!(password_errors(&html).len(), 1, "{html}");
    assert!(signs_in(app, PASSWORD).await, "nothing changed");
    let (status, html) = set_password(&url, app, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, 200, "the link still works: {html}");
}

// --------------------------------------------------- reset and MFA

/// The text inside `<code class="setup-key__value">`.
fn setup_key(html: &str) -> String {
    let tag = html
        .find(r#"<code class="setup-key__value""#)
        .expect("a setup key");
    let start = tag + html[tag..].find('>').unwrap() + 1;
    let end = start + html[start..].find("</code>").unwrap();
    html[start..end].trim().to_owned()
}

/// Identifier and password at `client`; the page that follows.
async fn after_password(app: &TestApp, browser: &Browser, client: &str, password: &str) -> String {
    second_step_page(app, browser, client, EMAIL, password).await
}

async fn a_reset_keeps_second_factors(app: &TestApp) {
    // Enroll an authenticator app at a first login.
    let browser = Browser::new();
    let page = after_password(app, &browser, TOTP_CLIENT, PASSWORD).await;
    let key = setup_key(&page);
    let res = browser
        .submit(
            app,
            &page,
            &[
                ("name", "My phone"),
                ("code", &totp_code(&key, clock_secs(app))),
            ],
        )
        .await;
    assert_eq!(res.status(), 200, "recovery codes page");
    let codes_page = res.text().await.unwrap();
    let res = browser.submit(app, &codes_page, &[]).await;
    assert!(location(&res).starts_with(REDIRECT));

    // Reset the password.
    let (url, _) = reset_link(app, "conf", 1).await;
    let (status, html) = set_password(&url, app, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, 200, "{html}");
    let devices = app
        .state
        .provider
        .ports
        .credentials
        .list_credentials(app.user.id, "totp")
        .await
        .unwrap();
    assert_eq!(devices.len(), 1, "the device stays");

    // The next login with the new password still asks for the code.
    app.clock.advance(time::Duration::seconds(60));
    let browser = Browser::new();
    let page = after_password(app, &browser, OPTIONAL_TOTP_CLIENT, NEW_PASSWORD).await;
    assert!(
        page.contains(r#"autocomplete="one-time-code""#),
        "the TOTP code is asked: {page}"
    );
    let res = browser
        .submit(app, &page, &[("code", &totp_code(&key, clock_secs(app)))])
        .await;
    assert_eq!(res.status(), 303);
    assert!(query_param(&location(&res), "code").is_some());
}

// --------------------------------------------------- forgot identifier

async fn forgot_identifier_emails_the_customer_id(app: &TestApp) {
    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-identifier", "conf").await;
    assert!(html.contains("Find your customer identifier"), "{html}");

    // Not an email address: the form again, with the text kept.
    let res = submit_form(app, &browser, &html, "not-an-email").await;
    assert_eq!(res.status(), 400);
    let html = res.text().await.unwrap();
    assert!(html.contains("Enter a valid email address"), "{html}");
    assert!(html.contains(r#"value="not-an-email""#), "{html}");
    assert!(html.contains(r#"aria-invalid="true""#), "{html}");

    let res = submit_form(app, &browser, &html, "ALICE@example.com").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("If an account uses this email address"),
        "{page}"
    );
    match nth_message(app, 1).await {
        Message::CustomerIdReminder { customer_id } => {
            assert_eq!(customer_id, app.user.customer_id.as_str());
        }
        other => panic!("expected the identifier, got {other:?}"),
    }
    // The identifier works to ask for a reset link too.
    let (status, _) = forgot_password(app, app.user.customer_id.as_str(), "conf").await;
    assert_eq!(status, 200);
    let (url, _) = reset_url(&nth_message(app, 2).await);
    assert!(url.contains("client_id=conf"));
}

// --------------------------------------------------- no enumeration

async fn answers_do_not_depend_on_the_account(app: &TestApp) {
    for (path, known, unknown) in [
        ("/forgot-password", EMAIL, "nobody@example.com"),
        (
            "/forgot-password",
            app.user.customer_id.as_str(),
            "zz99999-idp",
        ),
        ("/forgot-identifier", EMAIL, "nobody@example.com"),
    ] {
        let mut answers = Vec::new();
        for typed in [known, unknown] {
            let browser = Browser::new();
            let html = form(app, &browser, path, "conf").await;
            let res = submit_form(app, &browser, &html, typed).await;
            let status = res.status().as_u16();
            let mut headers: Vec<String> = res
                .headers()
                .iter()
                .filter(|(k, _)| *k != "date" && *k != "set-cookie")
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                .collect();
            headers.sort();
            answers.push((status, headers, res.text().await.unwrap()));
        }
        assert_eq!(answers[0].0, 200);
        assert_eq!(
            answers[0], answers[1],
            "{path}: the same answer for a known and an unknown account"
        );
        assert!(!answers[0].2.contains(known), "nothing typed is echoed");
    }
    // What the background work did: mails for the known account only.
    wait_for("three mails to Alice", || {
        (alice_messages(app).len() == 3).then_some(())
    })
    .await;
    let p = &app.state.provider;
    for target in ["nobody@example.com", "zz99999-idp"] {
        p.accounts
            .request_password_reset(
                &RecoveryTarget::parse(target).unwrap(),
                None,
                "en",
                &RequestMeta::default(),
            )
            .await
            .unwrap();
    }
    p.accounts
        .request_identifier_reminder(
            &Email::parse("nobody@example.com").unwrap(),
            None,
            "en",
            &RequestMeta::default(),
        )
        .await
        .unwrap();
    let others: Vec<_> = app
        .outbox
        .messages()
        .into_iter()
        .filter(|(r, _)| *r != alice(app))
        .collect();
    assert!(
        others.is_empty(),
        "nothing sent for unknown accounts: {others:?}"
    );
}

/// The SMTP server accepts the connection but never greets: a delivery
/// cannot finish. The answer comes anyway, then the delivery attempt shows.
async fn the_answer_does_not_wait_for_delivery(backend: Backend) {
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = stalled.local_addr().unwrap().port();
    let app = spawn_app_with_smtp(
        backend,
        options(),
        "Sign-in <no-reply@idp.example>",
        port,
        crate::cheap_challenges,
    )
    .await;
    let (status, html) = forgot_password(&app, EMAIL, "conf").await;
    assert_eq!(status, 200);
    assert!(html.contains("Check your email"), "{html}");
    // The delivery was started, and is still stuck at the greeting.
    let (_conn, _) = tokio::time::timeout(Duration::from_secs(10), stalled.accept())
        .await
        .expect("the server tries to deliver the email")
        .unwrap();
    app.cleanup().await;
}

on_both_backends!(the_answer_does_not_wait_for_delivery);

// --------------------------------------------------- form protections

async fn the_challenge_is_required_valid_and_single_use(app: &TestApp) {
    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-password", "conf").await;
    for bad in ["", "not base64!", "e30="] {
        let res = browser
            .submit(app, &html, &[("identifier", EMAIL), ("altcha", bad)])
            .await;
        assert_eq!(res.status(), 400, "{bad:?}");
        let page = res.text().await.unwrap();
        assert!(page.contains("anti-robot check did not finish"), "{page}");
        assert!(
            page.contains(r#"value="alice@example.com""#),
            "typed value kept"
        );
        assert!(page.contains("data-challenge="), "a new challenge: {page}");
    }
    // A wrong number for the right challenge fails as well.
    let solved = challenge_solution(&html);
    let mut wrong: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(&solved)
            .unwrap(),
    )
    .unwrap();
    wrong["number"] = serde_json::json!(wrong["number"].as_u64().unwrap() + 1);
    let wrong = base64::engine::general_purpose::STANDARD.encode(wrong.to_string());
    let res = browser
        .submit(app, &html, &[("identifier", EMAIL), ("altcha", &wrong)])
        .await;
    assert_eq!(res.status(), 400);

    let res = browser
        .submit(app, &html, &[("identifier", EMAIL), ("altcha", &solved)])
        .await;
    assert_eq!(res.status(), 200);
    // Replayed: refused.
    let res = browser
        .submit(app, &html, &[("identifier", EMAIL), ("altcha", &solved)])
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("anti-robot check"));
    nth_message(app, 1).await;
}

async fn forms_need_their_csrf_token(app: &TestApp) {
    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-password", "conf").await;
    for csrf in ["", "forged"] {
        let res = browser
            .submit(
                app,
                &html,
                &[
                    ("identifier", EMAIL),
                    ("altcha", &challenge_solution(&html)),
                    ("csrf", csrf),
                ],
            )
            .await;
        assert_eq!(res.status(), 403);
        assert!(res.text().await.unwrap().contains("This form has expired"));
    }
    // Another browser's token is worthless too.
    let other = Browser::new();
    let res = other
        .submit(
            app,
            &html,
            &[
                ("identifier", EMAIL),
                ("altcha", &challenge_solution(&html)),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);

    // The password form of a link as well; the link stays usable.
    let (url, _) = reset_link(app, "conf", 1).await;
    let (_, page) = open(&browser, &url).await;
    let res = browser
        .submit(
            app,
            &page,
            &[
                ("password", NEW_PASSWORD),
                ("confirmation", NEW_PASSWORD),
                ("csrf", ""),
            ],
        )
        .await;
    assert_eq!(res.status(), 403);
    assert!(signs_in(app, PASSWORD).await);
    let (status, _) = set_password(&url, app, NEW_PASSWORD, NEW_PASSWORD).await;
    assert_eq!(status, 200);
}

async fn an_ip_is_throttled_with_the_time_to_wait(app: &TestApp) {
    // Three requests per window from one IP (both forms count).
    let (status, _) = forgot_password(app, EMAIL, "conf").await;
    assert_eq!(status, 200);
    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-identifier", "conf").await;
    assert_eq!(submit_form(app, &browser, &html, EMAIL).await.status(), 200);
    let (status, _) = forgot_password(app, "nobody@example.com", "conf").await;
    assert_eq!(status, 200);

    let browser = Browser::new();
    let html = form(app, &browser, "/forgot-password", "conf").await;
    let res = submit_form(app, &browser, &html, EMAIL).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3540..=3600).contains(&retry), "{retry}");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("Too many requests came from your network. Try again in 60 minutes."),
        "{page}"
    );
    assert!(
        page.contains(r#"value="alice@example.com""#),
        "typed value kept"
    );

    // After the window, requests pass again (the in-process store follows
    // the test clock; Redis expires its keys in real time).
    if app.backend == Backend::Sqlite {
        app.clock.advance(time::Duration::seconds(3601));
        let (status, _) = forgot_password(app, EMAIL, "conf").await;
        assert_eq!(status, 200);
    }
}

async fn an_account_gets_a_limited_number_of_emails(app: &TestApp) {
    for _ in 0..3 {
        let (status, html) = forgot_password(app, EMAIL, "conf").await;
        assert_eq!(status, 200, "{html}");
    }
    // The third request answered the same, and its background work counted
    // it; once counted, it is known not to send.
    let accounts = app.state.provider.accounts.clone();
    let mut count = 0;
    for _ in 0..1000 {
        count = accounts.recovery_emails_counted(app.user.id).await.unwrap();
        if count >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(count, 3, "three requests counted");
    wait_for("two mails", || {
        (alice_messages(app).len() == 2).then_some(())
    })
    .await;
    // The identifier reminder shares the budget: nothing more is sent.
    p_remind(app).await;
    assert_eq!(alice_messages(app).len(), 2, "no more than the cap");
}

async fn p_remind(app: &TestApp) {
    app.state
        .provider
        .accounts
        .request_identifier_reminder(
            &Email::parse(EMAIL).unwrap(),
            None,
            "en",
            &RequestMeta::default(),
        )
        .await
        .unwrap();
}

// --------------------------------------------------- invitation links

async fn invited_member(app: &TestApp) -> (idp_core::domain::User, String) {
    let p = &app.state.provider;
    let user = p
        .organizations
        .create_user_without_password(
            &Email::parse("bob@example.com").unwrap(),
            Some("Bob".into()),
            &RequestMeta::default(),
        )
        .await
        .unwrap()
        .expect("a new account");
    let hours = p.settings.accounts.invite_link_hours;
    assert_eq!(hours, 24);
    let token = p
        .accounts
        .links
        .create_link(
            &user,
            LinkPurpose::Invitation,
            Some(&ClientId("conf".into())),
            Duration::from_secs(u64::from(hours) * 3600),
        )
        .await
        .unwrap();
    let url = p.accounts.links.password_link_url(
        LinkPurpose::Invitation,
        &token,
        Some(&ClientId("conf".into())),
    );
    (user, url)
}

async fn an_invited_member_defines_a_password(app: &TestApp) {
    let (bob, url) = invited_member(app).await;
    assert!(url.starts_with(&app.url("/set-password?token=")), "{url}");
    let browser = Browser::new();
    let (status, page) = open(&browser, &url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Define your password"), "{page}");
    assert!(page.contains(r#"value="bob@example.com""#), "{page}");
    let res = browser
        .submit(
            app,
            &page,
            &[("password", NEW_PASSWORD), ("confirmation", NEW_PASSWORD)],
        )
        .await;
    assert_eq!(res.status(), 200);
    let done = res.text().await.unwrap();
    assert!(done.contains("Your password is defined"), "{done}");
    assert!(done.contains(bob.customer_id.as_str()), "{done}");
    assert!(
        done.contains(r#"href="http://127.0.0.1:9/""#),
        "leads back to the application: {done}"
    );

    // Bob signs in with it; the link is used up; his email is now verified.
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &authorize_url(app, "conf", None, &[]),
            bob.customer_id.as_str(),
            NEW_PASSWORD,
        )
        .await;
    assert!(query_param(&to, "code").is_some(), "{to}");
    let (status, html) = open(&Browser::new(), &url).await;
    assert_eq!(status, 400);
    assert!(html.contains("ask your administrator"), "{html}");
    let stored = app
        .state
        .provider
        .ports
        .users
        .find_by_id(bob.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.email_verified);
    let kinds: Vec<String> = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(bob.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"password.defined".to_owned()), "{kinds:?}");
    let changed = wait_for("the password-changed notice to Bob", || {
        app.outbox
            .last_to(&Recipient::Email("bob@example.com".into()))
    })
    .await;
    assert_eq!(changed.message, Message::PasswordChanged);
    assert_eq!(changed.client_name, "Portal conf");
}

async fn an_invitation_expires_after_24_hours(app: &TestApp) {
    let (_, url) = invited_member(app).await;
    let browser = Browser::new();
    app.clock
        .advance(time::Duration::hours(23) + time::Duration::minutes(59));
    assert_eq!(open(&browser, &url).await.0, 200, "valid for 24 hours");
    // The link also works on the reset page's address.
    let same = url.replace("/set-password?", "/reset-password?");
    assert_eq!(open(&browser, &same).await.0, 200);
    app.clock.advance(time::Duration::minutes(1));
    let (status, html) = open(&browser, &url).await;
    assert_eq!(status, 400);
    assert!(html.contains("This link cannot be used"), "{html}");
    assert!(html.contains("ask your administrator"), "{html}");
}

matrix_with!(
    journeys: crate::options(), crate::cheap_challenges;
    reset_link_expires_after_five_minutes,
    a_client_sets_its_own_link_lifetime,
    a_link_works_once,
    a_newer_link_replaces_the_older,
    a_password_change_invalidates_the_link,
    mismatch_and_rule_violations_keep_the_link,
    a_common_password_is_refused,
    a_reset_keeps_second_factors,
    forgot_identifier_emails_the_customer_id,
    answers_do_not_depend_on_the_account,
    the_challenge_is_required_valid_and_single_use,
    forms_need_their_csrf_token,
    an_invited_member_defines_a_password,
    an_invitation_expires_after_24_hours,
);

matrix_with!(
    limits: crate::options(), |s: &mut idp::config::Settings| {
        crate::cheap_challenges(s);
        s.accounts.recovery_max_per_ip = 3;
        s.accounts.recovery_max_per_account = 2;
    };
    an_ip_is_throttled_with_the_time_to_wait,
);

matrix_with!(
    account_cap: crate::options(), |s: &mut idp::config::Settings| {
        crate::cheap_challenges(s);
        s.accounts.recovery_max_per_account = 2;
    };
    an_account_gets_a_limited_number_of_emails,
);
