//! Pushed authorization requests (RFC 9126) and request objects (RFC 9101),
//! by value and through PAR: the happy paths and the refusals (a
//! `request_uri` reused or expired, a client required to push sending a
//! plain request, a request object expired, signed by an unregistered key,
//! or replayed), on both backends.

mod support;

use idp_core::client::{Client, ClientKeySource, ProtocolSettings, TokenEndpointAuthMethod};
use idp_core::oidc::client_jwt::ClientKeys;
use josekit::jws::{ES256, JwsHeader};
use josekit::jwt::JwtPayload;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use support::*;

const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

/// Key pairs made once: (private JWK, public JWK); 0 is registered.
fn key(which: usize) -> &'static (josekit::jwk::Jwk, josekit::jwk::Jwk) {
    static KEYS: OnceLock<Vec<(josekit::jwk::Jwk, josekit::jwk::Jwk)>> = OnceLock::new();
    &KEYS.get_or_init(|| es256_key_pairs(2, Some("r")))[which]
}

fn options() -> AppOptions {
    let jwks = json!({"keys": [serde_json::from_str::<Value>(&key(0).1.to_string()).unwrap()]});
    let keys = ClientKeySource::Inline(Arc::new(ClientKeys::from_jwks(&jwks.to_string()).unwrap()));
    AppOptions {
        clients: vec![
            // Authenticates with its secret; may send request objects.
            Client {
                protocol: ProtocolSettings {
                    keys: Some(keys.clone()),
                    ..ProtocolSettings::default()
                },
                ..client_with_flows("signer", FLOWS)
            },
            Client {
                protocol: ProtocolSettings {
                    require_par: true,
                    ..ProtocolSettings::default()
                },
                ..client_with_flows("pushonly", FLOWS)
            },
            Client {
                auth_method: TokenEndpointAuthMethod::None,
                secret_hash: None,
                ..client_with_flows("public", FLOWS)
            },
        ],
        ..AppOptions::default()
    }
}

/// POST `/par` as `client` (HTTP Basic with the test secret, or none for a
/// public client): status and body.
async fn push(app: &TestApp, client: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(app.url("/par"));
    // A public client names itself with the request's client_id.
    let form: Vec<(&str, &str)> = params.to_vec();
    if client != "public" {
        req = req.basic_auth(client, Some(SECRET));
    }
    let res = req.form(&form).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn request_params<'a>(client: &'a str, challenge: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email"),
        ("state", "pushed-state"),
        ("nonce", "pushed-nonce"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
}

fn authorize_with_uri(app: &TestApp, client: &str, request_uri: &str) -> String {
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", client)
        .append_pair("request_uri", request_uri);
    u.into()
}

/// A request object signed by key `which` for `signer`, adjusted by `edit`.
fn request_object(
    app: &TestApp,
    which: usize,
    challenge: &str,
    edit: impl FnOnce(&mut JwtPayload),
) -> String {
    let now = clock_secs(app);
    let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
    let mut p = JwtPayload::new();
    p.set_issuer("signer");
    p.set_audience(vec![app.issuer.clone()]);
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    p.set_not_before(&at(now));
    p.set_expires_at(&at(now + 300));
    for (k, v) in request_params("signer", challenge) {
        p.set_claim(k, Some(Value::String(v.into()))).unwrap();
    }
    edit(&mut p);
    let mut h = JwsHeader::new();
    h.set_token_type("oauth-authz-req+jwt");
    h.set_key_id(key(which).0.key_id().unwrap());
    josekit::jwt::encode_with_signer(&p, &h, &ES256.signer_from_jwk(&key(which).0).unwrap())
        .unwrap()
}

/// The redirect back to the client after Alice signs in from `url`.
async fn sign_in(app: &TestApp, url: &str) -> String {
    Browser::new()
        .login(app, url, "alice@example.com", PASSWORD)
        .await
}

/// PAR: 201 with a `request_uri` living 60 s; `/authorize` with it (and
/// the client_id) runs the pushed request: its state, nonce and PKCE.
async fn pushed_request_is_used_once(app: &TestApp) {
    let (verifier, challenge) = pkce();
    for client in ["conf", "public"] {
        let (status, body) = push(app, client, &request_params(client, &challenge)).await;
        assert_eq!(status, 201, "{client}: {body}");
        assert_eq!(body["expires_in"], 60);
        let uri = body["request_uri"].as_str().unwrap();
        assert!(
            uri.starts_with("urn:ietf:params:oauth:request_uri:"),
            "{uri}"
        );
        let to = sign_in(app, &authorize_with_uri(app, client, uri)).await;
        assert_eq!(
            query_param(&to, "state").as_deref(),
            Some("pushed-state"),
            "{to}"
        );
        let code = query_param(&to, "code").unwrap();
        let tokens = if client == "public" {
            let (status, t) = reqwest::Client::new()
                .post(app.url("/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", REDIRECT),
                    ("client_id", "public"),
                    ("code_verifier", verifier.as_str()),
                ])
                .send()
                .await
                .map(|r| (r.status().as_u16(), r))
                .unwrap();
            assert_eq!(status, 200);
            t.json::<Value>().await.unwrap()
        } else {
            exchange_code(app, client, &code, Some(&verifier)).await
        };
        assert_eq!(
            jwt_claims(tokens["id_token"].as_str().unwrap())["nonce"],
            "pushed-nonce"
        );
        // Used once: the same request_uri again is refused, on a page.
        let res = Browser::new()
            .get(&authorize_with_uri(app, client, uri))
            .await;
        assert_eq!(res.status(), 400, "{client}: reused");
        assert!(res.headers().get("location").is_none());
    }
}

