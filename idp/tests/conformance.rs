//! The OpenID conformance-suite modules that no other test covered (see
//! `e2e/conformance.md`), each as one test asserting what the module asserts:
//! userinfo by POST, requests without `nonce`, with `openid` not first, with
//! `display`, `claims_locales` and `claims`, by form POST, `client_secret_post`,
//! the unsupported `address`/`phone` scopes, refresh-token client binding,
//! the RS256 ID token of a client file that names no algorithm, and the
//! RP-initiated logout variants (altered, foreign and missing hints).

mod support;

use openidconnect::JsonWebKey;
use serde_json::Value;
use support::*;

/// Registered for `client_secret_post` (the other test clients say
/// `client_secret_basic`; the provider accepts either from any of them).
const POST_CLIENT: &str = "post";

/// Registered from a client file that names no signing algorithm.
const FILE_CLIENT: &str = "from-file";

/// A confidential client (secret [`SECRET`]) as an admin writes its file,
/// naming neither `id_token_signed_response_alg` nor
/// `access_token_signed_response_alg`, read by the provider's loader.
fn client_from_file() -> idp_core::client::Client {
    let text = format!(
        "client_id = \"{FILE_CLIENT}\"\nname = \"Portal from a file\"\ntype = \"confidential\"\n\
         secret_hash = \"{}\"\nredirect_uris = [\"{REDIRECT}\"]\n",
        idp_core::client::ClientSecretHash::of(SECRET).encode()
    );
    let file: idp::config::ClientFile = toml::from_str(&text).expect("a client file");
    idp::config::parse_client(file, &idp_core::assurance::Levels::builtin())
        .expect("a valid client file")
}

fn options() -> AppOptions {
    let mut post = client_with_flows(
        POST_CLIENT,
        r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#,
    );
    post.auth_method = idp_core::client::TokenEndpointAuthMethod::ClientSecretPost;
    AppOptions {
        clients: vec![post, client_from_file()],
        ..AppOptions::default()
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn b64_json(part: &str) -> Value {
    use base64::Engine;
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url"),
    )
    .expect("JSON")
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT's header and claims, unverified.
fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = b64_json(parts.next().expect("header"));
    let claims = b64_json(parts.next().expect("payload"));
    (header, claims)
}

/// `/authorize?` with exactly these parameters, in this order.
fn authorize_exact(app: &TestApp, params: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    u.query_pairs_mut().extend_pairs(params);
    u.into()
}

/// The callback must be a success for our redirect URI: code, state, iss.
fn code_of(callback: &str, state: &str, app: &TestApp) -> String {
    assert!(callback.starts_with(REDIRECT), "{callback}");
    assert!(query_param(callback, "error").is_none(), "{callback}");
    assert_eq!(query_param(callback, "state").as_deref(), Some(state));
    assert_eq!(
        query_param(callback, "iss").as_deref(),
        Some(app.issuer.as_str())
    );
    query_param(callback, "code").unwrap_or_else(|| panic!("no code in {callback}"))
}

/// Alice signs in through `conf` (PKCE) in a new browser; the browser (with
/// its session) and the token response.
async fn signed_in(app: &TestApp) -> (Browser, Value) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, "conf", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = code_of(&cb, "st-123", app);
    let tokens = exchange_code(app, "conf", &code, Some(&verifier)).await;
    (browser, tokens)
}

/// Whether the browser still has a session: `prompt=none` gets a code, or
/// `login_required`.
async fn has_session(app: &TestApp, browser: &Browser) -> bool {
    let (_, challenge) = pkce();
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("prompt", "none")],
        ))
        .await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{to}");
    match query_param(&to, "code") {
        Some(_) => true,
        None => {
            assert_eq!(
                query_param(&to, "error").as_deref(),
                Some("login_required"),
                "{to}"
            );
            false
        }
    }
}

