//! The one test harness: `spawn_app(backend)` starts the real server on an
//! ephemeral loopback port with a fresh database (SQLite in memory, or a new
//! PostgreSQL database) and short-lived store (in-process, or Redis under a
//! fresh key prefix), a settable clock and registered test clients; `Browser`
//! keeps cookies and follows the HTML forms as a browser would.

#![allow(dead_code, unreachable_pub)]

use idp::app::{self, AppState, Overrides};
use idp::config::{LoadedConfig, Settings};
use idp_core::client::{
    AccessTokenFormat, Client, ClientRegistry, ClientSecretHash, Lifetimes, TokenEndpointAuthMethod,
};
use idp_core::clock::SettableClock;
use idp_core::domain::{ClientId, Email, User};
use idp_core::keys::SigningAlg;
use idp_core::password::Argon2Settings;
use idp_core::secret::{KeyEncryptionKey, Secret};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in memory + in-process store (the embedded default).
    Sqlite,
    /// PostgreSQL + Redis (production).
    Postgres,
}

pub const SECRET: &str = "test-client-secret-0123456789abcdefghijklmnopqrstuv";
pub const REDIRECT: &str = "http://127.0.0.1:9/cb";
pub const POST_LOGOUT: &str = "http://127.0.0.1:9/bye";
pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub issuer: String,
    /// Where this server answers (the issuer, unless `AppOptions::issuer`).
    pub base: String,
    pub state: AppState,
    pub clock: SettableClock,
    pub backend: Backend,
    pub user: User,
    /// Every email and SMS the server sent.
    pub outbox: Arc<idp_core::notify::MemoryOutbox>,
    /// The server and its background tasks (see [`TestApp::stop`]).
    pub running: app::Running,
    pg: Option<idp_storage::testing::TestDatabase>,
    _data: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestApp {
    pub async fn cleanup(self) {
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

fn client(id: &str, public: bool, format: AccessTokenFormat, alg: SigningAlg) -> Client {
    Client {
        id: ClientId(id.into()),
        name: format!("Portal {id}"),
        auth_method: if public {
            TokenEndpointAuthMethod::None
        } else {
            TokenEndpointAuthMethod::ClientSecretBasic
        },
        secret_hash: (!public).then(|| ClientSecretHash::of(SECRET)),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![POST_LOGOUT.into()],
        allow_authorization_code: true,
        allow_refresh_token: true,
        allow_client_credentials: !public,
        scopes: ["openid", "profile", "email", "api", "admin_api"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        theme: "default".into(),
        access_token_format: format,
        id_token_alg: alg,
        access_token_alg: alg,
        require_pkce: false,
        lifetimes: Lifetimes::default(),
        login: idp_core::policy::LoginPolicy::password_only(
            &idp_core::steps::registry(),
            &idp_core::assurance::Levels::builtin(),
        )
        .expect("identifier then password is a valid flow"),
        account: Default::default(),
        protocol: Default::default(),
    }
}

/// Registered test clients: `conf` (confidential, JWT access tokens, ES256),
/// `spa` (public), `opaque` (opaque access tokens), `rsa` (RS256).
pub fn test_clients() -> Vec<Client> {
    vec![
        client("conf", false, AccessTokenFormat::Jwt, SigningAlg::ES256),
        client("spa", true, AccessTokenFormat::Jwt, SigningAlg::ES256),
        client(
            "opaque",
            false,
            AccessTokenFormat::Opaque,
            SigningAlg::ES256,
        ),
        client("rsa", false, AccessTokenFormat::Jwt, SigningAlg::RS256),
    ]
}

/// A confidential client (secret [`SECRET`]) whose login flows are given as
/// JSON, in the shape of a client file's `[[login.flows]]`, e.g.
/// `r#"[{"name": "d", "acr": "1", "steps": ["identifier", "password", "totp"]}]"#`.
pub fn client_with_flows(id: &str, flows_json: &str) -> Client {
    let specs: Vec<idp_core::policy::FlowSpec> =
        serde_json::from_str(flows_json).expect("flows JSON");
    let levels = idp_core::assurance::Levels::from_specs(&test_levels()).expect("test levels");
    Client {
        login: idp_core::policy::parse_policy(&specs, &idp_core::steps::registry(), &levels)
            .expect("valid flows"),
        account: Default::default(),
        ..client(id, false, AccessTokenFormat::Jwt, SigningAlg::ES256)
    }
}

/// The assurance levels test servers declare: the built-in `1`, `2` and
/// `3`, and `checked` (AAL1: a password and an emailed or texted code), for
/// flows that add a code to a password, which never reach AAL2.
pub fn test_levels() -> Vec<idp_core::assurance::LevelSpec> {
    let mut levels = idp_core::assurance::Levels::builtin_specs();
    levels.push(idp_core::assurance::LevelSpec {
        value: "checked".into(),
        label: "A password and an emailed or texted code".into(),
        aal: 1,
        phishing_resistant: false,
        restricted_authenticators: false,
    });
    levels
}

/// What a test server runs with besides the backend.
#[derive(Default)]
pub struct AppOptions {
    /// Registered in addition to [`test_clients`].
    pub clients: Vec<Client>,
    /// Issuer `http://localhost:<port>` instead of `http://127.0.0.1:<port>`
    /// (WebAuthn needs a host name as its relying-party id).
    pub localhost: bool,
    /// Deliver emails and SMS as configured (`[mail]`, `[sms]`) instead of
    /// into [`TestApp::outbox`].
    pub configured_delivery: bool,
    /// Replaces the configured company registry (outage tests).
    pub registry: Option<Arc<dyn idp_core::company::CompanyRegistry>>,
    /// The webhook endpoints (instead of client files' `[[webhooks]]`).
    pub webhooks: Vec<idp_core::webhooks::WebhookEndpoint>,
    /// Serve on this listener (bound beforehand, when another server must
    /// know the address first) instead of a fresh ephemeral port.
    pub listener: Option<tokio::net::TcpListener>,
    /// The themes folder (`themes_dir`); none: the embedded default theme only.
    pub themes_dir: Option<std::path::PathBuf>,
    /// The issuer, instead of the server's own URL: nodes of one deployment
    /// (behind one load balancer) share it.
    pub issuer: Option<String>,
}

/// The repository's `themes/` folder (the example clients' themes).
pub fn repo_themes_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../themes")
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, AppOptions::default()).await
}

pub async fn spawn_app_with(backend: Backend, options: AppOptions) -> TestApp {
    spawn_app_adjusted(backend, options, |_| {}).await
}

/// Like [`spawn_app_with`], with the server settings adjusted before it
/// starts (throttle limits, code lifetimes, ...).
pub async fn spawn_app_adjusted(
    backend: Backend,
    options: AppOptions,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_inner(backend, options, adjust, None).await
}

async fn spawn_app_inner(
    backend: Backend,
    options: AppOptions,
    adjust: impl FnOnce(&mut Settings),
    shared: Option<&SharedDatabase>,
) -> TestApp {
    let data =
        TempDir(std::env::temp_dir().join(format!("idp-test-{}", uuid::Uuid::new_v4().simple())));
    let listener = match options.listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    };
    let addr = listener.local_addr().unwrap();
    let base = if options.localhost {
        format!("http://localhost:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    let issuer = options.issuer.clone().unwrap_or_else(|| base.clone());
    let redis =
        || std::env::var("IDP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let (database_url, redis_url, pg) = match (backend, shared) {
        (Backend::Sqlite, Some(db)) => (db.url.clone(), None, None),
        (Backend::Postgres, Some(db)) => (db.url.clone(), Some(redis()), None),
        (Backend::Sqlite, None) => ("sqlite::memory:".to_owned(), None, None),
        (Backend::Postgres, None) => {
            let db = idp_storage::testing::fresh_postgres().await;
            (db.url().to_owned(), Some(redis()), Some(db))
        }
    };
    let mut settings = Settings {
        issuer: Some(issuer.clone()),
        listen: addr,
        data_dir: data.0.clone(),
        database_url: Some(database_url.clone()),
        redis_url: redis_url.clone(),
        redis_key_prefix: format!("idp-test:{}:", uuid::Uuid::new_v4().simple()),
        key_encryption_key: Some(
            shared.map_or_else(|| KeyEncryptionKey::generate().encode(), |d| d.kek.clone()),
        ),
        // Cheaper hashing keeps the suite fast; production parameters are unit-tested in the core.
        password: Argon2Settings {
            memory_kib: 4096,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 0,
        },
        assurance_levels: test_levels(),
        ..Settings::default()
    };
    adjust(&mut settings);
    let levels = idp_core::assurance::Levels::from_specs(&settings.assurance_levels)
        .expect("valid assurance levels");
    let cfg = LoadedConfig {
        settings,
        source: None,
        issuer: issuer.clone(),
        database_url,
        clients_dir: None,
        themes_dir: options.themes_dir,
        levels,
    };
    let clock = SettableClock::starting_now();
    let outbox = Arc::new(idp_core::notify::MemoryOutbox::default());
    let overrides = Overrides {
        clock: Arc::new(clock.clone()),
        extra_clients: test_clients().into_iter().chain(options.clients).collect(),
        notifier: if options.configured_delivery {
            None
        } else {
            Some(outbox.clone())
        },
        registry: options.registry,
        webhooks: Some(options.webhooks),
    };
    let state = app::build_state(&cfg, ClientRegistry::default(), overrides)
        .await
        .unwrap_or_else(|e| panic!("the {backend:?} test server could not start: {e:#}"));
    let alice = Email::parse("Alice@Example.com").unwrap();
    let existing = match shared {
        Some(_) => state
            .provider
            .ports
            .users
            .find_by_email(&alice)
            .await
            .unwrap(),
        None => None,
    };
    let user = match existing {
        Some(u) => u,
        None => state
            .provider
            .accounts
            .create_user(alice, Some("Alice Martin".into()), &Secret::new(PASSWORD))
            .await
            .expect("create user"),
    };
    let running = app::serve(listener, state.clone()).expect("serve");
    TestApp {
        issuer,
        base,
        state,
        clock,
        backend,
        user,
        outbox,
        running,
        pg,
        _data: data,
    }
}

/// A browser: keeps cookies, does not follow redirects by itself.
pub struct Browser {
    pub http: reqwest::Client,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self::with_language("en")
    }

    pub fn with_language(lang: &str) -> Self {
        Self::build(lang, None)
    }

    /// An English browser with a recognisable user agent (shown in the
    /// account pages and recorded in the audit trail).
    pub fn with_agent(agent: &str) -> Self {
        Self::build("en", Some(agent))
    }

    fn build(lang: &str, agent: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT_LANGUAGE, lang.parse().unwrap());
        let mut http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .default_headers(headers);
        if let Some(agent) = agent {
            http = http.user_agent(agent);
        }
        Self {
            http: http.build().unwrap(),
        }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.expect("GET")
    }

    /// Follows 303s on the provider until a redirect leaves it (to a client)
    /// or a page is shown. Returns (final response, URL it came from).
    pub async fn follow(&self, app: &TestApp, url: &str) -> (reqwest::Response, String) {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let res = self.get(&url).await;
            if res.status().is_redirection() {
                let loc = location(&res);
                let next = if loc.starts_with('/') {
                    app.url(&loc)
                } else {
                    loc
                };
                if !next.starts_with(&app.issuer) {
                    return (res, url);
                }
                url = next;
            } else {
                return (res, url);
            }
        }
        panic!("redirect loop from {url}");
    }

    /// Fills and posts the page's form like a browser: hidden fields kept,
    /// `fields` set by name. Returns the response to the POST.
    pub async fn submit(
        &self,
        app: &TestApp,
        html: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let form = Form::parse(html).expect("a form on the page");
        self.submit_form(app, &form, fields).await
    }

    /// Fills and posts `form` (one of the page's forms, see [`Form::all`]).
    pub async fn submit_form(
        &self,
        app: &TestApp,
        form: &Form,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut values = form.fields.clone();
        for (k, v) in fields {
            assert!(
                values.iter().any(|(n, _)| n == k),
                "the form has no field {k}: {:?}",
                form.fields
            );
            for (n, val) in values.iter_mut() {
                if n == k {
                    *val = (*v).to_owned();
                }
            }
        }
        let action = if form.action.starts_with('/') {
            app.url(&form.action)
        } else {
            form.action.clone()
        };
        self.http
            .post(action)
            .header("origin", &app.issuer)
            .form(&values)
            .send()
            .await
            .expect("POST")
    }

    /// Posts the page's first form as its button `name=value` does (the
    /// other fields as they are).
    pub async fn press(
        &self,
        app: &TestApp,
        html: &str,
        name: &str,
        value: &str,
    ) -> reqwest::Response {
        let mut form = Form::parse(html).expect("a form on the page");
        form.fields.push((name.to_owned(), value.to_owned()));
        self.submit_form(app, &form, &[]).await
    }

    /// The whole interactive login from an authorization URL; returns the
    /// redirect to the client (with code or error).
    pub async fn login(
        &self,
        app: &TestApp,
        authorize_url: &str,
        identifier: &str,
        password: &str,
    ) -> String {
        let (res, _) = self.follow(app, authorize_url).await;
        assert_eq!(res.status(), 200, "expected the identifier page");
        let html = res.text().await.unwrap();
        assert!(
            html.contains("autocomplete=\"username\""),
            "identifier field carries autocomplete=username"
        );
        let res = self.submit(app, &html, &[("identifier", identifier)]).await;
        assert_eq!(res.status(), 303);
        let (res, _) = self.follow(app, &app.url(&location(&res))).await;
        let html = res.text().await.unwrap();
        assert!(
            html.contains("autocomplete=\"current-password\""),
            "password field carries autocomplete=current-password"
        );
        let res = self.submit(app, &html, &[("password", password)]).await;
        assert_eq!(res.status(), 303, "password accepted");
        location(&res)
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location in a {} response", res.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A query parameter of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first POST form of a page: its action and its input fields.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub fields: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(
        tag[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'"),
    )
}

