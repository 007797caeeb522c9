//! Bad input at every endpoint, over real HTTP: untrusted clients and
//! redirect URIs, broken PKCE, replayed and expired codes, wrong client
//! credentials, malformed and oversized token requests, bad introspection,
//! userinfo and logout requests. Each gets the error the RFCs specify, and a
//! refused token request leaves the code as it was: still redeemable by the
//! right client with the right verifier.

mod support;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use support::*;

/// An authorization URL for `client_id` with a fresh S256 challenge, where
/// `set` replaces (or adds) parameters and `remove` drops them.
fn authorize_with(app: &TestApp, client_id: &str, set: &[(&str, &str)], remove: &[&str]) -> String {
    let (_, challenge) = pkce();
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid email profile"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in set {
        match params.iter_mut().find(|(n, _)| n == k) {
            Some(p) => p.1 = (*v).to_owned(),
            None => params.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    params.retain(|(k, _)| !remove.contains(&k.as_str()));
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    u.query_pairs_mut().extend_pairs(&params);
    u.into()
}

/// Asserts the authorization endpoint answered with a 303 to the client
/// carrying `error`, the request's state and our issuer (RFC 6749 §4.1.2.1, RFC 9207).
async fn expect_error_redirect(app: &TestApp, url: &str, error: &str) {
    let res = Browser::new().get(url).await;
    assert_eq!(res.status(), 303, "{url}");
    let to = location(&res);
    assert!(to.starts_with(REDIRECT), "{url} -> {to}");
    assert_eq!(query_param(&to, "error").as_deref(), Some(error), "{to}");
    assert!(query_param(&to, "error_description").is_some(), "{to}");
    assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"), "{to}");
    assert_eq!(
        query_param(&to, "iss").as_deref(),
        Some(app.issuer.as_str()),
        "{to}"
    );
    assert!(query_param(&to, "code").is_none(), "{to}");
}

/// Signs Alice in through `client` and returns a fresh authorization code.
async fn code_for(app: &TestApp, client: &str, challenge: Option<&str>) -> String {
    let callback = Browser::new()
        .login(
            app,
            &authorize_url(app, client, challenge, &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"))
}

/// Sends a request; returns status, headers and the JSON body (Null if none).
async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn token_endpoint(app: &TestApp) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(app.url("/token"))
}

fn assert_oauth_error(status: u16, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(
        (status, body["error"].as_str()),
        (want_status, Some(want_error)),
        "{body}"
    );
    assert!(
        body["error_description"].is_string(),
        "error_description in {body}"
    );
}

fn assert_no_store(headers: &HeaderMap) {
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "token responses are never cached"
    );
}

async fn untrusted_redirect_uri_or_client_gets_a_page_and_never_a_redirect(app: &TestApp) {
    let wrong_redirects = [
        "http://127.0.0.1:9/other",
        "https://evil.example/cb",
        // Trailing slash.
        "http://127.0.0.1:9/cb/",
        // Case changed (the registered host is an IP literal, so scheme and path).
        "HTTP://127.0.0.1:9/cb",
        "http://127.0.0.1:9/CB",
        "http://LOCALHOST:9/cb",
        // Query added.
        "http://127.0.0.1:9/cb?x=1",
        // Other port, fragment.
        "http://127.0.0.1:10/cb",
        "http://127.0.0.1:9/cb#x",
    ];
    let browser = Browser::new();
    for client in ["conf", "spa"] {
        for uri in wrong_redirects {
            let res = browser
                .get(&authorize_with(app, client, &[("redirect_uri", uri)], &[]))
                .await;
            assert_eq!(res.status(), 400, "{client} {uri}");
            assert!(
                res.headers().get("location").is_none(),
                "never redirected: {client} {uri}"
            );
            let html = res.text().await.unwrap();
            assert!(
                html.contains("return address we are not allowed to use"),
                "{client} {uri}: {html}"
            );
        }
        // Missing redirect_uri: a page too.
        let res = browser
            .get(&authorize_with(app, client, &[], &["redirect_uri"]))
            .await;
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("location").is_none());
    }
    // Even with an otherwise broken request, an untrusted redirect URI wins: no redirect.
    let res = browser
        .get(&authorize_with(
            app,
            "spa",
            &[
                ("redirect_uri", "https://evil.example/cb"),
                ("response_type", "token"),
            ],
            &["code_challenge", "code_challenge_method"],
        ))
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());

    for set in [
        &[("client_id", "nope")][..],
        &[("client_id", "CONF")][..],
        &[
            ("client_id", "nope"),
            ("redirect_uri", "https://evil.example/cb"),
        ][..],
    ] {
        let res = browser.get(&authorize_with(app, "conf", set, &[])).await;
        assert_eq!(res.status(), 400, "{set:?}");
        assert!(res.headers().get("location").is_none(), "{set:?}");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("is not registered with us"),
            "{set:?}: {html}"
        );
    }
    let res = browser
        .get(&authorize_with(app, "conf", &[], &["client_id"]))
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
}

