//! A client under the FAPI 2.0 Security Profile (`security_profile =
//! "fapi2"`): it signs in only through a pushed request with PKCE S256,
//! authenticates with `private_key_jwt` (ES256 or PS256), and gets
//! DPoP-bound tokens from codes that live 60 s; anything weaker is refused
//! with the error the specifications name: a plain authorization request, a
//! pushed one without PKCE or `redirect_uri`, a secret, an RS256 assertion,
//! request object or DPoP proof, a request object without `nbf`, a code
//! exchange without a proof or with another key than the one the code is
//! bound to, an expired code, a bearer use of its token. On both backends.

mod support;

use idp_core::client::{ClientKeySource, ProtocolSettings, TokenEndpointAuthMethod};
use idp_core::oidc::client_jwt::ClientKeys;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsHeader, JwsSigner, PS256, RS256};
use josekit::jwt::JwtPayload;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use support::*;

const CLIENT: &str = "fapi";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

/// The client's keys: an EC key (`f0`) and an RSA key (`f1`), registered;
/// and two DPoP keys (not registered: a proof carries its key).
struct Keys {
    ec: (Jwk, Jwk),
    rsa: (Jwk, Jwk),
    dpop: Vec<(Jwk, Jwk)>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut ec = es256_key_pairs(1, Some("f")).remove(0);
        ec.0.set_key_id("f0");
        ec.1.set_key_id("f0");
        let pair = RS256.generate_key_pair(2048).unwrap();
        // Without `alg`: the one RSA key signs RS256 and PS256.
        let without_alg = |j: Jwk| {
            let mut m: serde_json::Map<String, Value> =
                serde_json::from_str(&j.to_string()).unwrap();
            m.remove("alg");
            Jwk::from_map(m).unwrap()
        };
        let mut rsa = (
            without_alg(pair.to_jwk_private_key()),
            without_alg(pair.to_jwk_public_key()),
        );
        rsa.0.set_key_id("f1");
        rsa.1.set_key_id("f1");
        Keys {
            ec,
            rsa,
            dpop: es256_key_pairs(2, None),
        }
    })
}

fn options() -> AppOptions {
    let k = keys();
    let public = |j: &Jwk| serde_json::from_str::<Value>(&j.to_string()).unwrap();
    let jwks = json!({"keys": [public(&k.ec.1), public(&k.rsa.1)]});
    let mut c = client_with_flows(CLIENT, FLOWS);
    c.auth_method = TokenEndpointAuthMethod::PrivateKeyJwt;
    c.secret_hash = None;
    c.require_pkce = true;
    c.lifetimes.authorization_code = 60;
    c.protocol = ProtocolSettings {
        keys: Some(ClientKeySource::Inline(Arc::new(
            ClientKeys::from_jwks(&jwks.to_string()).unwrap(),
        ))),
        require_par: true,
        dpop_bound: true,
        fapi2: true,
        ..ProtocolSettings::default()
    };
    AppOptions {
        clients: vec![c],
        ..AppOptions::default()
    }
}

