//! The device authorization grant (RFC 8628) as a command-line tool and a
//! browser see it: the device asks for codes and polls; the user types the
//! code on the user-code page, confirms, signs in with the requesting
//! client's flow (stepping up a weaker session) and approves or denies.
//! Polling too fast slows the device down, an expired code is refused,
//! guessing user codes is throttled, an approved code gives tokens once,
//! and a client not allowed the grant is refused.

mod support;

use serde_json::Value;
use support::*;

/// Public, device grant, `identifier, password` (acr `1`).
const CLI: &str = "cli";
/// Public, device grant, `identifier, password, email_code` (acr `checked`).
const CLI_MFA: &str = "cli_mfa";
const EMAIL: &str = "alice@example.com";

fn device_client(id: &str, flows: &str) -> idp_core::client::Client {
    let mut c = client_with_flows(id, flows);
    c.auth_method = idp_core::client::TokenEndpointAuthMethod::None;
    c.secret_hash = None;
    c.allow_authorization_code = false;
    c.allow_client_credentials = false;
    c.redirect_uris = Vec::new();
    c.name = format!("Tool {id}");
    c.protocol.allow_device_code = true;
    c
}

fn options() -> AppOptions {
    AppOptions {
        clients: vec![
            device_client(
                CLI,
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
            ),
            device_client(
                CLI_MFA,
                r#"[{"name": "d", "acr": "checked", "steps": ["identifier", "password", "email_code"]}]"#,
            ),
        ],
        ..AppOptions::default()
    }
}

/// `/device_authorization` for a public client: status and body.
async fn device_request(app: &TestApp, client: &str, scope: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url("/device_authorization"))
        .form(&[("client_id", client), ("scope", scope)])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A device authorization that must succeed: (device_code, user_code).
async fn start(app: &TestApp, client: &str) -> (String, String) {
    let (status, body) = device_request(app, client, "openid profile offline_access").await;
    assert_eq!(status, 200, "{body}");
    (
        body["device_code"].as_str().unwrap().to_owned(),
        body["user_code"].as_str().unwrap().to_owned(),
    )
}

/// A poll of the token endpoint as public `client`: status and body.
async fn poll(app: &TestApp, client: &str, device_code: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", client),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A poll that must fail with `error`.
async fn poll_fails(app: &TestApp, client: &str, device_code: &str, error: &str) {
    let (status, body) = poll(app, client, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some(error)),
        "{body}"
    );
}

fn wait_interval(app: &TestApp, secs: i64) {
    app.clock.advance(time::Duration::seconds(secs));
}

/// Opens `verification_uri_complete` and sends the prefilled code: the
/// response to that POST.
async fn type_code(app: &TestApp, browser: &Browser, user_code: &str) -> reqwest::Response {
    let res = browser
        .get(&app.url(&format!("/device?user_code={user_code}")))
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!(r#"value="{user_code}""#)), "{html}");
    browser.submit(app, &html, &[]).await
}

/// Types the code, checks the confirmation page (client and scopes), and
/// confirms: where the browser is sent (the login flow, or the approval
/// when the session already satisfies the client's flow).
async fn confirm(app: &TestApp, browser: &Browser, user_code: &str, client: &str) -> String {
    let res = type_code(app, browser, user_code).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains(&format!("Tool {client}")), "{html}");
    assert!(html.contains("<code>offline_access</code>"), "{html}");
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303);
    location(&res)
}

/// Identifier and password on the login pages from `to`: where the last
/// submission sends the browser.
async fn password_login(app: &TestApp, browser: &Browser, to: &str) -> String {
    assert!(to.starts_with("/login/"), "{to}");
    let (res, _) = browser.follow(app, &app.url(to)).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("identifier", EMAIL)]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[("password", PASSWORD)]).await;
    assert_eq!(res.status(), 303, "password accepted");
    location(&res)
}

