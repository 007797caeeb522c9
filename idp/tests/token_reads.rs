//! Reading access tokens back (introspection, userinfo) once the provider
//! remembers verified signatures: a token seen before is still checked for
//! expiry, revocation of itself and of its grant, and for its signing key
//! being published, on every call and on every node.

mod support;

use idp_core::clock::Clock;
use idp_core::keys::SigningAlg;
use serde_json::Value;
use support::*;

/// A login and code exchange for the test client `conf`: the token response.
async fn tokens(app: &TestApp, browser: &Browser) -> Value {
    let (verifier, challenge) = pkce();
    let url = authorize_url(app, "conf", Some(&challenge), &[]);
    let res = browser.get(&url).await;
    let callback = if res.status() == 303 && location(&res).starts_with(REDIRECT) {
        // Single sign-on: the browser is signed in already.
        location(&res)
    } else {
        browser
            .login(app, &url, "alice@example.com", PASSWORD)
            .await
    };
    let code = query_param(&callback, "code").expect("a code");
    let (status, t) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    t
}

async fn userinfo_status(app: &TestApp, access: &str) -> u16 {
    reqwest::Client::new()
        .get(app.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn revoke(app: &TestApp, token: &str) {
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("conf", Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// Introspects and asks userinfo twice each, so the second calls use the
/// remembered signature; both must say the token is live.
async fn read_twice(app: &TestApp, access: &str) {
    for _ in 0..2 {
        assert_eq!(introspect(app, access).await["active"], true);
        assert_eq!(userinfo_status(app, access).await, 200);
    }
}

async fn a_remembered_token_is_refused_once_revoked(app: &TestApp) {
    let browser = Browser::new();
    // The access token itself revoked.
    let t = tokens(app, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    revoke(app, access).await;
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);

    // Its grant revoked, through the refresh token.
    let t = tokens(app, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    revoke(app, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);

    // Its grant revoked for refresh token reuse.
    let t = tokens(app, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    let refresh = t["refresh_token"].as_str().unwrap();
    let rotate = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    assert_eq!(token_request(app, "conf", &rotate).await.0, 200);
    assert_eq!(token_request(app, "conf", &rotate).await.0, 400, "reuse");
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);

    // Its grant revoked by logout (the session's grants end with it).
    let t = tokens(app, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    let res = browser.get(&app.url("/logout")).await;
    let html = res.text().await.unwrap();
    assert_eq!(browser.submit(app, &html, &[]).await.status(), 303);
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);

    // A client_credentials token (no grant) revoked.
    let (status, t) = token_request(app, "conf", &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200);
    let access = t["access_token"].as_str().unwrap();
    for _ in 0..2 {
        assert_eq!(introspect(app, access).await["active"], true);
    }
    revoke(app, access).await;
    assert_eq!(introspect(app, access).await["active"], false);
}

async fn a_remembered_token_expires(app: &TestApp) {
    let t = tokens(app, &Browser::new()).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    let lifetime = t["expires_in"].as_i64().unwrap();
    app.clock.advance(time::Duration::seconds(lifetime - 1));
    assert_eq!(introspect(app, access).await["active"], true);
    app.clock.advance(time::Duration::seconds(1));
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);
}

/// A key taken out of the published set (here retired long ago, as an
/// operator would after a compromise) stops the tokens it signed once the
/// keys are reloaded, even those whose signature was verified before.
async fn a_remembered_token_of_an_unpublished_key_is_refused(app: &TestApp) {
    let t = tokens(app, &Browser::new()).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    let provider = &app.state.provider;
    let kid = provider
        .keys()
        .active_kid(SigningAlg::ES256)
        .unwrap()
        .to_owned();
    let long_ago = app.clock.now() - time::Duration::days(30);
    provider
        .ports
        .signing_keys
        .retire(&kid, long_ago)
        .await
        .unwrap();
    provider.reload_keys().await.unwrap();
    assert!(!provider.keys().publishes(&kid));
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);
}

/// Two nodes on one database and one Redis (PostgreSQL + Redis, the
/// clustered deployment): a revocation on one is seen at once by the other,
/// which has verified, and remembered, the token's signature before.
async fn revocation_on_one_node_is_seen_at_once_by_another(backend: Backend) {
    let db = SharedDatabase::new(backend).await;
    let prefix = format!("idp-test:{}:", uuid::Uuid::new_v4().simple());
    let same_store = |s: &mut idp::config::Settings| s.redis_key_prefix = prefix.clone();
    let a = spawn_app_on(&db, backend, AppOptions::default(), same_store).await;
    let behind_one_address = AppOptions {
        issuer: Some(a.issuer.clone()),
        ..AppOptions::default()
    };
    let b = spawn_app_on(&db, backend, behind_one_address, same_store).await;
    let browser = Browser::new();

    // The access token revoked on the other node.
    let t = tokens(&a, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(&a, access).await;
    read_twice(&b, access).await;
    revoke(&b, access).await;
    assert_eq!(introspect(&a, access).await["active"], false);
    assert_eq!(userinfo_status(&a, access).await, 401);

    // Its grant revoked on the other node.
    let t = tokens(&a, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(&a, access).await;
    revoke(&b, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(introspect(&a, access).await["active"], false);
    assert_eq!(userinfo_status(&a, access).await, 401);

    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

mod two_nodes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_redis() {
        crate::revocation_on_one_node_is_seen_at_once_by_another(crate::support::Backend::Postgres)
            .await;
    }
}

matrix!(
    a_remembered_token_is_refused_once_revoked,
    a_remembered_token_expires,
    a_remembered_token_of_an_unpublished_key_is_refused,
);
