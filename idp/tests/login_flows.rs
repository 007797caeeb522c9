//! Flows of several shapes over HTTP, as the runner plays them: the
//! new-device check (an emailed code once per browser), switching method
//! ("use another method", remembered next time), and acr step-up from an
//! existing session (only the missing steps are asked; `prompt=none` gets
//! `interaction_required`).

mod support;

use idp_core::notify::{Message, Recipient};
use serde_json::Value;
use support::*;

const NEW_DEVICE: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", {"any": "email_code", "when": "unknown_device"}]}]"#;
const EMAIL_OR_SMS: &str = r#"[{"name": "d", "acr": "checked", "steps": ["identifier", "password", "email_code|sms_code"]}]"#;
const STEP_UP: &str = r#"[
    {"name": "basic", "acr": "1", "steps": ["identifier", "password"]},
    {"name": "strong", "acr": "checked", "steps": ["identifier", "password", "email_code"]}
]"#;

async fn app_with(backend: Backend, clients: Vec<(&str, &str)>) -> TestApp {
    let clients = clients
        .into_iter()
        .map(|(id, flows)| client_with_flows(id, flows))
        .collect();
    spawn_app_with(
        backend,
        AppOptions {
            clients,
            ..AppOptions::default()
        },
    )
    .await
}

/// The newest login code sent to `to`.
fn last_code(app: &TestApp, to: &Recipient) -> String {
    match app.outbox.last_to(to).expect("a message was sent").message {
        Message::LoginCode { code, .. } => code,
        other => panic!("not a login code: {other:?}"),
    }
}

fn alice_email() -> Recipient {
    Recipient::Email("Alice@Example.com".into())
}

/// Goes from an authorization URL through identifier and password, and
/// returns the next page (status, html, flow URL) — or the redirect to the
/// client when nothing else is asked.
async fn after_password(
    app: &TestApp,
    browser: &Browser,
    url: &str,
) -> Result<(u16, String), String> {
    let (res, _) = browser.follow(app, url).await;
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "password accepted");
    let to = location(&res);
    if !to.starts_with('/') {
        return Err(to);
    }
    let (res, _) = browser.follow(app, &app.url(&to)).await;
    Ok((res.status().as_u16(), res.text().await.unwrap()))
}

async fn submit_code(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    code: &str,
) -> reqwest::Response {
    browser.submit(app, html, &[("code", code)]).await
}

