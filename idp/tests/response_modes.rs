//! How the authorization response reaches the client (`response_mode`:
//! `query`, `form_post`, and JARM's `query.jwt`/`jwt`/`form_post.jwt`, each
//! only for a client whose file enables it), `offline_access` (OpenID
//! Connect Core §11) and the `claims` request parameter (§5.5), on both
//! backends.

mod support;

use idp_core::client::{Client, ProtocolSettings};
use idp_core::keys::SigningAlg;
use idp_core::request::ResponseMode;
use serde_json::Value;
use support::*;

const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;

/// `modes`: the client's extra response modes; JARM signed with `alg`.
fn client_with_modes(id: &str, modes: &[ResponseMode], alg: SigningAlg) -> Client {
    Client {
        protocol: ProtocolSettings {
            response_modes: modes.iter().copied().collect(),
            authorization_signed_response_alg: alg,
            ..ProtocolSettings::default()
        },
        ..client_with_flows(id, FLOWS)
    }
}

fn options() -> AppOptions {
    AppOptions {
        clients: vec![
            client_with_modes("poster", &[ResponseMode::FormPost], SigningAlg::ES256),
            client_with_modes(
                "jarm",
                &[ResponseMode::QueryJwt, ResponseMode::FormPostJwt],
                SigningAlg::RS256,
            ),
            Client {
                allow_refresh_token: false,
                ..client_with_flows("norefresh", FLOWS)
            },
            client_with_flows(
                "levels",
                r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]},
                    {"name": "strong", "acr": "2", "steps": ["identifier", "password", "totp"]}]"#,
            ),
        ],
        ..AppOptions::default()
    }
}

/// Identifier and password for alice in a fresh browser, from `url`: the
/// response to the password (the delivery of the authorization response).
async fn sign_in(app: &TestApp, url: &str) -> reqwest::Response {
    let browser = Browser::new();
    let (res, _) = browser.follow(app, url).await;
    assert_eq!(res.status(), 200, "the identifier page");
    let html = res.text().await.unwrap();
    let res = browser
        .submit(app, &html, &[("identifier", "alice@example.com")])
        .await;
    let (res, _) = browser.follow(app, &app.url(&location(&res))).await;
    let html = res.text().await.unwrap();
    browser.submit(app, &html, &[("password", PASSWORD)]).await
}

