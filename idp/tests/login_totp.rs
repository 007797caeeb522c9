//! TOTP as a browser and an authenticator app see it: enrollment forced
//! during login (QR code, key to type, device name, first code, recovery
//! codes shown once), then codes at later logins with the ±1 step window,
//! no reuse of a step, the lock after repeated wrong codes, the optional
//! stage, recovery codes as the other method, a seed never stored in clear,
//! abandoned enrollments that leave nothing, and concurrent submits of one
//! code of which exactly one passes.

mod support;

use idp_core::domain::StoredCredential;
use serde_json::Value;
use support::*;
use time::OffsetDateTime;

/// `identifier, password, totp`: TOTP required.
const TOTP_CLIENT: &str = "totp";
/// `identifier, password, totp|recovery_code`.
const TOTP_OR_RECOVERY_CLIENT: &str = "totp_rc";
/// `identifier, password, totp when enrolled`.
const OPTIONAL_TOTP_CLIENT: &str = "totp_opt";

const EMAIL: &str = "alice@example.com";

fn options() -> AppOptions {
    AppOptions {
        clients: vec![
            client_with_flows(
                TOTP_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "totp"]}]"#,
            ),
            client_with_flows(
                TOTP_OR_RECOVERY_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "totp|recovery_code"]}]"#,
            ),
            client_with_flows(
                OPTIONAL_TOTP_CLIENT,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": ["totp"], "when": "enrolled"}]}]"#,
            ),
        ],
        ..AppOptions::default()
    }
}

/// Moves the clock to one second into a fresh 30-second step, so a test's
/// codes do not straddle a step boundary by accident. Returns that time.
fn align_clock(app: &TestApp) -> u64 {
    use idp_core::clock::Clock;
    let now = app.clock.now().unix_timestamp() as u64;
    let aligned = (now / 30 + 1) * 30 + 1;
    app.clock
        .set(OffsetDateTime::from_unix_timestamp(aligned as i64).unwrap());
    aligned
}

fn now(app: &TestApp) -> u64 {
    use idp_core::clock::Clock;
    app.clock.now().unix_timestamp() as u64
}

/// The authenticator app: a generator for the key the page showed.
fn app_for(key: &str) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(key.replace(' ', "")).expect("base32 key"))
        .build()
        .expect("a valid TOTP")
}

/// The code the app shows at unix time `t`.
fn code_at(app: &totp_rs::Totp, t: u64) -> String {
    app.generate(t).to_string()
}

/// A six-digit code valid for no step of the ±1 window around `t`.
fn wrong_code(app: &totp_rs::Totp, t: u64) -> String {
    let valid: Vec<String> = [t - 30, t, t + 30]
        .iter()
        .map(|s| code_at(app, *s))
        .collect();
    (0..)
        .map(|i: u32| format!("{:06}", (123_456 + i * 7_919) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// The text inside every `<tag class="{class}"...>…</tag>` of a page.
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

fn field(html: &str, name: &str) -> String {
    Form::parse(html)
        .expect("a form")
        .fields
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name}"))
}

/// Identifier and password for `client` in `browser`; returns the page that
/// follows (status, HTML, its URL).
async fn to_second_factor(app: &TestApp, browser: &Browser, client: &str) -> (u16, String, String) {
    let after_password = browser
        .login(app, &authorize_url(app, client, None, &[]), EMAIL, PASSWORD)
        .await;
    assert!(
        after_password.starts_with("/login/"),
        "a second step follows the password: {after_password}"
    );
    let (res, url) = browser.follow(app, &app.url(&after_password)).await;
    (res.status().as_u16(), res.text().await.unwrap(), url)
}

/// What the enrollment page shows.
struct EnrollmentPage {
    html: String,
    url: String,
    key: String,
}

async fn enrollment_page(app: &TestApp, browser: &Browser, client: &str) -> EnrollmentPage {
    let (status, html, url) = to_second_factor(app, browser, client).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Set up an authenticator app"),
        "enrollment page: {html}"
    );
    let keys = texts_of(&html, "code", "setup-key__value");
    assert_eq!(keys.len(), 1, "one key on the page");
    EnrollmentPage {
        key: keys[0].clone(),
        html,
        url,
    }
}

/// Confirms an enrollment with a valid code and device name; returns the
/// recovery codes page.
async fn confirm(app: &TestApp, browser: &Browser, page: &EnrollmentPage, name: &str) -> String {
    let code = code_at(&app_for(&page.key), now(app));
    let res = browser
        .submit(app, &page.html, &[("name", name), ("code", &code)])
        .await;
    assert_eq!(res.status(), 200, "recovery codes shown");
    res.text().await.unwrap()
}

/// A whole forced enrollment through `client`: returns the key and the
/// recovery codes shown, and the redirect to the client.
async fn enroll(app: &TestApp, browser: &Browser, client: &str) -> (String, Vec<String>, String) {
    let page = enrollment_page(app, browser, client).await;
    let html = confirm(app, browser, &page, "My phone").await;
    let codes = texts_of(&html, "code", "recovery-codes__code");
    assert_eq!(codes.len(), 10, "{html}");
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303, "acknowledged");
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    (page.key, codes, to)
}

