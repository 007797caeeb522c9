//! Sign-in through an upstream OpenID provider, with another instance of
//! this provider as the upstream ("Partner SSO", on 127.0.0.1) and the
//! provider under test on `localhost` (so the two keep separate cookies, as
//! two sites do): just-in-time accounts, linking after proof of the local
//! account, refusal of unverified emails, the upstream step inside a flow,
//! unlinking, and tampered or replayed answers. Forged ID tokens (wrong
//! issuer, audience, nonce, signature) are in `federation_tokens.rs`, against
//! a scripted upstream.

mod support;

use idp::config::UpstreamFile;
use idp_core::domain::Email;
use serde_json::Value;
use support::*;

const UPSTREAM: &str = "partner";
/// The downstream client whose login page offers the upstream.
const PORTAL: &str = "fed";
/// A `platform_admin` client, for the admin API.
const OPERATOR: &str = "operator";
/// Its flows: at level 1, identifier and password, or the upstream alone; at
/// level `checked` (`acr_values=checked`), the same with an emailed code after.
const PORTAL_FLOWS: &str = r#"[
    {"name": "standard", "acr": "1", "steps": ["identifier", "password"]},
    {"name": "partner", "acr": "1", "steps": ["upstream"]},
    {"name": "partner-then-code", "acr": "checked", "steps": ["identifier", "password", "email_code"]},
    {"name": "partner-strong", "acr": "checked", "steps": ["upstream", "email_code"]}
]"#;

struct Federation {
    /// The upstream ("Partner SSO"): another instance of this provider.
    upstream: TestApp,
    /// The provider under test.
    app: TestApp,
    _secret: TempDir,
}

impl Federation {
    async fn cleanup(self) {
        self.app.cleanup().await;
        self.upstream.cleanup().await;
    }
}

/// The upstream with a client for the provider under test, and the provider
/// under test with `[[upstreams]]` pointing at it.
async fn federation(backend: Backend, adjust: impl FnOnce(&mut UpstreamFile)) -> Federation {
    let up_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut registration = client_with_flows(
        "federation",
        r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
    );
    registration.redirect_uris = vec![format!(
        "http://localhost:{port}/login/upstream/{UPSTREAM}/callback"
    )];
    let upstream = spawn_app_with(
        backend,
        AppOptions {
            clients: vec![registration],
            listener: Some(up_listener),
            ..AppOptions::default()
        },
    )
    .await;
    let (mut file, secret) = upstream_entry(
        UPSTREAM,
        "Partner SSO",
        &upstream.issuer,
        "federation",
        SECRET,
        &[PORTAL],
    );
    adjust(&mut file);
    let app = spawn_app_adjusted(
        backend,
        AppOptions {
            clients: vec![client_with_flows(PORTAL, PORTAL_FLOWS), {
                let mut op = client_with_flows(
                    OPERATOR,
                    r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
                );
                op.account.platform_admin = true;
                op
            }],
            listener: Some(listener),
            localhost: true,
            ..AppOptions::default()
        },
        move |s| s.upstreams = vec![file],
    )
    .await;
    Federation {
        upstream,
        app,
        _secret: secret,
    }
}

/// An account at the upstream whose email the upstream has verified.
async fn upstream_user(f: &Federation, email: &str, name: &str) -> idp_core::domain::User {
    let u = user_with_password(&f.upstream, email, Some(name)).await;
    verify_email(&f.upstream, &u).await;
    u
}

async fn verify_email(app: &TestApp, u: &idp_core::domain::User) {
    app.state
        .provider
        .ports
        .users
        .set_email(u.id, &u.email, true)
        .await
        .unwrap();
}

/// From the portal's authorization request to the upstream's sign-in page:
/// "Continue with Partner SSO" on the identifier page. Returns the upstream
/// authorization URL the browser is sent to.
async fn continue_with_upstream(
    f: &Federation,
    browser: &Browser,
    extra: &[(&str, &str)],
) -> String {
    let (res, _) = browser
        .follow(&f.app, &authorize_url(&f.app, PORTAL, None, extra))
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Continue with Partner SSO"), "{html}");
    let form = Form::with_action(&html, "/federate").expect("the continue-with form");
    let res = browser
        .submit_form(&f.app, &form, &[("upstream", UPSTREAM)])
        .await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(
        to.starts_with(&format!("{}/authorize?", f.upstream.issuer)),
        "{to}"
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert!(
            query_param(&to, p).is_some_and(|v| v.len() >= 43),
            "{p} in {to}"
        );
    }
    assert_eq!(
        query_param(&to, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&to, "redirect_uri"),
        Some(f.app.url(&format!("/login/upstream/{UPSTREAM}/callback")))
    );
    to
}

