//! Dynamic client registration (RFC 7591) and its management (RFC 7592), on
//! both backends: the initial access token, the policy's refusals, a clash
//! with a file client, the registration access token, a registered client's
//! code flow, deletion and disabling, a second node, and `idp client
//! list|show|disable|initial-token` on file and registered clients.

mod support;

use idp::config::Settings;
use idp_core::client::ClientSecretHash;
use idp_core::domain::ClientId;
use idp_core::registration::{ClientMetadata, RegisteredClient};
use serde_json::{Value, json};
use support::*;

/// The initial access token the test servers accept (its hash configured).
const INITIAL_TOKEN: &str = "initial-token-0123456789abcdefghijklmnopqrstuvwxyz";

/// Registration on: initial token required, loopback and `*.example.com`
/// redirects, code + refresh, basic/post/none, openid profile email.
fn enabled(s: &mut Settings) {
    s.registration.enabled = true;
    s.registration.initial_access_tokens = vec![ClientSecretHash::of(INITIAL_TOKEN).encode()];
    s.registration.redirect_uri_patterns = vec!["https://*.example.com/*".into()];
    s.registration.refresh_secs = 1;
}

fn open(s: &mut Settings) {
    enabled(s);
    s.registration.open = true;
}

/// An open policy allowing 3 registrations per address and hour.
fn open_limited(s: &mut Settings) {
    open(s);
    s.registration.max_per_ip_per_hour = 3;
}

