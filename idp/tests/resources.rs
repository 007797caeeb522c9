//! Resource indicators (RFC 8707): `[[resource_servers]]` in `idp.toml`,
//! the `resource` parameter at the authorization and token endpoints (the
//! token's audience and lifetime), the admin API as a resource, and
//! introspection limited to what a resource server may see; the refusals
//! (`invalid_target` for an undeclared resource, one the client may not
//! ask for, or one beyond the grant), on both backends.

mod support;

use idp::config::ResourceServerFile;
use serde_json::{Value, json};
use support::*;

const BILLING: &str = "https://billing.example/api";
const STORAGE: &str = "https://storage.example/api";
const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

fn options() -> AppOptions {
    let mut ops = client_with_flows("ops", FLOWS);
    ops.account.platform_admin = true;
    AppOptions {
        clients: vec![
            client_with_flows("billing-rs", FLOWS),
            client_with_flows("storage-rs", FLOWS),
            ops,
        ],
        ..AppOptions::default()
    }
}

fn adjust(s: &mut idp::config::Settings) {
    s.resource_servers = vec![
        ResourceServerFile {
            identifier: BILLING.into(),
            name: "Billing API".into(),
            access_token_secs: Some(120),
            clients: vec!["conf".into(), "spa".into(), "ops".into()],
            introspection_clients: vec!["billing-rs".into()],
            exchange_clients: vec![],
        },
        ResourceServerFile {
            identifier: STORAGE.into(),
            name: "Storage API".into(),
            access_token_secs: None,
            clients: vec!["conf".into()],
            introspection_clients: vec!["storage-rs".into()],
            exchange_clients: vec![],
        },
    ];
}

/// A code for `client` with `resource` values (and PKCE): (code, verifier).
async fn code_with(app: &TestApp, client: &str, resources: &[&str]) -> (String, String) {
    let (verifier, challenge) = pkce();
    let extra: Vec<(&str, &str)> = resources.iter().map(|r| ("resource", *r)).collect();
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, client, Some(&challenge), &extra),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    (
        query_param(&to, "code").unwrap_or_else(|| panic!("no code: {to}")),
        verifier,
    )
}

/// The code exchange as `conf` with `extra` parameters: status and body.
async fn exchange_with(
    app: &TestApp,
    code: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    form.extend_from_slice(extra);
    token_request(app, "conf", &form).await
}

fn aud(token: &str) -> Value {
    let c = jwt_claims(token);
    match &c["aud"] {
        Value::String(s) => json!([s]),
        other => other.clone(),
    }
}

/// `resource` at the authorization: the token is for that resource only
/// (`aud`), lives as long as it says, and survives refreshes; the token
/// request can narrow the resources, not widen them.
async fn resources_shape_the_audience_and_lifetime(app: &TestApp) {
    let (code, verifier) = code_with(app, "conf", &[BILLING, STORAGE]).await;
    // Narrowed to billing at the token endpoint.
    let (status, t) = exchange_with(app, &code, &verifier, &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(aud(access), json!([BILLING]));
    assert_eq!(t["expires_in"], 120, "the billing API's lifetime");
    let c = jwt_claims(access);
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);
    // The ID token is still for the client.
    assert_eq!(jwt_claims(t["id_token"].as_str().unwrap())["aud"], "conf");

    // A refresh gets both resources of the grant, or one of them.
    let refresh = t["refresh_token"].as_str().unwrap();
    let (status, r) = token_request(
        app,
        "conf",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        aud(r["access_token"].as_str().unwrap()),
        json!([BILLING, STORAGE])
    );
    assert_eq!(r["expires_in"], 120, "the shortest of the two");
    let refresh = r["refresh_token"].as_str().unwrap();
    let (status, r) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("resource", STORAGE),
        ],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(aud(r["access_token"].as_str().unwrap()), json!([STORAGE]));
    assert_eq!(
        r["expires_in"],
        i64::from(idp_core::client::Lifetimes::default().access_token),
        "no lifetime of its own: the client's"
    );

    // Not part of the grant: invalid_target, and the code stays usable.
    let (code, verifier) = code_with(app, "conf", &[BILLING]).await;
    let (status, e) = exchange_with(app, &code, &verifier, &[("resource", STORAGE)]).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_target")));
    let (status, t) = exchange_with(app, &code, &verifier, &[]).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(aud(t["access_token"].as_str().unwrap()), json!([BILLING]));

    // Without resources, the token is for its client, as before.
    let (code, verifier) = code_with(app, "conf", &[]).await;
    let (_, t) = exchange_with(app, &code, &verifier, &[]).await;
    assert_eq!(aud(t["access_token"].as_str().unwrap()), json!(["conf"]));
}