/// Parameters to set, and parameters to remove.
type ParamChange<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

async fn broken_pkce_of_the_public_client_is_redirected_as_invalid_request(app: &TestApp) {
    let cases: &[ParamChange<'_>] = &[
        // No PKCE at all: required for a public client.
        (&[], &["code_challenge", "code_challenge_method"]),
        // `plain` is refused (RFC 9700 §2.1.1).
        (&[("code_challenge_method", "plain")], &[]),
        (
            &[
                ("code_challenge_method", "plain"),
                (
                    "code_challenge",
                    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                ),
            ],
            &[],
        ),
        // A challenge without its method, a method without a challenge.
        (&[], &["code_challenge_method"]),
        (&[], &["code_challenge"]),
        (&[("code_challenge_method", "S512")], &[]),
        // Malformed challenges: too short, too long, outside the unreserved set.
        (&[("code_challenge", "short")], &[]),
        (&[("code_challenge", &"a".repeat(129))], &[]),
        (
            &[(
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM=",
            )],
            &[],
        ),
    ];
    for (set, remove) in cases {
        expect_error_redirect(
            app,
            &authorize_with(app, "spa", set, remove),
            "invalid_request",
        )
        .await;
    }
    // `plain` is refused for a confidential client too.
    expect_error_redirect(
        app,
        &authorize_with(app, "conf", &[("code_challenge_method", "plain")], &[]),
        "invalid_request",
    )
    .await;
}

async fn other_authorization_errors_are_redirected_with_their_codes(app: &TestApp) {
    for rt in ["token", "id_token", "code id_token", "code token"] {
        expect_error_redirect(
            app,
            &authorize_with(app, "conf", &[("response_type", rt)], &[]),
            "unsupported_response_type",
        )
        .await;
    }
    expect_error_redirect(
        app,
        &authorize_with(app, "conf", &[], &["response_type"]),
        "invalid_request",
    )
    .await;
    for scope in ["openid admin", "  "] {
        expect_error_redirect(
            app,
            &authorize_with(app, "conf", &[("scope", scope)], &[]),
            "invalid_scope",
        )
        .await;
    }
    expect_error_redirect(
        app,
        &authorize_with(
            app,
            "conf",
            &[("request", "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9.")],
            &[],
        ),
        "request_not_supported",
    )
    .await;
    expect_error_redirect(
        app,
        &authorize_with(
            app,
            "conf",
            &[("request_uri", "https://rp.example/request.jwt")],
            &[],
        ),
        "request_uri_not_supported",
    )
    .await;
    // No session in this browser: prompt=none cannot show a login page.
    expect_error_redirect(
        app,
        &authorize_with(app, "conf", &[("prompt", "none")], &[]),
        "login_required",
    )
    .await;
    expect_error_redirect(
        app,
        &authorize_with(app, "spa", &[("prompt", "none")], &[]),
        "login_required",
    )
    .await;
    // RFC 6749 §3.1: a parameter sent twice.
    let dup = format!(
        "{}&scope=openid",
        authorize_with(app, "conf", &[], &["nonce"])
    );
    expect_error_redirect(app, &dup, "invalid_request").await;
}

