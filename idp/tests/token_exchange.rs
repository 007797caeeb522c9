//! Token exchange (RFC 8693): a portal exchanges its user's access token
//! for one meant for a declared resource server (`exchange_clients` in
//! `[[resource_servers]]`): audience, lifetime, `act`, `sub`, introspection
//! by the resource server, the audit trail; and every refusal
//! (`unauthorized_client`, `invalid_target`, `invalid_grant`,
//! `invalid_scope`, `invalid_request`), on both backends.

mod support;

use idp::config::ResourceServerFile;
use idp_core::client::AccessTokenFormat;
use serde_json::{Value, json};
use support::*;

const BILLING: &str = "https://billing.example/api";
const STORAGE: &str = "https://storage.example/api";
const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// `[token_exchange] max_token_secs` of the test server.
const MAX_SECS: i64 = 90;
/// The billing API's `access_token_secs`.
const BILLING_SECS: i64 = 60;

fn exchanging(id: &str) -> idp_core::client::Client {
    let mut c = client_with_flows(id, FLOWS);
    c.protocol.token_exchange = true;
    c
}

fn options() -> AppOptions {
    let mut backoffice = exchanging("backoffice");
    backoffice.access_token_format = AccessTokenFormat::Opaque;
    let mut bound = exchanging("bound");
    bound.protocol.dpop_bound = true;
    AppOptions {
        clients: vec![
            exchanging("portal"),
            backoffice,
            bound,
            client_with_flows("billing-rs", FLOWS),
            client_with_flows("storage-rs", FLOWS),
        ],
        ..AppOptions::default()
    }
}

fn adjust(s: &mut idp::config::Settings) {
    s.token_exchange.max_token_secs = MAX_SECS as u32;
    s.resource_servers = vec![
        ResourceServerFile {
            identifier: BILLING.into(),
            name: "Billing API".into(),
            access_token_secs: Some(BILLING_SECS as u32),
            clients: vec![],
            introspection_clients: vec!["billing-rs".into()],
            exchange_clients: vec!["portal".into(), "backoffice".into(), "bound".into()],
        },
        ResourceServerFile {
            identifier: STORAGE.into(),
            name: "Storage API".into(),
            access_token_secs: None,
            clients: vec![],
            introspection_clients: vec!["storage-rs".into()],
            exchange_clients: vec!["portal".into()],
        },
    ];
}

fn access(t: &Value) -> &str {
    t["access_token"].as_str().expect("an access token")
}

/// A token exchange request as `client` for `subject` with `extra`.
async fn exchange(
    app: &TestApp,
    client: &str,
    subject: &str,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
    ];
    form.extend_from_slice(extra);
    token_request(app, client, &form).await
}

fn error_of(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"].as_str())
}

/// The exchange the brief's portal does: a token for the billing API alone,
/// for the same user, acting as the portal; the resource server introspects
/// it and sees the actor; the exchange is audited.
async fn an_exchange_gives_a_token_for_the_resource_alone(app: &TestApp) {
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    let subject = access(&t);
    let (status, x) = exchange(app, "portal", subject, &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(x["token_type"], "Bearer");
    assert!(x.get("refresh_token").is_none(), "no refresh token: {x}");
    assert!(x.get("id_token").is_none(), "no ID token: {x}");
    assert_eq!(
        x["scope"], "openid email profile",
        "the subject token's scope"
    );
    assert_eq!(x["expires_in"], BILLING_SECS, "the billing API's lifetime");
    let c = jwt_claims(access(&x));
    let s = jwt_claims(subject);
    assert_eq!(c["aud"], BILLING, "for the billing API alone");
    assert_eq!(c["sub"], s["sub"], "the same user");
    assert_eq!(c["sub"], app.user.id.to_string());
    assert_eq!(c["client_id"], "portal");
    assert_eq!(c["act"], json!({"sub": "portal"}));
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        BILLING_SECS
    );

    // The billing API introspects it and sees who acts; the storage API
    // learns nothing of it.
    let i = introspect_as(app, "billing-rs", access(&x)).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["act"], json!({"sub": "portal"}));
    assert_eq!(i["sub"], app.user.id.to_string());
    assert_eq!(i["client_id"], "portal");
    assert_eq!(i["aud"], BILLING);
    let i = introspect_as(app, "storage-rs", access(&x)).await;
    assert_eq!(i, json!({"active": false}));

    // By audience: the resource server's name or identifier.
    for audience in ["Billing API", BILLING] {
        let (status, x) = exchange(app, "portal", subject, &[("audience", audience)]).await;
        assert_eq!(status, 200, "{x}");
        assert_eq!(jwt_claims(access(&x))["aud"], BILLING);
    }
    // A narrower scope.
    let (status, x) = exchange(
        app,
        "portal",
        subject,
        &[("resource", STORAGE), ("scope", "email")],
    )
    .await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["scope"], "email");
    // No lifetime of its own: the configured maximum.
    assert_eq!(x["expires_in"], MAX_SECS);
    assert_eq!(jwt_claims(access(&x))["aud"], STORAGE);

    let events = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 50)
        .await
        .unwrap();
    let exchanged: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "token.exchanged")
        .collect();
    assert_eq!(exchanged.len(), 4, "one audit event per exchange");
    let last = exchanged[0];
    assert_eq!(last.client_id.as_ref().unwrap().0, "portal");
    assert_eq!(last.detail["resource"], STORAGE);
    assert_eq!(last.detail["subject_client"], "portal");
    assert_eq!(last.detail["actor"], "portal");

    let d = discovery(app).await;
    assert!(
        d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(EXCHANGE)),
        "{d}"
    );
}

