//! DPoP (RFC 9449) for a client whose file sets `dpop_bound_access_tokens`:
//! proofs at the token endpoint bind the access token (`cnf.jkt`, token
//! type `DPoP`), userinfo takes it only in the `DPoP` scheme with a proof of
//! that key, introspection tells resource servers the key; and the
//! refusals (no proof, wrong `htu`, `htm` or `ath`, a replayed proof, a
//! bound token sent as a bearer token), on both backends.

mod support;

use base64::Engine;
use idp_core::client::{Client, ProtocolSettings};
use josekit::jws::{ES256, JwsHeader};
use serde_json::{Value, json};
use std::sync::OnceLock;
use support::*;

const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

fn options() -> AppOptions {
    let bound = ProtocolSettings {
        dpop_bound: true,
        ..ProtocolSettings::default()
    };
    AppOptions {
        clients: vec![
            Client {
                protocol: bound.clone(),
                ..client_with_flows("bound", FLOWS)
            },
            // A public client: its refresh tokens are bound too.
            Client {
                protocol: bound.clone(),
                auth_method: idp_core::client::TokenEndpointAuthMethod::None,
                secret_hash: None,
                ..client_with_flows("pubbound", FLOWS)
            },
            // Its proofs need server nonces.
            Client {
                protocol: ProtocolSettings {
                    require_dpop_nonce: true,
                    ..bound
                },
                ..client_with_flows("noncer", FLOWS)
            },
        ],
        ..AppOptions::default()
    }
}

/// Two key pairs of the client: (private JWK, public JWK).
fn key(which: usize) -> &'static (josekit::jwk::Jwk, josekit::jwk::Jwk) {
    static KEYS: OnceLock<Vec<(josekit::jwk::Jwk, josekit::jwk::Jwk)>> = OnceLock::new();
    &KEYS.get_or_init(|| es256_key_pairs(2, None))[which]
}

/// RFC 7638 thumbprint of a P-256 public key.
fn thumbprint(jwk: &josekit::jwk::Jwk) -> String {
    use sha2::Digest;
    let s = |k: &str| jwk.parameter(k).unwrap().as_str().unwrap().to_owned();
    let canonical = format!(
        r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
        s("crv"),
        s("x"),
        s("y")
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical))
}

/// A proof by key `which` for `htm` `htu` (and `ath` of `token`).
fn proof(app: &TestApp, which: usize, htm: &str, htu: &str, token: Option<&str>) -> String {
    proof_with_nonce(app, which, htm, htu, token, None)
}

fn proof_with_nonce(
    app: &TestApp,
    which: usize,
    htm: &str,
    htu: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    let p = dpop_proof_claims(clock_secs(app), htm, htu, token, nonce);
    let mut h = JwsHeader::new();
    h.set_token_type("dpop+jwt");
    h.set_jwk(key(which).1.clone());
    josekit::jwt::encode_with_signer(&p, &h, &ES256.signer_from_jwk(&key(which).0).unwrap())
        .unwrap()
}

async fn code(app: &TestApp) -> String {
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, "bound", None, &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    query_param(&to, "code").unwrap()
}

/// The code exchange with `dpop` header values: status and body.
async fn exchange(app: &TestApp, code: &str, dpop: &[String]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/token"))
        .basic_auth("bound", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ]);
    for d in dpop {
        req = req.header("DPoP", d);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn userinfo_with(app: &TestApp, auth: &str, dpop: Option<String>) -> (u16, String, Value) {
    let mut req = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .header("Authorization", auth);
    if let Some(d) = dpop {
        req = req.header("DPoP", d);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, res.json().await.unwrap_or(Value::Null))
}

/// The bound token: its type, `cnf.jkt` in the JWT and in introspection,
/// userinfo with a proof of the key.
async fn proofs_bind_tokens(app: &TestApp) {
    let token_url = app.url("/token");
    let code = code(app).await;
    let (status, t) = exchange(app, &code, &[proof(app, 0, "POST", &token_url, None)]).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    let access = t["access_token"].as_str().unwrap();
    let jkt = thumbprint(&key(0).1);
    assert_eq!(jwt_claims(access)["cnf"]["jkt"], jkt.as_str());
    let info = introspect(app, access).await;
    assert_eq!(info["cnf"]["jkt"], jkt.as_str());
    assert_eq!(info["token_type"], "DPoP");
    let userinfo_url = app.url("/userinfo");
    let (status, _, claims) = userinfo_with(
        app,
        &format!("DPoP {access}"),
        Some(proof(app, 0, "GET", &userinfo_url, Some(access))),
    )
    .await;
    assert_eq!(status, 200, "{claims}");
    assert!(claims["sub"].is_string());
    // A refreshed access token is bound too (a new proof).
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .basic_auth("bound", Some(SECRET))
        .header("DPoP", proof(app, 0, "POST", &token_url, None))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["token_type"], "DPoP");
    assert_eq!(
        jwt_claims(r["access_token"].as_str().unwrap())["cnf"]["jkt"],
        jkt.as_str()
    );
}