async fn code_verifier_mismatches_are_invalid_grant(app: &TestApp) {
    // Wrong verifier (well formed, but for another challenge).
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let (other_verifier, _) = pkce();
    let (status, body) = code_exchange_request(app, "conf", &code, Some(&other_verifier)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    // Stored data unchanged: the right verifier still redeems the code.
    let (status, body) = code_exchange_request(app, "conf", &code, Some(&verifier)).await;
    assert_eq!(status, 200, "{body}");

    // The challenge itself sent as the verifier, and a malformed verifier.
    for bad in [challenge.as_str(), "short"] {
        let (_, challenge) = pkce();
        let code = code_for(app, "conf", Some(&challenge)).await;
        let (status, body) = code_exchange_request(app, "conf", &code, Some(bad)).await;
        assert_oauth_error(status, &body, 400, "invalid_grant");
    }

    // A challenge was sent, the verifier is missing.
    let (_, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let (status, body) = code_exchange_request(app, "conf", &code, None).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");

    // The same for the public client.
    let (_, challenge) = pkce();
    let code = code_for(app, "spa", Some(&challenge)).await;
    let (status, headers, body) = send(token_endpoint(app).form(&[
        ("grant_type", "authorization_code"),
        ("client_id", "spa"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
    ]))
    .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert_no_store(&headers);

    // PKCE downgrade: no challenge at authorize, a verifier at the token endpoint.
    let code = code_for(app, "conf", None).await;
    let (verifier, _) = pkce();
    let (status, body) = code_exchange_request(app, "conf", &code, Some(&verifier)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");

    // Without PKCE on either side, the confidential client is fine.
    let code = code_for(app, "conf", None).await;
    let (status, body) = code_exchange_request(app, "conf", &code, None).await;
    assert_eq!(status, 200, "{body}");
}

async fn code_must_be_redeemed_by_its_client_at_its_redirect_uri(app: &TestApp) {
    for other in ["http://127.0.0.1:9/cb/", "http://127.0.0.1:9/other"] {
        let (verifier, challenge) = pkce();
        let code = code_for(app, "conf", Some(&challenge)).await;
        let (status, body) = token_request(
            app,
            "conf",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", other),
                ("code_verifier", &verifier),
            ],
        )
        .await;
        assert_oauth_error(status, &body, 400, "invalid_grant");
    }
    // redirect_uri was in the authorization request, so it is required here (RFC 6749 §4.1.3).
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let (status, body) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");

    // A code issued to `conf`, presented by `rsa` (authenticated, but another client).
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let (status, body) = code_exchange_request(app, "rsa", &code, Some(&verifier)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    // Nor did the wrong redirect URI or the wrong client burn the code.
    let (status, body) = code_exchange_request(app, "conf", &code, Some(&verifier)).await;
    assert_eq!(status, 200, "{body}");

    // A garbage code.
    let (status, body) = code_exchange_request(app, "conf", "not-a-code", None).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    // A missing code.
    let (status, body) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "authorization_code"),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_request");
}

async fn replayed_code_is_refused_and_revokes_what_it_issued(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let (status, first) = code_exchange_request(app, "conf", &code, Some(&verifier)).await;
    assert_eq!(status, 200, "{first}");
    let access = first["access_token"].as_str().unwrap();
    let refresh = first["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(app, access).await["active"], true);
    assert_eq!(introspect(app, refresh).await["active"], true);

    let (status, headers, body) =
        send(token_endpoint(app).basic_auth("conf", Some(SECRET)).form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ]))
        .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    assert_no_store(&headers);

    // RFC 6749 §4.1.2: the tokens issued from the code are revoked.
    assert_eq!(introspect(app, access).await, json!({"active": false}));
    assert_eq!(introspect(app, refresh).await, json!({"active": false}));
    let (status, body) = token_request(
        app,
        "conf",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
    let res = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    // A third attempt is still refused.
    let (status, body) = code_exchange_request(app, "conf", &code, Some(&verifier)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
}

async fn expired_code_is_invalid_grant(app: &TestApp) {
    let (v1, c1) = pkce();
    let (v2, c2) = pkce();
    let young = code_for(app, "conf", Some(&c1)).await;
    let old = code_for(app, "conf", Some(&c2)).await;
    // 59 s: still good.
    app.clock.advance(time::Duration::seconds(59));
    let (status, body) = code_exchange_request(app, "conf", &young, Some(&v1)).await;
    assert_eq!(status, 200, "{body}");
    // 61 s: the 60 s lifetime is over.
    app.clock.advance(time::Duration::seconds(2));
    let (status, body) = code_exchange_request(app, "conf", &old, Some(&v2)).await;
    assert_oauth_error(status, &body, 400, "invalid_grant");
}

async fn client_authentication_failures_leave_the_code_redeemable(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, &str)> = grant.to_vec();
        f.extend_from_slice(extra);
        f
    };

    // Wrong secret with HTTP Basic: 401 and a challenge (RFC 6749 §5.2).
    let (status, headers, body) = send(
        token_endpoint(app)
            .basic_auth("conf", Some("wrong-secret"))
            .form(&grant),
    )
    .await;
    assert_oauth_error(status, &body, 401, "invalid_client");
    let challenge_header = headers
        .get("www-authenticate")
        .expect("WWW-Authenticate after a failed Basic authentication")
        .to_str()
        .unwrap();
    assert!(challenge_header.starts_with("Basic"), "{challenge_header}");
    assert_no_store(&headers);

    // Wrong secret with client_secret_post.
    let (status, _, body) = send(token_endpoint(app).form(&with(&[
        ("client_id", "conf"),
        ("client_secret", "wrong-secret"),
    ])))
    .await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    // No secret at all for a confidential client.
    let (status, _, body) = send(token_endpoint(app).form(&with(&[("client_id", "conf")]))).await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    // No client identification at all.
    let (status, _, body) = send(token_endpoint(app).form(&grant)).await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    // Two authentication methods at once (RFC 6749 §2.3).
    let (status, _, body) = send(
        token_endpoint(app)
            .basic_auth("conf", Some(SECRET))
            .form(&with(&[("client_secret", SECRET)])),
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    // Basic for one client, client_id of another in the body.
    let (status, _, body) = send(
        token_endpoint(app)
            .basic_auth("conf", Some(SECRET))
            .form(&with(&[("client_id", "rsa")])),
    )
    .await;
    assert!(
        status == 400 || status == 401,
        "mismatched client ids refused: {status} {body}"
    );

    // Unknown clients, with Basic and in the body.
    let (status, headers, body) = send(
        token_endpoint(app)
            .basic_auth("nope", Some(SECRET))
            .form(&grant),
    )
    .await;
    assert_oauth_error(status, &body, 401, "invalid_client");
    assert!(headers.get("www-authenticate").is_some());
    let (status, _, body) =
        send(token_endpoint(app).form(&with(&[("client_id", "nope"), ("client_secret", SECRET)])))
            .await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    // Malformed Basic credentials.
    let (status, _, body) = send(
        token_endpoint(app)
            .header("authorization", "Basic !!!not-base64!!!")
            .form(&grant),
    )
    .await;
    assert_oauth_error(status, &body, 401, "invalid_client");

    // The code was never touched: the right client redeems it.
    let (status, body) = token_request(app, "conf", &grant).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string() && body["id_token"].is_string());
}

async fn malformed_token_requests_are_refused_and_leave_the_code_redeemable(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let encoded = |pairs: &[(&str, &str)]| {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    };
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
    ];
    let form_post = |body: Vec<u8>| {
        token_endpoint(app)
            .basic_auth("conf", Some(SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };

    // JSON instead of a form.
    let (status, headers, body) = send(token_endpoint(app).basic_auth("conf", Some(SECRET)).json(
        &json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }),
    ))
    .await;
    assert_oauth_error(status, &body, 400, "invalid_request");
    assert_no_store(&headers);

    // A form body without its content type.
    let (status, _, body) = send(
        token_endpoint(app)
            .basic_auth("conf", Some(SECRET))
            .body(encoded(&grant)),
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    // A malformed form.
    let mut garbage = b"%ZZ%=&\xff\xfe=\x00&=&=&&grant_type&code=".to_vec();
    garbage.extend_from_slice(code.as_bytes());
    let (status, _, body) = send(form_post(garbage)).await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    // A parameter sent twice, even with the same value (RFC 6749 §3.2).
    let mut dup = grant.to_vec();
    dup.push(("code", code.as_str()));
    let (status, _, body) = send(form_post(encoded(&dup).into_bytes())).await;
    assert_oauth_error(status, &body, 400, "invalid_request");
    let mut dup = grant.to_vec();
    dup.push(("grant_type", "authorization_code"));
    let (status, _, body) = send(form_post(encoded(&dup).into_bytes())).await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    // No grant_type.
    let (status, body) = token_request(app, "conf", &grant[1..]).await;
    assert_oauth_error(status, &body, 400, "invalid_request");

    // Unknown grant types.
    for gt in ["password", "urn:foo", "implicit"] {
        let mut f = grant.to_vec();
        f[0] = ("grant_type", gt);
        f.push(("username", "alice@example.com"));
        f.push(("password", PASSWORD));
        let (status, body) = token_request(app, "conf", &f).await;
        assert_oauth_error(status, &body, 400, "unsupported_grant_type");
    }
    // A supported grant this client's file does not allow (RFC 8628).
    let mut f = grant.to_vec();
    f[0] = ("grant_type", "urn:ietf:params:oauth:grant-type:device_code");
    let (status, body) = token_request(app, "conf", &f).await;
    assert_oauth_error(status, &body, 400, "unauthorized_client");

    // 100 KiB: over the 64 KiB limit.
    let mut big = grant.to_vec();
    let pad = "a".repeat(100 * 1024);
    big.push(("padding", pad.as_str()));
    let (status, _, _) = send(form_post(encoded(&big).into_bytes())).await;
    assert_eq!(status, 413);
    // Nothing above touched the code.
    let (status, body) = token_request(app, "conf", &grant).await;
    assert_eq!(status, 200, "{body}");
}

async fn public_client_may_not_use_client_credentials(app: &TestApp) {
    let (status, headers, body) = send(token_endpoint(app).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "spa"),
        ("scope", "api"),
    ]))
    .await;
    assert_oauth_error(status, &body, 400, "unauthorized_client");
    assert_no_store(&headers);
    // A public client presenting a secret is not authenticated.
    let (status, _, body) = send(token_endpoint(app).form(&[
        ("grant_type", "client_credentials"),
        ("client_id", "spa"),
        ("client_secret", SECRET),
    ]))
    .await;
    assert_oauth_error(status, &body, 401, "invalid_client");
    // client_credentials cannot ask for openid.
    let (status, body) = token_request(
        app,
        "conf",
        &[("grant_type", "client_credentials"), ("scope", "openid")],
    )
    .await;
    assert_oauth_error(status, &body, 400, "invalid_scope");
}

