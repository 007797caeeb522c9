//! Codes sent by email and by SMS, as a browser meets them: a code on every
//! login, wrong, expired and dead codes, the resend cool-down, reloads that
//! do not send again, no enumeration for an unknown identifier, brute force
//! against the per-user lock, enrolling a mobile number during login (with
//! recovery codes shown once), and steps that cannot be skipped or replayed.

mod support;

use idp_core::notify::{Message, Notification, Recipient};
use serde_json::Value;
use support::*;

/// An emailed code after the password, on every login.
const MAIL: &str = "mail";
/// An emailed code instead of a password (the identifier alone leads to it).
const MAIL_ONLY: &str = "mailonly";
/// A texted code after the password.
const SMS: &str = "sms";

const EMAIL: &str = "alice@example.com";
const PHONE: &str = "+33612345678";

const EN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../themes/default/messages/en.toml"
));

fn options() -> AppOptions {
    AppOptions {
        clients: vec![
            client_with_flows(
                MAIL,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "email_code"]}]"#,
            ),
            client_with_flows(
                MAIL_ONLY,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "email_code"]}]"#,
            ),
            client_with_flows(
                SMS,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "sms_code"]}]"#,
            ),
        ],
        ..AppOptions::default()
    }
}

/// Default settings.
fn defaults(_: &mut idp::config::Settings) {}

/// A lock far away, so that the per-code limit shows on its own.
fn lenient_lock(s: &mut idp::config::Settings) {
    s.throttle.account_max_failures = 50;
}