/// Token requests without a good proof are `invalid_dpop_proof` and leave
/// the code redeemable.
async fn token_requests_need_a_good_proof(app: &TestApp) {
    let token_url = app.url("/token");
    let code = code(app).await;
    let replayed = proof(app, 0, "POST", &token_url, None);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("no proof", vec![]),
        (
            "wrong htu",
            vec![proof(app, 0, "POST", &app.url("/other"), None)],
        ),
        ("wrong htm", vec![proof(app, 0, "GET", &token_url, None)]),
        (
            "two proofs",
            vec![replayed.clone(), proof(app, 0, "POST", &token_url, None)],
        ),
        ("garbage", vec!["not.a.jwt".into()]),
    ];
    for (why, dpop) in cases {
        let (status, body) = exchange(app, &code, &dpop).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_dpop_proof")),
            "{why}: {body}"
        );
    }
    let (status, body) = exchange(app, &code, std::slice::from_ref(&replayed)).await;
    assert_eq!(status, 200, "the code survived: {body}");
    let code = self::code(app).await;
    let (status, body) = exchange(app, &code, &[replayed]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "replayed proof: {body}"
    );
}

/// Userinfo: a bound token as a bearer token, a proof with the wrong `ath`,
/// `htu` or key, or none, are refused (401, `DPoP` challenge).
async fn userinfo_needs_the_proof_of_the_tokens_key(app: &TestApp) {
    let code = code(app).await;
    let (_, t) = exchange(
        app,
        &code,
        &[proof(app, 0, "POST", &app.url("/token"), None)],
    )
    .await;
    let access = t["access_token"].as_str().unwrap();
    let url = app.url("/userinfo");
    let (status, _, _) = userinfo_with(app, &format!("Bearer {access}"), None).await;
    assert_eq!(status, 401, "a bound token is no bearer token");
    for (why, dpop, error) in [
        ("no proof", None, "invalid_dpop_proof"),
        (
            "wrong ath",
            Some(proof(app, 0, "GET", &url, Some("other-token"))),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu",
            Some(proof(app, 0, "GET", &app.url("/token"), Some(access))),
            "invalid_dpop_proof",
        ),
        (
            "another key",
            Some(proof(app, 1, "GET", &url, Some(access))),
            "invalid_token",
        ),
    ] {
        let (status, challenge, body) = userinfo_with(app, &format!("DPoP {access}"), dpop).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], error, "{why}");
        assert!(
            challenge.starts_with(&format!("DPoP error=\"{error}\"")),
            "{why}: {challenge}"
        );
    }
    // An unbound token in the DPoP scheme.
    let plain = Browser::new()
        .login(
            app,
            &authorize_url(app, "conf", None, &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let t = exchange_code(app, "conf", &query_param(&plain, "code").unwrap(), None).await;
    let unbound = t["access_token"].as_str().unwrap();
    let (status, _, _) = userinfo_with(
        app,
        &format!("DPoP {unbound}"),
        Some(proof(app, 0, "GET", &url, Some(unbound))),
    )
    .await;
    assert_eq!(status, 401);
}

/// Discovery lists the DPoP algorithms because a client binds its tokens.
async fn discovery_lists_dpop(app: &TestApp) {
    let doc = discovery(app).await;
    assert_eq!(
        doc["dpop_signing_alg_values_supported"],
        json!(["ES256", "PS256", "RS256"])
    );
}

/// A POST to `path` as `client` (Basic with the test secret, or the
/// `client_id` in the form for `pubbound`) with `dpop` proofs: status,
/// `DPoP-Nonce` header and body.
async fn post_as(
    app: &TestApp,
    client: &str,
    path: &str,
    form: &[(&str, &str)],
    dpop: &[String],
) -> (u16, Option<String>, Value) {
    let mut form = form.to_vec();
    let mut req = reqwest::Client::new().post(app.url(path));
    if client == "pubbound" {
        form.push(("client_id", client));
    } else {
        req = req.basic_auth(client, Some(SECRET));
    }
    let mut req = req.form(&form);
    for d in dpop {
        req = req.header("DPoP", d);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, nonce, res.json().await.unwrap_or(Value::Null))
}

/// RFC 9449 §5: a public client's refresh tokens are bound to the key of
/// its first proof; another key or none is refused, and the token stays
/// usable with the right one.
async fn public_clients_refresh_tokens_are_bound(app: &TestApp) {
    let token_url = app.url("/token");
    let (verifier, challenge) = pkce();
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, "pubbound", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&to, "code").unwrap();
    let (status, _, t) = post_as(
        app,
        "pubbound",
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
        &[proof(app, 0, "POST", &token_url, None)],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let refresh = t["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    let (status, _, e) = post_as(
        app,
        "pubbound",
        "/token",
        &form,
        &[proof(app, 1, "POST", &token_url, None)],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "another key: {e}"
    );
    let (status, _, e) = post_as(app, "pubbound", "/token", &form, &[]).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "no proof: {e}"
    );
    let (status, _, r) = post_as(
        app,
        "pubbound",
        "/token",
        &form,
        &[proof(app, 0, "POST", &token_url, None)],
    )
    .await;
    assert_eq!(status, 200, "the right key: {r}");
    assert_eq!(
        jwt_claims(r["access_token"].as_str().unwrap())["cnf"]["jkt"],
        thumbprint(&key(0).1).as_str()
    );
}