/// Signs in at the upstream (unless the browser's session there answers at
/// once); returns its answer (the callback URL on the provider under test).
async fn sign_in_upstream(f: &Federation, browser: &Browser, to: &str, email: &str) -> String {
    let (res, _) = browser.follow(&f.upstream, to).await;
    let callback = if res.status().is_redirection() {
        location(&res)
    } else {
        browser.login(&f.upstream, to, email, PASSWORD).await
    };
    assert!(
        callback.starts_with(&f.app.url(&format!("/login/upstream/{UPSTREAM}/callback?"))),
        "{callback}"
    );
    callback
}

/// The whole way in through the upstream; the provider's response to the
/// upstream's answer.
async fn through_upstream(f: &Federation, browser: &Browser, email: &str) -> reqwest::Response {
    let to = continue_with_upstream(f, browser, &[]).await;
    let callback = sign_in_upstream(f, browser, &to, email).await;
    browser.get(&callback).await
}

fn amr(claims: &Value) -> Vec<&str> {
    claims["amr"]
        .as_array()
        .expect("amr")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

async fn links(app: &TestApp, email: &str) -> Vec<idp_core::federation::FederatedIdentity> {
    let u = app
        .state
        .provider
        .ports
        .users
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
        .expect("the account");
    app.state
        .provider
        .federated
        .linked_identities(u.id)
        .await
        .unwrap()
}

async fn audit_kinds(app: &TestApp, email: &str) -> Vec<String> {
    let u = app
        .state
        .provider
        .ports
        .users
        .find_by_email(&Email::parse(email).unwrap())
        .await
        .unwrap()
        .expect("the account");
    app.state
        .provider
        .ports
        .audit
        .list_for_user(u.id, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// No local account matches a verified upstream identity: one is created
/// from its claims and linked; the next sign-in finds the same account.
async fn just_in_time_account(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    let bob = upstream_user(&f, "bob@partner.example", "Bob Partner").await;
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "bob@partner.example").await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "back to the portal: {to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["email"], "bob@partner.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Bob Partner");
    assert_eq!(claims["acr"], "1");
    let amr = amr(&claims);
    assert!(amr.contains(&"fed"), "{amr:?}");
    assert!(
        amr.contains(&"pwd"),
        "the upstream's own amr is kept: {amr:?}"
    );
    let linked = links(&f.app, "bob@partner.example").await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].upstream, UPSTREAM);
    assert_eq!(linked[0].subject, bob.id.to_string());
    let kinds = audit_kinds(&f.app, "bob@partner.example").await;
    for k in ["user.created", "federation.linked", "login.succeeded"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    // A new browser, the same identity: the same account, no second one.
    let again = Browser::new();
    let res = through_upstream(&f, &again, "bob@partner.example").await;
    let to = location(&res);
    let claims2 = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims2["sub"], claims["sub"]);
    assert_eq!(account_count(&f.app).await, 2);
    f.cleanup().await;
}

/// A local account holds the upstream's verified email: the user signs in to
/// it once (its own password), then the two are linked; from then on the
/// upstream alone signs in.
async fn link_after_proving_the_account(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    // Alice exists on both (the harness creates her); the upstream vouches.
    verify_email(&f.upstream, &f.upstream.user).await;
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "alice@example.com").await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with("/login/"), "the proof follows: {to}");
    let (res, _) = browser.follow(&f.app, &f.app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("autocomplete=\"current-password\""), "{html}");
    assert!(html.contains("link it to Partner SSO"), "the page says why");
    assert!(
        html.to_lowercase().contains("alice@example.com"),
        "pinned to that account"
    );
    assert!(
        links(&f.app, "alice@example.com").await.is_empty(),
        "not linked yet"
    );
    // A wrong password links nothing.
    let res = browser
        .submit(&f.app, &html, &[("password", "not the password")])
        .await;
    assert_eq!(res.status(), 401);
    let html = res.text().await.unwrap();
    assert!(links(&f.app, "alice@example.com").await.is_empty());
    let res = browser
        .submit(&f.app, &html, &[("password", PASSWORD)])
        .await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["sub"], f.app.user.id.to_string());
    let amr = amr(&claims);
    assert!(amr.contains(&"fed") && amr.contains(&"pwd"), "{amr:?}");
    let linked = links(&f.app, "alice@example.com").await;
    assert_eq!(linked.len(), 1);
    assert_eq!(linked[0].subject, f.upstream.user.id.to_string());
    // Next time, in a new browser: the upstream is enough.
    let again = Browser::new();
    let res = through_upstream(&f, &again, "alice@example.com").await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "no proof asked again: {to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["sub"], f.app.user.id.to_string());
    f.cleanup().await;
}