/// Refused resources: undeclared, not for this client, not an absolute URI
/// without fragment; at the authorization (redirected `invalid_target`) and
/// at the token endpoint; nothing is issued.
async fn undeclared_resources_are_refused(app: &TestApp) {
    for (client, resource) in [
        ("conf", "https://undeclared.example/api"),
        ("rsa", BILLING),
        ("conf", "https://billing.example/api#x"),
        ("conf", "billing"),
    ] {
        let res = Browser::new()
            .get(&authorize_url(app, client, None, &[("resource", resource)]))
            .await;
        assert_eq!(res.status(), 303, "{client} {resource}");
        let to = location(&res);
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_target"),
            "{client} {resource}: {to}"
        );
        let (status, e) = token_request(
            app,
            client,
            &[("grant_type", "client_credentials"), ("resource", resource)],
        )
        .await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_target")),
            "{client} {resource}: {e}"
        );
    }
}

/// A resource server introspects tokens for it and no other; the client a
/// token was issued to still may; other portals see nothing of tokens for
/// resource servers.
async fn resource_servers_introspect_only_their_tokens(app: &TestApp) {
    let (status, t) = token_request(
        app,
        "conf",
        &[("grant_type", "client_credentials"), ("resource", BILLING)],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let billing_token = t["access_token"].as_str().unwrap();
    assert_eq!(aud(billing_token), json!([BILLING]));
    let seen = introspect_as(app, "billing-rs", billing_token).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["aud"], BILLING);
    assert_eq!(
        introspect_as(app, "storage-rs", billing_token).await["active"],
        false
    );
    assert_eq!(
        introspect_as(app, "rsa", billing_token).await["active"],
        false
    );
    assert_eq!(
        introspect_as(app, "conf", billing_token).await["active"],
        true
    );

    // A portal's own token (no resource): not for the resource servers.
    let (_, t) = token_request(app, "conf", &[("grant_type", "client_credentials")]).await;
    let own = t["access_token"].as_str().unwrap();
    assert_eq!(introspect_as(app, "billing-rs", own).await["active"], false);
    assert_eq!(introspect_as(app, "rsa", own).await["active"], true);
}

/// The admin API is a resource: a client whose scopes allow it asks for it
/// with `resource` (no `admin_api` scope needed) and the API takes the
/// token; a client that may not gets `invalid_target`.
async fn the_admin_api_is_a_resource(app: &TestApp) {
    let admin_api = format!("{}/admin/api", app.issuer);
    let (status, t) = token_request(
        app,
        "ops",
        &[
            ("grant_type", "client_credentials"),
            ("resource", admin_api.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let token = t["access_token"].as_str().unwrap();
    assert_eq!(aud(token), json!([admin_api]));
    let res = reqwest::Client::new()
        .get(app.url("/admin/api/organizations"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    // Asked for the billing API only: not the admin API's.
    let (_, t) = token_request(
        app,
        "ops",
        &[("grant_type", "client_credentials"), ("resource", BILLING)],
    )
    .await;
    let res = reqwest::Client::new()
        .get(app.url("/admin/api/organizations"))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let (status, e) = token_request(
        app,
        "billing-rs",
        &[
            ("grant_type", "client_credentials"),
            ("resource", admin_api.as_str()),
            ("resource", BILLING),
        ],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_target")),
        "billing-rs may not ask for the billing API: {e}"
    );
}

/// A public client's code with a resource works the same.
async fn public_clients_ask_for_resources_too(app: &TestApp) {
    let (code, verifier) = code_with(app, "spa", &[BILLING]).await;
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", "spa"),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(aud(t["access_token"].as_str().unwrap()), json!([BILLING]));
}

matrix_with!(
    crate::options(),
    crate::adjust;
    resources_shape_the_audience_and_lifetime,
    undeclared_resources_are_refused,
    resource_servers_introspect_only_their_tokens,
    the_admin_api_is_a_resource,
    public_clients_ask_for_resources_too,
);