/// The form of a form post page: (action, fields).
fn posted_form(html: &str) -> (String, Vec<(String, String)>) {
    let form = Form::parse(html).expect("a form");
    (form.action.clone(), form.fields.clone())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Verifies a JWT this provider signed against its published `/jwks`, as a
/// client would; returns the claims.
async fn verify_with_jwks(app: &TestApp, jwt: &str) -> Value {
    use josekit::jwk::Jwk;
    let header: Value = {
        use base64::Engine;
        let h = jwt.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    let jwks: Value = reqwest::get(app.url("/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the signing key is published");
    let jwk = Jwk::from_bytes(key.to_string().as_bytes()).unwrap();
    let (payload, _) = match header["alg"].as_str().unwrap() {
        "RS256" => josekit::jwt::decode_with_verifier(
            jwt,
            &josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap(),
        ),
        "ES256" => josekit::jwt::decode_with_verifier(
            jwt,
            &josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap(),
        ),
        other => panic!("unexpected alg {other}"),
    }
    .expect("the signature verifies");
    Value::Object(payload.claims_set().clone())
}

/// `form_post`: a page whose form posts `code`, `state` and `iss` to the
/// redirect URI, submitted by the theme's script (no inline script: the CSP
/// has no `unsafe-inline`), never cached; the code is good.
async fn form_post_posts_the_response_to_the_redirect_uri(app: &TestApp) {
    let url = authorize_url(app, "poster", None, &[("response_mode", "form_post")]);
    let res = sign_in(app, &url).await;
    assert_eq!(res.status(), 200, "the form post page");
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/default/form-post.js" defer></script>"#));
    assert!(!html.contains("<script>"), "no inline script");
    let (action, fields) = posted_form(&html);
    assert_eq!(action, REDIRECT);
    assert_eq!(field(&fields, "state"), Some("st-123"));
    assert_eq!(field(&fields, "iss"), Some(app.issuer.as_str()));
    let code = field(&fields, "code").expect("a code");
    let tokens = exchange_code(app, "poster", code, None).await;
    assert!(tokens["id_token"].is_string());
}

/// A mode the client's file does not enable is refused, in the query (the
/// mode the client can always read), and so is `fragment` (no implicit
/// flow) and an unknown mode.
async fn modes_not_enabled_are_refused_in_the_query(app: &TestApp) {
    for (client, mode) in [
        ("conf", "form_post"),
        ("poster", "query.jwt"),
        ("poster", "fragment"),
        ("poster", "bogus"),
    ] {
        let url = authorize_url(app, client, None, &[("response_mode", mode)]);
        let res = Browser::new().get(&url).await;
        assert_eq!(res.status(), 303, "{client} {mode}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request"),
            "{client} {mode}: {to}"
        );
        assert_eq!(query_param(&to, "state").as_deref(), Some("st-123"));
    }
}

/// JARM in the query (`query.jwt`, and `jwt`, its alias for `code`): one
/// `response` parameter, a JWT signed with the client's algorithm and a
/// published key, for the client (`aud`), from this issuer, short-lived,
/// holding `code` and `state`.
async fn jarm_query_holds_a_signed_response(app: &TestApp) {
    for mode in ["query.jwt", "jwt"] {
        let url = authorize_url(app, "jarm", None, &[("response_mode", mode)]);
        let res = sign_in(app, &url).await;
        assert_eq!(res.status(), 303, "{mode}");
        let to = location(&res);
        assert!(to.starts_with(REDIRECT), "{to}");
        assert_eq!(query_param(&to, "code"), None, "only the JWT: {to}");
        let jwt = query_param(&to, "response").expect("a response JWT");
        let claims = verify_with_jwks(app, &jwt).await;
        assert_eq!(claims["iss"], app.issuer.as_str());
        assert_eq!(claims["aud"], "jarm");
        assert_eq!(claims["state"], "st-123");
        let exp = claims["exp"].as_i64().unwrap();
        assert!(exp - (clock_secs(app) as i64) <= 60, "{claims}");
        let code = claims["code"].as_str().expect("a code");
        exchange_code(app, "jarm", code, None).await;
    }
}

/// JARM posted (`form_post.jwt`): the form has one `response` field; an
/// error is delivered the same way once the client is known.
async fn jarm_form_post_holds_a_signed_response_and_errors(app: &TestApp) {
    let url = authorize_url(app, "jarm", None, &[("response_mode", "form_post.jwt")]);
    let res = sign_in(app, &url).await;
    assert_eq!(res.status(), 200);
    let (action, fields) = posted_form(&res.text().await.unwrap());
    assert_eq!(action, REDIRECT);
    assert_eq!(fields.len(), 1, "{fields:?}");
    let claims = verify_with_jwks(app, field(&fields, "response").unwrap()).await;
    assert!(claims["code"].is_string());

    // An error after the mode is known: an unknown scope.
    let url = authorize_url(
        app,
        "jarm",
        None,
        &[("response_mode", "form_post.jwt"), ("scope", "openid nope")],
    )
    .replacen("scope=openid+email+profile&", "", 1);
    let res = Browser::new().get(&url).await;
    assert_eq!(res.status(), 200, "the error is posted");
    let (_, fields) = posted_form(&res.text().await.unwrap());
    let claims = verify_with_jwks(app, field(&fields, "response").unwrap()).await;
    assert_eq!(claims["error"], "invalid_scope", "{claims}");
    assert_eq!(claims["state"], "st-123");
}

/// `offline_access` (OpenID Connect Core §11): granted with refresh tokens
/// to a client allowed them even though its file does not list the scope,
/// ignored for one that is not, never `invalid_scope`.
async fn offline_access_is_granted_or_ignored(app: &TestApp) {
    for (client, granted) in [("conf", true), ("norefresh", false)] {
        let url = authorize_url(
            app,
            client,
            None,
            &[("scope", "openid offline_access email")],
        )
        .replacen("scope=openid+email+profile&", "", 1);
        let to = location(&sign_in(app, &url).await);
        let code = query_param(&to, "code").unwrap_or_else(|| panic!("{client}: {to}"));
        let tokens = exchange_code(app, client, &code, None).await;
        let scope = tokens["scope"].as_str().unwrap();
        assert_eq!(
            scope.contains("offline_access"),
            granted,
            "{client}: {scope}"
        );
        assert_eq!(tokens["refresh_token"].is_string(), granted, "{client}");
        if granted {
            // A refresh keeps it; asking it again is no error.
            let (status, refreshed) = token_request(
                app,
                client,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                    ("scope", "openid offline_access"),
                ],
            )
            .await;
            assert_eq!(status, 200, "{refreshed}");
            assert_eq!(refreshed["scope"], "openid offline_access");
        }
    }
}

/// The `claims` parameter: claims named for the ID token are in it, those
/// named for userinfo are returned by it (after a refresh too), beyond what
/// the scope `openid` alone grants.
async fn claims_parameter_adds_named_claims(app: &TestApp) {
    let claims = r#"{"id_token": {"email": {"essential": true}, "unknown_claim": null},
                     "userinfo": {"name": null, "customer_id": null}}"#;
    for client in ["conf", "opaque"] {
        let url = authorize_url(
            app,
            client,
            None,
            &[("scope", "openid"), ("claims", claims)],
        )
        .replacen("scope=openid+email+profile&", "", 1);
        let to = location(&sign_in(app, &url).await);
        let code = query_param(&to, "code").unwrap_or_else(|| panic!("{to}"));
        let tokens = exchange_code(app, client, &code, None).await;
        let id = jwt_claims(tokens["id_token"].as_str().unwrap());
        assert_eq!(id["email"], "Alice@Example.com", "{id}");
        assert!(id.get("name").is_none(), "not asked for the ID token: {id}");
        assert!(id.get("unknown_claim").is_none());
        let info = userinfo(app, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(info["name"], "Alice Martin", "{client}: {info}");
        assert!(info["customer_id"].is_string(), "{info}");
        assert!(
            info.get("email").is_none(),
            "not asked for userinfo: {info}"
        );
        let (status, refreshed) = token_request(
            app,
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let id = jwt_claims(refreshed["id_token"].as_str().unwrap());
        assert_eq!(
            id["email"], "Alice@Example.com",
            "kept with the grant: {id}"
        );
        let info = userinfo(app, refreshed["access_token"].as_str().unwrap()).await;
        assert_eq!(info["name"], "Alice Martin", "{info}");
    }
}

/// `acr` as an essential claim with values (§5.5.1.1): a value no flow of
/// the client reaches is refused before any page
/// (`unmet_authentication_requirements`); a reachable one runs that flow
/// and is the token's `acr`; without `essential` it is only a preference.
async fn essential_acr_picks_the_flow_or_fails(app: &TestApp) {
    let essential = r#"{"id_token": {"acr": {"essential": true, "values": ["3"]}}}"#;
    let res = Browser::new()
        .get(&authorize_url(
            app,
            "levels",
            None,
            &[("claims", essential)],
        ))
        .await;
    assert_eq!(res.status(), 303);
    let to = location(&res);
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("unmet_authentication_requirements"),
        "{to}"
    );

    // "2" is reached by the flow with TOTP: that flow's second page.
    let essential = r#"{"id_token": {"acr": {"essential": true, "value": "2"}}}"#;
    let url = authorize_url(app, "levels", None, &[("claims", essential)]);
    let res = sign_in(app, &url).await;
    assert_eq!(res.status(), 303);
    let next = location(&res);
    assert!(
        next.starts_with("/login/"),
        "TOTP is asked next, no code: {next}"
    );

    let preferred = r#"{"id_token": {"acr": {"values": ["3"]}}}"#;
    let url = authorize_url(app, "levels", None, &[("claims", preferred)]);
    let to = location(&sign_in(app, &url).await);
    let id = id_token_claims(app, "levels", &to).await;
    assert_eq!(id["acr"], "1", "a preference no flow reaches: the default");
}

/// Malformed `claims` is `invalid_request`, redirected.
async fn malformed_claims_are_refused(app: &TestApp) {
    for claims in [
        "not json",
        "[1]",
        r#"{"id_token": 3}"#,
        r#"{"userinfo": {"email": 3}}"#,
        r#"{"id_token": {"acr": {"essential": true, "values": [3]}}}"#,
    ] {
        let res = Browser::new()
            .get(&authorize_url(app, "conf", None, &[("claims", claims)]))
            .await;
        assert_eq!(res.status(), 303, "{claims}");
        let to = location(&res);
        assert_eq!(
            query_param(&to, "error").as_deref(),
            Some("invalid_request"),
            "{claims}: {to}"
        );
    }
}

/// Discovery lists the modes some client enables (here all of them), the
/// JARM algorithms in use, `offline_access` and the `claims` parameter.
async fn discovery_lists_what_clients_enable(app: &TestApp) {
    let doc = discovery(app).await;
    assert_eq!(
        doc["response_modes_supported"],
        serde_json::json!(["query", "form_post", "query.jwt", "jwt", "form_post.jwt"])
    );
    assert_eq!(
        doc["authorization_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    let scopes = doc["scopes_supported"].as_array().unwrap();
    assert!(scopes.iter().any(|s| s == "offline_access"), "{scopes:?}");
    assert_eq!(doc["claims_parameter_supported"], true);
}

/// With only the default test clients, discovery lists `query` alone and
/// no JARM algorithm.
async fn discovery_lists_only_query_by_default(app: &TestApp) {
    let doc = discovery(app).await;
    assert_eq!(
        doc["response_modes_supported"],
        serde_json::json!(["query"])
    );
    assert!(
        doc.get("authorization_signing_alg_values_supported")
            .is_none()
    );
}

matrix_with!(
    modes: crate::options(), |_| {};
    form_post_posts_the_response_to_the_redirect_uri,
    modes_not_enabled_are_refused_in_the_query,
    jarm_query_holds_a_signed_response,
    jarm_form_post_holds_a_signed_response_and_errors,
    offline_access_is_granted_or_ignored,
    claims_parameter_adds_named_claims,
    essential_acr_picks_the_flow_or_fails,
    malformed_claims_are_refused,
    discovery_lists_what_clients_enable,
);

matrix!(discovery_lists_only_query_by_default);