/// The upstream does not vouch for the email a local account holds: no
/// link, no account, a clear refusal.
async fn unverified_email_is_refused(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    // The upstream's Alice has an unverified address (as created).
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "alice@example.com").await;
    assert_eq!(res.status(), 403);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("did not confirm your email address"),
        "{html}"
    );
    assert!(links(&f.app, "alice@example.com").await.is_empty());
    assert_eq!(account_count(&f.app).await, 1);
    let kinds = audit_kinds(&f.app, "alice@example.com").await;
    assert!(!kinds.iter().any(|k| k == "federation.linked"), "{kinds:?}");
    // An unverified address matching nobody creates nothing either.
    let _carol = user_with_password(&f.upstream, "carol@partner.example", None).await;
    let res = through_upstream(&f, &Browser::new(), "carol@partner.example").await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("did not confirm your email address")
    );
    assert_eq!(account_count(&f.app).await, 1);
    f.cleanup().await;
}

/// Without just-in-time creation, an unknown identity is told to contact
/// support; a trusted email links as a verified one.
async fn no_account_without_just_in_time_creation(backend: Backend) {
    let f = federation(backend, |u| {
        u.create_accounts = false;
        u.trust_email = true;
    })
    .await;
    let _dave = upstream_user(&f, "dave@partner.example", "Dave").await;
    let res = through_upstream(&f, &Browser::new(), "dave@partner.example").await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("No account matches this identity")
    );
    assert_eq!(account_count(&f.app).await, 1);
    // trust_email: Alice's unverified upstream address still finds her account.
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "alice@example.com").await;
    let to = location(&res);
    assert!(to.starts_with("/login/"), "the proof follows: {to}");
    f.cleanup().await;
}

/// A flow of two steps: the upstream, then our own emailed code
/// (`acr_values=checked`); amr has both.
async fn upstream_then_our_own_factor(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    upstream_user(&f, "erin@partner.example", "Erin").await;
    let browser = Browser::new();
    let to = continue_with_upstream(&f, &browser, &[("acr_values", "checked")]).await;
    let callback = sign_in_upstream(&f, &browser, &to, "erin@partner.example").await;
    let res = browser.get(&callback).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with("/login/"), "the emailed code follows: {to}");
    let (res, _) = browser.follow(&f.app, &f.app.url(&to)).await;
    let html = res.text().await.unwrap();
    assert!(html.contains("We sent a code"), "{html}");
    let code = last_login_code(&f.app, "erin@partner.example");
    let res = browser.submit(&f.app, &html, &[("code", &code)]).await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["acr"], "checked");
    let amr = amr(&claims);
    for a in ["fed", "pwd", "email_otp"] {
        assert!(amr.contains(&a), "{a} in {amr:?}");
    }
    assert!(
        !amr.contains(&"mfa"),
        "an emailed code is no second factor: {amr:?}"
    );
    f.cleanup().await;
}

