//! `idp demo`: the provider plus a small relying party built on the
//! `openidconnect` crate, and a demo user, so a newcomer sees a full login.
//! Development only: nothing here is reachable from `idp serve`.

use crate::app::{self, Overrides};
use crate::config::{self, LoadedConfig};
use crate::theme::{Locale, Themes};
use anyhow::{Context, anyhow};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use idp_core::domain::{ClientId, Email};
use idp_core::keys::SigningAlg;
use idp_core::oidc::client::{
    AccessTokenFormat, Client, ClientSecretHash, Lifetimes, TokenEndpointAuthMethod,
};
use idp_core::secret::Secret;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse,
};
use std::collections::HashMap;
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

#[derive(Clone)]
struct Rp {
    client: Arc<DemoClient>,
    http: openidconnect::reqwest::Client,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    themes: Arc<Themes>,
    issuer: String,
    end_session: String,
    base: String,
}

/// The demo's relying-party registration.
fn demo_client(rp_base: &str, secret: &str) -> Client {
    Client {
        id: ClientId(DEMO_CLIENT.into()),
        name: "Demo portal".into(),
        auth_method: TokenEndpointAuthMethod::ClientSecretBasic,
        secret_hash: Some(ClientSecretHash::of(secret)),
        redirect_uris: vec![format!("{rp_base}/callback")],
        post_logout_redirect_uris: vec![format!("{rp_base}/")],
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
        login: idp_core::flow::definition::LoginPolicy::password_only(),
    }
}

pub async fn run(cfg: LoadedConfig, rp_port: u16) -> anyhow::Result<()> {
    let rp_addr = std::net::SocketAddr::new(cfg.settings.listen.ip(), rp_port);
    let rp_base = format!("http://{rp_addr}");
    let secret = idp_core::random::token();
    let clients = config::load_clients(cfg.clients_dir.as_deref())?;
    let overrides = Overrides {
        extra_clients: vec![demo_client(&rp_base, &secret)],
        ..Overrides::default()
    };
    let state = app::build_state(&cfg, clients, overrides).await?;
    let password = idp_core::random::token()[..16].to_owned();
    let email = Email::parse(DEMO_EMAIL).map_err(|e| anyhow!("{e}"))?;
    let user = match state.provider.ports.users.find_by_email(&email).await? {
        Some(u) => {
            state
                .provider
                .set_password(u.id, &Secret::new(password.clone()))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            u
        }
        None => state
            .provider
            .create_user(
                email,
                Some("Demo User".into()),
                &Secret::new(password.clone()),
            )
            .await
            .map_err(|e| anyhow!("{e}"))?,
    };
    let listener = tokio::net::TcpListener::bind(cfg.settings.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", cfg.settings.listen))?;
    let themes = state.themes.clone();
    let running = app::serve(listener, state)?;
    let rp_listener = tokio::net::TcpListener::bind(rp_addr)
        .await
        .with_context(|| format!("--rp-port: cannot bind {rp_addr}"))?;
    let rp = relying_party(&cfg.issuer, &rp_base, &secret, themes).await?;
    let rp_router = Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", get(logout))
        .route("/assets/{theme}/{*path}", get(asset))
        .with_state(rp);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(rp_listener, rp_router).await {
            tracing::error!(error = %e, "demo relying party stopped");
        }
    });
    println!();
    println!("  Identity provider: {} (issuer)", cfg.issuer);
    println!("  Demo portal:       {rp_base}/");
    println!();
    println!("  Open {rp_base}/ and sign in with");
    println!("    email:               {DEMO_EMAIL}");
    println!("    customer identifier: {}", user.customer_id);
    println!("    password:            {password}");
    println!();
    println!("  (the demo user's password is new at every start; Ctrl-C stops)");
    running.handle.await?;
    Ok(())
}

async fn relying_party(
    issuer: &str,
    base: &str,
    secret: &str,
    themes: Arc<Themes>,
) -> anyhow::Result<Rp> {
    let http = openidconnect::reqwest::ClientBuilder::new()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()?;
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.to_owned())?, &http)
        .await
        .map_err(|e| anyhow!("demo: discovery of {issuer} failed: {e}"))?;
    let client = CoreClient::from_provider_metadata(
        meta,
        openidconnect::ClientId::new(DEMO_CLIENT.into()),
        Some(ClientSecret::new(secret.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(format!("{base}/callback"))?);
    Ok(Rp {
        client: Arc::new(client),
        http,
        pending: Arc::new(Mutex::new(HashMap::new())),
        themes,
        issuer: issuer.to_owned(),
        end_session: format!("{issuer}/logout"),
        base: base.to_owned(),
    })
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

async fn home(State(rp): State<Rp>) -> Response {
    render(
        &rp,
        minijinja::context! { login_url => "/login", logout_url => "/logout", provider_url => rp.issuer.clone(), demo_email => DEMO_EMAIL },
    )
}

async fn login(State(rp): State<Rp>) -> Response {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut pending = rp.pending.lock().unwrap_or_else(|p| p.into_inner());
    if pending.len() > 1000 {
        pending.clear();
    }
    pending.insert(state.secret().clone(), Pending { verifier, nonce });
    Redirect::to(url.as_str()).into_response()
}

async fn callback(State(rp): State<Rp>, Query(q): Query<HashMap<String, String>>) -> Response {
    let show_error = |msg: String| {
        render(
            &rp,
            minijinja::context! { login_url => "/login", logout_url => "/logout", error => msg },
        )
    };
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
    let exchange = match rp
        .client
        .exchange_code(AuthorizationCode::new(code.clone()))
    {
        Ok(x) => x,
        Err(e) => return show_error(e.to_string()),
    };
    let tokens = match exchange
        .set_pkce_verifier(pending.verifier)
        .request_async(&rp.http)
        .await
    {
        Ok(t) => t,
        Err(e) => return show_error(format!("code exchange failed: {e}")),
    };
    let Some(id_token) = tokens.id_token() else {
        return show_error("no ID token".into());
    };
    let verifier = rp.client.id_token_verifier().set_allowed_algs(vec![
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
    ];
    rows.push((
        "access_token expires in",
        tokens
            .expires_in()
            .map(|d| format!("{} s", d.as_secs()))
            .unwrap_or_default(),
    ));
    let user: Vec<minijinja::Value> = rows
        .into_iter()
        .map(|(n, v)| minijinja::context! { name => n, value => v })
        .collect();
    let logout_url = format!(
        "{}?id_token_hint={}&post_logout_redirect_uri={}",
        rp.end_session,
        id_token,
        url::form_urlencoded::byte_serialize(format!("{}/", rp.base).as_bytes())
            .collect::<String>()
    );
    render(
        &rp,
        minijinja::context! {
            login_url => "/login",
            logout_url => logout_url,
            provider_url => rp.issuer.clone(),
            user => user,
            id_token_claims => serde_json::to_string_pretty(&claims).unwrap_or_default(),
        },
    )
}

async fn logout(State(rp): State<Rp>, _headers: HeaderMap) -> Response {
    (
        [(
            header::LOCATION,
            format!(
                "{}?client_id={DEMO_CLIENT}&post_logout_redirect_uri={}/",
                rp.end_session, rp.base
            ),
        )],
        StatusCode::SEE_OTHER,
    )
        .into_response()
}