fn at(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

fn sign(p: &JwtPayload, h: &mut JwsHeader, alg: &str, key: &Jwk) -> String {
    let signer: Box<dyn JwsSigner> = match alg {
        "ES256" => Box::new(ES256.signer_from_jwk(key).unwrap()),
        "PS256" => Box::new(PS256.signer_from_jwk(key).unwrap()),
        _ => Box::new(RS256.signer_from_jwk(key).unwrap()),
    };
    josekit::jwt::encode_with_signer(p, h, &*signer).unwrap()
}

/// A client assertion signed with `alg` (ES256 with the EC key, RS256 or
/// PS256 with the RSA key).
fn assertion(app: &TestApp, alg: &str) -> String {
    let now = clock_secs(app);
    let mut p = JwtPayload::new();
    p.set_issuer(CLIENT);
    p.set_subject(CLIENT);
    p.set_audience(vec![app.issuer.clone()]);
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    p.set_issued_at(&at(now));
    p.set_expires_at(&at(now + 60));
    let key = if alg == "ES256" {
        &keys().ec.0
    } else {
        &keys().rsa.0
    };
    let mut h = JwsHeader::new();
    h.set_token_type("JWT");
    h.set_key_id(key.key_id().unwrap());
    sign(&p, &mut h, alg, key)
}

/// A DPoP proof with DPoP key `which` (ES256), or an RSA key with `RS256`.
fn proof(
    app: &TestApp,
    which: usize,
    alg: &str,
    htm: &str,
    htu: &str,
    token: Option<&str>,
) -> String {
    let p = dpop_proof_claims(clock_secs(app), htm, htu, token, None);
    let (private, public) = if alg == "RS256" {
        &keys().rsa
    } else {
        &keys().dpop[which]
    };
    let mut h = JwsHeader::new();
    h.set_token_type("dpop+jwt");
    h.set_jwk(public.clone());
    sign(&p, &mut h, alg, private)
}

fn request_params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", CLIENT.into()),
        ("redirect_uri", REDIRECT.into()),
        ("scope", "openid email".into()),
        ("state", "fapi-state".into()),
        ("nonce", "fapi-nonce".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

/// POST `/par` authenticated with an assertion signed `alg`, with `params`
/// and an optional DPoP proof: status and body.
async fn push(
    app: &TestApp,
    alg: &str,
    params: &[(&str, String)],
    dpop: Option<String>,
) -> (u16, Value) {
    let mut form: Vec<(&str, String)> = params.to_vec();
    form.push(("client_assertion_type", ASSERTION_TYPE.into()));
    form.push(("client_assertion", assertion(app, alg)));
    let mut req = reqwest::Client::new().post(app.url("/par")).form(&form);
    if let Some(d) = dpop {
        req = req.header("DPoP", d);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Pushes a good request (binding the code to DPoP key `bind`, if any),
/// and signs Alice in through it: (code, verifier, redirect).
async fn code(app: &TestApp, bind: Option<usize>) -> (String, String, String) {
    let (verifier, challenge) = pkce();
    let par = app.url("/par");
    let dpop = bind.map(|k| proof(app, k, "ES256", "POST", &par, None));
    let (status, body) = push(app, "ES256", &request_params(&challenge), dpop).await;
    assert_eq!(status, 201, "{body}");
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    u.query_pairs_mut()
        .append_pair("client_id", CLIENT)
        .append_pair("request_uri", body["request_uri"].as_str().unwrap());
    let to = Browser::new()
        .login(app, u.as_str(), "alice@example.com", PASSWORD)
        .await;
    let code = query_param(&to, "code").unwrap_or_else(|| panic!("{to}"));
    (code, verifier, to)
}

/// The code exchange with an ES256 assertion and `dpop` proofs.
async fn exchange(app: &TestApp, code: &str, verifier: &str, dpop: &[String]) -> (u16, Value) {
    let assertion = assertion(app, "ES256");
    let mut req = reqwest::Client::new().post(app.url("/token")).form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.as_str()),
    ]);
    for d in dpop {
        req = req.header("DPoP", d);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The whole journey: PAR (assertion, DPoP proof binding the code), the
/// login, the code exchange with the same key, userinfo in the DPoP scheme.
async fn fapi_client_signs_in(app: &TestApp) {
    let (code, verifier, to) = code(app, Some(0)).await;
    assert_eq!(
        query_param(&to, "iss").as_deref(),
        Some(app.issuer.as_str())
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("fapi-state"));
    let token_url = app.url("/token");
    let (status, t) = exchange(
        app,
        &code,
        &verifier,
        &[proof(app, 0, "ES256", "POST", &token_url, None)],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "DPoP");
    let access = t["access_token"].as_str().unwrap();
    assert!(jwt_claims(access)["cnf"]["jkt"].is_string());
    let id_token = t["id_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            id_token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    let userinfo_url = app.url("/userinfo");
    let res = reqwest::Client::new()
        .get(&userinfo_url)
        .header("Authorization", format!("DPoP {access}"))
        .header(
            "DPoP",
            proof(app, 0, "ES256", "GET", &userinfo_url, Some(access)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // As a bearer token: refused.
    let res = reqwest::Client::new()
        .get(&userinfo_url)
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A PS256 assertion is accepted too (FAPI 2.0 §5.4.1).
    let (_, challenge) = pkce();
    let (status, body) = push(app, "PS256", &request_params(&challenge), None).await;
    assert_eq!(status, 201, "{body}");
}

/// The authorization side: a plain request, a pushed one without PKCE, with
/// `plain` PKCE, without `redirect_uri`, with a secret or an RS256 assertion,
/// with a request object lacking `nbf`.
async fn fapi_refuses_weaker_authorization_requests(app: &TestApp) {
    // A plain authorization request: redirected invalid_request.
    let (_, challenge) = pkce();
    let res = Browser::new()
        .get(&authorize_url(app, CLIENT, Some(&challenge), &[]))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("invalid_request")
    );
    let good = request_params(&challenge);
    let without = |name: &str| -> Vec<(&'static str, String)> {
        good.iter().filter(|(k, _)| *k != name).cloned().collect()
    };
    let mut plain = without("code_challenge_method");
    plain.push(("code_challenge_method", "plain".into()));
    for (why, params) in [
        ("no PKCE", without("code_challenge")),
        ("plain PKCE", plain),
        ("no redirect_uri", without("redirect_uri")),
    ] {
        let (status, body) = push(app, "ES256", &params, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{why}: {body}"
        );
    }
    let (status, body) = push(app, "RS256", &good, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "RS256: {body}"
    );
    let res = reqwest::Client::new()
        .post(app.url("/par"))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "a secret");

    // A request object: exp and nbf required.
    let now = clock_secs(app);
    let object = |nbf: bool, alg: &str| {
        let mut p = JwtPayload::new();
        p.set_issuer(CLIENT);
        p.set_audience(vec![app.issuer.clone()]);
        p.set_jwt_id(uuid::Uuid::new_v4().to_string());
        p.set_expires_at(&at(now + 300));
        if nbf {
            p.set_not_before(&at(now));
        }
        for (k, v) in &good {
            p.set_claim(k, Some(Value::String(v.clone()))).unwrap();
        }
        let key = if alg == "ES256" {
            &keys().ec.0
        } else {
            &keys().rsa.0
        };
        let mut h = JwsHeader::new();
        h.set_token_type("oauth-authz-req+jwt");
        h.set_key_id(key.key_id().unwrap());
        sign(&p, &mut h, alg, key)
    };
    for (why, jwt) in [
        ("without nbf", object(false, "ES256")),
        ("RS256", object(true, "RS256")),
    ] {
        let (status, body) = push(app, "ES256", &[("request", jwt)], None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request_object")),
            "{why}: {body}"
        );
    }
    let (status, body) = push(app, "ES256", &[("request", object(true, "PS256"))], None).await;
    assert_eq!(status, 201, "{body}");
}

/// The token side: no proof, an RS256 proof, a proof of another key than
/// the code is bound to, a code older than 60 s.
async fn fapi_refuses_weaker_token_requests(app: &TestApp) {
    let token_url = app.url("/token");
    let (code, verifier, _) = code(app, Some(0)).await;
    let (status, body) = exchange(app, &code, &verifier, &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    let rs256 = proof(app, 0, "RS256", "POST", &token_url, None);
    let (status, body) = exchange(app, &code, &verifier, &[rs256]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "RS256 proof: {body}"
    );
    // RFC 9449 §10.1: bound to key 0 at PAR; key 1 cannot redeem it.
    let other = proof(app, 1, "ES256", "POST", &token_url, None);
    let (status, body) = exchange(app, &code, &verifier, &[other]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "another key: {body}"
    );
    // The refusals left the code usable with the right key.
    let right = proof(app, 0, "ES256", "POST", &token_url, None);
    let (status, body) = exchange(app, &code, &verifier, &[right]).await;
    assert_eq!(status, 200, "{body}");

    // Codes live 60 s.
    let (code, verifier, _) = self::code(app, None).await;
    app.clock.advance(time::Duration::seconds(61));
    let late = proof(app, 0, "ES256", "POST", &token_url, None);
    let (status, body) = exchange(app, &code, &verifier, &[late]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

matrix_with!(
    crate::options(),
    |_| {};
    fapi_client_signs_in,
    fapi_refuses_weaker_authorization_requests,
    fapi_refuses_weaker_token_requests,
);