/// A tampered `state`, a replayed answer, and an answer in another browser
/// are refused with a clear page; none signs anyone in.
async fn tampered_or_replayed_answers_are_refused(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    upstream_user(&f, "bob@partner.example", "Bob").await;
    let browser = Browser::new();
    let to = continue_with_upstream(&f, &browser, &[]).await;
    let callback = sign_in_upstream(&f, &browser, &to, "bob@partner.example").await;
    let state = query_param(&callback, "state").unwrap();
    // Tampered state.
    let forged = callback.replace(&state, &format!("{state}x"));
    let res = browser.get(&forged).await;
    assert_eq!(res.status(), 400);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("does not match any sign-in")
    );
    // Another browser with the genuine answer: the flow is not its own.
    let other = Browser::new();
    let res = other.get(&callback).await;
    assert_eq!(res.status(), 400);
    // The state was spent by that attempt (single use): replaying fails too.
    let res = browser.get(&callback).await;
    assert_eq!(res.status(), 400);
    assert_eq!(account_count(&f.app).await, 1, "no account was created");
    // A fresh attempt in the right browser works, once.
    let to = continue_with_upstream(&f, &browser, &[]).await;
    let callback = sign_in_upstream(&f, &browser, &to, "bob@partner.example").await;
    let res = browser.get(&callback).await;
    assert!(location(&res).starts_with(REDIRECT));
    let res = browser.get(&callback).await;
    assert_eq!(res.status(), 400, "an answer is used once");
    // Signed in now: `prompt=login` shows the login page again.
    // A cancelled sign-in at the upstream (error=access_denied).
    let to = continue_with_upstream(&f, &browser, &[("prompt", "login")]).await;
    let state = query_param(&to, "state").unwrap();
    let res = browser
        .get(&f.app.url(&format!(
            "/login/upstream/{UPSTREAM}/callback?error=access_denied&state={state}"
        )))
        .await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("The sign-in was cancelled.")
    );
    // An answer sent to another upstream's callback than its own.
    let to = continue_with_upstream(&f, &browser, &[("prompt", "login")]).await;
    let callback = sign_in_upstream(&f, &browser, &to, "bob@partner.example").await;
    let res = browser
        .get(&callback.replace("/upstream/partner/", "/upstream/other/"))
        .await;
    assert_eq!(res.status(), 403);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("does not match the sign-in you started")
    );
    f.cleanup().await;
}

on_both_backends!(
    just_in_time_account,
    link_after_proving_the_account,
    unverified_email_is_refused,
    no_account_without_just_in_time_creation,
    upstream_then_our_own_factor,
    tampered_or_replayed_answers_are_refused,
);

/// The account page lists the links; a user unlinks one while another way
/// to sign in remains (Alice's password), and not the only one (a JIT
/// account without password); the account pages themselves offer the
/// upstream when it lists `account`.
async fn unlink_from_the_account_page(backend: Backend) {
    let f = federation(backend, |u| u.clients.push("account".into())).await;
    verify_email(&f.upstream, &f.upstream.user).await;
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "alice@example.com").await;
    let (res, _) = browser.follow(&f.app, &f.app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    let res = browser
        .submit(&f.app, &html, &[("password", PASSWORD)])
        .await;
    assert!(location(&res).starts_with(REDIRECT));
    assert_eq!(links(&f.app, "alice@example.com").await.len(), 1);
    // Signed in a moment ago: the account page, with its sign-in services.
    let (res, _) = browser.follow(&f.app, &f.app.url("/account")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"id="linked-identities""#), "{html}");
    assert!(html.contains("Partner SSO"), "{html}");
    let form = Form::with_action(&html, "/account/identities/unlink").expect("an unlink form");
    let res = browser.submit_form(&f.app, &form, &[]).await;
    assert_eq!(res.status(), 303);
    let (res, _) = browser.follow(&f.app, &f.app.url(&location(&res))).await;
    assert!(res.text().await.unwrap().contains("is no longer linked"));
    assert!(links(&f.app, "alice@example.com").await.is_empty());
    assert!(
        audit_kinds(&f.app, "alice@example.com")
            .await
            .iter()
            .any(|k| k == "federation.unlinked")
    );
    // Unlinked: the next sign-in through the upstream asks for the proof again.
    let res = through_upstream(&f, &Browser::new(), "alice@example.com").await;
    assert!(location(&res).starts_with("/login/"), "the proof again");

    // Bob's account was made just in time: the link is his only way in.
    upstream_user(&f, "bob@partner.example", "Bob").await;
    let bob = Browser::new();
    // The account pages offer the upstream too.
    let (res, _) = bob.follow(&f.app, &f.app.url("/account")).await;
    let html = res.text().await.unwrap();
    let form = Form::with_action(&html, "/federate").expect("continue with, on the account pages");
    let res = bob.submit_form(&f.app, &form, &[]).await;
    let callback = sign_in_upstream(&f, &bob, &location(&res), "bob@partner.example").await;
    let (res, _) = bob.follow(&f.app, &callback).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("bob@partner.example"),
        "signed in to the account page: {html}"
    );
    let form = Form::with_action(&html, "/account/identities/unlink").expect("an unlink form");
    let res = bob.submit_form(&f.app, &form, &[]).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.unwrap().contains("only way to sign in"));
    assert_eq!(links(&f.app, "bob@partner.example").await.len(), 1);
    f.cleanup().await;
}

