//! Each portal gets the assurance its own flow asks for: a single sign-on
//! session is a set of proofs, and every authorization runs the requesting
//! client's flow against them, asking only what is missing. The example
//! clients of `config/clients/` (marketplace, customer space, cloud console)
//! and the built-in account client, on both backends.

mod support;

use idp_core::client::{ClientSecretHash, TokenEndpointAuthMethod};
use serde_json::Value;
use std::collections::BTreeSet;
use support::*;

const EMAIL: &str = "casey@example.com";
const ACCOUNT: &str = "account";

/// The example portals of `config/clients/`, flows and themes as written
/// (but the customer space's way in through the partner's single sign-on,
/// which has tests of its own), with the test redirect URI and secret.
fn example_clients() -> Vec<idp_core::client::Client> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/clients");
    idp::config::load_client_files(Some(&dir), &idp_core::assurance::Levels::builtin())
        .expect("the example clients load")
        .into_iter()
        .map(|(_, mut c)| {
            c.redirect_uris = vec![REDIRECT.into()];
            c.auth_method = TokenEndpointAuthMethod::ClientSecretBasic;
            c.secret_hash = Some(ClientSecretHash::of(SECRET));
            c.login.flows.retain(|f| !f.federates());
            c
        })
        .collect()
}

async fn example_app(backend: Backend) -> TestApp {
    spawn_app_with(
        backend,
        AppOptions {
            clients: example_clients(),
            // WebAuthn (a method of the console) needs a host name.
            localhost: true,
            themes_dir: Some(repo_themes_dir()),
            ..AppOptions::default()
        },
    )
    .await
}

/// Where a client's authorization comes back to.
fn redirect_of(app: &TestApp, client: &str) -> String {
    if client == ACCOUNT {
        app.url("/account/callback")
    } else {
        REDIRECT.to_owned()
    }
}

/// A user of the test, with their authenticator app once enrolled.
struct Casey {
    totp_key: Option<String>,
    recovery_codes: Vec<String>,
}

/// What one authorization asked and gave.
#[derive(Debug)]
struct Journey {
    /// The pages answered, by step (`totp_enroll`, `recovery_codes` for the
    /// enrollment pages).
    asked: Vec<String>,
    /// The ID token's claims; `Null` when the authorization ended in an
    /// error (then `error` says which).
    claims: Value,
    error: Option<String>,
}

impl Journey {
    fn acr(&self) -> &str {
        self.claims["acr"].as_str().unwrap_or_default()
    }