async fn post_register(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(app.url("/register")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    if status == 201 {
        assert_eq!(res.headers()["cache-control"], "no-store");
    }
    if status == 401 {
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
    }
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A confidential client with the test redirect URI, registered with the
/// initial token: its client information response.
async fn register(app: &TestApp) -> Value {
    let (status, body) = post_register(
        app,
        Some(INITIAL_TOKEN),
        &json!({
            "redirect_uris": [REDIRECT],
            "client_name": "Registered portal",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "openid profile email",
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn configuration(
    app: &TestApp,
    method: reqwest::Method,
    client_id: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().request(method, app.url(&format!("/register/{client_id}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v}"))
}

async fn registered_count(app: &TestApp) -> usize {
    app.state
        .registration
        .store()
        .list_registered_clients()
        .await
        .unwrap()
        .len()
}

/// A code flow of `client_id` (PKCE) up to the token response, with the
/// client's secret by HTTP Basic.
async fn code_flow(app: &TestApp, client_id: &str, secret: &str) -> (u16, Value) {
    let browser = Browser::new();
    let (verifier, challenge) = pkce();
    let cb = browser
        .login(
            app,
            &authorize_url(app, client_id, Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&cb, "code").unwrap_or_else(|| panic!("no code in {cb}"));
    token_with(
        app,
        client_id,
        secret,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
        ],
    )
    .await
}

async fn token_with(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .basic_auth(client_id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The status of `/authorize` for `client_id` with the test redirect URI: a
/// login page (200, through redirects on the provider), or an error page
/// (400) when the client is unknown.
async fn authorize_status(app: &TestApp, client_id: &str, redirect: &str) -> u16 {
    let (_, challenge) = pkce();
    let url = authorize_url(app, client_id, Some(&challenge), &[]).replace(
        &url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        &url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
    );
    let (res, _) = Browser::new().follow(app, &url).await;
    res.status().as_u16()
}

// ------------------------------------------------------------------ tests

async fn registration_needs_the_initial_token(app: &TestApp) {
    let body = json!({"redirect_uris": [REDIRECT]});
    let before = registered_count(app).await;
    let (status, e) = post_register(app, None, &body).await;
    assert_eq!((status, str_of(&e, "error")), (401, "invalid_token"));
    let (status, e) = post_register(app, Some("not-the-token"), &body).await;
    assert_eq!((status, str_of(&e, "error")), (401, "invalid_token"));
    // Without the token, malformed metadata is not even looked at.
    let (status, _) = post_register(app, None, &json!({"redirect_uris": "x"})).await;
    assert_eq!(status, 401);
    assert_eq!(registered_count(app).await, before, "nothing stored");

    let info = register(app).await;
    let id = str_of(&info, "client_id");
    assert!(id.starts_with("dcr-"), "{id}");
    assert!(str_of(&info, "client_secret").len() >= 43);
    assert_eq!(info["client_secret_expires_at"], 0);
    assert!(info["client_id_issued_at"].as_i64().unwrap() > 0);
    assert!(str_of(&info, "registration_access_token").len() >= 43);
    assert_eq!(
        str_of(&info, "registration_client_uri"),
        app.url(&format!("/register/{id}"))
    );
    assert_eq!(info["redirect_uris"], json!([REDIRECT]));
    assert_eq!(info["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(info["response_types"], json!(["code"]));
    assert_eq!(info["client_name"], "Registered portal");
    // Only hashes are stored.
    let stored = app
        .state
        .registration
        .store()
        .find_registered_client(&ClientId(id.into()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored
            .secret_hash
            .unwrap()
            .matches(str_of(&info, "client_secret"))
    );
    assert!(
        stored
            .registration_token_hash
            .matches(str_of(&info, "registration_access_token"))
    );
    // Two registrations, two ids; a requested client_id is ignored.
    let (status, other) = post_register(
        app,
        Some(INITIAL_TOKEN),
        &json!({"redirect_uris": [REDIRECT], "client_id": "conf"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_ne!(other["client_id"], info["client_id"]);
    assert_ne!(other["client_id"], "conf");
    // The registration endpoint is advertised.
    assert_eq!(
        discovery(app).await["registration_endpoint"],
        app.url("/register")
    );
}

async fn an_open_policy_registers_without_a_token(app: &TestApp) {
    let (status, info) = post_register(
        app,
        None,
        &json!({"redirect_uris": ["http://127.0.0.1:53124/callback"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    assert!(
        info.get("client_secret").is_none(),
        "a public client has no secret"
    );
    assert!(info.get("client_secret_expires_at").is_none());
    // A token, when sent, must still be valid.
    let (status, _) =
        post_register(app, Some("wrong"), &json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, 401);
}

async fn redirect_uris_outside_the_policy_are_refused(app: &TestApp) {
    let before = registered_count(app).await;
    for uris in [
        json!(["https://evil.net/cb"]),
        json!(["https://example.com/cb"]),
        json!(["https://a.example.com.evil.net/cb"]),
        json!(["http://a.example.com/cb"]),
        json!(["https://a.example.com/cb#frag"]),
        json!(["http://localhost:9/cb"]),
        json!(["https://a.example.com/cb", "https://evil.net/cb"]),
        json!(["not a uri"]),
        json!([]),
    ] {
        let (status, e) =
            post_register(app, Some(INITIAL_TOKEN), &json!({"redirect_uris": uris})).await;
        assert_eq!(
            (status, str_of(&e, "error")),
            (400, "invalid_redirect_uri"),
            "{uris}"
        );
    }
    assert_eq!(registered_count(app).await, before, "nothing stored");
    let (status, _) = post_register(
        app,
        Some(INITIAL_TOKEN),
        &json!({"redirect_uris": ["https://portal.example.com/auth/cb"]}),
    )
    .await;
    assert_eq!(status, 201, "a matching redirect URI is accepted");
}

async fn metadata_outside_the_policy_is_refused(app: &TestApp) {
    let before = registered_count(app).await;
    for extra in [
        json!({"grant_types": ["client_credentials"]}),
        json!({"grant_types": ["implicit"]}),
        json!({"grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]}),
        json!({"token_endpoint_auth_method": "private_key_jwt"}),
        json!({"token_endpoint_auth_method": "client_secret_jwt"}),
        json!({"token_endpoint_auth_method": "tls_client_auth"}),
        json!({"scope": "openid admin_api"}),
        json!({"scope": "api"}),
        json!({"response_types": ["token"]}),
        json!({"response_types": ["code"], "grant_types": ["refresh_token"]}),
        json!({"client_name": ""}),
        json!({"logo_uri": "javascript:alert(1)"}),
        json!({"redirect_uris": "https://a.example.com/cb"}),
        json!({"subject_type": "pairwise"}),
        json!({"sector_identifier_uri": "https://a.example.com/sector.json"}),
        json!({"jwks_uri": "https://a.example.com/jwks"}),
        json!({"userinfo_signed_response_alg": "RS256"}),
        json!({"id_token_signed_response_alg": "none"}),
        json!({"id_token_signed_response_alg": "HS256"}),
    ] {
        let mut body = json!({"redirect_uris": [REDIRECT]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, e) = post_register(app, Some(INITIAL_TOKEN), &body).await;
        assert_eq!(
            (status, str_of(&e, "error")),
            (400, "invalid_client_metadata"),
            "{extra}"
        );
    }
    let res = reqwest::Client::new()
        .post(app.url("/register"))
        .bearer_auth(INITIAL_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(registered_count(app).await, before, "nothing stored");
}

async fn a_file_client_wins_over_a_registered_client_of_its_id(app: &TestApp) {
    // A registered client stored with the id of a file client (as when a
    // file is added after the registration), its own secret and redirect.
    use idp_core::clock::Clock;
    let now = app.clock.now();
    let store = app.state.registration.store();
    store
        .create_registered_client(&RegisteredClient {
            id: ClientId("conf".into()),
            metadata: ClientMetadata {
                redirect_uris: vec!["https://attacker.example.com/cb".into()],
                token_endpoint_auth_method: "client_secret_basic".into(),
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                response_types: vec!["code".into()],
                scope: "openid".into(),
                ..ClientMetadata::default()
            },
            secret_hash: Some(ClientSecretHash::of("attacker-secret")),
            registration_token_hash: ClientSecretHash::of("attacker-token"),
            enabled: true,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    assert!(app.state.registration.refresh().await.unwrap());
    let conf = app.state.provider.clients.get("conf").unwrap();
    assert_eq!(conf.name, "Portal conf", "the file client");
    // /authorize: the registered redirect URI is not the file client's.
    assert_eq!(
        authorize_status(app, "conf", "https://attacker.example.com/cb").await,
        400
    );
    // /token: the registered secret does not authenticate.
    let (status, e) = token_with(
        app,
        "conf",
        "attacker-secret",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!((status, str_of(&e, "error")), (401, "invalid_client"));
    // The file client works as before.
    let (status, t) = code_flow(app, "conf", SECRET).await;
    assert_eq!(status, 200, "{t}");
    // Its registration access token does not manage the file client.
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let (status, _) = configuration(app, method, "conf", Some("attacker-token"), None).await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        app.state.provider.clients.get("conf").unwrap().name,
        "Portal conf"
    );
    let (status, t) = code_flow(app, "conf", SECRET).await;
    assert_eq!(status, 200, "{t}");
}

async fn the_registration_access_token_reads_updates_and_deletes(app: &TestApp) {
    let info = register(app).await;
    let other = register(app).await;
    let id = str_of(&info, "client_id").to_owned();
    let token = str_of(&info, "registration_access_token").to_owned();
    let get = reqwest::Method::GET;
    // Missing, wrong, or another client's token: 401.
    for t in [
        None,
        Some("wrong"),
        Some(str_of(&other, "registration_access_token")),
        Some(INITIAL_TOKEN),
    ] {
        let (status, e) = configuration(app, get.clone(), &id, t, None).await;
        assert_eq!(
            (status, str_of(&e, "error")),
            (401, "invalid_token"),
            "{t:?}"
        );
    }
    // An unknown client looks the same as a wrong token.
    let (status, _) = configuration(app, get.clone(), "dcr-unknown", Some(&token), None).await;
    assert_eq!(status, 401);

    // Read: the metadata, no secret, and a new registration access token.
    let (status, read) = configuration(app, get.clone(), &id, Some(&token), None).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["client_id"], id);
    assert_eq!(read["client_name"], "Registered portal");
    assert!(read.get("client_secret").is_none());
    let token2 = str_of(&read, "registration_access_token").to_owned();
    assert_ne!(token2, token);
    let (status, _) = configuration(app, get.clone(), &id, Some(&token), None).await;
    assert_eq!(status, 401, "the used token was rotated");

    // Two concurrent uses of one token: exactly one wins (the token rotates).
    let (r1, r2) = tokio::join!(
        configuration(app, get.clone(), &id, Some(&token2), None),
        configuration(app, get.clone(), &id, Some(&token2), None),
    );
    let mut statuses = [r1.0, r2.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401], "one winner");
    let winner = if r1.0 == 200 { r1.1 } else { r2.1 };
    let token2 = str_of(&winner, "registration_access_token").to_owned();

    // Update: a full replacement, checked against the policy.
    let put = reqwest::Method::PUT;
    let bad = json!({"client_id": id, "redirect_uris": ["https://evil.net/cb"]});
    let (status, e) = configuration(app, put.clone(), &id, Some(&token2), Some(&bad)).await;
    assert_eq!((status, str_of(&e, "error")), (400, "invalid_redirect_uri"));
    let stolen = json!({"client_id": str_of(&other, "client_id"), "redirect_uris": [REDIRECT]});
    let (status, _) = configuration(app, put.clone(), &id, Some(&token2), Some(&stolen)).await;
    assert_eq!(status, 400, "the body's client_id must be the client's");
    let new = json!({
        "client_id": id,
        "redirect_uris": ["https://app.example.com/cb", REDIRECT],
        "client_name": "Renamed portal",
        "grant_types": ["authorization_code"],
        "scope": "openid profile email",
    });
    let (status, updated) = configuration(app, put.clone(), &id, Some(&token2), Some(&new)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["client_name"], "Renamed portal");
    assert_eq!(updated["grant_types"], json!(["authorization_code"]));
    let client = app.state.provider.clients.get(&id).unwrap();
    assert_eq!(client.name, "Renamed portal");
    assert!(!client.allow_refresh_token);
    assert_eq!(client.redirect_uris.len(), 2);
    // The secret stayed: a code flow with it works.
    let (status, t) = code_flow(app, &id, str_of(&info, "client_secret")).await;
    assert_eq!(status, 200, "{t}");
    assert!(t.get("refresh_token").is_none(), "refresh_token removed");
    let token3 = str_of(&updated, "registration_access_token").to_owned();

    // Delete: 204, then the token and the client are gone.
    let delete = reqwest::Method::DELETE;
    let (status, _) = configuration(app, delete.clone(), &id, Some(&token2), None).await;
    assert_eq!(status, 401, "a rotated token cannot delete");
    let (status, _) = configuration(app, delete.clone(), &id, Some(&token3), None).await;
    assert_eq!(status, 204);
    let (status, _) = configuration(app, get.clone(), &id, Some(&token3), None).await;
    assert_eq!(status, 401);
    assert!(app.state.provider.clients.get(&id).is_none());
    // The other client is untouched.
    assert!(
        app.state
            .provider
            .clients
            .get(str_of(&other, "client_id"))
            .is_some()
    );
}

/// The display members (OIDC Dynamic plan's `logo_uri`, `policy_uri`,
/// `tos_uri` modules) are kept and given back, and the flow works.
async fn display_members_are_kept(app: &TestApp) {
    let (status, info) = post_register(
        app,
        Some(INITIAL_TOKEN),
        &json!({
            "redirect_uris": [REDIRECT],
            "scope": "openid profile email",
            "grant_types": ["authorization_code"],
            "logo_uri": "https://cdn.example.com/logo.png",
            "policy_uri": "https://portal.example.com/privacy",
            "tos_uri": "https://portal.example.com/terms",
            "client_uri": "https://portal.example.com/",
            "contacts": ["ops@example.com"],
            "id_token_signed_response_alg": "ES256",
            "subject_type": "public",
            "unknown_member": "ignored",
        }),
    )
    .await;
    assert_eq!(status, 201, "{info}");
    for k in ["logo_uri", "policy_uri", "tos_uri", "client_uri"] {
        assert!(info[k].as_str().unwrap().starts_with("https://"), "{k}");
    }
    assert_eq!(info["contacts"], json!(["ops@example.com"]));
    assert!(info.get("unknown_member").is_none());
    let id = str_of(&info, "client_id");
    let (status, t) = code_flow(app, id, str_of(&info, "client_secret")).await;
    assert_eq!(status, 200, "{t}");
    let id_token = str_of(&t, "id_token");
    let header: Value = {
        use base64::Engine;
        let h = id_token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "ES256", "id_token_signed_response_alg");
}

async fn a_registered_client_completes_a_code_flow(app: &TestApp) {
    let info = register(app).await;
    let id = str_of(&info, "client_id");
    let secret = str_of(&info, "client_secret");
    let (status, t) = code_flow(app, id, secret).await;
    assert_eq!(status, 200, "{t}");
    let claims = jwt_claims(str_of(&t, "id_token"));
    assert_eq!(claims["aud"], id);
    assert_eq!(claims["sub"], app.user.id.0.to_string());
    assert_eq!(
        userinfo(app, str_of(&t, "access_token")).await["sub"],
        claims["sub"]
    );
    let (status, r) = token_with(
        app,
        id,
        secret,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", str_of(&t, "refresh_token")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{r}");
    // Its secret only: the test secret does not authenticate it.
    let (status, _) = token_with(app, id, SECRET, &[("grant_type", "refresh_token")]).await;
    assert_eq!(status, 401);
    // PKCE is required of registered clients.
    let (status, _) = code_flow_without_pkce(app, id).await;
    assert_eq!(status, 400);
}

/// `/authorize` without PKCE: the status of the answer to the client (a
/// redirect with an error) or of the error page.
async fn code_flow_without_pkce(app: &TestApp, client_id: &str) -> (u16, String) {
    let (res, _) = Browser::new()
        .follow(app, &authorize_url(app, client_id, None, &[]))
        .await;
    if res.status().is_redirection() {
        let loc = location(&res);
        let error = query_param(&loc, "error").unwrap_or_default();
        return (if error.is_empty() { 302 } else { 400 }, error);
    }
    (res.status().as_u16(), String::new())
}

async fn a_deleted_or_disabled_client_is_refused_with_its_refresh_tokens(app: &TestApp) {
    for how in ["deleted", "disabled"] {
        let info = register(app).await;
        let id = str_of(&info, "client_id");
        let secret = str_of(&info, "client_secret");
        let (status, t) = code_flow(app, id, secret).await;
        assert_eq!(status, 200, "{t}");
        let refresh = str_of(&t, "refresh_token");
        let store = app.state.registration.store();
        let client = ClientId(id.into());
        assert_eq!(store.live_grants_of_client(&client).await.unwrap().len(), 1);
        assert_eq!(authorize_status(app, id, REDIRECT).await, 200);
        if how == "deleted" {
            let (status, _) = configuration(
                app,
                reqwest::Method::DELETE,
                id,
                Some(str_of(&info, "registration_access_token")),
                None,
            )
            .await;
            assert_eq!(status, 204);
        } else {
            use idp_core::clock::Clock;
            assert!(
                store
                    .set_registered_client_enabled(&client, false, app.clock.now())
                    .await
                    .unwrap()
            );
            app.state.registration.refresh().await.unwrap();
            app.state.registration.revoke_grants(&client).await.unwrap();
        }
        assert_eq!(authorize_status(app, id, REDIRECT).await, 400, "{how}");
        let (status, e) = token_with(
            app,
            id,
            secret,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        assert_eq!(
            (status, str_of(&e, "error")),
            (401, "invalid_client"),
            "{how}"
        );
        assert!(
            store
                .live_grants_of_client(&client)
                .await
                .unwrap()
                .is_empty(),
            "{how}: its grant is revoked"
        );
        let res = reqwest::Client::new()
            .get(app.url("/userinfo"))
            .bearer_auth(str_of(&t, "access_token"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            401,
            "{how}: its access tokens die with the grant"
        );
    }
}

async fn registration_is_off_by_default(app: &TestApp) {
    assert!(discovery(app).await.get("registration_endpoint").is_none());
    let (status, _) = post_register(
        app,
        Some(INITIAL_TOKEN),
        &json!({"redirect_uris": [REDIRECT]}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = configuration(
        app,
        reqwest::Method::GET,
        "dcr-x",
        Some(INITIAL_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

/// Even an open policy cannot fill the database from one address: past
/// `max_per_ip_per_hour` requests (refused ones count too) the answer is
/// 429 with `Retry-After`, and nothing is stored.
async fn registrations_from_one_address_are_limited(app: &TestApp) {
    let body = json!({"redirect_uris": ["http://127.0.0.1:53124/callback"], "token_endpoint_auth_method": "none"});
    let (status, _) = post_register(app, Some("wrong"), &body).await;
    assert_eq!(status, 401, "a refused request counts");
    for _ in 0..2 {
        let (status, info) = post_register(app, None, &body).await;
        assert_eq!(status, 201, "{info}");
    }
    let before = registered_count(app).await;
    let res = reqwest::Client::new()
        .post(app.url("/register"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"], "temporarily_unavailable");
    assert_eq!(registered_count(app).await, before, "nothing stored");
}

matrix_with!(with_token: crate::AppOptions::default(), crate::enabled;
    registration_needs_the_initial_token,
    redirect_uris_outside_the_policy_are_refused,
    metadata_outside_the_policy_is_refused,
    a_file_client_wins_over_a_registered_client_of_its_id,
    the_registration_access_token_reads_updates_and_deletes,
    a_registered_client_completes_a_code_flow,
    display_members_are_kept,
    a_deleted_or_disabled_client_is_refused_with_its_refresh_tokens,
);
matrix_with!(open_policy: crate::AppOptions::default(), crate::open; an_open_policy_registers_without_a_token);
matrix_with!(off: crate::AppOptions::default(), |_| {}; registration_is_off_by_default);
matrix_with!(limited: crate::AppOptions::default(), crate::open_limited; registrations_from_one_address_are_limited);

// ------------------------------------------------------- two nodes, the CLI

/// A registration on one node is usable on another within the refresh
/// period, and a deletion stops it there too.
async fn a_second_node_sees_a_registration_and_a_deletion(backend: Backend) {
    let db = SharedDatabase::new(backend).await;
    let a = spawn_app_on(&db, backend, AppOptions::default(), enabled).await;
    let b = spawn_app_on(&db, backend, AppOptions::default(), enabled).await;
    let info = register(&a).await;
    let id = str_of(&info, "client_id").to_owned();
    assert!(
        a.state.provider.clients.get(&id).is_some(),
        "at once on its node"
    );
    let clients_b = b.state.provider.clients.clone();
    wait_for("node b to load the registration", || {
        clients_b.get(&id).map(|_| ())
    })
    .await;
    assert_eq!(authorize_status(&b, &id, REDIRECT).await, 200);
    // A node started later (or restarted) has it from the start.
    let c = spawn_app_on(&db, backend, AppOptions::default(), enabled).await;
    assert!(c.state.provider.clients.get(&id).is_some());
    c.stop().await;
    let (status, _) = configuration(
        &a,
        reqwest::Method::DELETE,
        &id,
        Some(str_of(&info, "registration_access_token")),
        None,
    )
    .await;
    assert_eq!(status, 204);
    wait_for("node b to drop the deleted client", || {
        clients_b.get(&id).is_none().then_some(())
    })
    .await;
    assert_eq!(authorize_status(&b, &id, REDIRECT).await, 400);
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

/// Runs the `idp` binary with the configuration of `dir` (on the shared
/// database, with a client file), off the async workers.
async fn idp_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_idp"));
    cmd.arg("--config").arg(dir.join("idp.toml")).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IDP_") {
            cmd.env_remove(k);
        }
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run idp"))
        .await
        .unwrap()
}

async fn the_cli_lists_shows_and_disables_both_kinds(backend: Backend) {
    let db = SharedDatabase::new(backend).await;
    let dir = std::env::temp_dir().join(format!("idp-dcr-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("clients")).unwrap();
    let _cleanup = TempDir(dir.clone());
    std::fs::write(
        dir.join("idp.toml"),
        format!(
            "data_dir = {}\nclients_dir = \"clients\"\ndatabase_url = {}\nkey_encryption_key = \"{}\"\n",
            toml::Value::String(dir.join("data").display().to_string()),
            toml::Value::String(db.url.clone()),
            idp_core::secret::KeyEncryptionKey::generate().encode(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("clients/file-portal.toml"),
        format!(
            "client_id = \"file-portal\"\nname = \"File portal\"\ntype = \"confidential\"\nsecret_hash = \"{}\"\nredirect_uris = [\"https://portal.example/cb\"]\n",
            ClientSecretHash::of(SECRET).encode()
        ),
    )
    .unwrap();
    let app = spawn_app_on(&db, backend, AppOptions::default(), enabled).await;
    let info = register(&app).await;
    let id = str_of(&info, "client_id").to_owned();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let list = idp_cli(&dir, &["client", "list"]).await;
    assert!(list.status.success(), "{}", text(&list));
    let out = text(&list);
    let line_of = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} listed: {out}"))
            .to_owned()
    };
    let file_line = line_of("file-portal");
    assert!(
        file_line.contains("File portal")
            && file_line.contains("file")
            && file_line.ends_with("yes")
    );
    let reg_line = line_of(&id);
    assert!(
        reg_line.contains("Registered portal")
            && reg_line.contains("registered")
            && reg_line.ends_with("yes"),
        "{reg_line}"
    );

    let show = idp_cli(&dir, &["client", "show", &id]).await;
    assert!(show.status.success(), "{}", text(&show));
    let shown = text(&show);
    assert!(
        shown.contains("source: registered") && shown.contains(REDIRECT),
        "{shown}"
    );
    assert!(!shown.contains(str_of(&info, "client_secret")) && !shown.contains("sha256:"));
    let show = idp_cli(&dir, &["client", "show", "file-portal"]).await;
    assert!(
        text(&show).contains("https://portal.example/cb"),
        "{}",
        text(&show)
    );
    assert!(!text(&show).contains("sha256:"));
    let missing = idp_cli(&dir, &["client", "show", "nobody"]).await;
    assert!(!missing.status.success());

    // A file client is disabled by its file.
    let refused = idp_cli(&dir, &["client", "disable", "file-portal"]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("clients/file-portal.toml"),
        "{}",
        text(&refused)
    );

    // A registered one in the database: every node drops it.
    let (status, t) = code_flow(&app, &id, str_of(&info, "client_secret")).await;
    assert_eq!(status, 200, "{t}");
    let disabled = idp_cli(&dir, &["client", "disable", &id]).await;
    assert!(disabled.status.success(), "{}", text(&disabled));
    assert!(
        text(&disabled).contains("1 grant(s) revoked"),
        "{}",
        text(&disabled)
    );
    let clients = app.state.provider.clients.clone();
    wait_for("the node to drop the disabled client", || {
        clients.get(&id).is_none().then_some(())
    })
    .await;
    let (status, _) = token_with(
        &app,
        &id,
        str_of(&info, "client_secret"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", str_of(&t, "refresh_token")),
        ],
    )
    .await;
    assert_eq!(status, 401);
    let list = text(&idp_cli(&dir, &["client", "list"]).await);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.ends_with("no")),
        "{list}"
    );

    // An initial access token minted on the command line registers.
    let minted = idp_cli(&dir, &["client", "initial-token", "--expires-in-days", "1"]).await;
    assert!(minted.status.success(), "{}", text(&minted));
    let token = text(&minted)
        .lines()
        .find_map(|l| l.rsplit_once(": ").map(|(_, t)| t.trim().to_owned()))
        .unwrap();
    let (status, e) =
        post_register(&app, Some(&token), &json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, 201, "{e}");
    app.stop().await;
    db.cleanup().await;
}

on_both_backends!(
    a_second_node_sees_a_registration_and_a_deletion,
    the_cli_lists_shows_and_disables_both_kinds,
);