/// The platform operator's admin API: list, link (then the upstream signs
/// in to that account, whatever its email), unlink; others are refused.
async fn operator_links_and_unlinks(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    let token = |client: &'static str| {
        let app = &f.app;
        async move {
            let (status, body) = token_request(
                app,
                client,
                &[("grant_type", "client_credentials"), ("scope", "admin_api")],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let operator = token(OPERATOR).await;
    let other = token("conf").await;
    let http = reqwest::Client::new();
    let url = f
        .app
        .url(&format!("/admin/api/users/{}/identities", f.app.user.id));
    let res = http.get(&url).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["identities"], serde_json::json!([]));
    for (who, status) in [(Some(&other), 403), (None, 401)] {
        let mut req = http.get(&url);
        if let Some(t) = who {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), status);
    }
    let subject = f.upstream.user.id.to_string();
    let post = |body: Value| http.post(&url).bearer_auth(&operator).json(&body).send();
    let res = post(serde_json::json!({"upstream": UPSTREAM, "subject": subject}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["display_name"], "Partner SSO");
    assert_eq!(created["subject"], subject);
    let res = post(serde_json::json!({"upstream": UPSTREAM, "subject": "someone-else"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let res = post(serde_json::json!({"upstream": "nope", "subject": "x"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = http
        .post(f.app.url(&format!(
            "/admin/api/users/{}/identities",
            uuid::Uuid::now_v7()
        )))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"upstream": UPSTREAM, "subject": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Linked by the operator: the upstream's Alice (unverified address)
    // signs in to the account at once.
    let res = through_upstream(&f, &Browser::new(), "alice@example.com").await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["sub"], f.app.user.id.to_string());
    let one = format!("{url}/{UPSTREAM}");
    let res = http.delete(&one).bearer_auth(&other).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let res = http
        .delete(&one)
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = http
        .delete(&one)
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Unlinked: back to the refusal of an unverified address.
    let res = through_upstream(&f, &Browser::new(), "alice@example.com").await;
    assert_eq!(res.status(), 403);
    f.cleanup().await;
}

on_both_backends!(unlink_from_the_account_page, operator_links_and_unlinks);

/// `prompt=login` at the portal: the upstream is asked for a fresh sign-in
/// too, and asks its password again although its own session is live.
async fn a_fresh_login_is_fresh_at_the_upstream(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    upstream_user(&f, "bob@partner.example", "Bob").await;
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "bob@partner.example").await;
    assert!(location(&res).starts_with(REDIRECT));
    let to = continue_with_upstream(&f, &browser, &[("prompt", "login")]).await;
    assert_eq!(query_param(&to, "prompt").as_deref(), Some("login"));
    let (res, _) = browser.follow(&f.upstream, &to).await;
    assert_eq!(res.status(), 200, "the upstream asks again");
    assert!(res.text().await.unwrap().contains(r#"name="identifier""#));
    let callback = browser
        .login(&f.upstream, &to, "bob@partner.example", PASSWORD)
        .await;
    let res = browser.get(&callback).await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["email"], "bob@partner.example");
    f.cleanup().await;
}

on_both_backends!(a_fresh_login_is_fresh_at_the_upstream);

/// Signed in through the upstream at level 1, the portal asks level 2
/// (`acr_values=checked`): the step-up runs the level's upstream flow, whose
/// upstream step the session already passed, so only the emailed code is
/// asked (not a password the account does not have).
async fn a_federated_session_steps_up_with_the_missing_step_only(backend: Backend) {
    let f = federation(backend, |_| {}).await;
    upstream_user(&f, "gail@partner.example", "Gail").await;
    let browser = Browser::new();
    let res = through_upstream(&f, &browser, "gail@partner.example").await;
    assert!(location(&res).starts_with(REDIRECT));
    let (res, _) = browser
        .follow(
            &f.app,
            &authorize_url(&f.app, PORTAL, None, &[("acr_values", "checked")]),
        )
        .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("We sent a code"),
        "only the code is asked: {html}"
    );
    let code = last_login_code(&f.app, "gail@partner.example");
    let res = browser.submit(&f.app, &html, &[("code", &code)]).await;
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    let claims = id_token_claims(&f.app, PORTAL, &to).await;
    assert_eq!(claims["acr"], "checked");
    let amr = amr(&claims);
    assert!(
        amr.contains(&"fed") && amr.contains(&"email_otp"),
        "{amr:?}"
    );
    assert!(
        !amr.contains(&"mfa"),
        "an emailed code is no second factor: {amr:?}"
    );
    f.cleanup().await;
}

on_both_backends!(a_federated_session_steps_up_with_the_missing_step_only);