fn amr(claims: &Value) -> Vec<String> {
    claims["amr"]
        .as_array()
        .expect("amr")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

async fn totp_devices(app: &TestApp) -> Vec<StoredCredential> {
    app.state
        .provider
        .ports
        .credentials
        .list_credentials(app.user.id, "totp")
        .await
        .unwrap()
}

/// The TOTP code page of a later login.
async fn code_page(app: &TestApp, browser: &Browser, client: &str) -> String {
    let (status, html, _) = to_second_factor(app, browser, client).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(r#"autocomplete="one-time-code""#),
        "the TOTP code page: {html}"
    );
    assert!(
        !html.contains("data:image/png"),
        "no QR code after enrollment"
    );
    html
}

async fn forced_enrollment_shows_qr_and_key_then_recovery_codes(app: &TestApp) {
    align_clock(app);
    let browser = Browser::new();
    let page = enrollment_page(app, &browser, TOTP_CLIENT).await;
    assert!(page.html.contains(r#"src="data:image/png;base64,"#));
    assert!(page.html.contains("<details"));
    assert!(page.html.contains("Unable to scan?"));
    let groups: Vec<&str> = page.key.split(' ').collect();
    assert_eq!(groups.len(), 8, "160 bits as 8 groups: {}", page.key);
    assert!(groups.iter().all(|g| g.len() == 4));
    assert!(page.html.contains(app.user.email.as_str()), "account shown");
    assert_eq!(field(&page.html, "name"), "Authenticator app");
    assert!(page.html.contains(r#"maxlength="64""#));

    // A wrong code: the same page (same key) with the error; nothing stored.
    let phone = app_for(&page.key);
    let res = browser
        .submit(
            app,
            &page.html,
            &[
                ("name", "My phone"),
                ("code", &wrong_code(&phone, now(app))),
            ],
        )
        .await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(html.contains("Incorrect or expired code"), "{html}");
    assert_eq!(
        texts_of(&html, "code", "setup-key__value"),
        [page.key.as_str()]
    );
    assert_eq!(field(&html, "name"), "My phone", "the typed name is kept");
    assert!(totp_devices(app).await.is_empty());
    // A name too long: refused, nothing stored.
    let long = "x".repeat(65);
    let res = browser
        .submit(
            app,
            &html,
            &[("name", &long), ("code", &code_at(&phone, now(app)))],
        )
        .await;
    assert_eq!(res.status(), 401);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Use at most 64 characters.")
    );
    assert!(totp_devices(app).await.is_empty());

    // The right code confirms: the recovery codes are shown once.
    let html = confirm(app, &browser, &page, "My phone").await;
    assert!(html.contains("Save your recovery codes"), "{html}");
    let codes = texts_of(&html, "code", "recovery-codes__code");
    assert_eq!(codes.len(), 10, "{html}");
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 11 && c.as_bytes()[5] == b'-')
    );
    assert!(html.contains("Each code can be used only once."));
    assert!(!html.contains("alternatives"), "nothing to switch to here");
    let devices = totp_devices(app).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].label.as_deref(), Some("My phone"));

    // Shown again (reload): the codes are not.
    let res = browser.get(&page.url).await;
    assert_eq!(res.status(), 200);
    let again = res.text().await.unwrap();
    assert!(again.contains("are not shown again"), "{again}");
    assert!(texts_of(&again, "code", "recovery-codes__code").is_empty());
    assert!(!codes.iter().any(|c| again.contains(c.as_str())));

    // Acknowledged: signed in with both factors.
    let res = browser.submit(app, &again, &[]).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(app, TOTP_CLIENT, &to).await;
    let amr = amr(&claims);
    for v in ["pwd", "otp", "mfa"] {
        assert!(amr.contains(&v.to_owned()), "{v} in {amr:?}");
    }
    assert_eq!(
        app.state
            .provider
            .ports
            .credentials
            .list_credentials(app.user.id, "recovery_code")
            .await
            .unwrap()
            .len(),
        10
    );
}