/// An exchanged token lives no longer than what is left of the subject
/// token; it belongs to the subject token's grant, so revoking the grant
/// stops it too.
async fn exchanged_tokens_follow_their_subject_token(app: &TestApp) {
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    let subject = access(&t);
    let left = jwt_claims(subject)["exp"].as_i64().unwrap() - clock_secs(app) as i64;
    app.clock.advance(time::Duration::seconds(left - 20));
    let (status, x) = exchange(app, "portal", subject, &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{x}");
    let remaining = x["expires_in"].as_i64().unwrap();
    assert!(
        (19..=20).contains(&remaining),
        "the subject token's remaining life, not {remaining}"
    );
    let c = jwt_claims(access(&x));
    assert!(c["exp"].as_i64() <= jwt_claims(subject)["exp"].as_i64());

    // A new grant: its exchanged token dies with it.
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    let (status, x) = exchange(app, "portal", access(&t), &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(
        introspect_as(app, "billing-rs", access(&x)).await["active"],
        true
    );
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("portal", Some(SECRET))
        .form(&[("token", t["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        introspect_as(app, "billing-rs", access(&x)).await,
        json!({"active": false}),
        "the grant is revoked"
    );
    assert_eq!(
        error_of(&exchange(app, "portal", access(&t), &[("resource", BILLING)]).await),
        (400, Some("invalid_grant")),
        "a token of a revoked grant is not exchanged"
    );
}

/// Opaque access tokens exchange the same way: the exchanging client's
/// format, the actor kept with the handle.
async fn opaque_tokens_carry_their_actor(app: &TestApp) {
    let t = alice_tokens(app, &Browser::new(), "backoffice").await;
    let (status, x) = exchange(app, "backoffice", access(&t), &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(access(&x).split('.').count(), 1, "an opaque handle");
    let i = introspect_as(app, "billing-rs", access(&x)).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["act"], json!({"sub": "backoffice"}));
    assert_eq!(i["aud"], BILLING);
    assert_eq!(
        i["exp"].as_i64().unwrap() - i["iat"].as_i64().unwrap(),
        BILLING_SECS
    );
}

/// An exchanged token exchanged again (by the client it was issued to)
/// nests the previous actor (RFC 8693 §4.1); an actor token names the
/// actor instead of the client.
async fn actors_nest(app: &TestApp) {
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    let (status, first) = exchange(app, "portal", access(&t), &[("resource", BILLING)]).await;
    assert_eq!(status, 200, "{first}");
    // The portal's own token, as the actor of the second exchange.
    let (status, own) = token_request(app, "portal", &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, 200, "{own}");
    let (status, second) = exchange(
        app,
        "portal",
        access(&first),
        &[
            ("resource", STORAGE),
            ("actor_token", access(&own)),
            ("actor_token_type", ACCESS_TOKEN),
        ],
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let c = jwt_claims(access(&second));
    assert_eq!(c["act"], json!({"sub": "portal", "act": {"sub": "portal"}}));
    assert_eq!(c["sub"], app.user.id.to_string());
    assert_eq!(c["aud"], STORAGE);
    // Never longer than the token it came from.
    assert!(c["exp"].as_i64() <= jwt_claims(access(&first))["exp"].as_i64());
    let i = introspect_as(app, "storage-rs", access(&second)).await;
    assert_eq!(i["act"]["act"]["sub"], "portal", "{i}");

    // An actor token of another client is refused.
    let (_, foreign) = token_request(app, "conf", &[("grant_type", "client_credentials")]).await;
    let refused = exchange(
        app,
        "portal",
        access(&t),
        &[
            ("resource", BILLING),
            ("actor_token", access(&foreign)),
            ("actor_token_type", ACCESS_TOKEN),
        ],
    )
    .await;
    assert_eq!(error_of(&refused), (400, Some("invalid_grant")));
    // An actor token without its type.
    let refused = exchange(
        app,
        "portal",
        access(&t),
        &[("resource", BILLING), ("actor_token", access(&own))],
    )
    .await;
    assert_eq!(error_of(&refused), (400, Some("invalid_request")));
}

/// A DPoP proof by a fresh key `which` (0 or 1) for the token endpoint.
fn proof(app: &TestApp, which: usize) -> String {
    use josekit::jws::{ES256, JwsHeader};
    static KEYS: std::sync::OnceLock<Vec<(josekit::jwk::Jwk, josekit::jwk::Jwk)>> =
        std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| es256_key_pairs(2, None));
    let claims = dpop_proof_claims(clock_secs(app), "POST", &app.url("/token"), None, None);
    let mut h = JwsHeader::new();
    h.set_token_type("dpop+jwt");
    h.set_jwk(keys[which].1.clone());
    josekit::jwt::encode_with_signer(&claims, &h, &ES256.signer_from_jwk(&keys[which].0).unwrap())
        .unwrap()
}

/// A token request as `bound` with a DPoP proof.
async fn bound_request(app: &TestApp, form: &[(&str, &str)], dpop: String) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .basic_auth("bound", Some(SECRET))
        .header("DPoP", dpop)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A DPoP-bound subject token is exchanged only with a proof of its key,
/// and the token issued is bound to it too (RFC 9449 §6).
async fn bound_subject_tokens_need_their_key(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, "bound", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&to, "code").unwrap();
    let (status, t) = bound_request(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        proof(app, 0),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let subject = access(&t);
    let jkt = jwt_claims(subject)["cnf"]["jkt"].clone();
    assert!(jkt.is_string());
    let form = [
        ("grant_type", EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
        ("resource", BILLING),
    ];
    // Another key: refused.
    let refused = bound_request(app, &form, proof(app, 1)).await;
    assert_eq!(error_of(&refused), (400, Some("invalid_grant")));
    // Its own key: a token bound to it.
    let (status, x) = bound_request(app, &form, proof(app, 0)).await;
    assert_eq!(status, 200, "{x}");
    assert_eq!(x["token_type"], "DPoP");
    let c = jwt_claims(access(&x));
    assert_eq!(c["cnf"]["jkt"], jkt);
    assert_eq!(c["act"], json!({"sub": "bound"}));
}

/// Every refusal, with its error code.
async fn refusals(app: &TestApp) {
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    let subject = access(&t);
    // A client whose file does not allow the grant.
    let conf = alice_tokens(app, &Browser::new(), "conf").await;
    assert_eq!(
        error_of(&exchange(app, "conf", access(&conf), &[("resource", BILLING)]).await),
        (400, Some("unauthorized_client"))
    );
    // A public client.
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("client_id", "spa"),
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("resource", BILLING),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    // A resource the client may not exchange for, an undeclared one, an
    // unknown audience, two resources, none.
    let b = exchange(app, "backoffice", subject, &[("resource", STORAGE)]).await;
    assert_eq!(error_of(&b), (400, Some("invalid_target")));
    let admin_api = format!("{}/admin/api", app.issuer);
    for extra in [
        vec![("resource", "https://unknown.example/api")],
        vec![("audience", "Unknown API")],
        vec![("resource", BILLING), ("resource", STORAGE)],
        vec![("resource", BILLING), ("audience", "Storage API")],
        vec![("resource", admin_api.as_str())],
    ] {
        let answer = exchange(app, "portal", subject, &extra).await;
        assert_eq!(
            error_of(&answer),
            (400, Some("invalid_target")),
            "{extra:?}"
        );
    }
    assert_eq!(
        error_of(&exchange(app, "portal", subject, &[]).await),
        (400, Some("invalid_request"))
    );
    // A subject token of another portal (not for this one).
    let b = exchange(app, "portal", access(&conf), &[("resource", BILLING)]).await;
    assert_eq!(error_of(&b), (400, Some("invalid_grant")));
    // Not one of ours.
    for bogus in ["not-a-token", "a.b.c"] {
        let b = exchange(app, "portal", bogus, &[("resource", BILLING)]).await;
        assert_eq!(error_of(&b), (400, Some("invalid_grant")), "{bogus}");
    }
    // A refresh token is not an access token.
    let b = exchange(
        app,
        "portal",
        t["refresh_token"].as_str().unwrap(),
        &[("resource", BILLING)],
    )
    .await;
    assert_eq!(error_of(&b), (400, Some("invalid_grant")));
    // A scope beyond the subject token's.
    for scope in ["openid api", "admin_api"] {
        let b = exchange(
            app,
            "portal",
            subject,
            &[("resource", BILLING), ("scope", scope)],
        )
        .await;
        assert_eq!(error_of(&b), (400, Some("invalid_scope")), "{scope}");
    }
    // Other token types.
    let b = exchange(
        app,
        "portal",
        subject,
        &[
            ("resource", BILLING),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:refresh_token",
            ),
        ],
    )
    .await;
    assert_eq!(error_of(&b), (400, Some("invalid_request")));
    let b = token_request(
        app,
        "portal",
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("resource", BILLING),
        ],
    )
    .await;
    assert_eq!(error_of(&b), (400, Some("invalid_request")));

    // A revoked subject token.
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("portal", Some(SECRET))
        .form(&[("token", subject)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let b = exchange(app, "portal", subject, &[("resource", BILLING)]).await;
    assert_eq!(error_of(&b), (400, Some("invalid_grant")));

    // An expired one.
    let t = alice_tokens(app, &Browser::new(), "portal").await;
    app.clock.advance(time::Duration::seconds(601));
    let b = exchange(app, "portal", access(&t), &[("resource", BILLING)]).await;
    assert_eq!(error_of(&b), (400, Some("invalid_grant")));

    // None of the refusals was audited as an exchange.
    let events = app
        .state
        .provider
        .ports
        .audit
        .list_for_user(app.user.id, 100)
        .await
        .unwrap();
    assert!(!events.iter().any(|e| e.kind == "token.exchanged"));
}

/// Without any exchange client, discovery does not list the grant (nor,
/// without a pairwise client, pairwise subjects).
async fn discovery_lists_the_grant_only_when_enabled(app: &TestApp) {
    let d = discovery(app).await;
    assert_eq!(d["subject_types_supported"], json!(["public"]));
    assert!(
        !d["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(EXCHANGE)),
        "{d}"
    );
    let t = alice_tokens(app, &Browser::new(), "conf").await;
    let b = exchange(app, "conf", access(&t), &[("resource", BILLING)]).await;
    assert_eq!(error_of(&b), (400, Some("unauthorized_client")));
}

/// Settings adjusted before a test server starts.
type Adjust = fn(&mut idp::config::Settings);

/// The policy is checked at start-up: an exchange client must have the
/// grant, and a client with the grant must be an exchange client somewhere.
async fn the_policy_is_checked_at_start_up(backend: Backend) {
    let cases: [(Adjust, &str); 2] = [
        (
            |s| {
                adjust(s);
                s.resource_servers[0].exchange_clients = vec!["backoffice".into(), "bound".into()];
                s.resource_servers[1].exchange_clients = vec![];
            },
            "client portal: grant_types: token exchange is allowed, but no [[resource_servers]] entry lists this client in its exchange_clients",
        ),
        (
            |s| {
                adjust(s);
                s.resource_servers[1].exchange_clients = vec!["portal".into(), "conf".into()];
            },
            "resource_servers[1].exchange_clients[1]: client conf does not list urn:ietf:params:oauth:grant-type:token-exchange in its grant_types",
        ),
    ];
    for (settings, expected) in cases {
        // In a task of its own, to see the start-up's panic.
        let started = tokio::spawn(spawn_app_adjusted(backend, options(), settings)).await;
        let panic = match started {
            Ok(app) => {
                app.cleanup().await;
                panic!("started despite: {expected}");
            }
            Err(e) => e.into_panic(),
        };
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains(expected), "{message}");
    }
}

on_both_backends!(the_policy_is_checked_at_start_up);

matrix_with!(
    crate::options(),
    crate::adjust;
    an_exchange_gives_a_token_for_the_resource_alone,
    exchanged_tokens_follow_their_subject_token,
    opaque_tokens_carry_their_actor,
    bound_subject_tokens_need_their_key,
    actors_nest,
    refusals,
);

matrix_with!(
    disabled: crate::support::AppOptions::default(), |_| {};
    discovery_lists_the_grant_only_when_enabled,
);
