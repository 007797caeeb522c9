//! `idp demo`: the provider plus a small relying party built on the
//! `openidconnect` crate, and a demo user, so a newcomer sees a full login.
//! Development only: nothing here is reachable from `idp serve`.
//!
//! The relying party acts for every configured client whose redirect URI is
//! on it. Most authenticate with a secret (`client_secret_basic`, a fresh
//! secret replacing the registered one in memory). A `private_key_jwt` client
//! is run as a FAPI 2.0-style client instead: a fresh ES256 key replaces its
//! registered keys in memory, its authorization requests are pushed (PAR,
//! RFC 9126) with PKCE, it authenticates with client assertions (RFC 7523),
//! and, when its tokens are DPoP-bound, it proves a DPoP key at the token
//! endpoint (RFC 9449). The `openidconnect` crate has neither PAR nor DPoP:
//! those requests are plain HTTP calls, and the crate still verifies the ID
//! token.
//!
//! Each portal keeps its own signed-in session (a cookie per portal, the
//! verified claims in memory), and implements the receiving side of
//! OpenID Connect Back-Channel Logout 1.0 at `/{portal}/backchannel-logout`:
//! a logout token verified against the provider's JWKS and checked
//! (`idp_core::oidc::logout_channels::check_logout_token`) drops the
//! portal's sessions of its `sid` (or of its `sub`), so a sign-out at one
//! portal signs the others out on their next page load.

use crate::app::{self, Overrides};
use crate::config::{self, LoadedConfig};
use crate::theme::{Locale, Themes};
use anyhow::{Context, anyhow};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idp_core::assurance::Levels;
use idp_core::client::{
    AccessTokenFormat, Client, ClientKeySource, ClientSecretHash, Lifetimes,
    TokenEndpointAuthMethod,
};
use idp_core::clock::SharedClock;
use idp_core::domain::{ClientId, Email};
use idp_core::keys::SigningAlg;
use idp_core::oidc::client_jwt::ClientKeys;
use idp_core::secret::Secret;
use josekit::jwk::Jwk;
use josekit::jws::{ES256, JwsHeader, JwsSigner};
use josekit::jwt::JwtPayload;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreTokenResponse,
};
use openidconnect::{
    AuthorizationCode, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub const DEMO_EMAIL: &str = "demo@example.com";
const DEMO_CLIENT: &str = "demo-portal";

type DemoClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
}

/// One demo portal: a registered client the demo relying party acts for.
struct Portal {
    name: String,
    client: DemoClient,
    /// Set for a FAPI 2.0-style portal (a `private_key_jwt` client).
    fapi: Option<Fapi>,
}

/// How the demo relying party authenticates as a portal's client.
enum Credentials {
    /// `client_secret_basic`, with a fresh secret that replaced the
    /// registered one in memory.
    Secret(String),
    /// `private_key_jwt`, with fresh keys whose public half replaced the
    /// registered keys in memory (and PAR, and DPoP when its tokens are bound).
    PrivateKey(Arc<PortalKeys>),
}

/// A FAPI portal's keys, made at each start and kept only in memory.
struct PortalKeys {
    /// Signs its client assertions.
    assertion: Box<dyn JwsSigner>,
    assertion_kid: String,
    /// The JWK Set the provider verifies them with: the public half.
    jwks: String,
    /// Signs its DPoP proofs, when its access tokens are DPoP-bound.
    dpop: Option<DpopKey>,
}

/// A DPoP key (RFC 9449): distinct from the client authentication key.
struct DpopKey {
    signer: Box<dyn JwsSigner>,
    /// The public key, sent in each proof's header.
    public: Jwk,
    /// Its RFC 7638 thumbprint: the `cnf.jkt` of the tokens bound to it.
    jkt: String,
}

impl PortalKeys {
    fn generate(client_id: &str, dpop_bound: bool) -> anyhow::Result<Self> {
        let kid = format!("{client_id}-demo-{}", &idp_core::random::token()[..8]);
        let (assertion, mut public) = es256_key_pair()?;
        public.set_key_id(&kid);
        public.set_key_use("sig");
        public.set_algorithm("ES256");
        let jwks =
            serde_json::json!({ "keys": [serde_json::Value::Object(public.as_ref().clone())] })
                .to_string();
        let dpop = if dpop_bound {
            let (signer, public) = es256_key_pair()?;
            let jkt = idp_core::oidc::dpop::jwk_thumbprint(&public)
                .map_err(|e| anyhow!("the demo's DPoP key: {e}"))?;
            Some(DpopKey {
                signer,
                public,
                jkt,
            })
        } else {
            None
        };
        Ok(Self {
            assertion,
            assertion_kid: kid,
            jwks,
            dpop,
        })
    }
}

/// A fresh ES256 key pair: its signer and its public JWK.
fn es256_key_pair() -> anyhow::Result<(Box<dyn JwsSigner>, Jwk)> {
    let pair = ES256.generate_key_pair()?;
    let signer = ES256.signer_from_jwk(&pair.to_jwk_private_key())?;
    Ok((Box::new(signer), pair.to_jwk_public_key()))
}