/// The approval page at `to` (after sign-in), and the decision pressed:
/// the final page.
async fn decide(app: &TestApp, browser: &Browser, to: &str, decision: &str) -> String {
    assert!(to.starts_with(&app.url("/device/approve?")), "{to}");
    let res = browser.get(to).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Allow this device?"), "{html}");
    let res = browser.press(app, &html, "decision", decision).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

async fn whole_grant_signs_a_device_in(app: &TestApp) {
    let (status, body) = device_request(app, CLI, "openid profile offline_access").await;
    assert_eq!(status, 200, "{body}");
    let user_code = body["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert!(
        user_code.chars().enumerate().all(|(i, c)| if i == 4 {
            c == '-'
        } else {
            "BCDFGHJKLMNPQRSTVWXZ".contains(c)
        }),
        "{user_code}"
    );
    assert_eq!(body["verification_uri"], app.url("/device"));
    assert_eq!(
        body["verification_uri_complete"],
        app.url(&format!("/device?user_code={user_code}"))
    );
    assert_eq!(
        (body["expires_in"].as_u64(), body["interval"].as_u64()),
        (Some(600), Some(5))
    );
    let device_code = body["device_code"].as_str().unwrap();
    assert!(device_code.len() >= 43);

    poll_fails(app, CLI, device_code, "authorization_pending").await;
    // Opening the link alone approves nothing.
    let browser = Browser::new();
    let page = browser
        .get(&app.url(&format!("/device?user_code={user_code}")))
        .await;
    assert_eq!(page.status(), 200);
    wait_interval(app, 5);
    poll_fails(app, CLI, device_code, "authorization_pending").await;

    // The user types it in lower case without the dash: the same code.
    let typed = user_code.replace('-', "").to_lowercase();
    let to = confirm(app, &browser, &typed, CLI).await;
    // Claimed: another browser typing the code is told it is unknown.
    let other = Browser::new();
    let res = type_code(app, &other, user_code).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("This code is wrong"));

    let to = password_login(app, &browser, &to).await;
    // Signed in, not yet approved.
    wait_interval(app, 5);
    poll_fails(app, CLI, device_code, "authorization_pending").await;
    let done = decide(app, &browser, &to, "approve").await;
    assert!(done.contains("You may return to your device"), "{done}");

    wait_interval(app, 5);
    let (status, tokens) = poll(app, CLI, device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], CLI);
    assert_eq!(id["sub"], app.user.id.to_string());
    assert_eq!(id["acr"], "1");
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    assert!(id["sid"].as_str().is_some_and(|s| !s.is_empty()), "{id}");
    assert!(id["auth_time"].is_i64(), "{id}");
    assert!(id.get("nonce").is_none());
    let info = userinfo(app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], app.user.id.to_string());

    // The refresh token works as for a code.
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", CLI),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Used up: a replay of the device code gets nothing, and the user code
    // is spent.
    wait_interval(app, 5);
    poll_fails(app, CLI, device_code, "invalid_grant").await;
    let res = type_code(app, &browser, user_code).await;
    assert_eq!(res.status(), 400);
}

async fn polling_too_fast_slows_the_device_down(app: &TestApp) {
    let (device_code, _) = start(app, CLI).await;
    poll_fails(app, CLI, &device_code, "authorization_pending").await;
    poll_fails(app, CLI, &device_code, "slow_down").await;
    // The interval is now 10 s: 6 s later is still too fast, and makes it 15.
    wait_interval(app, 6);
    poll_fails(app, CLI, &device_code, "slow_down").await;
    wait_interval(app, 14);
    poll_fails(app, CLI, &device_code, "slow_down").await;
    wait_interval(app, 20);
    poll_fails(app, CLI, &device_code, "authorization_pending").await;
    wait_interval(app, 19);
    poll_fails(app, CLI, &device_code, "slow_down").await;
}

async fn an_expired_code_is_refused(app: &TestApp) {
    let (device_code, user_code) = start(app, CLI).await;
    wait_interval(app, 601);
    poll_fails(app, CLI, &device_code, "expired_token").await;
    let browser = Browser::new();
    let res = type_code(app, &browser, &user_code).await;
    assert_eq!(res.status(), 400);
    let res = browser
        .get(&app.url(&format!("/device/qr?user_code={user_code}")))
        .await;
    assert_eq!(res.status(), 404);
}

async fn wrong_user_codes_lock_the_browser(app: &TestApp) {
    let (device_code, user_code) = start(app, CLI).await;
    let browser = Browser::new();
    let page = browser.get(&app.url("/device")).await.text().await.unwrap();
    for wrong in [
        "BBBB-BBBB",
        "not a code",
        "CCCC-CCCC",
        "BCDF-GHJA",
        "ZZZZ-ZZZZ",
    ] {
        let wrong = if wrong == user_code {
            "DDDD-DDDD"
        } else {
            wrong
        };
        let res = browser.submit(app, &page, &[("user_code", wrong)]).await;
        assert_eq!(res.status(), 400, "{wrong}");
        assert!(res.text().await.unwrap().contains("This code is wrong"));
    }
    // Locked: even the right code is refused, and nothing was claimed.
    let res = browser
        .submit(app, &page, &[("user_code", &user_code)])
        .await;
    assert_eq!(res.status(), 429);
    assert!(res.text().await.unwrap().contains("Too many wrong codes"));
    poll_fails(app, CLI, &device_code, "authorization_pending").await;
    // Nor does the QR code tell a locked browser whether a code is live.
    let res = browser
        .get(&app.url(&format!("/device/qr?user_code={user_code}")))
        .await;
    assert_eq!(res.status(), 404);
    // For the lock's window (the device code still lives).
    wait_interval(app, 300);
    let res = browser
        .submit(app, &page, &[("user_code", &user_code)])
        .await;
    assert_eq!(res.status(), 429);
    // Another browser from the same address still may, within the
    // address's own limit.
    let other = Browser::new();
    let res = type_code(app, &other, &user_code).await;
    assert_eq!(res.status(), 200);
}

