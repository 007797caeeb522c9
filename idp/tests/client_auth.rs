//! Client authentication with signed JWTs (RFC 7523, OpenID Connect Core
//! §9): `private_key_jwt` with keys in the client's file or at its
//! `jwks_uri`, and `client_secret_jwt`, at the token, introspection and
//! revocation endpoints; the refusals (replayed `jti`, wrong audience,
//! expired, unregistered key, the wrong method), on both backends.

mod support;

use idp_core::client::{Client, ClientKeySource, ProtocolSettings, TokenEndpointAuthMethod};
use idp_core::oidc::client_jwt::ClientKeys;
use josekit::jws::{ES256, JwsHeader};
use josekit::jwt::JwtPayload;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};
use support::*;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const FLOWS: &str = r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password"]}]"#;
const JWT_SECRET: &str = "a-shared-secret-of-at-least-32-bytes-0123456789";

/// A key pair of the test's clients, made once: (private JWK, public JWK).
fn key(which: usize) -> &'static (josekit::jwk::Jwk, josekit::jwk::Jwk) {
    static KEYS: OnceLock<Vec<(josekit::jwk::Jwk, josekit::jwk::Jwk)>> = OnceLock::new();
    &KEYS.get_or_init(|| es256_key_pairs(3, Some("k")))[which]
}

fn jwks(which: &[usize]) -> String {
    let keys: Vec<Value> = which
        .iter()
        .map(|i| serde_json::from_str(&key(*i).1.to_string()).unwrap())
        .collect();
    json!({ "keys": keys }).to_string()
}

fn jwt_client(id: &str, method: TokenEndpointAuthMethod, keys: Option<ClientKeySource>) -> Client {
    Client {
        auth_method: method,
        secret_hash: None,
        protocol: ProtocolSettings {
            keys,
            jwt_secret: (method == TokenEndpointAuthMethod::ClientSecretJwt)
                .then(|| Arc::new(idp_core::secret::Secret::new(JWT_SECRET))),
            ..ProtocolSettings::default()
        },
        ..client_with_flows(id, FLOWS)
    }
}

/// The JWKS the `remote` client's server publishes (changed by tests).
fn published() -> &'static Mutex<String> {
    static DOC: OnceLock<Mutex<String>> = OnceLock::new();
    DOC.get_or_init(|| Mutex::new(jwks(&[1])))
}

/// Serves [`published`] on a loopback port: its `jwks_uri`.
async fn jwks_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(|| async { published().lock().unwrap().clone() }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks")
}

fn options(jwks_uri: String) -> AppOptions {
    AppOptions {
        clients: vec![
            jwt_client(
                "pkjwt",
                TokenEndpointAuthMethod::PrivateKeyJwt,
                Some(ClientKeySource::Inline(Arc::new(
                    ClientKeys::from_jwks(&jwks(&[0])).unwrap(),
                ))),
            ),
            jwt_client(
                "remote",
                TokenEndpointAuthMethod::PrivateKeyJwt,
                Some(ClientKeySource::Remote(jwks_uri)),
            ),
            jwt_client("hsjwt", TokenEndpointAuthMethod::ClientSecretJwt, None),
        ],
        ..AppOptions::default()
    }
}

/// A client assertion by `client` (signed with key `which`, or the shared
/// secret for `hsjwt`), adjusted by `edit`.
fn assertion(
    app: &TestApp,
    client: &str,
    which: usize,
    edit: impl FnOnce(&mut JwtPayload),
) -> String {
    let now = clock_secs(app);
    let mut p = JwtPayload::new();
    p.set_issuer(client);
    p.set_subject(client);
    p.set_audience(vec![app.issuer.clone()]);
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    p.set_issued_at(&(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now)));
    p.set_expires_at(&(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now + 60)));
    edit(&mut p);
    let mut h = JwsHeader::new();
    h.set_token_type("JWT");
    if client == "hsjwt" {
        let signer = josekit::jws::HS256
            .signer_from_bytes(JWT_SECRET.as_bytes())
            .unwrap();
        josekit::jwt::encode_with_signer(&p, &h, &signer).unwrap()
    } else {
        let (private, _) = key(which);
        h.set_key_id(private.key_id().unwrap());
        let signer = ES256.signer_from_jwk(private).unwrap();
        josekit::jwt::encode_with_signer(&p, &h, &signer).unwrap()
    }
}