    fn amr(&self) -> BTreeSet<String> {
        self.claims["amr"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn absolute(app: &TestApp, url: &str) -> String {
    if url.starts_with('/') {
        app.url(url)
    } else {
        url.to_owned()
    }
}

/// Runs an authorization at `client` in `browser` (with `extra` request
/// parameters), answering every page like the user would, and exchanges
/// the code.
async fn authorize(
    app: &TestApp,
    browser: &Browser,
    client: &str,
    extra: &[(&str, &str)],
    casey: &mut Casey,
) -> Journey {
    let (verifier, challenge) = pkce();
    let redirect = redirect_of(app, client);
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", "openid")
            .append_pair("state", "st")
            .append_pair("nonce", "n")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    let mut url: String = u.into();
    let mut asked = Vec::new();
    let mut shown: Option<String> = None;
    for step in 0..20 {
        if url.starts_with(&redirect) {
            if let Some(error) = query_param(&url, "error") {
                return Journey {
                    asked,
                    claims: Value::Null,
                    error: Some(error),
                };
            }
            let code = query_param(&url, "code").expect("a code");
            let claims = exchange(app, client, &code, &redirect, &verifier).await;
            return Journey {
                asked,
                claims,
                error: None,
            };
        }
        let html = match shown.take() {
            Some(h) => h,
            None => {
                let res = browser.get(&url).await;
                if res.status().is_redirection() {
                    url = absolute(app, &location(&res));
                    continue;
                }
                assert_eq!(res.status(), 200, "step {step}: {url}");
                res.text().await.unwrap()
            }
        };
        let form = Form::parse(&html).unwrap_or_else(|| panic!("step {step}: no form in {html}"));
        let page = form.action.rsplit('/').next().unwrap().to_owned();
        let fields: Vec<(String, String)> = if let Some(key) = totp_key(&html) {
            app.clock.advance(time::Duration::seconds(30));
            let code = totp_code(&key, clock_secs(app));
            casey.totp_key = Some(key);
            asked.push("totp_enroll".to_owned());
            vec![("code".into(), code)]
        } else if form.fields.iter().any(|(n, _)| n == "acknowledge") {
            casey.recovery_codes = html
                .split("recovery-codes__code\">")
                .skip(1)
                .map(|s| s.split('<').next().unwrap().trim().to_owned())
                .collect();
            asked.push("recovery_codes".to_owned());
            vec![("acknowledge".into(), "1".into())]
        } else {
            asked.push(page.clone());
            match page.as_str() {
                "identifier" => vec![("identifier".into(), EMAIL.into())],
                "password" => vec![("password".into(), PASSWORD.into())],
                "email_code" => vec![("code".into(), last_login_code(app, EMAIL))],
                "totp" => {
                    // A code is never accepted twice: the next time step.
                    app.clock.advance(time::Duration::seconds(30));
                    let key = casey.totp_key.as_deref().expect("an enrolled app");
                    vec![("code".into(), totp_code(key, clock_secs(app)))]
                }
                "recovery_code" => vec![("code".into(), casey.recovery_codes.remove(0))],
                other => panic!("unexpected step {other}: {html}"),
            }
        };
        let mut values = form.fields.clone();
        for (k, v) in &fields {
            values.retain(|(n, _)| n != k);
            values.push((k.clone(), v.clone()));
        }
        let res = browser
            .http
            .post(absolute(app, &form.action))
            .header("origin", &app.issuer)
            .form(&values)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            shown = Some(res.text().await.unwrap());
            continue;
        }
        assert_eq!(res.status(), 303, "step {step} ({page}) refused");
        url = absolute(app, &location(&res));
    }
    panic!("the login of {client} did not end; asked {asked:?}, at {url}")
}

/// The code exchange of `client` (the account client is public); the ID
/// token's claims.
async fn exchange(
    app: &TestApp,
    client: &str,
    code: &str,
    redirect: &str,
    verifier: &str,
) -> Value {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
        ("client_id", client),
    ];
    let mut req = reqwest::Client::new().post(app.url("/token"));
    if client != ACCOUNT {
        req = req.basic_auth(client, Some(SECRET));
    }
    let res = req.form(&form).send().await.unwrap();
    assert_eq!(res.status(), 200, "code exchange of {client}");
    let body: Value = res.json().await.unwrap();
    jwt_claims(body["id_token"].as_str().expect("id_token"))
}

/// Casey, with a password, an authenticator app enrolled (at the console's
/// first login, in a browser of its own) and recovery codes.
async fn casey(app: &TestApp) -> Casey {
    user_with_password(app, EMAIL, Some("Casey")).await;
    let mut casey = Casey {
        totp_key: None,
        recovery_codes: Vec::new(),
    };
    let j = authorize(app, &Browser::new(), "cloud-console", &[], &mut casey).await;
    assert_eq!(
        j.asked,
        ["identifier", "password", "totp_enroll", "recovery_codes"]
    );
    casey
}

/// What a first login at each client asks of Casey.
fn first_login(client: &str) -> Vec<&'static str> {
    match client {
        "marketplace" => vec!["identifier", "password", "totp", "email_code"],
        "customer-space" => vec!["identifier", "password", "email_code"],
        _ => vec!["identifier", "password", "totp"],
    }
}

/// After a session opened at `from`, what `to` asks, its acr and its amr.
fn transition(from: &str, to: &str) -> (Vec<&'static str>, &'static str, &'static [&'static str]) {
    const PWD_OTP: &[&str] = &["pwd", "otp", "mfa"];
    const PWD_EMAIL: &[&str] = &["pwd", "email_otp"];
    const ALL: &[&str] = &["pwd", "otp", "email_otp", "mfa"];
    match (from, to) {
        // The account pages and the console proved password and app.
        ("account" | "cloud-console", "marketplace") => (vec!["email_code"], "1", ALL),
        ("account" | "cloud-console", "customer-space") => (vec!["email_code"], "1", PWD_EMAIL),
        ("account", "cloud-console") => (vec![], "2", PWD_OTP),
        ("cloud-console", "account") => (vec![], "1", PWD_OTP),
        // The marketplace proved password, app and an emailed code (a new
        // browser): the customer space's code stage relies on it.
        ("marketplace", "account") => (vec![], "1", PWD_OTP),
        ("marketplace", "customer-space") => (vec![], "1", PWD_EMAIL),
        ("marketplace", "cloud-console") => (vec![], "2", PWD_OTP),
        // The customer space proved password and an emailed code: the app
        // is asked wherever it is wanted, nothing else.
        ("customer-space", "account") => (vec!["totp"], "1", PWD_OTP),
        ("customer-space", "marketplace") => (vec!["totp"], "1", ALL),
        ("customer-space", "cloud-console") => (vec!["totp"], "2", PWD_OTP),
        other => panic!("no expectation for {other:?}"),
    }
}

