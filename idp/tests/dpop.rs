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
use josekit::jwt::JwtPayload;
use serde_json::{Value, json};
use std::sync::OnceLock;
use support::*;

const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

fn options() -> AppOptions {
    AppOptions {
        clients: vec![Client {
            protocol: ProtocolSettings {
                dpop_bound: true,
                ..ProtocolSettings::default()
            },
            ..client_with_flows("bound", FLOWS)
        }],
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
    use sha2::Digest;
    let mut p = JwtPayload::new();
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    p.set_claim("htm", Some(json!(htm))).unwrap();
    p.set_claim("htu", Some(json!(htu))).unwrap();
    p.set_claim("iat", Some(json!(clock_secs(app)))).unwrap();
    if let Some(t) = token {
        let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(t));
        p.set_claim("ath", Some(json!(ath))).unwrap();
    }
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

matrix_with!(
    dpop: crate::options(), |_| {};
    proofs_bind_tokens,
    token_requests_need_a_good_proof,
    userinfo_needs_the_proof_of_the_tokens_key,
    discovery_lists_dpop,
);