/// A form POST to `path` with no Basic credentials.
async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Alice signs in through `client`: a fresh code.
async fn code_for(app: &TestApp, client: &str) -> String {
    let to = Browser::new()
        .login(
            app,
            &authorize_url(app, client, None, &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    query_param(&to, "code").unwrap_or_else(|| panic!("{to}"))
}

async fn exchange(app: &TestApp, code: &str, jwt: &str) -> (u16, Value) {
    post(
        app,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", jwt),
        ],
    )
    .await
}

/// `private_key_jwt` and `client_secret_jwt`: the code exchange, then
/// introspection and revocation, each with a fresh assertion.
async fn signed_assertions_authenticate_everywhere(app: &TestApp) {
    for (client, which) in [("pkjwt", 0), ("hsjwt", 0), ("remote", 1)] {
        let code = code_for(app, client).await;
        let (status, tokens) = exchange(app, &code, &assertion(app, client, which, |_| {})).await;
        assert_eq!(status, 200, "{client}: {tokens}");
        let access = tokens["access_token"].as_str().unwrap();
        let a = assertion(app, client, which, |_| {});
        let (status, info) = post(
            app,
            "/introspect",
            &[
                ("token", access),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ],
        )
        .await;
        assert_eq!(status, 200, "{client}: {info}");
        assert_eq!(info["active"], true);
        let a = assertion(app, client, which, |_| {});
        let (status, _) = post(
            app,
            "/revoke",
            &[
                ("token", tokens["refresh_token"].as_str().unwrap()),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &a),
            ],
        )
        .await;
        assert_eq!(status, 200, "{client}");
    }
}

/// Each refusal is `invalid_client` (401), and leaves the code redeemable.
async fn bad_assertions_are_refused(app: &TestApp) {
    let code = code_for(app, "pkjwt").await;
    let token_endpoint = app.url("/token");
    let now = clock_secs(app);
    let refused: Vec<(&str, String)> = vec![
        (
            "audience is the token endpoint (RFC 7523bis)",
            assertion(app, "pkjwt", 0, |p| {
                p.set_audience(vec![token_endpoint.clone()])
            }),
        ),
        (
            "expired",
            assertion(app, "pkjwt", 0, |p| {
                p.set_issued_at(
                    &(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now - 600)),
                );
                p.set_expires_at(
                    &(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now - 300)),
                );
            }),
        ),
        (
            "signed by an unregistered key",
            assertion(app, "pkjwt", 2, |_| {}),
        ),
        (
            "without jti",
            assertion(app, "pkjwt", 0, |p| {
                p.set_claim("jti", None).unwrap();
            }),
        ),
        (
            "issued for another client",
            assertion(app, "pkjwt", 0, |p| p.set_subject("hsjwt")),
        ),
    ];
    for (why, jwt) in refused {
        let (status, body) = exchange(app, &code, &jwt).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{why}: {body}"
        );
    }
    // A secret is not how this client authenticates.
    let (status, body) = token_request(
        app,
        "pkjwt",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // The assertion type is required.
    let (status, _) = post(
        app,
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_assertion", &assertion(app, "pkjwt", 0, |_| {})),
        ],
    )
    .await;
    assert_eq!(status, 401);

    // A good assertion, once; the same again is a replay.
    let good = assertion(app, "pkjwt", 0, |_| {});
    let (status, body) = exchange(app, &code, &good).await;
    assert_eq!(status, 200, "the code survived the refusals: {body}");
    let code = code_for(app, "pkjwt").await;
    let (status, body) = exchange(app, &code, &good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replayed jti: {body}"
    );
}

