//! The full journey over real HTTP, with the `openidconnect` crate as the
//! relying party: discovery, authorize, the hosted identifier and password
//! forms, code exchange, ID token verification, userinfo, refresh rotation
//! and reuse detection, introspection, revocation, logout, single sign-on.

mod support;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use serde_json::Value;
use support::*;

fn http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn full_flow_with_openidconnect_client(app: &TestApp) {
    let http = http();
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http)
            .await
            .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new("conf".into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The user signs in with the customer identifier (case-insensitive email works too, see below).
    let browser = Browser::new();
    let callback = browser
        .login(
            app,
            auth_url.as_str(),
            app.user.customer_id.as_str(),
            PASSWORD,
        )
        .await;
    assert!(callback.starts_with(REDIRECT), "{callback}");
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(app.issuer.as_str()),
        "RFC 9207 iss"
    );
    let code = query_param(&callback, "code").expect("code");

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("id_token");
    let verifier = client
        .id_token_verifier()
        .set_allowed_algs(vec![CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies against the JWKS");
    assert_eq!(claims.subject().as_str(), app.user.id.to_string());
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some("Alice@Example.com")
    );
    assert!(claims.auth_time().is_some());
    assert_eq!(claims.auth_method_refs().unwrap()[0].as_str(), "pwd");
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("1"));
    let expected_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected_hash), "at_hash");
    let raw_claims: Value = {
        use base64::Engine;
        let s = id_token.to_string();
        let payload = s.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    for c in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "acr",
        "amr",
        "sid",
        "at_hash",
    ] {
        assert!(raw_claims.get(c).is_some(), "ID token lacks {c}");
    }

    // Userinfo with the access token.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), app.user.id.to_string());
    assert_eq!(info.email().map(|e| e.as_str()), Some("Alice@Example.com"));

    // Introspection of the access token.
    let intro = introspect(app, tokens.access_token().secret()).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], "conf");
    assert_eq!(intro["sub"], app.user.id.to_string());

    // Refresh rotation: the new refresh token works, the old one is now a reuse.
    let r1 = tokens.refresh_token().expect("refresh token").clone();
    let t2 = client
        .exchange_refresh_token(&r1)
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    let r2 = t2.refresh_token().expect("rotated refresh token").clone();
    assert_ne!(r1.secret(), r2.secret());
    assert_eq!(
        introspect(app, t2.access_token().secret()).await["active"],
        true
    );
    let reuse = client
        .exchange_refresh_token(&r1)
        .unwrap()
        .request_async(&http)
        .await;
    assert!(reuse.is_err(), "a used refresh token is refused");
    // Reuse revoked the whole family: the rotated token and the access tokens die too.
    let (status, body) = token_request(
        app,
        "conf",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", r2.secret()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        introspect(app, t2.access_token().secret()).await["active"],
        false
    );
    assert_eq!(
        introspect(app, tokens.access_token().secret()).await["active"],
        false
    );
    let res = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .bearer_auth(t2.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // Single sign-on: the same browser gets a code without a login page.
    let (challenge, _) = pkce();
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
    assert!(
        to.starts_with(REDIRECT) && query_param(&to, "code").is_some(),
        "{to}"
    );

    // RP-initiated logout with id_token_hint and a registered post-logout URI.
    let logout = format!(
        "{}?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
        app.url("/logout"),
        id_token,
        url::form_urlencoded::byte_serialize(POST_LOGOUT.as_bytes()).collect::<String>()
    );
    let res = browser.get(&logout).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{POST_LOGOUT}?state=bye"));
    // The session is gone: prompt=none now fails with login_required.
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("prompt", "none")],
        ))
        .await;
    let to = location(&res);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("login_required"),
        "{to}"
    );
    assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
}