impl Form {
    /// The first POST form of the page.
    pub fn parse(html: &str) -> Option<Form> {
        Self::all(html).into_iter().next()
    }

    /// The first POST form whose action contains `action`.
    pub fn with_action(html: &str, action: &str) -> Option<Form> {
        Self::all(html)
            .into_iter()
            .find(|f| f.action.contains(action))
    }

    /// Every POST form of the page, in order.
    pub fn all(html: &str) -> Vec<Form> {
        let mut forms = Vec::new();
        let mut rest = html;
        while let Some(f) = Self::next_form(&mut rest) {
            forms.extend(f);
        }
        forms
    }

    /// The next form of `rest` (`Some(None)` for a non-POST or malformed
    /// one), advancing `rest` past it.
    fn next_form(rest: &mut &str) -> Option<Option<Form>> {
        let i = rest.find("<form")?;
        let tail = &rest[i..];
        let end = tail.find("</form>")?;
        *rest = &tail[end..];
        let body = &tail[..end];
        let open = &body[..body.find('>')?];
        if !attr(open, "method").is_some_and(|m| m.eq_ignore_ascii_case("post")) {
            return Some(None);
        }
        let mut fields = Vec::new();
        let mut b = body;
        while let Some(j) = b.find("<input") {
            let t = &b[j..];
            let Some(close) = t.find('>') else { break };
            let tag = &t[..close];
            if let Some(n) = attr(tag, "name") {
                fields.push((n, attr(tag, "value").unwrap_or_default()));
            }
            b = &t[close..];
        }
        Some(attr(open, "action").map(|action| Form { action, fields }))
    }
}