const CLIENTS: [&str; 4] = ["account", "marketplace", "customer-space", "cloud-console"];

/// Every ordered pair of the example clients and the account client: a
/// session opened at X, then an authorization at Y in the same browser asks
/// exactly what Y's flow still needs; acr and amr say what Y's flow got.
async fn each_pair_asks_only_what_the_second_flow_misses(backend: Backend) {
    let app = example_app(backend).await;
    let mut casey = casey(&app).await;
    for from in CLIENTS {
        for to in CLIENTS.iter().copied().filter(|c| *c != from) {
            let browser = Browser::new();
            let first = authorize(&app, &browser, from, &[], &mut casey).await;
            assert_eq!(first.asked, first_login(from), "{from} first");
            let second = authorize(&app, &browser, to, &[], &mut casey).await;
            let (asked, acr, amr) = transition(from, to);
            assert_eq!(second.asked, asked, "{from} then {to}: pages");
            assert_eq!(second.acr(), acr, "{from} then {to}: acr");
            assert_eq!(second.amr(), set(amr), "{from} then {to}: amr");
            assert_eq!(
                second.claims["sid"], first.claims["sid"],
                "{from} then {to}: one session"
            );
        }
    }
    app.cleanup().await;
}

/// The bypass reported: a password-only session at the account pages gave
/// every portal a code at once. Now each runs its own flow.
async fn the_account_login_does_not_open_the_portals(backend: Backend) {
    let app = example_app(backend).await;
    user_with_password(&app, EMAIL, None).await;
    let mut casey = Casey {
        totp_key: None,
        recovery_codes: Vec::new(),
    };
    // The console last: it enrolls an authenticator app, which the account
    // pages would then ask too.
    for portal in ["customer-space", "marketplace", "cloud-console"] {
        let browser = Browser::new();
        let account = authorize(&app, &browser, ACCOUNT, &[], &mut casey).await;
        assert_eq!(account.asked, ["identifier", "password"]);
        assert_eq!(account.amr(), set(&["pwd"]));
        let j = authorize(&app, &browser, portal, &[], &mut casey).await;
        let expected: &[&str] = match portal {
            "customer-space" => &["email_code"],
            "marketplace" => &["email_code"],
            _ => &["totp_enroll", "recovery_codes"],
        };
        assert_eq!(j.asked, expected, "{portal} runs its own flow");
        let amr = j.amr();
        assert!(amr.contains("pwd"), "{portal}: {amr:?}");
        assert!(amr.len() >= 2, "{portal}: its own step is in amr: {amr:?}");
    }
    app.cleanup().await;
}

/// The bypass reported: level "2" reached at the customer space was taken
/// for the marketplace's level "2". Now the marketplace's step-up flow asks
/// its second factor.
async fn an_acr_reached_elsewhere_is_not_this_clients(backend: Backend) {
    let app = example_app(backend).await;
    let mut casey = casey(&app).await;
    let browser = Browser::new();
    let space = authorize(&app, &browser, "customer-space", &[], &mut casey).await;
    assert_eq!(space.asked, ["identifier", "password", "email_code"]);
    assert_eq!(space.acr(), "1");
    let j = authorize(
        &app,
        &browser,
        "marketplace",
        &[("acr_values", "2")],
        &mut casey,
    )
    .await;
    assert_eq!(j.asked, ["totp"], "the step-up flow's second factor");
    assert_eq!(j.acr(), "2");
    assert_eq!(j.amr(), set(&["pwd", "otp", "mfa"]));
    app.cleanup().await;
}

/// `prompt=none` with a session lacking a stage of the client's flow:
/// `interaction_required`, and nothing is asked.
async fn prompt_none_with_a_missing_stage_is_interaction_required(backend: Backend) {
    let app = example_app(backend).await;
    let mut casey = casey(&app).await;
    let browser = Browser::new();
    authorize(&app, &browser, "customer-space", &[], &mut casey).await;
    let j = authorize(
        &app,
        &browser,
        "cloud-console",
        &[("prompt", "none")],
        &mut casey,
    )
    .await;
    assert_eq!(j.error.as_deref(), Some("interaction_required"));
    assert!(j.asked.is_empty());
    // A client whose flow the session satisfies answers at once.
    let j = authorize(
        &app,
        &browser,
        "customer-space",
        &[("prompt", "none")],
        &mut casey,
    )
    .await;
    assert_eq!(j.error, None);
    assert!(j.asked.is_empty());
    app.cleanup().await;
}