async fn concurrent_redemptions_of_one_code_have_exactly_one_winner(app: &TestApp) {
    let (verifier, challenge) = pkce();
    let code = code_for(app, "conf", Some(&challenge)).await;
    let http = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let req = http
            .post(app.url("/token"))
            .basic_auth("conf", Some(SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
            ]);
        tasks.spawn(async move {
            let res = req.send().await.expect("token request");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.expect("task"));
    }
    let winners = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(winners, 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_oauth_error(*status, body, 400, "invalid_grant");
    }
    // The seven others were replays of the code: whatever order they ran in
    // relative to the winner, what the winner got is revoked (RFC 6749 §4.1.2).
    let (_, won) = results.iter().find(|(s, _)| *s == 200).unwrap();
    for kind in ["access_token", "refresh_token"] {
        let token = won[kind].as_str().unwrap();
        assert_eq!(
            introspect(app, token).await["active"],
            false,
            "{kind} of a replayed code"
        );
    }
}

async fn an_access_token_is_not_an_id_token_hint(app: &TestApp) {
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
    let code = query_param(&cb, "code").unwrap();
    let t = exchange_code(app, "conf", &code, Some(&verifier)).await;
    let access = t["access_token"].as_str().unwrap();
    // At logout: refused, no redirect, the session survives.
    let res = browser
        .get(&format!(
            "{}?id_token_hint={access}&post_logout_redirect_uri={}",
            app.url("/logout"),
            url::form_urlencoded::byte_serialize(POST_LOGOUT.as_bytes()).collect::<String>()
        ))
        .await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // At authorize: refused as an invalid hint.
    let (_, challenge) = pkce();
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("prompt", "none"), ("id_token_hint", access)],
        ))
        .await;
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("invalid_request")
    );
    // The real ID token works as a hint for a silent login.
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[
                ("prompt", "none"),
                ("id_token_hint", t["id_token"].as_str().unwrap()),
            ],
        ))
        .await;
    assert!(query_param(&location(&res), "code").is_some());
}