/// A request_uri expires 60 s after it was pushed; one of another client,
/// an unknown one, and a URL are refused too.
async fn pushed_request_expires_and_belongs_to_its_client(app: &TestApp) {
    let (_, challenge) = pkce();
    let (_, body) = push(app, "conf", &request_params("conf", &challenge)).await;
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    let res = Browser::new()
        .get(&authorize_with_uri(app, "spa", &uri))
        .await;
    assert_eq!(res.status(), 400, "another client's request_uri");
    let (_, body) = push(app, "conf", &request_params("conf", &challenge)).await;
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    app.clock.advance(time::Duration::seconds(61));
    let res = Browser::new()
        .get(&authorize_with_uri(app, "conf", &uri))
        .await;
    assert_eq!(res.status(), 400, "expired");
    for bad in [
        "urn:ietf:params:oauth:request_uri:unknown",
        "https://rp.example/request.jwt",
    ] {
        let res = Browser::new()
            .get(&authorize_with_uri(app, "conf", bad))
            .await;
        assert_eq!(res.status(), 400, "{bad}");
    }
}

/// The PAR endpoint checks the request as `/authorize` would, and the
/// client: JSON errors, nothing kept.
async fn pushed_requests_are_checked(app: &TestApp) {
    let (_, challenge) = pkce();
    let mut bad_redirect = request_params("conf", &challenge);
    bad_redirect[2] = ("redirect_uri", "https://evil.example/cb");
    let mut bad_scope = request_params("conf", &challenge);
    bad_scope[3] = ("scope", "openid nope");
    let mut other_client = request_params("spa", &challenge);
    other_client[1] = ("client_id", "spa");
    for (why, params, error) in [
        ("unregistered redirect_uri", bad_redirect, "invalid_request"),
        ("scope", bad_scope, "invalid_scope"),
        (
            "client_id of another client",
            other_client,
            "invalid_request",
        ),
    ] {
        let (status, body) = push(app, "conf", &params).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{why}: {body}"
        );
    }
    let mut nested = request_params("conf", &challenge);
    nested.push(("request_uri", "urn:ietf:params:oauth:request_uri:x"));
    assert_eq!(push(app, "conf", &nested).await.0, 400);
    // Unauthenticated.
    let res = reqwest::Client::new()
        .post(app.url("/par"))
        .basic_auth("conf", Some("wrong"))
        .form(&request_params("conf", &challenge))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// A client required to push: a plain request is refused (redirected with
/// `invalid_request`), a pushed one works.
async fn a_client_required_to_push_cannot_send_plain_requests(app: &TestApp) {
    let res = Browser::new()
        .get(&authorize_url(app, "pushonly", None, &[]))
        .await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request"),
        "{to}"
    );
    let (verifier, challenge) = pkce();
    let (status, body) = push(app, "pushonly", &request_params("pushonly", &challenge)).await;
    assert_eq!(status, 201, "{body}");
    let to = sign_in(
        app,
        &authorize_with_uri(app, "pushonly", body["request_uri"].as_str().unwrap()),
    )
    .await;
    let code = query_param(&to, "code").unwrap();
    exchange_code(app, "pushonly", &code, Some(&verifier)).await;
}

/// A request object by value: its claims are the request; the outer
/// parameters are only `client_id` (and `request`).
async fn request_object_by_value_and_through_par(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let jwt = request_object(app, 0, &challenge, |_| {});
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", "signer")
        .append_pair("request", &jwt);
    let to = sign_in(app, u.as_str()).await;
    assert_eq!(
        query_param(&to, "state").as_deref(),
        Some("pushed-state"),
        "{to}"
    );
    let code = query_param(&to, "code").unwrap();
    exchange_code(app, "signer", &code, Some(&verifier)).await;

    // The same object pushed (a new jti).
    let jwt = request_object(app, 0, &challenge, |_| {});
    let (status, body) = push(app, "signer", &[("request", jwt.as_str())]).await;
    assert_eq!(status, 201, "{body}");
    let to = sign_in(
        app,
        &authorize_with_uri(app, "signer", body["request_uri"].as_str().unwrap()),
    )
    .await;
    assert!(query_param(&to, "code").is_some(), "{to}");
}