/// A message of the default English catalog as the page shows it.
fn msg(id: &str) -> String {
    let catalog: toml::Table = toml::from_str(EN).unwrap();
    let mut v = &toml::Value::Table(catalog);
    for part in id.split('.') {
        v = v.get(part).unwrap_or_else(|| panic!("no message {id}"));
    }
    v.as_str()
        .unwrap_or_else(|| panic!("{id} is not a message"))
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The text of a message up to its first `{placeholder}`.
fn msg_prefix(id: &str) -> String {
    msg(id).split('{').next().unwrap().to_owned()
}

fn alice_email() -> Recipient {
    Recipient::Email("Alice@Example.com".into())
}

fn alice_phone() -> Recipient {
    Recipient::Phone(PHONE.into())
}

fn sent_to(app: &TestApp, to: &Recipient) -> Vec<Notification> {
    app.outbox
        .messages()
        .into_iter()
        .filter(|(r, _)| r == to)
        .map(|(_, n)| n)
        .collect()
}

/// The newest login code sent to `to`.
fn last_login_code(app: &TestApp, to: &Recipient) -> String {
    match app.outbox.last_to(to).expect("a message was sent").message {
        Message::LoginCode { code, .. } => code,
        other => panic!("not a login code: {other:?}"),
    }
}

/// A code that is not `code`.
fn other_than(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// A page: its status and HTML.
#[derive(Debug)]
struct Page {
    status: u16,
    html: String,
}

impl Page {
    async fn of(res: reqwest::Response) -> Page {
        Page {
            status: res.status().as_u16(),
            html: res.text().await.unwrap(),
        }
    }

    fn action(&self) -> String {
        Form::parse(&self.html)
            .unwrap_or_else(|| panic!("a form on {}", self.html))
            .action
    }

    fn has(&self, text: &str) -> bool {
        self.html.contains(text)
    }
}

/// One login attempt in a browser.
struct Login<'a> {
    app: &'a TestApp,
    browser: Browser,
    client: &'static str,
    verifier: String,
    /// `/login/<flow>`.
    flow_path: String,
}

impl<'a> Login<'a> {
    /// Follows the authorization request to the identifier page.
    async fn start(app: &'a TestApp, client: &'static str, browser: Browser) -> (Login<'a>, Page) {
        let (verifier, challenge) = pkce();
        let (res, url) = browser
            .follow(app, &authorize_url(app, client, Some(&challenge), &[]))
            .await;
        let page = Page::of(res).await;
        assert_eq!(page.status, 200, "the identifier page: {}", page.html);
        let flow_path = url
            .strip_prefix(&app.issuer)
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        assert!(flow_path.starts_with("/login/"), "{flow_path}");
        let login = Login {
            app,
            browser,
            client,
            verifier,
            flow_path,
        };
        (login, page)
    }

    /// Posts the page's first form with `fields` set.
    async fn submit(&self, page: &Page, fields: &[(&str, &str)]) -> reqwest::Response {
        self.browser.submit(self.app, &page.html, fields).await
    }

    /// Posts the page's first form as its button `name=value` does (the
    /// other fields as they are).
    async fn press(&self, page: &Page, name: &str, value: &str) -> Page {
        Page::of(self.browser.press(self.app, &page.html, name, value).await).await
    }

    async fn post(&self, path: &str, fields: &[(String, String)]) -> reqwest::Response {
        self.browser
            .http
            .post(self.app.url(path))
            .header("origin", &self.app.issuer)
            .form(fields)
            .send()
            .await
            .unwrap()
    }

    /// Shows the flow's current page (as a reload does).
    async fn reload(&self) -> Page {
        Page::of(self.browser.get(&self.app.url(&self.flow_path)).await).await
    }

    /// After a 303 back to the flow: its page.
    async fn next(&self, res: reqwest::Response) -> Page {
        assert_eq!(res.status(), 303, "moved on");
        assert_eq!(location(&res), self.flow_path);
        self.reload().await
    }

    /// Identifier, then password: the page after them.
    async fn through_password(&self, page: &Page, identifier: &str) -> Page {
        let res = self.submit(page, &[("identifier", identifier)]).await;
        let page = self.next(res).await;
        assert!(
            page.has("autocomplete=\"current-password\""),
            "{}",
            page.html
        );
        let res = self.submit(&page, &[("password", PASSWORD)]).await;
        self.next(res).await
    }

    /// Submits a code; on success returns the client's callback URL.
    async fn enter_code(&self, page: &Page, code: &str) -> Result<String, Page> {
        let res = self.submit(page, &[("code", code)]).await;
        if res.status() == 303 {
            let to = location(&res);
            assert!(to.starts_with(REDIRECT), "back to the client: {to}");
            Ok(to)
        } else {
            Err(Page::of(res).await)
        }
    }

    /// The ID token claims for a callback.
    async fn claims(&self, callback: &str) -> Value {
        use base64::Engine;
        let code = query_param(callback, "code").expect("a code");
        let t = exchange_code(self.app, self.client, &code, Some(&self.verifier)).await;
        let payload = t["id_token"].as_str().unwrap().split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    }
}

/// Starts a login for `client` and goes through identifier and password.
async fn code_page<'a>(app: &'a TestApp, client: &'static str) -> (Login<'a>, Page) {
    let (login, page) = Login::start(app, client, Browser::new()).await;
    let page = login.through_password(&page, EMAIL).await;
    (login, page)
}

