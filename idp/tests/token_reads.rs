//! Reading access tokens back (introspection, userinfo) once the provider
//! remembers verified signatures and keeps the answer that a token is live
//! (see `idp_core::changes`): a token seen before is still checked for
//! expiry and for its signing key being published on every call, and a
//! revocation of itself or of its grant, or a change of its user's claims,
//! reaches every node: at once on the node where it was made, within the
//! feed's delivery (milliseconds, RFC 7009 §2.2's propagation window) on the
//! others.

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
    exchange_code(app, "conf", &code, Some(&verifier)).await
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
    let kid = unpublish_active_key(app, SigningAlg::ES256).await;
    assert!(!app.state.provider.keys.current().publishes(&kid));
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(userinfo_status(app, access).await, 401);
}

/// Polls `check` until it holds, for at most 2 s: what one node changes
/// reaches another through the change feed (Redis publish/subscribe), a
/// delivery of milliseconds. The nodes' clocks do not move meanwhile, so
/// nothing expires while waiting: only the announcement can make it hold.
async fn within_delivery<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{what}: not seen by the other node within 2 s");
}

/// Two nodes on one database and one Redis (PostgreSQL + Redis, the
/// clustered deployment): a revocation or a change of claims made on one is
/// seen by the other, which has kept the token's answers before.
async fn changes_on_one_node_reach_another(backend: Backend) {
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
    within_delivery("the revoked access token", || async {
        introspect(&a, access).await["active"] == false
    })
    .await;
    assert_eq!(userinfo_status(&a, access).await, 401);

    // Its grant revoked on the other node.
    let t = tokens(&a, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(&a, access).await;
    revoke(&b, t["refresh_token"].as_str().unwrap()).await;
    within_delivery("the revoked grant", || async {
        introspect(&a, access).await["active"] == false
    })
    .await;
    assert_eq!(userinfo_status(&a, access).await, 401);

    // The user's email changed on the other node.
    let t = tokens(&a, &browser).await;
    let access = t["access_token"].as_str().unwrap();
    let claims = userinfo(&a, access).await;
    assert!(
        claims["email"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("alice@example.com")
    );
    assert!(claims.get("organizations").is_none());
    let user = idp_core::domain::UserId(claims["sub"].as_str().unwrap().parse().unwrap());
    let on_b = &b.state.provider.ports;
    let email = idp_core::domain::Email::parse("alice.martin@example.com").unwrap();
    on_b.users.set_email(user, &email, true).await.unwrap();
    within_delivery("the new email", || async {
        userinfo(&a, access).await["email"] == "alice.martin@example.com"
    })
    .await;

    // An organization created, then validated, on the other node.
    let org = idp_core::domain::Organization {
        id: idp_core::domain::OrgId(uuid::Uuid::now_v7()),
        name: "Acme".into(),
        siret: None,
        country: "DE".into(),
        status: idp_core::domain::OrgStatus::Pending,
        created_by: user,
        created_at: b.clock.now(),
        decided_at: None,
        mfa_required_for: Vec::new(),
        password_policy: Default::default(),
    };
    let membership = idp_core::domain::Membership {
        org_id: org.id,
        user_id: user,
        roles: vec![idp_core::domain::Role::Administrator],
        created_at: b.clock.now(),
    };
    on_b.orgs.create_org(&org, &membership).await.unwrap();
    within_delivery("the new organization", || async {
        userinfo(&a, access).await["organizations"][0]["status"] == "pending"
    })
    .await;
    let validated = on_b
        .orgs
        .set_status(
            org.id,
            idp_core::domain::OrgStatus::Pending,
            idp_core::domain::OrgStatus::Validated,
            b.clock.now(),
        )
        .await
        .unwrap();
    assert!(validated);
    within_delivery("the organization validated", || async {
        userinfo(&a, access).await["organizations"][0]["status"] == "validated"
    })
    .await;

    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

/// On the node where a change is made, it holds for the very next read.
async fn a_change_holds_at_once_on_its_own_node(app: &TestApp) {
    let t = tokens(app, &Browser::new()).await;
    let access = t["access_token"].as_str().unwrap();
    read_twice(app, access).await;
    let claims = userinfo(app, access).await;
    let user = idp_core::domain::UserId(claims["sub"].as_str().unwrap().parse().unwrap());
    let ports = &app.state.provider.ports;
    ports
        .users
        .set_name(user, Some("Alice B. Martin"))
        .await
        .unwrap();
    assert_eq!(userinfo(app, access).await["name"], "Alice B. Martin");
    let email = idp_core::domain::Email::parse("alice.b@example.com").unwrap();
    ports.users.set_email(user, &email, false).await.unwrap();
    let claims = userinfo(app, access).await;
    assert_eq!(claims["email"], "alice.b@example.com");
    assert_eq!(claims["email_verified"], false);
}

mod two_nodes {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_redis() {
        crate::changes_on_one_node_reach_another(crate::support::Backend::Postgres).await;
    }
}

matrix!(
    a_remembered_token_is_refused_once_revoked,
    a_remembered_token_expires,
    a_remembered_token_of_an_unpublished_key_is_refused,
    a_change_holds_at_once_on_its_own_node,
);