/// Refused request objects: expired, not yet valid, signed by an
/// unregistered key, for another audience, replayed; by value (a page) and
/// pushed (`invalid_request_object`).
async fn bad_request_objects_are_refused(app: &TestApp) {
    let (_, challenge) = pkce();
    let now = clock_secs(app);
    let at = |s: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
    let replayed = request_object(app, 0, &challenge, |_| {});
    let (status, _) = push(app, "signer", &[("request", replayed.as_str())]).await;
    assert_eq!(status, 201, "first use");
    let cases = [
        (
            "expired",
            request_object(app, 0, &challenge, |p| {
                p.set_not_before(&at(now - 600));
                p.set_expires_at(&at(now - 300));
            }),
        ),
        (
            "not yet valid",
            request_object(app, 0, &challenge, |p| p.set_not_before(&at(now + 600))),
        ),
        (
            "unregistered key",
            request_object(app, 1, &challenge, |_| {}),
        ),
        (
            "another audience",
            request_object(app, 0, &challenge, |p| {
                p.set_audience(vec!["https://other.example"])
            }),
        ),
        ("replayed jti", replayed),
    ];
    for (why, jwt) in &cases {
        let (status, body) = push(app, "signer", &[("request", jwt.as_str())]).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request_object")),
            "{why}: {body}"
        );
        let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
        u.query_pairs_mut()
            .append_pair("client_id", "signer")
            .append_pair("request", jwt);
        let res = Browser::new().get(u.as_str()).await;
        assert_eq!(res.status(), 400, "{why} by value");
    }
    // A client with no keys cannot send one.
    let jwt = request_object(app, 0, &challenge, |p| {
        p.set_issuer("conf");
        p.set_claim("client_id", Some(Value::String("conf".into())))
            .unwrap();
    });
    let (status, body) = push(app, "conf", &[("request", jwt.as_str())]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request_object")),
        "{body}"
    );
}

/// Discovery: the PAR endpoint, request objects with their algorithms.
async fn discovery_lists_par_and_request_objects(app: &TestApp) {
    let doc = discovery(app).await;
    assert_eq!(
        doc["pushed_authorization_request_endpoint"],
        app.url("/par")
    );
    assert_eq!(doc["require_pushed_authorization_requests"], false);
    assert_eq!(doc["request_parameter_supported"], true);
    assert_eq!(doc["request_uri_parameter_supported"], false);
    assert!(doc["request_object_signing_alg_values_supported"].is_array());
}

/// Two browsers using one `request_uri` at the same moment: one gets the
/// request, the other an error page.
async fn a_request_uri_used_twice_at_once_works_once(app: &TestApp) {
    let (_, challenge) = pkce();
    let (status, body) = push(app, "conf", &request_params("conf", &challenge)).await;
    assert_eq!(status, 201, "{body}");
    let url = authorize_with_uri(app, "conf", body["request_uri"].as_str().unwrap());
    let (a, b) = (Browser::new(), Browser::new());
    let (ra, rb) = tokio::join!(a.get(&url), b.get(&url));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses[1], 400, "one of them is refused: {statuses:?}");
    assert_ne!(statuses[0], 400, "the other runs the request: {statuses:?}");
}

/// A pushed request outlives the node it was pushed to: pushed on one
/// node, which stops, and used on another of the same deployment (the
/// short-lived store is Redis, shared). With the in-process store (one
/// node, SQLite) a restart forgets it, as documented: the client pushes
/// again.
async fn a_pushed_request_survives_a_restart(backend: Backend) {
    let db = SharedDatabase::new(backend).await;
    let prefix = format!("idp-test:{}:", uuid::Uuid::new_v4().simple());
    let same_store = |p: String| move |s: &mut idp::config::Settings| s.redis_key_prefix = p;
    let a = spawn_app_on(&db, backend, options(), same_store(prefix.clone())).await;
    let (verifier, challenge) = pkce();
    let (status, body) = push(&a, "conf", &request_params("conf", &challenge)).await;
    assert_eq!(status, 201, "{body}");
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    a.stop().await;
    let b = spawn_app_on(&db, backend, options(), same_store(prefix)).await;
    let url = authorize_with_uri(&b, "conf", &uri);
    if backend == Backend::Sqlite {
        let res = Browser::new().get(&url).await;
        assert_eq!(res.status(), 400, "the in-process store forgot it");
    } else {
        let to = sign_in(&b, &url).await;
        let code = query_param(&to, "code").unwrap_or_else(|| panic!("{to}"));
        exchange_code(&b, "conf", &code, Some(&verifier)).await;
    }
    b.stop().await;
    db.cleanup().await;
}

on_both_backends!(a_pushed_request_survives_a_restart);

matrix_with!(
    par: crate::options(), |_| {};
    a_request_uri_used_twice_at_once_works_once,
    pushed_request_is_used_once,
    pushed_request_expires_and_belongs_to_its_client,
    pushed_requests_are_checked,
    a_client_required_to_push_cannot_send_plain_requests,
    request_object_by_value_and_through_par,
    bad_request_objects_are_refused,
    discovery_lists_par_and_request_objects,
);