/// What a FAPI portal needs beyond its `openidconnect` client.
struct Fapi {
    keys: Arc<PortalKeys>,
    /// From discovery: `pushed_authorization_request_endpoint`,
    /// `authorization_endpoint`, `token_endpoint`.
    par_endpoint: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Clone)]
struct Rp {
    portals: Arc<BTreeMap<String, Portal>>,
    http: openidconnect::reqwest::Client,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    themes: Arc<Themes>,
    issuer: String,
    end_session: String,
    base: String,
    /// The provider's clock (`iat` and `exp` of assertions and proofs).
    clock: SharedClock,
    /// The portals' signed-in sessions, by cookie value.
    sessions: Arc<Mutex<HashMap<String, LocalSession>>>,
    /// Where the provider publishes its keys (logout tokens are checked
    /// against them).
    jwks_uri: String,
}

/// A browser signed in at a portal (the portal's own session).
#[derive(Clone)]
struct LocalSession {
    portal: String,
    sub: String,
    /// The provider's session (`sid` of the ID token).
    sid: Option<String>,
    id_token: String,
    /// The page shown while signed in: verified claims and other rows.
    rows: Vec<(String, String)>,
    id_token_claims: String,
}

/// The cookie of a portal's session (its path is the portal's).
fn session_cookie(portal: &str) -> String {
    format!("demo_{}", portal.replace('-', "_"))
}