/// `max_age` applies to each proof the flow relies on: the password and app
/// proved 20 minutes ago are asked again, the emailed code of 5 minutes ago
/// is not.
async fn max_age_holds_per_proof(backend: Backend) {
    let app = example_app(backend).await;
    let mut casey = casey(&app).await;
    let browser = Browser::new();
    let console = authorize(&app, &browser, "cloud-console", &[], &mut casey).await;
    assert_eq!(console.asked, ["identifier", "password", "totp"]);
    app.clock.advance(time::Duration::minutes(15));
    let space = authorize(&app, &browser, "customer-space", &[], &mut casey).await;
    assert_eq!(space.asked, ["email_code"]);
    app.clock.advance(time::Duration::minutes(5));
    let j = authorize(
        &app,
        &browser,
        "marketplace",
        &[("max_age", "600")],
        &mut casey,
    )
    .await;
    assert_eq!(
        j.asked,
        ["password", "totp"],
        "the stale proofs are asked again (the user is known), the fresh code is not"
    );
    assert_eq!(j.amr(), set(&["pwd", "otp", "email_otp", "mfa"]));
    let auth_time = j.claims["auth_time"].as_i64().unwrap();
    assert!(
        clock_secs(&app) as i64 - auth_time <= 600,
        "auth_time is within max_age"
    );
    app.cleanup().await;
}

/// The login.failed events of `user`: the wrong answers that were checked.
async fn checked_failures(app: &TestApp, user: idp_core::domain::UserId) -> usize {
    app.state
        .provider
        .ports
        .audit
        .list_for_user(user, 200)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == "login.failed")
        .count()
}

/// The password page of a new login at `conf` for `email` in `browser`.
async fn password_page(app: &TestApp, browser: &Browser, email: &str) -> Form {
    let (res, _) = browser
        .follow(app, &authorize_url(app, "conf", None, &[]))
        .await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("identifier", email)]).await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let form = Form::parse(&html).unwrap();
    assert!(form.action.ends_with("/password"), "{html}");
    form
}

/// Posts `password` on `form` from `browser`; the status.
async fn post_password(app: &TestApp, http: reqwest::Client, form: Form, password: &str) -> u16 {
    let mut values = form.fields.clone();
    values.retain(|(n, _)| n != "password");
    values.push(("password".into(), password.into()));
    http.post(app.url(&form.action))
        .header("origin", &app.issuer)
        .form(&values)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Forty wrong passwords sent at once, on one login flow and then on forty
/// flows of one account: each attempt is counted before the password is
/// checked, so at most the limit (5) are checked; the rest are refused as
/// locked (429), and so is the right password afterwards.
async fn concurrent_guesses_are_checked_at_most_the_limit(backend: Backend) {
    let app = spawn_app(backend).await;
    let app = std::sync::Arc::new(app);
    for (email, flows) in [("one-flow@example.com", 1), ("many-flows@example.com", 40)] {
        let user = user_with_password(&app, email, None).await;
        let mut pages = Vec::new();
        for _ in 0..flows {
            let browser = Browser::new();
            let form = password_page(&app, &browser, email).await;
            pages.push((browser.http.clone(), form));
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(40));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (http, form) = pages[i % pages.len()].clone();
                let (app, barrier) = (app.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    post_password(&app, http, form, "wrong-password-123").await
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap());
        }
        let locked = statuses.iter().filter(|s| **s == 429).count();
        let checked = checked_failures(&app, user.id).await;
        assert!(checked <= 5, "{email}: {checked} wrong passwords checked");
        assert!(checked >= 1, "{email}: some were checked");
        assert_eq!(
            locked + checked,
            40,
            "{email}: every other one locked: {statuses:?}"
        );
        // The right password is refused too while locked.
        let browser = Browser::new();
        let form = password_page(&app, &browser, email).await;
        assert_eq!(
            post_password(&app, browser.http.clone(), form, PASSWORD).await,
            429
        );
    }
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.cleanup().await,
        Err(_) => panic!("the app is still shared"),
    }
}

on_both_backends!(
    concurrent_guesses_are_checked_at_most_the_limit,
    each_pair_asks_only_what_the_second_flow_misses,
    the_account_login_does_not_open_the_portals,
    an_acr_reached_elsewhere_is_not_this_clients,
    prompt_none_with_a_missing_stage_is_interaction_required,
    max_age_holds_per_proof,
);