/// RFC 9449 §8: a client with `require_dpop_nonce` first gets
/// `use_dpop_nonce` and a nonce, then succeeds with it; every answer
/// carries a fresh nonce; an old one is refused.
async fn server_nonces_are_required_when_set(app: &TestApp) {
    let token_url = app.url("/token");
    let form = [("grant_type", "client_credentials")];
    let (status, nonce, e) = post_as(
        app,
        "noncer",
        "/token",
        &form,
        &[proof(app, 0, "POST", &token_url, None)],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{e}"
    );
    let nonce = nonce.expect("a DPoP-Nonce header");
    let (status, fresh, t) = post_as(
        app,
        "noncer",
        "/token",
        &form,
        &[proof_with_nonce(
            app,
            0,
            "POST",
            &token_url,
            None,
            Some(&nonce),
        )],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    assert!(fresh.is_some(), "a fresh nonce with the answer");
    let (status, _, e) = post_as(
        app,
        "noncer",
        "/token",
        &form,
        &[proof_with_nonce(
            app,
            0,
            "POST",
            &token_url,
            None,
            Some("forged-nonce"),
        )],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "{e}"
    );
    app.clock.advance(time::Duration::seconds(121));
    let (status, _, e) = post_as(
        app,
        "noncer",
        "/token",
        &form,
        &[proof_with_nonce(
            app,
            0,
            "POST",
            &token_url,
            None,
            Some(&nonce),
        )],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("use_dpop_nonce")),
        "stale: {e}"
    );
    // Clients without the setting are not asked for nonces.
    let (status, nonce, t) = post_as(
        app,
        "bound",
        "/token",
        &form,
        &[proof(app, 0, "POST", &token_url, None)],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert!(nonce.is_none());
}

/// A proof a DPoP client sends to `/introspect` is checked (`htu` that
/// endpoint, single use); without one the request is answered (RP
/// libraries introspect without proofs).
async fn introspection_takes_proofs_of_bound_clients(app: &TestApp) {
    let introspect_url = app.url("/introspect");
    let (_, _, t) = post_as(
        app,
        "bound",
        "/token",
        &[("grant_type", "client_credentials")],
        &[proof(app, 0, "POST", &app.url("/token"), None)],
    )
    .await;
    let access = t["access_token"].as_str().unwrap();
    let form = [("token", access)];
    let (status, _, info) = post_as(app, "bound", "/introspect", &form, &[]).await;
    assert_eq!((status, &info["active"]), (200, &json!(true)), "{info}");
    let wrong = proof(app, 0, "POST", &app.url("/token"), None);
    let (status, _, e) = post_as(app, "bound", "/introspect", &form, &[wrong]).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "wrong htu: {e}"
    );
    let good = proof(app, 0, "POST", &introspect_url, None);
    let (status, _, info) = post_as(
        app,
        "bound",
        "/introspect",
        &form,
        std::slice::from_ref(&good),
    )
    .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["active"], true);
    let (status, _, e) = post_as(app, "bound", "/introspect", &form, &[good]).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "replayed: {e}"
    );
    assert_eq!(
        introspect(app, access).await["active"],
        true,
        "conf: no proof"
    );
}

/// RFC 9449 §10: `dpop_jkt` binds the code to a key; a malformed one is
/// refused.
async fn dpop_jkt_binds_the_code(app: &TestApp) {
    let token_url = app.url("/token");
    let jkt = thumbprint(&key(0).1);
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, "bound", None, &[("dpop_jkt", jkt.as_str())]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&to, "code").unwrap();
    let (status, body) = exchange(app, &code, &[proof(app, 1, "POST", &token_url, None)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, body) = exchange(app, &code, &[proof(app, 0, "POST", &token_url, None)]).await;
    assert_eq!(status, 200, "{body}");
    let res = Browser::new()
        .get(&authorize_url(app, "bound", None, &[("dpop_jkt", "short")]))
        .await;
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("invalid_request")
    );
}

matrix_with!(
    dpop: crate::options(), |_| {};
    proofs_bind_tokens,
    token_requests_need_a_good_proof,
    userinfo_needs_the_proof_of_the_tokens_key,
    discovery_lists_dpop,
    public_clients_refresh_tokens_are_bound,
    server_nonces_are_required_when_set,
    introspection_takes_proofs_of_bound_clients,
    dpop_jkt_binds_the_code,
);