/// The built-in demo portal's registration (identifier then password).
fn demo_client(rp_base: &str, secret: &str, levels: &Levels) -> Client {
    Client {
        id: ClientId(DEMO_CLIENT.into()),
        name: "Demo portal".into(),
        auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
        secret_hash: Some(ClientSecretHash::of(secret)),
        redirect_uris: vec![format!("{rp_base}/{DEMO_CLIENT}/callback")],
        post_logout_redirect_uris: vec![format!("{rp_base}/{DEMO_CLIENT}/")],
        allow_authorization_code: true,
        allow_refresh_token: true,
        allow_client_credentials: false,
        scopes: ["openid", "profile", "email"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        theme: "default".into(),
        access_token_format: AccessTokenFormat::Jwt,
        id_token_alg: SigningAlg::ES256,
        access_token_alg: SigningAlg::ES256,
        require_pkce: true,
        lifetimes: Lifetimes::default(),
        login: idp_core::policy::LoginPolicy::password_only(&idp_core::steps::registry(), levels)
            .expect("identifier then password is a valid flow"),
        account: Default::default(),
        protocol: idp_core::client::ProtocolSettings {
            logout: idp_core::oidc::logout_channels::LogoutChannels {
                backchannel_uri: Some(format!("{rp_base}/{DEMO_CLIENT}/backchannel-logout")),
                backchannel_session_required: true,
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

pub async fn run(cfg: LoadedConfig, rp_port: u16) -> anyhow::Result<()> {
    let rp_addr = std::net::SocketAddr::new(cfg.settings.listen.ip(), rp_port);
    let rp_base = format!("http://{rp_addr}");
    let mut clients = config::load_clients(cfg.clients_dir.as_deref(), &cfg.levels)?;
    // Configured clients whose callback is on the demo relying party become
    // demo portals; the demo acts for them with a fresh secret, or for a
    // private_key_jwt client fresh keys, held in memory (the configuration
    // is not touched).
    let mut credentials: BTreeMap<String, Credentials> = BTreeMap::new();
    let mut demo_portals = Vec::new();
    for c in clients.iter() {
        let callback = format!("{rp_base}/{}/callback", c.id);
        if c.redirect_uris.contains(&callback) {
            demo_portals.push(c.as_ref().clone());
        }
    }
    for mut c in demo_portals {
        if c.auth_method == TokenEndpointAuthMethod::PrivateKeyJwt {
            let keys = PortalKeys::generate(&c.id.0, c.protocol.dpop_bound)?;
            let registered = ClientKeys::from_jwks(&keys.jwks)
                .map_err(|e| anyhow!("the demo's key for {}: {e}", c.id))?;
            c.protocol.keys = Some(ClientKeySource::Inline(Arc::new(registered)));
            credentials.insert(c.id.0.clone(), Credentials::PrivateKey(Arc::new(keys)));
            clients.insert(c);
            continue;
        }
        let secret = idp_core::random::token();
        c.secret_hash = Some(ClientSecretHash::of(&secret));
        c.auth_method = TokenEndpointAuthMethod::ClientSecretBasic;
        credentials.insert(c.id.0.clone(), Credentials::Secret(secret));
        clients.insert(c);
    }
    let demo_secret = idp_core::random::token();
    credentials.insert(DEMO_CLIENT.into(), Credentials::Secret(demo_secret.clone()));
    let overrides = Overrides {
        extra_clients: vec![demo_client(&rp_base, &demo_secret, &cfg.levels)],
        ..Overrides::default()
    };
    let state = app::build_state(&cfg, clients, overrides).await?;
    let (user, password) = demo_account(&state, DEMO_EMAIL, "Demo User").await?;
    let device_instructions = device_sign_in_instructions(&state, &cfg.issuer).await?;
    let partner = start_partner_sso(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.settings.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", cfg.settings.listen))?;
    let themes = state.themes.clone();
    let clock = state.provider.clock.clone();
    let names: BTreeMap<String, String> = credentials
        .keys()
        .filter_map(|id| {
            state
                .provider
                .clients
                .get(id)
                .map(|c| (id.clone(), c.name.clone()))
        })
        .collect();
    let running = app::serve(listener, state)?;
    let rp_listener = tokio::net::TcpListener::bind(rp_addr)
        .await
        .with_context(|| format!("--rp-port: cannot bind {rp_addr}"))?;
    let rp = relying_party(&cfg.issuer, &rp_base, &credentials, &names, themes, clock).await?;
    let portal_list: Vec<String> = rp.portals.keys().cloned().collect();
    let rp_router = Router::new()
        .route("/", get(index))
        .route("/{portal}/", get(home))
        .route("/{portal}/login", get(login))
        .route("/{portal}/callback", get(callback))
        .route("/{portal}/logout", get(logout))
        .route("/{portal}/backchannel-logout", post(backchannel_logout))
        .route("/assets/{theme}/{*path}", get(asset))
        .with_state(rp);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(rp_listener, rp_router).await {
            tracing::error!(error = %e, "demo relying party stopped");
        }
    });
    println!();
    println!("  Identity provider: {} (issuer)", cfg.issuer);
    println!("  Demo portals:      {rp_base}/");
    for p in &portal_list {
        println!("    {rp_base}/{p}/");
    }
    if let Some(p) = &partner {
        println!();
        println!(
            "  Upstream single sign-on: {} (\"Continue with {}\" on {})",
            p.issuer,
            p.display_name,
            p.clients.join(", ")
        );
        for (email, password, what) in &p.users {
            println!("    {email:<22} {password}   {what}");
        }
    }
    if let Some(text) = &device_instructions {
        println!();
        print!("{text}");
    }
    println!();
    println!("  Open {rp_base}/ and sign in with");
    println!("    email:               {DEMO_EMAIL}");
    println!("    customer identifier: {}", user.customer_id);
    println!("    password:            {password}");
    println!(
        "  Emailed codes are {}",
        crate::notifier::email_destination(&cfg)
    );
    println!();
    println!("  (the demo users' passwords are new at every start; Ctrl-C stops)");
    running.handle.await?;
    if let Some(p) = partner {
        p.running.stop();
    }
    Ok(())
}

/// How to try device sign-in (RFC 8628) with `curl`, for the first client
/// allowed the device grant (`cloud-cli` in the repository's
/// configuration): the two commands, and one device authorization started
/// now, with its QR code, for trying it right away. `None` when no client
/// may use the grant.
async fn device_sign_in_instructions(
    state: &app::AppState,
    issuer: &str,
) -> anyhow::Result<Option<String>> {
    use std::fmt::Write as _;
    let Some(client) = state
        .provider
        .clients
        .iter()
        .find(|c| c.protocol.allow_device_code && c.is_public())
    else {
        return Ok(None);
    };
    let scope = "openid profile offline_access";
    let started = state
        .provider
        .device_authorizations
        .request(
            client,
            &idp_core::oidc::authorize::RawParams::new([("scope".to_owned(), scope.to_owned())]),
        )
        .await
        .map_err(|e| anyhow!("the demo's device authorization: {e}"))?;
    let id = &client.id;
    let grant = idp_core::oidc::device::DEVICE_CODE_GRANT;
    let mut t = String::new();
    writeln!(
        t,
        "  Device sign-in for a command-line tool ({id}, RFC 8628), with curl:"
    )?;
    writeln!(
        t,
        "    curl -s -d client_id={id} -d 'scope={scope}' {issuer}/device_authorization"
    )?;
    writeln!(
        t,
        "    curl -s -d client_id={id} -d grant_type={grant} -d device_code=DEVICE_CODE {issuer}/token"
    )?;
    writeln!(
        t,
        "  One is started (valid {} minutes): open {} and type {},",
        started.expires_in / 60,
        started.verification_uri,
        started.user_code
    )?;
    writeln!(
        t,
        "  or scan this code ({}):",
        started.verification_uri_complete
    )?;
    if let Some(qr) = crate::qr::terminal(&started.verification_uri_complete) {
        for line in qr.lines() {
            writeln!(t, "    {line}")?;
        }
    }
    writeln!(
        t,
        "  then poll (every {} s) until the tokens come:",
        started.interval
    )?;
    writeln!(
        t,
        "    curl -s -d client_id={id} -d grant_type={grant} -d device_code={} {issuer}/token",
        started.device_code
    )?;
    Ok(Some(t))
}

/// Creates the account `email` with a fresh random password, or gives it a
/// new one; its email counts as verified (the demo's accounts are ours).
async fn demo_account(
    state: &app::AppState,
    email: &str,
    name: &str,
) -> anyhow::Result<(idp_core::domain::User, String)> {
    let password = idp_core::random::token()[..16].to_owned();
    let email = Email::parse(email).map_err(|e| anyhow!("{e}"))?;
    let p = &state.provider;
    let user = match p.ports.users.find_by_email(&email).await? {
        Some(u) => {
            p.accounts
                .set_password(u.id, &Secret::new(password.clone()))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            u
        }
        None => p
            .accounts
            .create_user(email, Some(name.into()), &Secret::new(password.clone()))
            .await
            .map_err(|e| anyhow!("{e}"))?,
    };
    p.ports.users.set_email(user.id, &user.email, true).await?;
    Ok((user, password))
}

/// The upstream the demo runs itself (config/idp.toml's `[[upstreams]]`
/// entry of this name, when its issuer is on loopback).
const PARTNER_SSO: &str = "partner-sso";

/// The demo's stand-in for a partner's single sign-on: a second instance of
/// this provider (SQLite in `<data_dir>/partner-sso`, in-process store) at
/// the configured upstream's issuer, with the provider registered as its
/// client and two accounts: one with the demo user's email (signing in
/// through it links the two once the demo account is proven) and one
/// nobody has here (a new account is created).
struct PartnerSso {
    running: app::Running,
    issuer: String,
    display_name: String,
    clients: Vec<String>,
    users: Vec<(String, String, &'static str)>,
}

async fn start_partner_sso(cfg: &LoadedConfig) -> anyhow::Result<Option<PartnerSso>> {
    let upstreams = config::parse_upstreams(cfg)?;
    let Some(up) = upstreams.iter().find(|u| u.name == PARTNER_SSO) else {
        return Ok(None);
    };
    let url = url::Url::parse(&up.issuer)?;
    let addr = match (url.scheme(), url.host(), url.port()) {
        ("http", Some(url::Host::Ipv4(ip)), Some(port)) if ip.is_loopback() => {
            std::net::SocketAddr::new(ip.into(), port)
        }
        // A real upstream: nothing to start.
        _ => return Ok(None),
    };
    let secret = up.client_secret.as_ref().ok_or_else(|| {
        anyhow!("upstreams {PARTNER_SSO}: the demo's partner needs a client secret")
    })?;
    let data_dir = cfg.settings.data_dir.join(PARTNER_SSO);
    let issuer = up.issuer.trim_end_matches('/').to_owned();
    let settings = config::Settings {
        issuer: Some(issuer.clone()),
        listen: addr,
        data_dir: data_dir.clone(),
        database_url: None,
        redis_url: None,
        key_encryption_key: None,
        themes_dir: None,
        upstreams: Vec::new(),
        password: cfg.settings.password,
        ..config::Settings::default()
    };
    let partner_cfg = LoadedConfig {
        database_url: format!("sqlite://{}/idp.db?mode=rwc", data_dir.display()),
        settings,
        source: None,
        issuer: issuer.clone(),
        clients_dir: None,
        themes_dir: None,
        levels: cfg.levels.clone(),
    };
    let registration = Client {
        id: ClientId(up.client_id.clone()),
        name: "Cloud platform".into(),
        auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
        secret_hash: Some(ClientSecretHash::of(secret.expose())),
        redirect_uris: vec![format!(
            "{}{}",
            cfg.issuer,
            idp_core::federation::callback_path(PARTNER_SSO)
        )],
        post_logout_redirect_uris: Vec::new(),
        allow_refresh_token: false,
        ..demo_client("http://127.0.0.1", "unused", &cfg.levels)
    };
    let overrides = Overrides {
        extra_clients: vec![registration],
        ..Overrides::default()
    };
    let state = app::build_state(&partner_cfg, Default::default(), overrides)
        .await
        .map_err(|e| anyhow!("the demo's {PARTNER_SSO}: {e:#}"))?;
    let mut users = Vec::new();
    for (email, name, what) in [
        (
            DEMO_EMAIL,
            "Demo User",
            "(same email as the demo user: linked once you sign in to it)",
        ),
        (
            "sam@partner.example",
            "Sam Partner",
            "(no account here yet: one is created)",
        ),
    ] {
        let (_, password) = demo_account(&state, email, name).await?;
        users.push((email.to_owned(), password, what));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("upstreams {PARTNER_SSO}: cannot bind {addr} (its issuer)"))?;
    Ok(Some(PartnerSso {
        running: app::serve(listener, state)?,
        issuer,
        display_name: up.display_name.clone(),
        clients: up.clients.clone(),
        users,
    }))
}

async fn relying_party(
    issuer: &str,
    base: &str,
    credentials: &BTreeMap<String, Credentials>,
    names: &BTreeMap<String, String>,
    themes: Arc<Themes>,
    clock: SharedClock,
) -> anyhow::Result<Rp> {
    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()?;
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.to_owned())?, &http)
        .await
        .map_err(|e| anyhow!("demo: discovery of {issuer} failed: {e}"))?;
    let mut portals = BTreeMap::new();
    let mut par_endpoint: Option<String> = None;
    for (id, creds) in credentials {
        let secret = match creds {
            Credentials::Secret(secret) => Some(ClientSecret::new(secret.clone())),
            Credentials::PrivateKey(_) => None,
        };
        let client = CoreClient::from_provider_metadata(
            meta.clone(),
            openidconnect::ClientId::new(id.clone()),
            secret,
        )
        .set_redirect_uri(RedirectUrl::new(format!("{base}/{id}/callback"))?);
        let fapi = match creds {
            Credentials::Secret(_) => None,
            Credentials::PrivateKey(keys) => {
                let par = match &par_endpoint {
                    Some(par) => par.clone(),
                    None => {
                        let par = pushed_authorization_endpoint(&http, issuer).await?;
                        par_endpoint = Some(par.clone());
                        par
                    }
                };
                Some(Fapi {
                    keys: keys.clone(),
                    par_endpoint: par,
                    authorization_endpoint: meta.authorization_endpoint().to_string(),
                    token_endpoint: meta
                        .token_endpoint()
                        .map(|t| t.to_string())
                        .ok_or_else(|| anyhow!("demo: {issuer} lists no token_endpoint"))?,
                })
            }
        };
        let name = names.get(id).cloned().unwrap_or_else(|| id.clone());
        portals.insert(id.clone(), Portal { name, client, fapi });
    }
    Ok(Rp {
        portals: Arc::new(portals),
        http,
        pending: Arc::new(Mutex::new(HashMap::new())),
        themes,
        issuer: issuer.to_owned(),
        end_session: format!("{issuer}/logout"),
        base: base.to_owned(),
        clock,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        jwks_uri: meta.jwks_uri().url().to_string(),
    })
}

/// The provider's PAR endpoint, read from its discovery document (the
/// `openidconnect` crate's metadata type does not know the field).
async fn pushed_authorization_endpoint(
    http: &openidconnect::reqwest::Client,
    issuer: &str,
) -> anyhow::Result<String> {
    let doc: serde_json::Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    doc.get("pushed_authorization_request_endpoint")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("demo: {issuer} lists no pushed_authorization_request_endpoint"))
}

fn render(rp: &Rp, ctx: minijinja::Value) -> Response {
    match rp
        .themes
        .render("default", "demo_home.html", Locale::En, ctx)
    {
        Ok(h) => Html(h).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn asset(
    State(rp): State<Rp>,
    axum::extract::Path((theme, path)): axum::extract::Path<(String, String)>,
) -> Response {
    match rp.themes.asset(&theme, &path) {
        Some((ctype, bytes)) => {
            ([(header::CONTENT_TYPE, ctype)], bytes.into_owned()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn index(State(rp): State<Rp>) -> Response {
    let portals: Vec<minijinja::Value> = rp
        .portals
        .iter()
        .map(|(id, p)| minijinja::context! { name => p.name.clone(), url => format!("/{id}/") })
        .collect();
    render(
        &rp,
        minijinja::context! {
            portals => portals,
            account_url => format!("{}/account", rp.issuer),
            provider_url => rp.issuer.clone(),
            demo_email => DEMO_EMAIL,
        },
    )
}

fn portal<'r>(rp: &'r Rp, id: &str) -> Option<&'r Portal> {
    rp.portals.get(id)
}

async fn home(State(rp): State<Rp>, Path(id): Path<String>, jar: CookieJar) -> Response {
    let Some(p) = portal(&rp, &id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(s) = local_session(&rp, &id, &jar) {
        return signed_in_page(&rp, &id, p, &s);
    }
    render(
        &rp,
        minijinja::context! {
            portal_name => p.name.clone(),
            login_url => format!("/{id}/login"),
            logout_url => format!("/{id}/logout"),
            provider_url => rp.issuer.clone(),
            demo_email => DEMO_EMAIL,
        },
    )
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    acr: Option<String>,
}

async fn login(
    State(rp): State<Rp>,
    Path(id): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(p) = portal(&rp, &id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(fapi) = &p.fapi {
        return match pushed_login(&rp, &id, fapi, q.acr).await {
            Ok(url) => Redirect::to(url.as_str()).into_response(),
            Err(e) => error_page(&rp, &id, p, format!("{e:#}")),
        };
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = p
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge);
    if let Some(acr) = q.acr {
        req = req.add_auth_context_value(openidconnect::AuthenticationContextClass::new(acr));
    }
    let (url, state, nonce) = req.url();
    remember(&rp, &state, Pending { verifier, nonce });
    Redirect::to(url.as_str()).into_response()
}

/// Keeps what the callback of the authorization request `state` needs.
fn remember(rp: &Rp, state: &CsrfToken, p: Pending) {
    let mut pending = rp.pending.lock().unwrap_or_else(|p| p.into_inner());
    if pending.len() > 1000 {
        pending.clear();
    }
    pending.insert(state.secret().clone(), p);
}

/// A FAPI portal's sign-in: the authorization request (PKCE S256, state,
/// nonce) pushed to the PAR endpoint with a client assertion; returns where
/// to send the browser (`/authorize` with `client_id` and `request_uri`).
async fn pushed_login(
    rp: &Rp,
    id: &str,
    fapi: &Fapi,
    acr: Option<String>,
) -> anyhow::Result<url::Url> {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (state, nonce) = (CsrfToken::new_random(), Nonce::new_random());
    let mut form = vec![
        ("response_type", "code".to_owned()),
        ("client_id", id.to_owned()),
        ("redirect_uri", format!("{}/{id}/callback", rp.base)),
        ("scope", "openid profile email".to_owned()),
        ("state", state.secret().clone()),
        ("nonce", nonce.secret().clone()),
        ("code_challenge", challenge.as_str().to_owned()),
        ("code_challenge_method", "S256".to_owned()),
        ("client_assertion_type", ASSERTION_TYPE.to_owned()),
        ("client_assertion", client_assertion(rp, id, &fapi.keys)?),
    ];
    if let Some(acr) = acr {
        form.push(("acr_values", acr));
    }
    let res = rp
        .http
        .post(&fapi.par_endpoint)
        .form(&form)
        .send()
        .await
        .context("the PAR request failed")?;
    let status = res.status();
    let body: serde_json::Value = res
        .json()
        .await
        .with_context(|| format!("the PAR endpoint answered {status}, not JSON"))?;
    if status.as_u16() != 201 {
        anyhow::bail!("the PAR endpoint answered {status}: {body}");
    }
    let request_uri = body
        .get("request_uri")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| anyhow!("no request_uri in the PAR answer: {body}"))?;
    remember(rp, &state, Pending { verifier, nonce });
    Ok(url::Url::parse_with_params(
        &fapi.authorization_endpoint,
        [("client_id", id), ("request_uri", request_uri)],
    )?)
}

/// A signed JWT with these claims and header `typ` (and `kid` or `jwk`).
fn sign_jwt(
    signer: &dyn JwsSigner,
    typ: &str,
    header_key: impl FnOnce(&mut JwsHeader),
    claims: serde_json::Value,
) -> anyhow::Result<String> {
    let mut header = JwsHeader::new();
    header.set_token_type(typ);
    header_key(&mut header);
    let serde_json::Value::Object(claims) = claims else {
        anyhow::bail!("JWT claims must be an object");
    };
    Ok(josekit::jwt::encode_with_signer(
        &JwtPayload::from_map(claims)?,
        &header,
        signer,
    )?)
}

/// A `private_key_jwt` client assertion (RFC 7523 §3): `iss` = `sub` = the
/// client, `aud` the issuer identifier, a fresh `jti`, valid one minute.
fn client_assertion(rp: &Rp, client_id: &str, keys: &PortalKeys) -> anyhow::Result<String> {
    let now = rp.clock.now().unix_timestamp();
    sign_jwt(
        keys.assertion.as_ref(),
        "JWT",
        |h| h.set_key_id(&keys.assertion_kid),
        serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": rp.issuer,
            "jti": idp_core::random::token(),
            "iat": now,
            "exp": now + 60,
        }),
    )
}

/// A DPoP proof (RFC 9449 §4.2) of `key` for a request `htm` to `htu`.
fn dpop_proof(rp: &Rp, key: &DpopKey, htm: &str, htu: &str) -> anyhow::Result<String> {
    sign_jwt(
        key.signer.as_ref(),
        "dpop+jwt",
        |h| h.set_jwk(key.public.clone()),
        serde_json::json!({
            "jti": idp_core::random::token(),
            "htm": htm,
            "htu": htu,
            "iat": rp.clock.now().unix_timestamp(),
        }),
    )
}

/// A FAPI portal's code exchange: `private_key_jwt`, the PKCE verifier and,
/// for DPoP-bound tokens, a DPoP proof. Checks the response's `iss` first
/// (RFC 9207, which FAPI 2.0 asks clients to check) and, for a bound token,
/// that it is bound to the demo's DPoP key. Returns the tokens and rows
/// saying how they were obtained.
async fn fapi_exchange(
    rp: &Rp,
    id: &str,
    fapi: &Fapi,
    query: &HashMap<String, String>,
    code: &str,
    verifier: PkceCodeVerifier,
) -> anyhow::Result<(CoreTokenResponse, Vec<(&'static str, String)>)> {
    let iss = query.get("iss").map(String::as_str);
    if iss != Some(rp.issuer.as_str()) {
        anyhow::bail!(
            "the authorization response's iss is {iss:?}, not {:?}",
            rp.issuer
        );
    }
    let form = [
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.to_owned()),
        ("redirect_uri", format!("{}/{id}/callback", rp.base)),
        ("code_verifier", verifier.secret().clone()),
        ("client_assertion_type", ASSERTION_TYPE.to_owned()),
        ("client_assertion", client_assertion(rp, id, &fapi.keys)?),
    ];
    let mut req = rp.http.post(&fapi.token_endpoint).form(&form);
    if let Some(key) = &fapi.keys.dpop {
        req = req.header("DPoP", dpop_proof(rp, key, "POST", &fapi.token_endpoint)?);
    }
    let res = req.send().await.context("code exchange failed")?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.with_context(|| {
        format!("code exchange: the token endpoint answered {status}, not JSON")
    })?;
    if !status.is_success() {
        anyhow::bail!("code exchange failed: {status} {body}");
    }
    let token_type = body
        .get("token_type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let tokens: CoreTokenResponse =
        serde_json::from_value(body).context("code exchange: not a token response")?;
    let mut rows = vec![
        (
            "client authentication",
            "private_key_jwt (an ES256 client assertion)".to_owned(),
        ),
        (
            "authorization request",
            "pushed (PAR), PKCE S256".to_owned(),
        ),
        ("token_type", token_type.clone()),
    ];
    if let Some(key) = &fapi.keys.dpop {
        if !token_type.eq_ignore_ascii_case("DPoP") {
            anyhow::bail!("expected a DPoP-bound access token, got token_type {token_type:?}");
        }
        // The access token is for resource servers; the demo reads its
        // claims (it came straight from the token endpoint) only to show
        // the binding.
        let shown = match access_token_claims(tokens.access_token().secret()) {
            None => "(an opaque access token: introspection gives its cnf.jkt)".to_owned(),
            Some(claims) => {
                let jkt = claims
                    .pointer("/cnf/jkt")
                    .and_then(serde_json::Value::as_str);
                if jkt != Some(key.jkt.as_str()) {
                    anyhow::bail!(
                        "the access token's cnf.jkt is {jkt:?}, not the demo's DPoP key {:?}",
                        key.jkt
                    );
                }
                format!("{} (matches the DPoP key of this portal)", key.jkt)
            }
        };
        rows.push(("access token cnf.jkt", shown));
    }
    Ok((tokens, rows))
}

/// The claims of a JWT access token, unverified; `None` for another token.
fn access_token_claims(token: &str) -> Option<serde_json::Value> {
    let parts: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = parts[..] else {
        return None;
    };
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// A portal's page showing an error.
fn error_page(rp: &Rp, id: &str, p: &Portal, msg: String) -> Response {
    render(
        rp,
        minijinja::context! { portal_name => p.name.clone(), login_url => format!("/{id}/login"), logout_url => format!("/{id}/logout"), error => msg },
    )
}

async fn callback(
    State(rp): State<Rp>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(p) = portal(&rp, &id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let show_error = |msg: String| error_page(&rp, &id, p, msg);
    if let Some(e) = q.get("error") {
        return show_error(format!("the provider answered {e}"));
    }
    let Some(pending) = q.get("state").and_then(|s| {
        rp.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(s)
    }) else {
        return show_error("unknown or replayed state".into());
    };
    let Some(code) = q.get("code") else {
        return show_error("no code in the callback".into());
    };
    let mut fapi_rows = Vec::new();
    let tokens = if let Some(fapi) = &p.fapi {
        match fapi_exchange(&rp, &id, fapi, &q, code, pending.verifier).await {
            Ok((tokens, rows)) => {
                fapi_rows = rows;
                tokens
            }
            Err(e) => return show_error(format!("{e:#}")),
        }
    } else {
        let exchange = match p.client.exchange_code(AuthorizationCode::new(code.clone())) {
            Ok(x) => x,
            Err(e) => return show_error(e.to_string()),
        };
        match exchange
            .set_pkce_verifier(pending.verifier)
            .request_async(&rp.http)
            .await
        {
            Ok(t) => t,
            Err(e) => return show_error(format!("code exchange failed: {e}")),
        }
    };
    let Some(id_token) = tokens.id_token() else {
        return show_error("no ID token".into());
    };
    let verifier = p.client.id_token_verifier().set_allowed_algs(vec![
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    ]);
    let claims = match id_token.claims(&verifier, &pending.nonce) {
        Ok(c) => c,
        Err(e) => return show_error(format!("ID token rejected: {e}")),
    };
    let mut rows = vec![
        ("sub", claims.subject().to_string()),
        ("iss", claims.issuer().to_string()),
        (
            "email",
            claims.email().map(|e| e.to_string()).unwrap_or_default(),
        ),
        (
            "preferred_username",
            claims
                .preferred_username()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        ),
        (
            "auth_time",
            claims
                .auth_time()
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        ),
        (
            "amr",
            claims
                .auth_method_refs()
                .map(|a| {
                    a.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        ),
        (
            "acr",
            claims
                .auth_context_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        ),
        (
            "access_token expires in",
            tokens
                .expires_in()
                .map(|d| format!("{} s", d.as_secs()))
                .unwrap_or_default(),
        ),
    ];
    rows.extend(fapi_rows);
    let session = LocalSession {
        portal: id.clone(),
        sub: claims.subject().to_string(),
        // The crate's claims type drops `sid`: read from the payload, whose
        // signature it verified above.
        sid: access_token_claims(&id_token.to_string())
            .and_then(|c| c.get("sid")?.as_str().map(str::to_owned)),
        id_token: id_token.to_string(),
        rows: rows.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
        id_token_claims: serde_json::to_string_pretty(&claims).unwrap_or_default(),
    };
    let cookie = idp_core::random::token();
    {
        let mut sessions = rp.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() > 1000 {
            sessions.clear();
        }
        sessions.insert(cookie.clone(), session.clone());
    }
    let set_cookie = format!(
        "{}={cookie}; Path=/{id}/; HttpOnly; SameSite=Lax",
        session_cookie(&id)
    );
    (
        [(header::SET_COOKIE, set_cookie)],
        signed_in_page(&rp, &id, p, &session),
    )
        .into_response()
}

/// The portal's session of this browser, if it has one still live.
fn local_session(rp: &Rp, id: &str, jar: &CookieJar) -> Option<LocalSession> {
    let cookie = jar.get(&session_cookie(id))?;
    rp.sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(cookie.value())
        .filter(|s| s.portal == id)
        .cloned()
}

/// A portal's page for a signed-in session: the verified claims.
fn signed_in_page(rp: &Rp, id: &str, p: &Portal, s: &LocalSession) -> Response {
    let user: Vec<minijinja::Value> = s
        .rows
        .iter()
        .map(|(n, v)| minijinja::context! { name => n, value => v })
        .collect();
    render(
        rp,
        minijinja::context! {
            portal_name => p.name.clone(),
            login_url => format!("/{id}/login"),
            logout_url => format!("/{id}/logout"),
            provider_url => rp.issuer.clone(),
            user => user,
            id_token_claims => s.id_token_claims.clone(),
        },
    )
}

/// Back-Channel Logout 1.0 §2.5 and §2.8: a logout token for this portal,
/// signed by the provider (its JWKS) and passing the checks of §2.6, drops
/// the portal's sessions of its `sid` (or, without one, of its `sub`);
/// 200, or 400 with an OAuth error.
async fn backchannel_logout(
    State(rp): State<Rp>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if portal(&rp, &id).is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let token = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|f| f.into_iter().find(|(k, _)| k == "logout_token"))
        .map(|(_, v)| v);
    let checked = match token {
        Some(t) => verify_logout_token(&rp, &id, &t).await,
        None => Err(anyhow!("no logout_token")),
    };
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    match checked {
        Ok(t) => {
            let mut sessions = rp.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.retain(|_, s| {
                let hit = s.portal == id
                    && match &t.sid {
                        Some(sid) => s.sid.as_ref() == Some(sid),
                        None => t.sub.as_ref() == Some(&s.sub),
                    };
                !hit
            });
            (StatusCode::OK, no_store).into_response()
        }
        Err(e) => {
            tracing::warn!(portal = %id, error = %e, "demo portal: logout token refused");
            (
                StatusCode::BAD_REQUEST,
                no_store,
                axum::Json(serde_json::json!({
                    "error": "invalid_request",
                    "error_description": format!("{e:#}"),
                })),
            )
                .into_response()
        }
    }
}

/// A logout token's signature, against the provider's published keys, then
/// its claims (Back-Channel Logout §2.6).
async fn verify_logout_token(
    rp: &Rp,
    client_id: &str,
    token: &str,
) -> anyhow::Result<idp_core::oidc::logout_channels::LogoutTokenClaims> {
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap_or_default())?,
    )?;
    let kid = header["kid"].as_str().ok_or_else(|| anyhow!("no kid"))?;
    let jwks: serde_json::Value = rp
        .http
        .get(&rp.jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .and_then(|k| k.as_object().cloned())
        .ok_or_else(|| anyhow!("kid {kid} is not published"))?;
    let jwk = Jwk::from_map(key)?;
    let payload = match header["alg"].as_str() {
        Some("ES256") => {
            josekit::jwt::decode_with_verifier(token, &ES256.verifier_from_jwk(&jwk)?)?.0
        }
        Some("RS256") => {
            let v = josekit::jws::RS256.verifier_from_jwk(&jwk)?;
            josekit::jwt::decode_with_verifier(token, &v)?.0
        }
        other => return Err(anyhow!("unexpected alg {other:?}")),
    };
    Ok(idp_core::oidc::logout_channels::check_logout_token(
        payload.claims_set(),
        header["typ"].as_str(),
        &rp.issuer,
        client_id,
        rp.clock.now(),
    )?)
}

/// Drops the portal's own session, then RP-initiated logout at the
/// provider (with the session's ID token as hint, so no confirmation is
/// asked), back to the portal.
async fn logout(State(rp): State<Rp>, Path(id): Path<String>, jar: CookieJar) -> Response {
    if portal(&rp, &id).is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let taken = jar.get(&session_cookie(&id)).and_then(|c| {
        rp.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(c.value())
    });
    if let Some(s) = taken {
        let url = format!(
            "{}?id_token_hint={}&post_logout_redirect_uri={}",
            rp.end_session,
            s.id_token,
            url::form_urlencoded::byte_serialize(format!("{}/{id}/", rp.base).as_bytes())
                .collect::<String>()
        );
        return ([(header::LOCATION, url)], StatusCode::SEE_OTHER).into_response();
    }
    (
        [(
            header::LOCATION,
            format!(
                "{}?client_id={id}&post_logout_redirect_uri={}/{id}/",
                rp.end_session, rp.base
            ),
        )],
        StatusCode::SEE_OTHER,
    )
        .into_response()
}