fn amr(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .unwrap_or_else(|| panic!("amr in {claims}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn advance(app: &TestApp, secs: i64) {
    app.clock.advance(time::Duration::seconds(secs));
}

async fn email_code_on_every_login(app: &TestApp) {
    let (login, page) = code_page(app, MAIL).await;
    assert_eq!(page.status, 200);
    assert!(page.action().ends_with("/email_code"), "{}", page.html);
    assert!(
        page.has(&msg("login.code.sent_email").replace("{destination}", "a***@example.com")),
        "where the code went, masked: {}",
        page.html
    );
    assert!(
        page.has(r#"name="code" type="text" autocomplete="one-time-code" inputmode="numeric""#),
        "{}",
        page.html
    );
    assert!(page.has(r#"name="resend" value="1""#), "a resend button");
    let sent = sent_to(app, &alice_email());
    assert_eq!(sent.len(), 1, "one email");
    let n = &sent[0];
    assert_eq!((n.locale.as_str(), n.theme.as_str()), ("en", "default"));
    assert_eq!(n.client_name, "Portal mail");
    let Message::LoginCode {
        code,
        valid_minutes,
    } = &n.message
    else {
        panic!("a login code: {n:?}");
    };
    assert_eq!(*valid_minutes, 10);
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    assert!(!page.has(code), "the code is not on the page");

    let callback = login.enter_code(&page, code).await.expect("signed in");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("st-123"));
    let claims = login.claims(&callback).await;
    let amr = amr(&claims);
    // An emailed code is reported as such, and is not a second factor.
    assert_eq!(amr, ["pwd", "email_otp"]);
    assert_eq!(claims["sub"], app.user.id.to_string());

    // Every login asks again: a fresh browser gets a fresh code.
    let (login, page) = code_page(app, MAIL).await;
    assert_eq!(sent_to(app, &alice_email()).len(), 2);
    let again = last_login_code(app, &alice_email());
    login
        .enter_code(&page, &again)
        .await
        .expect("signed in again");
}

async fn five_wrong_codes_kill_the_code_until_a_new_one_is_sent(app: &TestApp) {
    let (login, mut page) = code_page(app, MAIL).await;
    let code = last_login_code(app, &alice_email());
    let wrong = other_than(&code);
    for i in 1..=5 {
        page = login.enter_code(&page, &wrong).await.expect_err("refused");
        assert_eq!(page.status, 401, "attempt {i}");
        let expected = if i < 5 {
            "login.code.invalid"
        } else {
            "login.code.too_many"
        };
        assert!(page.has(&msg(expected)), "attempt {i}: {}", page.html);
        assert!(page.has(r#"aria-describedby="code-help code-error""#));
    }
    // Dead: even the right code is refused now.
    page = login
        .enter_code(&page, &code)
        .await
        .expect_err("a dead code");
    assert_eq!(page.status, 401);
    assert!(page.has(&msg("login.code.too_many")), "{}", page.html);
    // A reload does not revive it, nor send one by itself.
    let reloaded = login.reload().await;
    assert!(
        reloaded.has(&msg("login.code.too_many")),
        "{}",
        reloaded.html
    );
    assert_eq!(sent_to(app, &alice_email()).len(), 1);

    advance(app, 31);
    let page = login.press(&reloaded, "resend", "1").await;
    assert_eq!(page.status, 200);
    assert!(page.has(&msg_prefix("login.code.resent")), "{}", page.html);
    assert_eq!(sent_to(app, &alice_email()).len(), 2);
    let fresh = last_login_code(app, &alice_email());
    login
        .enter_code(&page, &fresh)
        .await
        .expect("the new code works");
}

async fn an_expired_code_is_refused(app: &TestApp) {
    let (login, page) = code_page(app, MAIL).await;
    let code = last_login_code(app, &alice_email());
    advance(app, 11 * 60);
    let page = login.enter_code(&page, &code).await.expect_err("expired");
    assert_eq!(page.status, 401);
    assert!(page.has(&msg("login.code.expired")), "{}", page.html);
    // Showing the page again sends a fresh code, which works.
    let page = login.reload().await;
    assert_eq!(sent_to(app, &alice_email()).len(), 2);
    let fresh = last_login_code(app, &alice_email());
    login.enter_code(&page, &fresh).await.expect("a fresh code");
}

async fn resend_waits_for_the_cooldown_and_replaces_the_code(app: &TestApp) {
    let (login, page) = code_page(app, MAIL).await;
    let first = last_login_code(app, &alice_email());
    let refused = login.press(&page, "resend", "1").await;
    assert_eq!(refused.status, 200);
    assert!(
        refused.has(&msg_prefix("login.code.wait")),
        "asked to wait: {}",
        refused.html
    );
    assert!(refused.has(" s.</p>"), "{}", refused.html);
    assert_eq!(sent_to(app, &alice_email()).len(), 1, "nothing sent");

    advance(app, 31);
    let page = login.press(&refused, "resend", "1").await;
    assert_eq!(page.status, 200);
    assert!(page.has(&msg_prefix("login.code.resent")), "{}", page.html);
    assert_eq!(sent_to(app, &alice_email()).len(), 2);
    let second = last_login_code(app, &alice_email());
    if second != first {
        let page = login.enter_code(&page, &first).await.expect_err("replaced");
        assert!(page.has(&msg("login.code.invalid")), "{}", page.html);
    }
    // Right after a resend, another one must wait again.
    let page = login.press(&page, "resend", "1").await;
    assert!(page.has(&msg_prefix("login.code.wait")), "{}", page.html);
    assert_eq!(sent_to(app, &alice_email()).len(), 2);
    login
        .enter_code(&page, &second)
        .await
        .expect("the new code works");
}

async fn reloading_the_page_does_not_send_again(app: &TestApp) {
    let (login, page) = code_page(app, MAIL).await;
    for _ in 0..3 {
        let again = login.reload().await;
        assert_eq!(again.status, 200);
        assert!(again.has(&msg_prefix("login.code.sent_email")));
        assert!(!again.has("field__error"), "{}", again.html);
    }
    // Even after the cool-down: the code is still live.
    advance(app, 120);
    login.reload().await;
    assert_eq!(
        sent_to(app, &alice_email()).len(),
        1,
        "one email for one code"
    );
    let code = last_login_code(app, &alice_email());
    login.enter_code(&page, &code).await.expect("signed in");

    // The message speaks the page's language.
    let (login, page) = Login::start(app, MAIL, Browser::with_language("fr")).await;
    login.through_password(&page, EMAIL).await;
    let n = app.outbox.last_to(&alice_email()).unwrap();
    assert_eq!(n.locale, "fr");
}

/// Replaces what differs between two logins by construction: the flow id,
/// the CSRF token and the (typed) masked address.
fn normalized(page: &Page, login: &Login<'_>, masked: &str) -> (u16, String) {
    let form = Form::parse(&page.html).expect("a form");
    let csrf = form
        .fields
        .iter()
        .find(|(n, _)| n == "csrf")
        .map(|(_, v)| v.clone())
        .unwrap();
    let flow_id = login.flow_path.trim_start_matches("/login/");
    (
        page.status,
        page.html
            .replace(&csrf, "CSRF")
            .replace(flow_id, "FLOW")
            .replace(masked, "MASKED"),
    )
}

/// The pages one identifier meets when it tries codes on a passwordless
/// email flow, normalized.
async fn journey(app: &TestApp, identifier: &str, masked: &str) -> Vec<(u16, String)> {
    let (login, page) = Login::start(app, MAIL_ONLY, Browser::new()).await;
    let res = login.submit(&page, &[("identifier", identifier)]).await;
    let page = login.next(res).await;
    let mut seen = vec![normalized(&page, &login, masked)];
    let reloaded = login.reload().await;
    seen.push(normalized(&reloaded, &login, masked));
    let refused = login
        .enter_code(&page, "000000")
        .await
        .expect_err("refused");
    seen.push(normalized(&refused, &login, masked));
    let wait = login.press(&page, "resend", "1").await;
    seen.push(normalized(&wait, &login, masked));
    advance(app, 31);
    let resent = login.press(&page, "resend", "1").await;
    seen.push(normalized(&resent, &login, masked));
    let malformed = login.enter_code(&page, "12").await.expect_err("refused");
    seen.push(normalized(&malformed, &login, masked));
    for code in ["111111", "222222", "333333", "444444", "555555"] {
        let p = login.enter_code(&page, code).await.expect_err("refused");
        seen.push(normalized(&p, &login, masked));
    }
    seen
}

async fn an_unknown_identifier_meets_the_same_pages_and_gets_nothing(app: &TestApp) {
    // Alice's real code must not be among the guesses for the comparison.
    let known = journey(app, EMAIL, "a***@example.com").await;
    for (status, html) in &known {
        assert!(*status != 303, "no code guessed: {html}");
    }
    let sent_before = app.outbox.messages().len();
    let unknown = journey(app, "bob@example.com", "b***@example.com").await;
    assert_eq!(app.outbox.messages().len(), sent_before, "nothing sent");
    assert!(
        unknown[0].1.contains("MASKED"),
        "the address shown comes from what was typed"
    );
    let statuses: Vec<u16> = known.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [200, 200, 401, 200, 200, 401, 401, 401, 401, 401, 429],
        "a wrong code, a resend too soon, a resend, a malformed code, four more wrong codes, then the lock"
    );
    // Identical pages; the lock pages differ only by the time they name.
    let (last_known, last_unknown) = (known.len() - 1, unknown.len() - 1);
    for (i, (k, u)) in known[..last_known]
        .iter()
        .zip(&unknown[..last_unknown])
        .enumerate()
    {
        assert_eq!(k, u, "page {i} differs");
    }
    for (status, html) in [&known[last_known], &unknown[last_unknown]] {
        assert_eq!(*status, 429);
        assert!(html.contains(&msg_prefix("login.locked")), "{html}");
    }
}

async fn brute_force_is_locked_out_long_before_one_percent(app: &TestApp) {
    let (login, mut page) = code_page(app, MAIL).await;
    let mut guesses = 0u32;
    let locked = loop {
        assert!(guesses < 100, "never locked");
        let code = last_login_code(app, &alice_email());
        let res = login
            .enter_code(&page, &other_than(&code))
            .await
            .expect_err("wrong");
        guesses += 1;
        if res.status == 429 {
            break res;
        }
        assert_eq!(res.status, 401);
        // A new code (and a fresh count for it) after every guess.
        advance(app, 31);
        page = login.press(&res, "resend", "1").await;
        if page.status == 429 {
            break page;
        }
        assert_eq!(page.status, 200, "{}", page.html);
    };
    assert!(locked.has(&msg_prefix("login.locked")), "{}", locked.html);
    // Resending gives a new code with a fresh count of its own, yet the
    // per-user lock comes with the fifth wrong guess: 5 guesses per lock
    // window, far below 1% of the 10^6 codes.
    assert_eq!(guesses, 5, "guesses before the lock");
    assert!(f64::from(guesses) < 0.01 * 1e6);
    // Locked for this user and method: the right code, a resend, another
    // browser's flow all meet the lock.
    let code = last_login_code(app, &alice_email());
    let res = login.enter_code(&locked, &code).await.expect_err("locked");
    assert_eq!(res.status, 429);
    let res = login.press(&locked, "resend", "1").await;
    assert_eq!(res.status, 429);
    let (other, page) = code_page(app, MAIL).await;
    let code = last_login_code(app, &alice_email());
    let res = other.enter_code(&page, &code).await.expect_err("locked");
    assert_eq!(res.status, 429, "{}", res.html);
}

/// The code page of a new passwordless login by `identifier`.
async fn fresh_code_page(app: &TestApp, identifier: &str) -> Page {
    let (login, page) = Login::start(app, MAIL_ONLY, Browser::new()).await;
    let res = login.submit(&page, &[("identifier", identifier)]).await;
    login.next(res).await
}

async fn new_logins_cannot_flood_an_address_with_codes(app: &TestApp) {
    // Each new flow sends a code at once; the cool-down is per flow, so a
    // cap per address holds across flows: 10 an hour.
    for identifier in [EMAIL, "bob@example.com"] {
        for i in 0..10 {
            let page = fresh_code_page(app, identifier).await;
            assert!(!page.has("field__error"), "login {i}: {}", page.html);
        }
        let page = fresh_code_page(app, identifier).await;
        assert_eq!(page.status, 200);
        assert!(page.has(&msg("login.code.too_many_sent")), "{}", page.html);
    }
    assert_eq!(sent_to(app, &alice_email()).len(), 10, "capped");
    assert_eq!(
        app.outbox.messages().len(),
        10,
        "nothing to the unknown address"
    );
}

async fn sms_enrollment_during_login_then_sms_codes(app: &TestApp) {
    let (login, page) = code_page(app, SMS).await;
    assert_eq!(page.status, 200);
    assert!(
        page.has(&msg("login.phone.title")),
        "asked for a number: {}",
        page.html
    );
    assert!(page.has(r#"type="tel""#) && page.has(r#"autocomplete="tel""#));

    // Without country code: refused, kept in the field.
    let res = login.submit(&page, &[("phone", "06 12 34 56 78")]).await;
    let page = Page::of(res).await;
    assert_eq!(page.status, 401);
    assert!(page.has(&msg("login.phone.invalid")), "{}", page.html);
    assert!(page.has(r#"value="06 12 34 56 78""#));
    assert!(app.outbox.messages().is_empty());

    // A first number, then "use another number" (the cool-down holds).
    let res = login.submit(&page, &[("phone", "+33 7 00 00 00 01")]).await;
    let page = Page::of(res).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        sent_to(app, &Recipient::Phone("+33700000001".into())).len(),
        1
    );
    let page = login.press(&page, "change_phone", "1").await;
    assert!(page.has(&msg("login.phone.title")), "{}", page.html);
    let res = login.submit(&page, &[("phone", "+33 6 12 34 56 78")]).await;
    let page = Page::of(res).await;
    assert!(page.has(&msg_prefix("login.code.wait")), "{}", page.html);
    assert!(sent_to(app, &alice_phone()).is_empty());
    advance(app, 31);

    let res = login.submit(&page, &[("phone", "+33 6 12 34 56 78")]).await;
    let page = Page::of(res).await;
    assert_eq!(page.status, 200);
    assert!(
        page.has(&msg("login.code.sent_sms").replace("{destination}", "+33*******78")),
        "{}",
        page.html
    );
    assert!(page.has(&msg("login.phone.verify_title")));
    let sent = sent_to(app, &alice_phone());
    assert_eq!(sent.len(), 1);
    let Message::PhoneVerificationCode { code, .. } = &sent[0].message else {
        panic!("a phone verification code: {:?}", sent[0]);
    };
    let page = login
        .enter_code(&page, &other_than(code))
        .await
        .expect_err("wrong");
    assert_eq!(page.status, 401);
    assert!(page.has(&msg("login.code.invalid")));
    let user = app
        .state
        .provider
        .ports
        .users
        .find_by_id(app.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.phone, None, "not saved before it is confirmed");

    // Confirmed: saved, and the first second factor brings recovery codes, once.
    let page = login
        .enter_code(&page, code)
        .await
        .expect_err("recovery codes first");
    assert_eq!(page.status, 200);
    assert!(
        page.has(&msg("login.recovery_codes.title")),
        "{}",
        page.html
    );
    assert_eq!(
        page.html.matches("recovery-codes__code").count(),
        10,
        "{}",
        page.html
    );
    let user = app
        .state
        .provider
        .ports
        .users
        .find_by_id(app.user.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.phone.as_deref(), user.phone_verified),
        (Some(PHONE), true)
    );
    let reloaded = login.reload().await;
    assert!(
        reloaded.has(&msg("login.recovery_codes.already_shown")),
        "{}",
        reloaded.html
    );
    assert!(!reloaded.has("recovery-codes__code"), "shown once");
    assert_eq!(
        sent_to(app, &alice_phone()).len(),
        1,
        "no login code sent meanwhile"
    );
    let res = login.submit(&reloaded, &[]).await;
    assert_eq!(res.status(), 303);
    let callback = location(&res);
    let methods = amr(&login.claims(&callback).await);
    for v in ["pwd", "sms", "mfa"] {
        assert!(methods.iter().any(|a| a == v), "{v} in {methods:?}");
    }

    // Next login: a login code by SMS straight away.
    let (login, page) = code_page(app, SMS).await;
    assert!(page.action().ends_with("/sms_code"));
    assert!(
        page.has(&msg("login.code.sent_sms").replace("{destination}", "+33*******78")),
        "{}",
        page.html
    );
    let sent = sent_to(app, &alice_phone());
    assert_eq!(sent.len(), 2);
    assert!(
        matches!(sent[1].message, Message::LoginCode { .. }),
        "{:?}",
        sent[1]
    );
    let code = last_login_code(app, &alice_phone());
    let callback = login.enter_code(&page, &code).await.expect("signed in");
    assert!(amr(&login.claims(&callback).await).contains(&"sms".to_owned()));
}

async fn steps_cannot_be_skipped_or_replayed(app: &TestApp) {
    let (login, page) = Login::start(app, MAIL, Browser::new()).await;
    let res = login.submit(&page, &[("identifier", EMAIL)]).await;
    let password_page = login.next(res).await;
    let csrf = Form::parse(&password_page.html)
        .unwrap()
        .fields
        .into_iter()
        .find(|(n, _)| n == "csrf")
        .unwrap()
        .1;
    // The emailed code before the password: refused, no progress, nothing sent.
    for (step, field) in [
        ("email_code", "code"),
        ("email_code", "resend"),
        ("bogus", "x"),
    ] {
        let path = format!("{}/{step}", login.flow_path);
        let fields = [
            ("csrf".to_owned(), csrf.clone()),
            (field.to_owned(), "1".to_owned()),
        ];
        let res = login.post(&path, &fields).await;
        assert_eq!(res.status(), 303, "{step}");
        assert_eq!(location(&res), login.flow_path);
    }
    let still = login.reload().await;
    assert!(
        still.has("autocomplete=\"current-password\""),
        "{}",
        still.html
    );
    assert!(app.outbox.messages().is_empty(), "no code sent");

    let res = login
        .submit(&password_page, &[("password", PASSWORD)])
        .await;
    let code_page = login.next(res).await;
    assert!(code_page.action().ends_with("/email_code"));
    // The password form again, right or wrong: not run again (a wrong
    // password would be refused with 401).
    for pw in [PASSWORD, "wrong password"] {
        let res = login.submit(&password_page, &[("password", pw)]).await;
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), login.flow_path, "back to the current step");
    }
    let still = login.reload().await;
    assert!(still.action().ends_with("/email_code"), "{}", still.html);
    assert_eq!(sent_to(app, &alice_email()).len(), 1);

    // The code passes once; replaying the form finds no flow.
    let code = last_login_code(app, &alice_email());
    login
        .enter_code(&code_page, &code)
        .await
        .expect("signed in");
    let res = login.submit(&code_page, &[("code", &code)]).await;
    assert_eq!(res.status(), 400, "the flow is over");
}

matrix_with!(
    default_settings: crate::options(), crate::defaults;
    email_code_on_every_login,
    an_expired_code_is_refused,
    resend_waits_for_the_cooldown_and_replaces_the_code,
    reloading_the_page_does_not_send_again,
    an_unknown_identifier_meets_the_same_pages_and_gets_nothing,
    brute_force_is_locked_out_long_before_one_percent,
    sms_enrollment_during_login_then_sms_codes,
    steps_cannot_be_skipped_or_replayed,
    new_logins_cannot_flood_an_address_with_codes,
);

matrix_with!(
    lenient_lock: crate::options(), crate::lenient_lock;
    five_wrong_codes_kill_the_code_until_a_new_one_is_sent,
);