/// A PKCE pair (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    use base64::Engine;
    use sha2::Digest;
    let verifier = idp_core::random::token();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// An authorization URL for a test client.
pub fn authorize_url(
    app: &TestApp,
    client_id: &str,
    challenge: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let mut u = url::Url::parse(&app.url("/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("scope", "openid email profile")
            .append_pair("state", "st-123")
            .append_pair("nonce", "n-456");
        if let Some(c) = challenge {
            q.append_pair("code_challenge", c)
                .append_pair("code_challenge_method", "S256");
        }
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.into()
}

/// `/introspect` of `token`, authenticated as the test client `conf`;
/// asserts a 200 and returns the JSON answer.
pub async fn introspect(app: &TestApp, token: &str) -> serde_json::Value {
    introspect_as(app, "conf", token).await
}

/// Introspection of `token` as `client` (authenticated with the test
/// secret).
pub async fn introspect_as(app: &TestApp, client: &str, token: &str) -> serde_json::Value {
    let res = reqwest::Client::new()
        .post(app.url("/introspect"))
        .basic_auth(client, Some(SECRET))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "introspection answers");
    res.json().await.unwrap()
}

/// Token endpoint call with HTTP Basic for `client_id` and the test secret.
pub async fn token_request(
    app: &TestApp,
    client_id: &str,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .post(app.url("/token"))
        .basic_auth(client_id, Some(SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

/// Takes the active key of `alg` out of the published set (retired long
/// ago, as an operator would after a compromise) and reloads the keys, as
/// every node does each minute; returns its kid.
pub async fn unpublish_active_key(app: &TestApp, alg: idp_core::keys::SigningAlg) -> String {
    use idp_core::clock::Clock;
    let provider = &app.state.provider;
    let kid = provider.keys.current().active_kid(alg).unwrap().to_owned();
    let long_ago = app.clock.now() - time::Duration::days(30);
    provider
        .ports
        .signing_keys
        .retire(&kid, long_ago)
        .await
        .unwrap();
    provider.keys.reload().await.unwrap();
    kid
}

/// The code exchange as `client_id` (HTTP Basic) with the redirect URI
/// [`REDIRECT`] and, when given, the PKCE verifier: the status and body.
pub async fn code_exchange_request(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    token_request(app, client_id, &form).await
}

/// [`code_exchange_request`] that must succeed: asserts a 200 and returns
/// the token response.
pub async fn exchange_code(
    app: &TestApp,
    client_id: &str,
    code: &str,
    verifier: Option<&str>,
) -> serde_json::Value {
    let (status, t) = code_exchange_request(app, client_id, code, verifier).await;
    assert_eq!(status, 200, "{t}");
    t
}

/// Alice signs in at `client` in `browser` (code flow with PKCE; single
/// sign-on when the browser has a session that suffices): the token
/// response.
pub async fn alice_tokens(app: &TestApp, browser: &Browser, client: &str) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let to = browser
        .login(
            app,
            &authorize_url(app, client, Some(&challenge), &[]),
            "alice@example.com",
            PASSWORD,
        )
        .await;
    let code = query_param(&to, "code").unwrap_or_else(|| panic!("no code: {to}"));
    exchange_code(app, client, &code, Some(&verifier)).await
}

/// Userinfo by GET with a Bearer header; asserts a 200 and returns the claims.
pub async fn userinfo(app: &TestApp, access: &str) -> serde_json::Value {
    let res = reqwest::Client::new()
        .get(app.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Exchanges the code of a redirect to [`REDIRECT`] as `client` (HTTP
/// Basic, no PKCE); returns the ID token's claims (not verified here: the
/// signature has its own tests).
pub async fn id_token_claims(app: &TestApp, client: &str, redirect: &str) -> serde_json::Value {
    assert!(redirect.starts_with(REDIRECT), "{redirect}");
    let code = query_param(redirect, "code").expect("a code in the redirect");
    let (status, body) = token_request(
        app,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    jwt_claims(body["id_token"].as_str().expect("id_token"))
}

/// `n` fresh ES256 key pairs of a client (private JWK, public JWK), with key
/// ids `<kid_prefix>0`, `<kid_prefix>1`, ... when a prefix is given.
pub fn es256_key_pairs(
    n: usize,
    kid_prefix: Option<&str>,
) -> Vec<(josekit::jwk::Jwk, josekit::jwk::Jwk)> {
    (0..n)
        .map(|i| {
            let pair = josekit::jws::ES256.generate_key_pair().unwrap();
            let mut private = pair.to_jwk_private_key();
            let mut public = pair.to_jwk_public_key();
            if let Some(p) = kid_prefix {
                private.set_key_id(format!("{p}{i}"));
                public.set_key_id(format!("{p}{i}"));
            }
            (private, public)
        })
        .collect()
}

/// The claims of a DPoP proof (RFC 9449 §4.2): a fresh `jti`, `htm`,
/// `htu`, `iat`, and `ath` of `token` and the server's `nonce` when given.
pub fn dpop_proof_claims(
    iat: u64,
    htm: &str,
    htu: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> josekit::jwt::JwtPayload {
    use base64::Engine;
    use sha2::Digest;
    let mut p = josekit::jwt::JwtPayload::new();
    p.set_jwt_id(uuid::Uuid::new_v4().to_string());
    let mut set = |k: &str, v: serde_json::Value| p.set_claim(k, Some(v)).unwrap();
    set("htm", htm.into());
    set("htu", htu.into());
    set("iat", iat.into());
    if let Some(t) = token {
        let ath = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(t));
        set("ath", ath.into());
    }
    if let Some(n) = nonce {
        set("nonce", n.into());
    }
    p
}

/// The discovery document (asserts it is JSON).
pub async fn discovery(app: &TestApp) -> serde_json::Value {
    reqwest::get(app.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .expect("discovery is JSON")
}

/// The claims of a JWT (its payload, not verified).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims")
}

/// Runs each test body (an `async fn(&TestApp)` at the root of the test
/// file) on both backends, each as its own #[tokio::test], on a server
/// started with `$options` (`AppOptions`) and settings adjusted by `$adjust`
/// (`FnOnce(&mut Settings)`). With `group:` the tests sit in a module of
/// that name, so one file can run groups with different settings.
#[macro_export]
macro_rules! matrix_with {
    ($group:ident: $options:expr, $adjust:expr; $($name:ident),* $(,)?) => {
        mod $group {
            $crate::matrix_with!($options, $adjust; $($name),*);
        }
    };
    ($options:expr, $adjust:expr; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::support::spawn_app_adjusted(
                        $crate::support::Backend::Sqlite,
                        $options,
                        $adjust,
                    )
                    .await;
                    $crate::$name(&app).await;
                    app.cleanup().await;
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::support::spawn_app_adjusted(
                        $crate::support::Backend::Postgres,
                        $options,
                        $adjust,
                    )
                    .await;
                    $crate::$name(&app).await;
                    app.cleanup().await;
                }
            )*
        }
    };
}

/// Runs each test that starts its own server (an `async fn(Backend)` at the
/// root of the test file) on both backends, each as its own #[tokio::test]:
/// `name::sqlite` and `name::postgres_redis`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::$name($crate::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    $crate::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// Runs each test body on both backends with the default test server.
#[macro_export]
macro_rules! matrix {
    ($($name:ident),* $(,)?) => {
        $crate::matrix_with!($crate::support::AppOptions::default(), |_| {}; $($name),*);
    };
}

// ------------------------------------------------- accounts and organizations

/// Mail settings for plain SMTP to a local test server on `port`, sending
/// as `from` (`"Name <address>"`).
pub fn local_smtp(from: &str, port: u16) -> idp::config::MailSettings {
    idp::config::MailSettings {
        transport: idp::config::MailTransport::Smtp,
        from: Some(from.into()),
        smtp_host: Some("127.0.0.1".into()),
        smtp_port: Some(port),
        smtp_tls: idp::config::SmtpTlsMode::None,
        ..idp::config::MailSettings::default()
    }
}

/// Like [`spawn_app_adjusted`], with delivery configured: notices go by
/// plain SMTP to a local test server on `port`, sent as `from`.
pub async fn spawn_app_with_smtp(
    backend: Backend,
    options: AppOptions,
    from: &str,
    port: u16,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let options = AppOptions {
        configured_delivery: true,
        ..options
    };
    spawn_app_adjusted(backend, options, |s| {
        adjust(s);
        s.mail = local_smtp(from, port);
    })
    .await
}

/// Cheap proof-of-work challenges keep the suites fast (the browser's work
/// is the same kind).
pub fn cheap_challenges(s: &mut Settings) {
    s.accounts.challenge_max_number = 1000;
}

/// Polls `probe` until it gives a value (background deliveries), for at
/// most 10 s.
pub async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let poll = async {
        loop {
            if let Some(v) = probe() {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The messages sent to `email` so far (in the app's outbox).
pub fn messages_to(app: &TestApp, email: &str) -> Vec<idp_core::notify::Message> {
    let to = idp_core::notify::Recipient::Email(email.to_owned());
    app.outbox
        .messages()
        .into_iter()
        .filter(|(r, _)| *r == to)
        .map(|(_, n)| n.message)
        .collect()
}

/// The key an authenticator-app enrollment page shows (`#totp-key`), if
/// the page is one.
pub fn totp_key(html: &str) -> Option<String> {
    let rest = html.split("id=\"totp-key\">").nth(1)?;
    Some(rest.split('<').next()?.trim().to_owned())
}

/// The proof-of-work challenge of a page's form (its `data-challenge`).
pub fn challenge_of(html: &str) -> idp_core::challenge::ChallengeSpec {
    let start = html
        .find("data-challenge=\"")
        .expect("a challenge on the form")
        + 16;
    let end = start + html[start..].find('"').unwrap();
    let json = html[start..end]
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&json).expect("challenge JSON")
}

/// Solves the page's challenge as altcha.js does.
pub fn challenge_solution(html: &str) -> String {
    idp_core::challenge::solve(&challenge_of(html)).expect("solvable")
}

/// Fills the page's form with `fields` (hidden fields kept), solves its
/// proof-of-work challenge as altcha.js does, and posts it.
pub async fn submit_with_challenge(
    app: &TestApp,
    browser: &Browser,
    html: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let solution = challenge_solution(html);
    let mut all: Vec<(&str, &str)> = fields.to_vec();
    all.push(("altcha", &solution));
    browser.submit(app, html, &all).await
}

/// Creates an active account for `email` (with `name`) whose password is
/// [`PASSWORD`].
pub async fn user_with_password(app: &TestApp, email: &str, name: Option<&str>) -> User {
    app.state
        .provider
        .accounts
        .create_user(
            Email::parse(email).unwrap(),
            name.map(str::to_owned),
            &Secret::new(PASSWORD),
        )
        .await
        .expect("user created")
}

/// Identifier and password for `email` at `client` in `browser`, when a
/// second step follows: that step's page.
pub async fn second_step_page(
    app: &TestApp,
    browser: &Browser,
    client: &str,
    email: &str,
    password: &str,
) -> String {
    let to = browser
        .login(app, &authorize_url(app, client, None, &[]), email, password)
        .await;
    assert!(to.starts_with("/login/"), "a second step follows: {to}");
    let (res, _) = browser.follow(app, &app.url(&to)).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The test clock's time, in Unix seconds.
pub fn clock_secs(app: &TestApp) -> u64 {
    use idp_core::clock::Clock;
    app.clock.now().unix_timestamp() as u64
}

/// An authenticator app set up with `key` (base32, as a page shows it,
/// spaces allowed).
pub fn authenticator_app(key: &str) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(key.replace(' ', "")).expect("base32 key"))
        .build()
        .expect("a valid TOTP")
}

/// The code the authenticator app with `key` shows at `t` (Unix seconds).
pub fn totp_code(key: &str, t: u64) -> String {
    authenticator_app(key).generate(t).to_string()
}

/// GETs the page at `path` for `client` (`?client_id=`), asserting it is
/// shown.
pub async fn client_page(app: &TestApp, browser: &Browser, path: &str, client: &str) -> String {
    let res = browser
        .get(&app.url(&format!("{path}?client_id={client}")))
        .await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

// ------------------------------------------------------------------ restarts

/// A database (and key-encryption key) that servers started one after the
/// other share, as a provider restarted on the same database: a SQLite file,
/// or a fresh PostgreSQL database kept until [`SharedDatabase::cleanup`].
pub struct SharedDatabase {
    pub url: String,
    kek: String,
    pg: Option<idp_storage::testing::TestDatabase>,
    _dir: TempDir,
}

impl SharedDatabase {
    pub async fn new(backend: Backend) -> Self {
        let dir =
            TempDir(std::env::temp_dir().join(format!("idp-db-{}", uuid::Uuid::new_v4().simple())));
        std::fs::create_dir_all(&dir.0).expect("create the database folder");
        let (url, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}/idp.db?mode=rwc", dir.0.display()),
                None,
            ),
            Backend::Postgres => {
                let db = idp_storage::testing::fresh_postgres().await;
                (db.url().to_owned(), Some(db))
            }
        };
        Self {
            url,
            kek: KeyEncryptionKey::generate().encode(),
            pg,
            _dir: dir,
        }
    }

    pub async fn cleanup(self) {
        if let Some(db) = self.pg {
            db.drop_database().await;
        }
    }
}

/// Like [`spawn_app_adjusted`], on `db`: what an earlier server on it wrote
/// (the user Alice, signing keys, webhook deliveries) is there.
pub async fn spawn_app_on(
    db: &SharedDatabase,
    backend: Backend,
    options: AppOptions,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_inner(backend, options, adjust, Some(db)).await
}

impl TestApp {
    /// Stops the server and its background tasks, as a process exit would
    /// (for servers on a [`SharedDatabase`], which outlives them; others end
    /// with [`TestApp::cleanup`]).
    pub async fn stop(self) {
        self.running.stop();
        let _ = self.running.handle.await;
        for w in self.running.workers {
            let _ = w.await;
        }
    }
}

// ---------------------------------------------------------------- federation

/// An `[[upstreams]]` entry named `name` for `issuer`, registered there as
/// `client_id` with `secret` (written to a file of the returned folder, as
/// `client_secret_file`), offered to `clients`, with just-in-time accounts.
pub fn upstream_entry(
    name: &str,
    display_name: &str,
    issuer: &str,
    client_id: &str,
    secret: &str,
    clients: &[&str],
) -> (idp::config::UpstreamFile, TempDir) {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "idp-upstream-secret-{}",
        uuid::Uuid::new_v4().simple()
    )));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join(format!("{name}.secret"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let entry = idp::config::UpstreamFile {
        name: name.into(),
        display_name: display_name.into(),
        issuer: issuer.into(),
        client_id: client_id.into(),
        client_secret_env: None,
        client_secret_file: Some(file),
        public_client: false,
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        clients: clients.iter().map(|c| (*c).to_owned()).collect(),
        create_accounts: true,
        trust_email: false,
        claims: idp::config::UpstreamClaimsFile::default(),
    };
    (entry, dir)
}

/// The `[[upstreams]]` of the repository's `config/idp.toml` (the example
/// clients' flows need them), secret files made absolute.
pub fn repo_upstreams() -> Vec<idp::config::UpstreamFile> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        upstreams: Vec<idp::config::UpstreamFile>,
    }
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let doc: Doc = toml::from_str(&std::fs::read_to_string(config.join("idp.toml")).unwrap())
        .expect("config/idp.toml");
    doc.upstreams
        .into_iter()
        .map(|mut u| {
            u.client_secret_file = u.client_secret_file.map(|f| config.join(f));
            u
        })
        .collect()
}

/// How many accounts the provider has.
pub async fn account_count(app: &TestApp) -> usize {
    app.state
        .provider
        .ports
        .users
        .list(1000, 0)
        .await
        .unwrap()
        .len()
}

/// The code of the last sign-in code sent to `email`.
pub fn last_login_code(app: &TestApp, email: &str) -> String {
    match messages_to(app, email).last() {
        Some(idp_core::notify::Message::LoginCode { code, .. }) => code.clone(),
        other => panic!("a sign-in code to {email}, not {other:?}"),
    }
}