async fn id_token_claims(app: &TestApp, client: &str, callback: &str, verifier: &str) -> Value {
    use base64::Engine;
    let code = query_param(callback, "code").expect("a code");
    let (status, t) = token_request(
        app,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let payload = t["id_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_owned();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn new_device_gets_an_emailed_code_once(backend: Backend) {
    let app = app_with(backend, vec![("shop", NEW_DEVICE)]).await;
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let (status, html) = after_password(
        &app,
        &browser,
        &authorize_url(&app, "shop", Some(&challenge), &[]),
    )
    .await
    .expect("a code page");
    assert_eq!(status, 200);
    assert!(html.contains("autocomplete=\"one-time-code\""), "{html}");
    let res = submit_code(&app, &browser, &html, &last_code(&app, &alice_email())).await;
    let callback = location(&res);
    let claims = id_token_claims(&app, "shop", &callback, &verifier).await;
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        amr == ["pwd", "email_otp"],
        "an emailed code is reported as such, without mfa: {amr:?}"
    );
    let sent = app.outbox.messages().len();
    // The same browser, a fresh login: the device is known, no code.
    let (_, challenge) = pkce();
    let done = after_password(
        &app,
        &browser,
        &authorize_url(&app, "shop", Some(&challenge), &[("prompt", "login")]),
    )
    .await;
    let callback = done.expect_err("no further step from a known device");
    assert!(query_param(&callback, "code").is_some());
    assert_eq!(
        app.outbox.messages().len(),
        sent,
        "no code sent to a known device"
    );
    // Another browser is a new device.
    let other = Browser::new();
    let (_, challenge) = pkce();
    let (status, html) = after_password(
        &app,
        &other,
        &authorize_url(&app, "shop", Some(&challenge), &[]),
    )
    .await
    .expect("a code page");
    assert_eq!(status, 200);
    assert!(html.contains("name=\"code\""));
    // Revoking the device makes it unknown again.
    let devices = app
        .state
        .provider
        .ports
        .devices
        .list_devices(app.user.id)
        .await
        .unwrap();
    assert_eq!(devices.len(), 1);
    app.state
        .provider
        .ports
        .devices
        .revoke_device(devices[0].id, app.state.provider.clock.now())
        .await
        .unwrap();
    let (_, challenge) = pkce();
    let (_, html) = after_password(
        &app,
        &browser,
        &authorize_url(&app, "shop", Some(&challenge), &[("prompt", "login")]),
    )
    .await
    .expect("a code page again");
    assert!(html.contains("name=\"code\""));
    app.cleanup().await;
}

async fn switching_method_is_remembered(backend: Backend) {
    let app = app_with(backend, vec![("space", EMAIL_OR_SMS)]).await;
    app.state
        .provider
        .ports
        .users
        .set_phone(app.user.id, Some("+33612345678"), true)
        .await
        .unwrap();
    let browser = Browser::new();
    let (_, challenge) = pkce();
    let (_, html) = after_password(
        &app,
        &browser,
        &authorize_url(&app, "space", Some(&challenge), &[]),
    )
    .await
    .expect("a code page");
    // The email code is first (listed first, never used); SMS is offered as another method.
    assert!(html.contains("value=\"sms_code\""), "SMS offered: {html}");
    let form = Form::parse(&html).unwrap();
    assert!(form.action.ends_with("/email_code"));
    // Switch to SMS.
    let method_form = html
        .split("<form")
        .find(|f| f.contains("value=\"sms_code\""))
        .map(|f| format!("<form{f}"))
        .unwrap();
    let res = browser.submit(&app, &method_form, &[]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(&app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    assert!(
        Form::parse(&html).unwrap().action.ends_with("/sms_code"),
        "{html}"
    );
    let code = last_code(&app, &Recipient::Phone("+33612345678".into()));
    let res = submit_code(&app, &browser, &html, &code).await;
    assert!(query_param(&location(&res), "code").is_some());
    // Next time, SMS comes first.
    let other = Browser::new();
    let (_, challenge) = pkce();
    let (_, html) = after_password(
        &app,
        &other,
        &authorize_url(&app, "space", Some(&challenge), &[]),
    )
    .await
    .expect("a code page");
    assert!(
        Form::parse(&html).unwrap().action.ends_with("/sms_code"),
        "last used method first"
    );
    assert!(html.contains("value=\"email_code\""));
    app.cleanup().await;
}

async fn acr_step_up_asks_only_the_missing_step(backend: Backend) {
    let app = app_with(backend, vec![("bank", STEP_UP)]).await;
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let callback = after_password(
        &app,
        &browser,
        &authorize_url(&app, "bank", Some(&challenge), &[]),
    )
    .await
    .expect_err("basic flow ends at the password");
    let claims = id_token_claims(&app, "bank", &callback, &verifier).await;
    assert_eq!(claims["acr"], "1");
    // acr_values=checked silently: the session does not reach it.
    let (_, challenge) = pkce();
    let res = browser
        .get(&authorize_url(
            &app,
            "bank",
            Some(&challenge),
            &[("acr_values", "checked"), ("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("interaction_required")
    );
    // Interactively: straight to the emailed code, no identifier or password.
    let (verifier, challenge) = pkce();
    let (res, _) = browser
        .follow(
            &app,
            &authorize_url(&app, "bank", Some(&challenge), &[("acr_values", "checked")]),
        )
        .await;
    let html = res.text().await.unwrap();
    assert!(
        Form::parse(&html).unwrap().action.ends_with("/email_code"),
        "step-up asks the missing step only: {html}"
    );
    let res = submit_code(&app, &browser, &html, &last_code(&app, &alice_email())).await;
    let claims = id_token_claims(&app, "bank", &location(&res), &verifier).await;
    assert_eq!(claims["acr"], "checked");
    let amr: Vec<&str> = claims["amr"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        amr == ["pwd", "email_otp"],
        "an emailed code is reported as such, without mfa: {amr:?}"
    );
    // Now both levels are satisfied silently.
    for acr in ["1", "checked"] {
        let (_, challenge) = pkce();
        let res = browser
            .get(&authorize_url(
                &app,
                "bank",
                Some(&challenge),
                &[("acr_values", acr), ("prompt", "none")],
            ))
            .await;
        assert!(query_param(&location(&res), "code").is_some(), "acr {acr}");
    }
    app.cleanup().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Backend::Sqlite).await; }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(super::Backend::Postgres).await; }
            )*
        }
    };
}

both!(
    new_device_gets_an_emailed_code_once,
    switching_method_is_remembered,
    acr_step_up_asks_only_the_missing_step,
);