async fn the_code_page_runs_the_clients_second_factor(app: &TestApp) {
    let (device_code, user_code) = start(app, CLI_MFA).await;
    let browser = Browser::new();
    let to = confirm(app, &browser, &user_code, CLI_MFA).await;
    let to = password_login(app, &browser, &to).await;
    assert!(to.starts_with("/login/"), "the emailed code follows: {to}");
    let (res, _) = browser.follow(app, &app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("one-time-code"), "{html}");
    // A wrong code is refused; the right one passes.
    let res = browser.submit(app, &html, &[("code", "000000")]).await;
    assert_eq!(res.status(), 401);
    let code = last_login_code(app, "Alice@Example.com");
    let res = browser.submit(app, &html, &[("code", &code)]).await;
    assert_eq!(res.status(), 303);
    decide(app, &browser, &location(&res), "approve").await;
    let (status, tokens) = poll(app, CLI_MFA, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "checked");
    let amr: Vec<&str> = id["amr"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(amr.contains(&"pwd") && amr.len() >= 2, "{amr:?}");
}

async fn a_weaker_session_steps_up(app: &TestApp) {
    // Signed in at a portal with a password only.
    let browser = Browser::new();
    let to = browser
        .login(app, &authorize_url(app, "conf", None, &[]), EMAIL, PASSWORD)
        .await;
    let portal = id_token_claims(app, "conf", &to).await;
    // The device's client asks for an emailed code too: only that is asked.
    let (device_code, user_code) = start(app, CLI_MFA).await;
    let to = confirm(app, &browser, &user_code, CLI_MFA).await;
    let (res, _) = browser.follow(app, &app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(
        html.contains("one-time-code"),
        "step-up, not a skip: {html}"
    );
    assert!(!html.contains(r#"autocomplete="current-password""#));
    let res = browser
        .submit(
            app,
            &html,
            &[("code", &last_login_code(app, "Alice@Example.com"))],
        )
        .await;
    assert_eq!(res.status(), 303);
    decide(app, &browser, &location(&res), "approve").await;
    let (status, tokens) = poll(app, CLI_MFA, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    let id = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["acr"], "checked");
    assert_eq!(id["sid"], portal["sid"], "the same session");

    // Now the session satisfies the flow: a second device goes straight to
    // the approval, which is still asked.
    let (device_code, user_code) = start(app, CLI_MFA).await;
    let to = confirm(app, &browser, &user_code, CLI_MFA).await;
    let done = decide(app, &browser, &to, "approve").await;
    assert!(done.contains("You may return to your device"));
    let (status, _) = poll(app, CLI_MFA, &device_code).await;
    assert_eq!(status, 200);
}

async fn a_denied_device_gets_access_denied(app: &TestApp) {
    let (device_code, user_code) = start(app, CLI).await;
    let browser = Browser::new();
    let to = confirm(app, &browser, &user_code, CLI).await;
    let to = password_login(app, &browser, &to).await;
    let done = decide(app, &browser, &to, "deny").await;
    assert!(done.contains("was refused access"), "{done}");
    poll_fails(app, CLI, &device_code, "access_denied").await;
    wait_interval(app, 5);
    poll_fails(app, CLI, &device_code, "invalid_grant").await;
}

async fn an_approved_code_gives_tokens_once(app: &TestApp) {
    let (device_code, user_code) = start(app, CLI).await;
    let browser = Browser::new();
    let to = confirm(app, &browser, &user_code, CLI).await;
    let to = password_login(app, &browser, &to).await;
    // Another client presenting the code learns nothing.
    let (status, body) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &device_code),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unauthorized_client");
    // The approval page is this browser's only.
    let res = Browser::new().get(&to).await;
    assert_eq!(res.status(), 400);
    decide(app, &browser, &to, "approve").await;
    let (a, b) = tokio::join!(poll(app, CLI, &device_code), poll(app, CLI, &device_code));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
    let loser = if a.0 == 400 { a.1 } else { b.1 };
    assert_eq!(loser["error"], "invalid_grant");
}

async fn two_browsers_confirming_one_code_have_one_winner(app: &TestApp) {
    let (_, user_code) = start(app, CLI).await;
    let (a, b) = (Browser::new(), Browser::new());
    // Both saw the pending request; both confirm at once.
    let mut pages = Vec::new();
    for browser in [&a, &b] {
        let res = type_code(app, browser, &user_code).await;
        assert_eq!(res.status(), 200);
        pages.push(res.text().await.unwrap());
    }
    let (ra, rb) = tokio::join!(a.submit(app, &pages[0], &[]), b.submit(app, &pages[1], &[]));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [303, 400], "exactly one browser claims the code");
    let (winner, page, loser) = if ra.status() == 303 {
        (&a, &pages[0], &b)
    } else {
        (&b, &pages[1], &a)
    };
    // The winner may confirm again (back button); the loser may not.
    let res = winner.submit(app, page, &[]).await;
    assert_eq!(res.status(), 303);
    let res = type_code(app, loser, &user_code).await;
    assert_eq!(res.status(), 400);
}

async fn a_client_without_the_grant_is_refused(app: &TestApp) {
    let res = reqwest::Client::new()
        .post(app.url("/device_authorization"))
        .basic_auth("conf", Some(SECRET))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized_client");
    let (status, body) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", "whatever"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    // Bad requests of an allowed client: an unknown scope, no client.
    let (status, body) = device_request(app, CLI, "openid unknown").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, body) = device_request(app, "nobody", "openid").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    poll_fails(app, CLI, "not-a-device-code", "invalid_grant").await;

    // Another device client presenting CLI's code learns nothing and
    // changes nothing: CLI's first poll is still on time.
    let (device_code, user_code) = start(app, CLI).await;
    poll_fails(app, CLI_MFA, &device_code, "invalid_grant").await;
    poll_fails(app, CLI, &device_code, "authorization_pending").await;
    // Hostile user codes: refused as wrong, the right one still works.
    let browser = Browser::new();
    let page = browser.get(&app.url("/device")).await.text().await.unwrap();
    let long = "B".repeat(10_000);
    for hostile in [long.as_str(), "BCDF-GHJK\u{0}", "<script>"] {
        let res = browser.submit(app, &page, &[("user_code", hostile)]).await;
        assert_eq!(res.status(), 400);
        let html = res.text().await.unwrap();
        assert!(!html.contains("<script>"), "escaped");
    }
    let res = type_code(app, &browser, &user_code).await;
    assert_eq!(res.status(), 200);
    // A form without the CSRF token is refused.
    let res = reqwest::Client::new()
        .post(app.url("/device"))
        .header("origin", &app.issuer)
        .form(&[("user_code", user_code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

async fn the_qr_code_holds_the_complete_link(app: &TestApp) {
    let (_, user_code) = start(app, CLI).await;
    let res = reqwest::get(app.url(&format!("/device/qr?user_code={user_code}")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "image/svg+xml; charset=utf-8"
    );
    let svg = res.text().await.unwrap();
    assert!(svg.contains("<svg") && svg.contains("<path d=\"M"), "{svg}");
    for unknown in ["BCDF-GHJK", "", "x"] {
        let res = reqwest::get(app.url(&format!("/device/qr?user_code={unknown}")))
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{unknown}");
    }
}

async fn discovery_names_the_device_endpoint(app: &TestApp) {
    let doc = discovery(app).await;
    assert_eq!(
        doc["device_authorization_endpoint"],
        app.url("/device_authorization")
    );
    assert!(
        doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("urn:ietf:params:oauth:grant-type:device_code"))
    );
}

async fn discovery_is_silent_without_device_clients(app: &TestApp) {
    let doc = discovery(app).await;
    assert!(doc.get("device_authorization_endpoint").is_none());
    assert!(
        !doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from("urn:ietf:params:oauth:grant-type:device_code"))
    );
}

matrix_with!(device: crate::options(), |_| {};
    whole_grant_signs_a_device_in,
    polling_too_fast_slows_the_device_down,
    an_expired_code_is_refused,
    wrong_user_codes_lock_the_browser,
    the_code_page_runs_the_clients_second_factor,
    a_weaker_session_steps_up,
    a_denied_device_gets_access_denied,
    an_approved_code_gives_tokens_once,
    two_browsers_confirming_one_code_have_one_winner,
    a_client_without_the_grant_is_refused,
    the_qr_code_holds_the_complete_link,
    discovery_names_the_device_endpoint,
);

matrix_with!(without_device_clients: crate::support::AppOptions::default(), |_| {};
    discovery_is_silent_without_device_clients,
);