async fn refresh_revocation_and_logout_revoke_grants(app: &TestApp) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, "conf", Some(&challenge), &[]),
            "alice@example.COM",
            PASSWORD,
        )
        .await;
    let code = query_param(&cb, "code").unwrap();
    let t = exchange_code(app, "conf", &code, Some(&verifier)).await;
    assert_eq!(t["token_type"], "Bearer");
    let refresh = t["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(app, refresh).await["active"], true);
    assert_eq!(
        introspect(app, refresh).await["token_type"],
        "refresh_token"
    );
    // RFC 7009: revoking the refresh token revokes the grant, access token included.
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("conf", Some(SECRET))
        .form(&[("token", refresh), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(introspect(app, refresh).await["active"], false);
    assert_eq!(
        introspect(app, t["access_token"].as_str().unwrap()).await["active"],
        false
    );
    // Unknown tokens: still 200.
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("conf", Some(SECRET))
        .form(&[("token", "not-a-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A second grant in the same session; logout revokes it.
    let (verifier, challenge) = pkce();
    let res = browser
        .get(&authorize_url(app, "conf", Some(&challenge), &[]))
        .await;
    let code = query_param(&location(&res), "code").expect("SSO code");
    let (_, t) = token_request(
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
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(app, access).await["active"], true);
    // Access token revocation alone.
    let res = reqwest::Client::new()
        .post(app.url("/revoke"))
        .basic_auth("conf", Some(SECRET))
        .form(&[("token", access)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(introspect(app, access).await["active"], false);
    assert_eq!(
        introspect(app, t["refresh_token"].as_str().unwrap()).await["active"],
        true
    );
    // Logout without id_token_hint asks for confirmation, then ends the session and the grant.
    let res = browser.get(&app.url("/logout")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let res = browser.submit(app, &html, &[]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/logged-out");
    assert_eq!(
        introspect(app, t["refresh_token"].as_str().unwrap()).await["active"],
        false
    );
}

async fn sso_prompt_and_max_age(app: &TestApp) {
    let browser = Browser::new();
    let (_, challenge) = pkce();
    let first = browser
        .login(
            app,
            &authorize_url(app, "conf", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    assert!(query_param(&first, "code").is_some());
    // max_age satisfied: no login page.
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("max_age", "3600")],
        ))
        .await;
    assert!(query_param(&location(&res), "code").is_some());
    // Two minutes later, max_age=60 needs a new login; with prompt=none it is login_required.
    app.clock.advance(time::Duration::seconds(120));
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("max_age", "60")],
        ))
        .await;
    assert!(
        location(&res).starts_with("/login/"),
        "max_age forces a login"
    );
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("max_age", "60"), ("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_param(&location(&res), "error").as_deref(),
        Some("login_required")
    );
    // prompt=login always asks again.
    let res = browser
        .get(&authorize_url(
            app,
            "conf",
            Some(&challenge),
            &[("prompt", "login")],
        ))
        .await;
    assert!(location(&res).starts_with("/login/"));
    // Another client gets SSO too, and its ID token (RS256) verifies.
    let (verifier, challenge) = pkce();
    let res = browser
        .get(&authorize_url(app, "rsa", Some(&challenge), &[]))
        .await;
    let code = query_param(&location(&res), "code").expect("SSO across clients");
    let t = exchange_code(app, "rsa", &code, Some(&verifier)).await;
    let header: Value = {
        use base64::Engine;
        let h = t["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .to_owned();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "RS256");
}

async fn public_client_pkce_and_opaque_tokens(app: &TestApp) {
    let http = http();
    // Public client: PKCE required, no secret.
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, "spa", Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&cb, "code").unwrap();
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "spa"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    // Opaque access tokens: checked through introspection and userinfo.
    let (verifier, challenge) = pkce();
    let res = browser
        .get(&authorize_url(app, "opaque", Some(&challenge), &[]))
        .await;
    let code = query_param(&location(&res), "code").unwrap();
    let t = exchange_code(app, "opaque", &code, Some(&verifier)).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(access.split('.').count(), 1, "opaque");
    assert_eq!(introspect(app, access).await["active"], true);
    let meta =
        CoreProviderMetadata::discover_async(IssuerUrl::new(app.issuer.clone()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        meta,
        ClientId::new("opaque".into()),
        Some(ClientSecret::new(SECRET.into())),
    );
    let info: CoreUserInfoClaims = client
        .user_info(AccessToken::new(access.into()), None)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(info.subject().as_str(), app.user.id.to_string());
    // client_credentials: an access token for the client itself.
    let (status, t) = token_request(
        app,
        "conf",
        &[("grant_type", "client_credentials"), ("scope", "api")],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    let intro = introspect(app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (
            intro["active"].as_bool(),
            intro["sub"].as_str(),
            intro["scope"].as_str()
        ),
        (Some(true), Some("conf"), Some("api"))
    );
    let _ = RefreshToken::new(String::new());
}

matrix!(
    full_flow_with_openidconnect_client,
    refresh_revocation_and_logout_revoke_grants,
    sso_prompt_and_max_age,
    public_client_pkce_and_opaque_tokens,
);