/// A logout request that must be refused: a 400 page, never a redirect.
async fn assert_logout_refused(app: &TestApp, browser: &Browser, query: &str) {
    let res = browser
        .get(&format!("{}?{query}", app.url("/logout")))
        .await;
    assert_eq!(res.status(), 400, "{query}");
    assert!(
        res.headers().get("location").is_none(),
        "never redirected: {query}"
    );
    let html = res.text().await.unwrap();
    assert!(
        html.contains("The request is invalid or incomplete."),
        "{query}: {html}"
    );
}

// ------------------------------------------------------------------ ID token

/// The key of `kid` in `/jwks`.
async fn published_key(app: &TestApp, kid: &str) -> openidconnect::core::CoreJsonWebKey {
    let jwks: openidconnect::core::CoreJsonWebKeySet = reqwest::get(app.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .expect("a JWK set");
    jwks.keys()
        .iter()
        .find(|k| k.key_id().map(|id| id.as_str()) == Some(kid))
        .unwrap_or_else(|| panic!("no key {kid} in /jwks"))
        .clone()
}

/// Checks a compact JWS's signature with `key` for `alg`.
fn verify_with(
    key: &openidconnect::core::CoreJsonWebKey,
    alg: &openidconnect::core::CoreJwsSigningAlgorithm,
    jws: &str,
) -> Result<(), openidconnect::SignatureVerificationError> {
    use base64::Engine;
    let (signed, signature) = jws.rsplit_once('.').expect("a compact JWS");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    key.verify_signature(alg, signed.as_bytes(), &signature)
}

/// `oidcc-idtoken-signature`: a client whose file names no algorithm gets
/// RS256 ID tokens (Dynamic Client Registration 1.0 §2: RS256 is the
/// default), whose `kid` names an RSA signing key of `/jwks` that verifies
/// the signature (and no longer does once the payload is altered). Its JWT
/// access tokens stay ES256, their own setting; a client configured for
/// ES256 (the test client `conf`) still gets ES256 ID tokens.
async fn id_token_of_a_client_naming_no_algorithm_is_rs256_and_verifies_by_kid(app: &TestApp) {
    use openidconnect::core::{CoreJsonWebKeyType, CoreJsonWebKeyUse, CoreJwsSigningAlgorithm};
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, FILE_CLIENT, Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = code_of(&cb, "st-123", app);
    let t = exchange_code(app, FILE_CLIENT, &code, Some(&verifier)).await;
    let id_token = t["id_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(id_token);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["typ"], "JWT", "{header}");
    let kid = header["kid"].as_str().expect("the header names its key");
    let key = published_key(app, kid).await;
    assert_eq!(*key.key_type(), CoreJsonWebKeyType::RSA);
    assert_eq!(key.key_use(), Some(&CoreJsonWebKeyUse::Signature));
    assert!(
        matches!(
            key.signing_alg(),
            openidconnect::JsonWebKeyAlgorithm::Algorithm(
                CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
            )
        ),
        "published for RS256"
    );
    verify_with(
        &key,
        &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        id_token,
    )
    .expect("the RS256 signature verifies with the key of its kid");
    assert_eq!(claims["iss"], app.issuer.as_str());
    assert_eq!(claims["aud"], FILE_CLIENT);
    assert_eq!(claims["sub"], app.user.id.0.to_string());
    assert_eq!(claims["nonce"], "n-456");

    // The signature is over these very bytes: another payload fails.
    let mut parts: Vec<&str> = id_token.split('.').collect();
    let mut altered = claims.clone();
    altered["sub"] = "someone-else".into();
    let altered = b64(&altered);
    parts[1] = &altered;
    assert!(
        verify_with(
            &key,
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            &parts.join(".")
        )
        .is_err(),
        "an altered payload does not verify"
    );

    // The access token (RFC 9068 JWT) has its own algorithm: ES256.
    let access = t["access_token"].as_str().unwrap();
    let (header, _) = jwt_parts(access);
    assert_eq!(header["alg"], "ES256", "{header}");
    assert_eq!(header["typ"], "at+jwt", "{header}");
    let key = published_key(app, header["kid"].as_str().unwrap()).await;
    assert_eq!(*key.key_type(), CoreJsonWebKeyType::EllipticCurve);
    verify_with(&key, &CoreJwsSigningAlgorithm::EcdsaP256Sha256, access)
        .expect("the access token verifies with the key of its kid");

    // A client configured for ES256 (`conf`) keeps it.
    let (_, t) = signed_in(app).await;
    let (header, _) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(header["alg"], "ES256", "{header}");
}

// ------------------------------------------------------------------ userinfo

/// `oidcc-userinfo-post-header`.
async fn userinfo_by_post_with_a_bearer_header(app: &TestApp) {
    let (_, t) = signed_in(app).await;
    let access = t["access_token"].as_str().unwrap();
    let (_, id) = jwt_parts(t["id_token"].as_str().unwrap());
    let res = reqwest::Client::new()
        .post(app.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["sub"], app.user.id.to_string());
    assert_eq!(info["sub"], id["sub"]);
    assert_eq!(info["email"], "Alice@Example.com");
}

/// `oidcc-userinfo-post-body` (RFC 6750 §2.2): the form-body token is
/// accepted.
async fn userinfo_by_post_with_the_token_in_the_form_body(app: &TestApp) {
    let (_, t) = signed_in(app).await;
    let access = t["access_token"].as_str().unwrap();
    let res = reqwest::Client::new()
        .post(app.url("/userinfo"))
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["sub"], app.user.id.to_string());
    assert_eq!(info["email"], "Alice@Example.com");
    // RFC 6750 §2: one method per request; both at once is invalid_request.
    let res = reqwest::Client::new()
        .post(app.url("/userinfo"))
        .bearer_auth(access)
        .form(&[("access_token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}

// ---------------------------------------------------- authorization requests

/// `oidcc-ensure-request-without-nonce-succeeds-for-code-flow`.
async fn code_flow_without_nonce_succeeds_and_the_id_token_has_no_nonce(app: &TestApp) {
    let browser = Browser::new();
    let url = authorize_exact(
        app,
        &[
            ("response_type", "code"),
            ("client_id", "conf"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email"),
            ("state", "no-nonce"),
        ],
    );
    let cb = browser
        .login(app, &url, "alice@example.com", PASSWORD)
        .await;
    let code = code_of(&cb, "no-nonce", app);
    let t = exchange_code(app, "conf", &code, None).await;
    let (_, id) = jwt_parts(t["id_token"].as_str().expect("an ID token"));
    assert_eq!(id["sub"], app.user.id.to_string());
    assert_eq!(id["aud"], "conf");
    assert!(id.get("nonce").is_none(), "no nonce claim: {id}");
}

/// `oidcc-alternate-happy-flow`: `openid` last in `scope`, the parameters
/// in another order.
async fn alternate_happy_flow_with_openid_last(app: &TestApp) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let url = authorize_exact(
        app,
        &[
            ("nonce", "alt-nonce"),
            ("state", "alt-state"),
            ("code_challenge_method", "S256"),
            ("scope", "profile email openid"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("client_id", "conf"),
            ("response_type", "code"),
        ],
    );
    let cb = browser
        .login(app, &url, "alice@example.com", PASSWORD)
        .await;
    let code = code_of(&cb, "alt-state", app);
    let t = exchange_code(app, "conf", &code, Some(&verifier)).await;
    let (_, id) = jwt_parts(t["id_token"].as_str().expect("an ID token"));
    assert_eq!(id["nonce"], "alt-nonce");
    assert_eq!(id["sub"], app.user.id.to_string());
    assert_eq!(id["email"], "Alice@Example.com");
    assert_eq!(id["name"], "Alice Martin");
    let info = userinfo(app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], id["sub"]);
    assert_eq!(info["email"], "Alice@Example.com");
    assert_eq!(info["name"], "Alice Martin");
}

/// A full login through `conf` with `extra` parameters added to the usual
/// request: code, exchange, ID token for Alice. Returns the token response.
async fn flow_with(app: &TestApp, extra: &[(&str, &str)]) -> Value {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, "conf", Some(&challenge), extra),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = code_of(&cb, "st-123", app);
    let t = exchange_code(app, "conf", &code, Some(&verifier)).await;
    let (_, id) = jwt_parts(t["id_token"].as_str().expect("an ID token"));
    assert_eq!(id["sub"], app.user.id.to_string());
    assert_eq!(id["nonce"], "n-456");
    t
}

/// `oidcc-display-popup`.
async fn display_popup_is_accepted(app: &TestApp) {
    flow_with(app, &[("display", "popup")]).await;
}

/// `oidcc-claims-locales`: accepted and ignored.
async fn claims_locales_is_accepted(app: &TestApp) {
    let t = flow_with(app, &[("claims_locales", "se")]).await;
    let info = userinfo(app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], app.user.id.to_string());
}

/// `oidcc-claims-essential`: `name` asked as essential for userinfo; the
/// flow succeeds and userinfo carries it (`claims_parameter_supported`).
async fn claims_parameter_essential_name_in_userinfo(app: &TestApp) {
    let t = flow_with(
        app,
        &[("claims", r#"{"userinfo":{"name":{"essential":true}}}"#)],
    )
    .await;
    let info = userinfo(app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], app.user.id.to_string());
    assert_eq!(info["name"], "Alice Martin");
}

/// `oidcc-ensure-post-request-succeeds`: the authorization request as a
/// form POST (OIDC Core §3.1.2.1).
async fn authorization_request_by_form_post(app: &TestApp) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let res = browser
        .http
        .post(app.url("/authorize"))
        .form(&[
            ("response_type", "code"),
            ("client_id", "conf"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid email profile"),
            ("state", "posted"),
            ("nonce", "n-post"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert!(to.starts_with("/login/"), "to the login pages: {to}");
    let cb = browser
        .login(app, &app.url(&to), "alice@example.com", PASSWORD)
        .await;
    let code = code_of(&cb, "posted", app);
    let t = exchange_code(app, "conf", &code, Some(&verifier)).await;
    let (_, id) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(id["nonce"], "n-post");
    assert_eq!(id["sub"], app.user.id.to_string());
}

/// `oidcc-server-client-secret-post`: the happy flow with the client
/// credentials in the token request body.
async fn code_exchange_with_client_secret_post(app: &TestApp) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, POST_CLIENT, Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = code_of(&cb, "st-123", app);
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
            ("client_id", POST_CLIENT),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let t: Value = res.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    let (_, id) = jwt_parts(t["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], POST_CLIENT);
    assert_eq!(id["sub"], app.user.id.to_string());
    assert_eq!(id["nonce"], "n-456");
    let info = userinfo(app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], id["sub"]);
}

/// `oidcc-scope-address`, `oidcc-scope-phone`, `oidcc-scope-all`: discovery
/// does not offer `address` or `phone` (so the suite skips these modules),
/// and a request for them gets `invalid_scope` (config/README.md: a scope the
/// client may not request gets `invalid_scope`).
async fn address_and_phone_scopes_are_not_supported(app: &TestApp) {
    let meta = discovery(app).await;
    let scopes: Vec<&str> = meta["scopes_supported"]
        .as_array()
        .expect("scopes_supported")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(scopes.contains(&"openid"), "{scopes:?}");
    assert!(!scopes.contains(&"address"), "{scopes:?}");
    assert!(!scopes.contains(&"phone"), "{scopes:?}");
    for scope in [
        "openid address",
        "openid phone",
        "openid address email phone profile",
    ] {
        let (_, challenge) = pkce();
        let url = authorize_exact(
            app,
            &[
                ("response_type", "code"),
                ("client_id", "conf"),
                ("redirect_uri", REDIRECT),
                ("scope", scope),
                ("state", "st-scope"),
                ("nonce", "n-scope"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        );
        let res = Browser::new().get(&url).await;
        assert_eq!(res.status(), 303, "{scope}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{scope}: {to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_scope"),
            "{scope}: {to}"
        );
        assert_eq!(query_param(&to, "state").as_deref(), Some("st-scope"));
        assert_eq!(
            query_param(&to, "iss").as_deref(),
            Some(app.issuer.as_str())
        );
        assert!(query_param(&to, "code").is_none(), "{to}");
    }
}

/// `oidcc-refresh-token`: the refresh token works for its client only;
/// another authenticated client gets `invalid_grant`, and that attempt does
/// not spoil the token for its own client.
async fn refresh_token_is_bound_to_its_client(app: &TestApp) {
    let (_, t) = signed_in(app).await;
    let refresh = t["refresh_token"].as_str().expect("a refresh token");
    let (_, first_id) = jwt_parts(t["id_token"].as_str().unwrap());
    let (status, body) = token_request(
        app,
        "rsa",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(body.get("access_token").is_none(), "{body}");
    // The original client's token still works.
    let (status, t2) = token_request(
        app,
        "conf",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, 200, "{t2}");
    assert!(t2["access_token"].is_string());
    assert_ne!(t2["refresh_token"].as_str(), Some(refresh), "rotated");
    let (_, id) = jwt_parts(t2["id_token"].as_str().expect("a refreshed ID token"));
    for claim in ["iss", "sub", "aud", "auth_time"] {
        assert_eq!(id[claim], first_id[claim], "refreshed ID token {claim}");
    }
    let info = userinfo(app, t2["access_token"].as_str().unwrap()).await;
    assert_eq!(info["sub"], app.user.id.to_string());
}

// --------------------------------------------------------- RP-initiated logout

/// `oidcc-rp-initiated-logout-modified-id-token-hint`: the real ID token
/// re-headed `alg: none`, signature stripped, is refused: no redirect, the
/// session lives on.
async fn logout_refuses_a_hint_re_headed_alg_none(app: &TestApp) {
    let (browser, t) = signed_in(app).await;
    let id_token = t["id_token"].as_str().unwrap();
    let (header, _) = jwt_parts(id_token);
    let payload = id_token.split('.').nth(1).unwrap();
    let signature = id_token.split('.').nth(2).unwrap();
    let kid = header["kid"].clone();
    assert!(kid.is_string(), "{header}");
    let none = serde_json::json!({"alg": "none"});
    let none_kid = serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid});
    let forged = [
        format!("{}.{payload}.", b64(&none)),
        format!("{}.{payload}.", b64(&none_kid)),
        // The original signature kept under the altered header.
        format!("{}.{payload}.{signature}", b64(&none_kid)),
    ];
    for hint in &forged {
        assert_logout_refused(
            app,
            &browser,
            &format!(
                "id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
                enc(POST_LOGOUT)
            ),
        )
        .await;
    }
    assert!(has_session(app, &browser).await, "the session survives");
    // The genuine hint, for contrast, is followed.
    let res = browser
        .get(&format!(
            "{}?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
            app.url("/logout"),
            enc(POST_LOGOUT)
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{POST_LOGOUT}?state=bye"));
    assert!(!has_session(app, &browser).await);
}

/// `oidcc-rp-initiated-logout-bad-id-token-hint`: a well-formed ID token
/// (same claims) signed by a key that is not the provider's is refused,
/// whether its header names an unknown `kid` or the provider's own.
async fn logout_refuses_a_hint_signed_by_a_foreign_key(app: &TestApp) {
    use idp_core::clock::Clock;
    use idp_core::keys::{SigningAlg, SigningKeys, generate_key};
    let (browser, t) = signed_in(app).await;
    let (_, claims) = jwt_parts(t["id_token"].as_str().unwrap());
    let claims = claims.as_object().unwrap().clone();
    let now = app.clock.now();
    let kek = idp_core::secret::KeyEncryptionKey::generate();
    let real_kid = app
        .state
        .provider
        .keys
        .current()
        .active_kid(SigningAlg::ES256)
        .expect("an ES256 key")
        .to_owned();
    let mut hints = Vec::new();
    for kid in [None, Some(real_kid)] {
        let mut key = generate_key(SigningAlg::ES256, &kek, now).unwrap();
        if let Some(k) = kid {
            key.kid = k;
        }
        let foreign =
            SigningKeys::from_stored(&[key], &kek, now, time::Duration::hours(1)).unwrap();
        hints.push(
            foreign
                .sign(SigningAlg::ES256, "JWT", claims.clone())
                .unwrap(),
        );
    }
    for hint in &hints {
        assert_logout_refused(
            app,
            &browser,
            &format!(
                "id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
                enc(POST_LOGOUT)
            ),
        )
        .await;
    }
    assert!(has_session(app, &browser).await, "the session survives");
}

/// `oidcc-rp-initiated-logout-no-post-logout-redirect-uri`: a valid hint
/// and `state` but no URI end the session at once and show the logged-out
/// page, with no redirect to the client.
async fn logout_with_a_valid_hint_and_no_post_logout_redirect_uri(app: &TestApp) {
    let (browser, t) = signed_in(app).await;
    let res = browser
        .get(&format!(
            "{}?id_token_hint={}&state=bye",
            app.url("/logout"),
            t["id_token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/logged-out", "not to the client");
    let res = browser.get(&app.url("/logged-out")).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("You are signed out."));
    assert!(!has_session(app, &browser).await, "the session ended");
    // Ending the session revoked its grant.
    assert_eq!(
        introspect(app, t["refresh_token"].as_str().unwrap()).await["active"],
        false
    );
}

/// `oidcc-rp-initiated-logout-only-state`: only `state`. With no hint the
/// user confirms (config/README.md, Protocol choices), then is signed out and
/// sees the logged-out page; never a redirect to the client.
async fn logout_with_only_state(app: &TestApp) {
    let (browser, _) = signed_in(app).await;
    let res = browser
        .get(&format!("{}?state=only-state", app.url("/logout")))
        .await;
    assert_eq!(res.status(), 200, "a confirmation page");
    assert!(res.headers().get("location").is_none());
    let html = res.text().await.unwrap();
    assert!(html.contains("Do you want to sign out?"), "{html}");
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/logged-out", "not to the client");
    let res = browser.get(&app.url("/logged-out")).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("You are signed out."));
    assert!(!has_session(app, &browser).await, "the session ended");
}

matrix_with!(
    crate::options(),
    |_| {};
    userinfo_by_post_with_a_bearer_header,
    userinfo_by_post_with_the_token_in_the_form_body,
    code_flow_without_nonce_succeeds_and_the_id_token_has_no_nonce,
    alternate_happy_flow_with_openid_last,
    display_popup_is_accepted,
    claims_locales_is_accepted,
    claims_parameter_essential_name_in_userinfo,
    authorization_request_by_form_post,
    code_exchange_with_client_secret_post,
    address_and_phone_scopes_are_not_supported,
    refresh_token_is_bound_to_its_client,
    id_token_of_a_client_naming_no_algorithm_is_rs256_and_verifies_by_kid,
    logout_refuses_a_hint_re_headed_alg_none,
    logout_refuses_a_hint_signed_by_a_foreign_key,
    logout_with_a_valid_hint_and_no_post_logout_redirect_uri,
    logout_with_only_state,
);