/// A replayed `jti` is refused on another node of the deployment too (the
/// memory is the shared store), on PostgreSQL + Redis.
async fn replayed_jti_is_refused_across_nodes(backend: Backend) {
    if backend == Backend::Sqlite {
        // One process: the store is in-process; covered by
        // `bad_assertions_are_refused`. Two nodes need the shared store.
        let app = spawn_app_with(backend, options(jwks_server().await)).await;
        let a = assertion(&app, "pkjwt", 0, |_| {});
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
        ];
        assert_eq!(post(&app, "/token", &form).await.0, 200, "authenticated");
        assert_eq!(post(&app, "/token", &form).await.0, 401, "replayed");
        app.cleanup().await;
        return;
    }
    let db = SharedDatabase::new(backend).await;
    let uri = jwks_server().await;
    // Two nodes of one deployment: one database, one Redis key prefix.
    let prefix = format!("idp-test:{}:", uuid::Uuid::new_v4().simple());
    let same_store = |p: String| move |s: &mut idp::config::Settings| s.redis_key_prefix = p;
    let a = spawn_app_on(
        &db,
        backend,
        options(uri.clone()),
        same_store(prefix.clone()),
    )
    .await;
    let b = spawn_app_on(&db, backend, options(uri), same_store(prefix)).await;
    let jwt = assertion(&a, "pkjwt", 0, |_| {});
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", jwt.as_str()),
    ];
    let (first, _) = post(&a, "/token", &form).await;
    assert_eq!(first, 200, "authenticated on node a");
    let (second, body) = post(&b, "/token", &form).await;
    assert_eq!(
        (second, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    a.stop().await;
    b.stop().await;
    db.cleanup().await;
}

/// Keys at a `jwks_uri` are fetched and cached; a key the client adds later
/// is found by fetching again (an unknown `kid`), at most every 30 seconds.
async fn jwks_uri_keys_are_fetched_again_for_a_new_key(app: &TestApp) {
    let (status, _) = post(
        app,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion(app, "remote", 1, |_| {})),
        ],
    )
    .await;
    assert_ne!(status, 401, "key k1 at the jwks_uri");
    // The client rotates to k2: the cached set does not have it.
    *published().lock().unwrap() = jwks(&[1, 2]);
    app.clock.advance(time::Duration::seconds(31));
    let (status, body) = post(
        app,
        "/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion(app, "remote", 2, |_| {})),
        ],
    )
    .await;
    assert_ne!(status, 401, "k2 found by fetching again: {body}");
    *published().lock().unwrap() = jwks(&[1]);
}

fn default_options() -> AppOptions {
    // The jwks_uri of `remote` is unreachable in these tests (port 9): only
    // the inline and secret clients are used.
    options("http://127.0.0.1:9/jwks".into())
}

mod served {
    //! Tests that need the `remote` client's JWKS server.
    use super::*;

    async fn with_server(test: impl AsyncFnOnce(&TestApp), backend: Backend) {
        let app = spawn_app_with(backend, options(jwks_server().await)).await;
        test(&app).await;
        app.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signed_assertions_sqlite() {
        with_server(signed_assertions_authenticate_everywhere, Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signed_assertions_postgres_redis() {
        with_server(signed_assertions_authenticate_everywhere, Backend::Postgres).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jwks_uri_sqlite() {
        with_server(
            jwks_uri_keys_are_fetched_again_for_a_new_key,
            Backend::Sqlite,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jwks_uri_postgres_redis() {
        with_server(
            jwks_uri_keys_are_fetched_again_for_a_new_key,
            Backend::Postgres,
        )
        .await;
    }
}

matrix_with!(refusals: crate::default_options(), |_| {}; bad_assertions_are_refused);
on_both_backends!(replayed_jti_is_refused_across_nodes);