async fn introspection_and_userinfo_refuse_bad_callers_and_bad_tokens(app: &TestApp) {
    let (status, t) = token_request(
        app,
        "conf",
        &[("grant_type", "client_credentials"), ("scope", "api")],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap();

    // The public client may not introspect, not even its own kind of token.
    let (status, _, body) = send(
        reqwest::Client::new()
            .post(app.url("/introspect"))
            .form(&[("client_id", "spa"), ("token", access)]),
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(body.get("active").is_none(), "{body}");
    // Nor may an unauthenticated caller.
    let (status, _, body) = send(
        reqwest::Client::new()
            .post(app.url("/introspect"))
            .form(&[("token", access)]),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("active").is_none(), "{body}");
    // Nor a wrong secret.
    let (status, _, body) = send(
        reqwest::Client::new()
            .post(app.url("/introspect"))
            .basic_auth("conf", Some("wrong-secret"))
            .form(&[("token", access)]),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Garbage tokens are simply inactive (RFC 7662 §2.2).
    for garbage in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        assert_eq!(introspect(app, garbage).await, json!({"active": false}));
    }
    // A token of ours is active, for comparison.
    assert_eq!(introspect(app, access).await["active"], true);

    // Userinfo without a token: 401 with a Bearer challenge (RFC 6750 §3).
    let res = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let h = res.headers()["www-authenticate"].to_str().unwrap();
    assert!(h.starts_with("Bearer"), "{h}");
    // With garbage: 401, invalid_token.
    for garbage in ["garbage", "a.b.c"] {
        let res = reqwest::Client::new()
            .get(app.url("/userinfo"))
            .bearer_auth(garbage)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let h = res.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            h.starts_with("Bearer") && h.contains("invalid_token"),
            "{h}"
        );
    }
}

async fn logout_refuses_unregistered_redirects_and_garbage_hints(app: &TestApp) {
    let browser = Browser::new();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let cases = [
        format!(
            "client_id=conf&post_logout_redirect_uri={}",
            enc("https://evil.example/bye")
        ),
        format!(
            "client_id=conf&post_logout_redirect_uri={}",
            enc(&format!("{POST_LOGOUT}/"))
        ),
        format!(
            "client_id=conf&post_logout_redirect_uri={}",
            enc(&format!("{POST_LOGOUT}?x=1"))
        ),
        // A registered URI, but no client named: which client's list?
        format!("post_logout_redirect_uri={}", enc(POST_LOGOUT)),
        // Unknown client.
        format!(
            "client_id=nope&post_logout_redirect_uri={}",
            enc(POST_LOGOUT)
        ),
        // Garbage hints.
        "id_token_hint=garbage".to_owned(),
        format!(
            "id_token_hint=a.b.c&post_logout_redirect_uri={}",
            enc(POST_LOGOUT)
        ),
        format!(
            "id_token_hint={}&post_logout_redirect_uri={}",
            "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
            enc(POST_LOGOUT)
        ),
    ];
    for q in &cases {
        let res = browser.get(&format!("{}?{q}", app.url("/logout"))).await;
        assert_eq!(res.status(), 400, "{q}");
        assert!(
            res.headers().get("location").is_none(),
            "never redirected: {q}"
        );
        let html = res.text().await.unwrap();
        assert!(
            html.contains("The request is invalid or incomplete."),
            "{q}"
        );
    }
    // The same refusals when the RP POSTs the logout request.
    let res = browser
        .http
        .post(app.url("/logout"))
        .form(&[
            ("client_id", "conf"),
            ("post_logout_redirect_uri", "https://evil.example/bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    // A registered URI is followed (for contrast).
    let res = browser
        .get(&format!(
            "{}?client_id=conf&post_logout_redirect_uri={}&state=s1",
            app.url("/logout"),
            enc(POST_LOGOUT)
        ))
        .await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{POST_LOGOUT}?state=s1"));
}

matrix!(
    untrusted_redirect_uri_or_client_gets_a_page_and_never_a_redirect,
    broken_pkce_of_the_public_client_is_redirected_as_invalid_request,
    other_authorization_errors_are_redirected_with_their_codes,
    code_verifier_mismatches_are_invalid_grant,
    code_must_be_redeemed_by_its_client_at_its_redirect_uri,
    replayed_code_is_refused_and_revokes_what_it_issued,
    expired_code_is_invalid_grant,
    client_authentication_failures_leave_the_code_redeemable,
    malformed_token_requests_are_refused_and_leave_the_code_redeemable,
    public_client_may_not_use_client_credentials,
    concurrent_redemptions_of_one_code_have_exactly_one_winner,
    an_access_token_is_not_an_id_token_hint,
    introspection_and_userinfo_refuse_bad_callers_and_bad_tokens,
    logout_refuses_unregistered_redirects_and_garbage_hints,
);