async fn later_logins_ask_for_a_code_used_once_within_one_step(app: &TestApp) {
    let t = align_clock(app);
    let (key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    let phone = app_for(&key);

    // The code that confirmed the enrollment cannot sign in.
    let browser = Browser::new();
    let html = code_page(app, &browser, TOTP_CLIENT).await;
    let res = browser
        .submit(app, &html, &[("code", &code_at(&phone, t))])
        .await;
    assert_eq!(res.status(), 401, "replayed code refused");
    let html = res.text().await.unwrap();
    assert!(html.contains("Incorrect or expired code"), "{html}");
    // The next step's code (the app's clock runs a little ahead): accepted.
    let res = browser
        .submit(app, &html, &[("code", &code_at(&phone, t + 30))])
        .await;
    assert_eq!(res.status(), 303, "next step accepted");
    let to = location(&res);
    let claims = id_token_claims(app, TOTP_CLIENT, &to).await;
    assert!(amr(&claims).contains(&"otp".to_owned()));

    // A minute later: codes two steps away either way are refused, and so
    // is the step already used; the current one passes.
    app.clock.advance(time::Duration::seconds(60));
    let t = t + 60;
    let browser = Browser::new();
    let mut html = code_page(app, &browser, TOTP_CLIENT).await;
    for (what, code) in [
        ("two steps ahead", code_at(&phone, t + 60)),
        ("two steps behind", code_at(&phone, t - 60)),
        ("already used", code_at(&phone, t - 30)),
    ] {
        let res = browser.submit(app, &html, &[("code", &code)]).await;
        assert_eq!(res.status(), 401, "{what}");
        html = res.text().await.unwrap();
    }
    let res = browser
        .submit(app, &html, &[("code", &code_at(&phone, t))])
        .await;
    assert_eq!(res.status(), 303, "current step accepted");
    assert!(location(&res).starts_with(REDIRECT));
    // The device remembers the step it was last used at.
    let devices = totp_devices(app).await;
    let stored: Value = serde_json::from_str(&devices[0].secret).unwrap();
    assert_eq!(stored["last_step"], t / 30);
}

async fn wrong_codes_lock_the_method(app: &TestApp) {
    let t = align_clock(app);
    let (key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    let phone = app_for(&key);
    let browser = Browser::new();
    let mut html = code_page(app, &browser, TOTP_CLIENT).await;
    for attempt in 1..=5 {
        let res = browser
            .submit(app, &html, &[("code", &wrong_code(&phone, t))])
            .await;
        assert_eq!(res.status(), 401, "attempt {attempt}");
        html = res.text().await.unwrap();
    }
    // Locked: even the right code is refused now, with when to retry.
    let res = browser
        .submit(app, &html, &[("code", &code_at(&phone, t + 30))])
        .await;
    assert_eq!(res.status(), 429);
    let html = res.text().await.unwrap();
    assert!(html.contains("Too many attempts"), "{html}");
    // In another browser too: the lock is per user and method.
    let other = Browser::new();
    let html = code_page(app, &other, TOTP_CLIENT).await;
    let res = other
        .submit(app, &html, &[("code", &code_at(&phone, t + 30))])
        .await;
    assert_eq!(res.status(), 429);
}

async fn an_optional_stage_is_skipped_without_a_device(app: &TestApp) {
    let browser = Browser::new();
    let to = browser
        .login(
            app,
            &authorize_url(app, OPTIONAL_TOTP_CLIENT, None, &[]),
            EMAIL,
            PASSWORD,
        )
        .await;
    assert!(
        to.starts_with(REDIRECT),
        "signed in after the password: {to}"
    );
    let claims = id_token_claims(app, OPTIONAL_TOTP_CLIENT, &to).await;
    assert_eq!(amr(&claims), ["pwd"]);
    assert!(totp_devices(app).await.is_empty(), "nothing enrolled");

    // Once enrolled (through another client), the same stage asks for a code.
    let t = align_clock(app);
    let (key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    let browser = Browser::new();
    let html = code_page(app, &browser, OPTIONAL_TOTP_CLIENT).await;
    let res = browser
        .submit(app, &html, &[("code", &code_at(&app_for(&key), t + 30))])
        .await;
    assert_eq!(res.status(), 303);
    let claims = id_token_claims(app, OPTIONAL_TOTP_CLIENT, &location(&res)).await;
    assert!(amr(&claims).contains(&"mfa".to_owned()));
}

/// "Use another method" on a page: posts the switch form for `method`.
async fn switch_method(app: &TestApp, browser: &Browser, html: &str, flow_url: &str, method: &str) {
    assert!(
        html.contains(&format!(r#"name="method" value="{method}""#)),
        "{method} offered: {html}"
    );
    let res = browser
        .http
        .post(format!("{flow_url}/method"))
        .header("origin", &app.issuer)
        .form(&[("csrf", field(html, "csrf").as_str()), ("method", method)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}

async fn a_recovery_code_replaces_the_app_once(app: &TestApp) {
    align_clock(app);
    let (_, codes, _) = enroll(app, &Browser::new(), TOTP_OR_RECOVERY_CLIENT).await;

    let browser = Browser::new();
    let (status, html, url) = to_second_factor(app, &browser, TOTP_OR_RECOVERY_CLIENT).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"autocomplete="one-time-code""#),
        "TOTP first: {html}"
    );
    switch_method(app, &browser, &html, &url, "recovery_code").await;
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(!html.contains(r#"autocomplete="one-time-code""#), "{html}");
    let res = browser.submit(app, &html, &[("code", &codes[3])]).await;
    assert_eq!(res.status(), 303, "recovery code accepted");
    let claims = id_token_claims(app, TOTP_OR_RECOVERY_CLIENT, &location(&res)).await;
    let amr = amr(&claims);
    assert!(
        amr.contains(&"pwd".to_owned()) && amr.contains(&"mfa".to_owned()),
        "{amr:?}"
    );

    // The same recovery code again: refused.
    let browser = Browser::new();
    let (_, html, url) = to_second_factor(app, &browser, TOTP_OR_RECOVERY_CLIENT).await;
    // The method used last comes first now.
    assert!(!html.contains(r#"autocomplete="one-time-code""#), "{html}");
    let html = if html.contains(r#"name="method" value="recovery_code""#) {
        switch_method(app, &browser, &html, &url, "recovery_code").await;
        browser.get(&url).await.text().await.unwrap()
    } else {
        html
    };
    let res = browser.submit(app, &html, &[("code", &codes[3])]).await;
    assert_eq!(res.status(), 401, "a used recovery code is refused");
    let res = browser
        .submit(app, &res.text().await.unwrap(), &[("code", &codes[4])])
        .await;
    assert_eq!(res.status(), 303, "another one works");
}

async fn the_seed_is_never_stored_in_clear(app: &TestApp) {
    align_clock(app);
    let (key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    let devices = totp_devices(app).await;
    assert_eq!(devices.len(), 1);
    let secret = &devices[0].secret;
    let compact = key.replace(' ', "");
    assert!(!secret.contains(&compact), "seed in clear: {secret}");
    assert!(!secret.contains(&key));
    assert!(!secret.to_lowercase().contains(&compact.to_lowercase()));
    let stored: Value = serde_json::from_str(secret).expect("JSON");
    let sealed = stored["seed"].as_str().expect("seed");
    assert_eq!(sealed.split('.').count(), 5, "a compact JWE: {sealed}");
    assert!(stored["last_step"].is_u64());
    // Nor in the debug output of the credential.
    assert!(!format!("{:?}", devices[0]).contains(&compact));
}

async fn an_abandoned_enrollment_leaves_nothing(app: &TestApp) {
    align_clock(app);
    let browser = Browser::new();
    let first = enrollment_page(app, &browser, TOTP_CLIENT).await;
    // Shown again: the same key (the user may have scanned it already).
    let res = browser.get(&first.url).await;
    let again = res.text().await.unwrap();
    assert_eq!(
        texts_of(&again, "code", "setup-key__value"),
        [first.key.as_str()]
    );
    // Abandoned: a new login in the same browser starts over.
    let second = enrollment_page(app, &browser, TOTP_CLIENT).await;
    assert_ne!(second.key, first.key, "a new key");
    assert!(totp_devices(app).await.is_empty());
    assert!(
        app.state
            .provider
            .ports
            .credentials
            .list_credentials(app.user.id, "recovery_code")
            .await
            .unwrap()
            .is_empty()
    );
    // The old page's key is useless now: its flow was never confirmed.
    let html = confirm(app, &browser, &second, "Laptop").await;
    assert!(html.contains("Save your recovery codes"));
    let devices = totp_devices(app).await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].label.as_deref(), Some("Laptop"));
}

async fn one_code_submitted_twice_at_once_passes_once(app: &TestApp) {
    let t = align_clock(app);
    let (key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    let code = code_at(&app_for(&key), t + 30);
    let (a, b) = (Browser::new(), Browser::new());
    let page_a = code_page(app, &a, TOTP_CLIENT).await;
    let page_b = code_page(app, &b, TOTP_CLIENT).await;
    let fields = [("code", code.as_str())];
    let (ra, rb) = tokio::join!(
        a.submit(app, &page_a, &fields),
        b.submit(app, &page_b, &fields),
    );
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [303, 401], "exactly one passes");
}

async fn a_user_may_have_several_named_devices(app: &TestApp) {
    let t = align_clock(app);
    let (phone_key, _, _) = enroll(app, &Browser::new(), TOTP_CLIENT).await;
    // Device management pages are not part of the login flow: the first
    // device is set aside so that the login enrolls a second one, then put
    // back (it stays sealed with this server's key).
    let phone = totp_devices(app).await.remove(0);
    let creds = &app.state.provider.ports.credentials;
    assert!(creds.delete_credential(phone.id).await.unwrap());
    app.clock.advance(time::Duration::seconds(1));
    let browser = Browser::new();
    let page = enrollment_page(app, &browser, TOTP_CLIENT).await;
    let code = code_at(&app_for(&page.key), now(app));
    let res = browser
        .submit(app, &page.html, &[("name", "Tablet"), ("code", &code)])
        .await;
    // The user has recovery codes already: none are made or shown again.
    assert_eq!(res.status(), 303, "signed in right after the confirmation");
    assert!(location(&res).starts_with(REDIRECT));
    creds.create_credential(&phone).await.unwrap();
    let mut labels: Vec<_> = totp_devices(app)
        .await
        .into_iter()
        .map(|d| d.label.unwrap())
        .collect();
    labels.sort();
    assert_eq!(labels, ["My phone", "Tablet"]);

    // Either device's code signs in; each tracks its own last step.
    for (key, t) in [(&page.key, t + 30), (&phone_key, t + 30)] {
        let browser = Browser::new();
        let html = code_page(app, &browser, TOTP_CLIENT).await;
        let res = browser
            .submit(app, &html, &[("code", &code_at(&app_for(key), t))])
            .await;
        assert_eq!(res.status(), 303);
    }
    let steps: Vec<_> = totp_devices(app)
        .await
        .iter()
        .map(|d| serde_json::from_str::<Value>(&d.secret).unwrap()["last_step"].clone())
        .collect();
    assert_eq!(steps, [t / 30 + 1, t / 30 + 1]);
}

matrix_with!(crate::options(), |_| {};

    forced_enrollment_shows_qr_and_key_then_recovery_codes,
    later_logins_ask_for_a_code_used_once_within_one_step,
    wrong_codes_lock_the_method,
    an_optional_stage_is_skipped_without_a_device,
    a_recovery_code_replaces_the_app_once,
    the_seed_is_never_stored_in_clear,
    an_abandoned_enrollment_leaves_nothing,
    one_code_submitted_twice_at_once_passes_once,
    a_user_may_have_several_named_devices,
);
