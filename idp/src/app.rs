//! Wiring: builds the provider from configuration (storage, short-lived store,
//! keys, clients, themes), the HTTP router with its security layers, and runs
//! the server.

use crate::config::LoadedConfig;
use crate::theme::Themes;
use crate::web;
use anyhow::{Context, anyhow};
use axum::Router;
use idp_core::client::ClientRegistry;
use idp_core::clock::{SharedClock, SystemClock};
use idp_core::ephemeral::{EphemeralStore, MemoryStore};
use idp_core::password::PasswordHasher;
use idp_core::secret::KeyEncryptionKey;
use idp_core::{Provider, ProviderPorts, ProviderSettings};
use idp_storage::SeaStorage;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Time limit of each request to an upstream provider (discovery, keys,
/// token, UserInfo).
const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub provider: Arc<Provider>,
    pub(crate) themes: Arc<Themes>,
    /// `Secure` cookies (everything but plain-HTTP loopback development).
    pub secure_cookies: bool,
    pub trust_forwarded_for: bool,
    /// The discovery document, built once.
    pub discovery: web::discovery::PublishedJson,
    /// Origin of the issuer, for the Origin check on form posts.
    pub origin: Arc<String>,
    /// Sends the webhook outbox (its background pass is started by [`serve`]).
    pub webhooks: Arc<crate::webhooks::WebhookDispatcher>,
    /// Dynamic client registration, and the registered clients' refresh
    /// (started by [`serve`]).
    pub registration: Arc<idp_core::registration::Registration>,
}

/// What the server needs besides configuration; tests replace the clock.
pub struct Overrides {
    pub clock: SharedClock,
    pub extra_clients: Vec<idp_core::client::Client>,
    /// Replaces the configured email/SMS delivery (tests read codes from it).
    pub notifier: Option<Arc<dyn idp_core::notify::Notifier>>,
    /// Replaces the configured company registry (tests simulate outages).
    pub registry: Option<Arc<dyn idp_core::company::CompanyRegistry>>,
    /// Replaces the webhook endpoints of the client files.
    pub webhooks: Option<Vec<idp_core::webhooks::WebhookEndpoint>>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            extra_clients: Vec::new(),
            notifier: None,
            registry: None,
            webhooks: None,
        }
    }
}

/// Connects to the database, applying migrations when configured.
pub async fn open_storage(cfg: &LoadedConfig, migrate: bool) -> anyhow::Result<Arc<SeaStorage>> {
    if cfg.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&cfg.settings.data_dir).with_context(|| {
            format!(
                "data_dir: cannot create {}",
                cfg.settings.data_dir.display()
            )
        })?;
    }
    let storage = SeaStorage::connect(&cfg.database_url)
        .await
        .map_err(|e| anyhow!("database_url: {e}"))?;
    if migrate {
        storage
            .migrate()
            .await
            .map_err(|e| anyhow!("migrations: {e}"))?;
    }
    Ok(Arc::new(storage))
}

/// The key-encryption key: configured, or generated once into the data folder.
pub fn key_encryption_key(cfg: &LoadedConfig) -> anyhow::Result<KeyEncryptionKey> {
    if let Some(k) = &cfg.settings.key_encryption_key {
        return KeyEncryptionKey::parse(k).map_err(|e| anyhow!("key_encryption_key: {e}"));
    }
    let path = cfg.settings.data_dir.join("kek");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return KeyEncryptionKey::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    std::fs::create_dir_all(&cfg.settings.data_dir).with_context(|| {
        format!(
            "data_dir: cannot create {}",
            cfg.settings.data_dir.display()
        )
    })?;
    let k = KeyEncryptionKey::generate();
    write_private_file(&path, &k.encode())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(k)
}

fn write_private_file(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content.as_bytes())
}

/// Start-up checks of every client against what this build and this
/// configuration can do: its theme exists and has every page its flows show
/// (the common pages, each method's page and enrollment page, the recovery
/// codes page), its methods exist, and WebAuthn has a host name to bind to.
pub(crate) fn check_clients(
    cfg: &LoadedConfig,
    clients: &ClientRegistry,
    themes: &Themes,
) -> anyhow::Result<()> {
    let steps = idp_core::steps::registry();
    let federates = |c: &idp_core::client::Client| {
        c.login
            .methods()
            .any(|m| steps.get(m).is_some_and(|s| s.traits().federates))
    };
    let issuer_host_is_ip = url::Url::parse(&cfg.issuer)
        .ok()
        .is_some_and(|u| matches!(u.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_))));
    for (i, u) in cfg.settings.upstreams.iter().enumerate() {
        for (j, id) in u.clients.iter().enumerate() {
            let Some(c) = clients.get(id) else {
                return Err(anyhow!(
                    "upstreams[{i}].clients[{j}]: no client {id:?} is registered"
                ));
            };
            if !federates(&c) {
                return Err(anyhow!(
                    "upstreams[{i}].clients[{j}]: none of client {id}'s flows has an \"upstream\" step (add a flow such as steps = [\"upstream\"] with the acr of its first flow)"
                ));
            }
        }
    }
    for (i, r) in cfg.settings.resource_servers.iter().enumerate() {
        for (key, ids) in [
            ("clients", &r.clients),
            ("introspection_clients", &r.introspection_clients),
            ("exchange_clients", &r.exchange_clients),
        ] {
            for (j, id) in ids.iter().enumerate() {
                let Some(c) = clients.get(id) else {
                    return Err(anyhow!(
                        "resource_servers[{i}].{key}[{j}]: no client {id:?} is registered"
                    ));
                };
                if key == "introspection_clients" && c.is_public() {
                    return Err(anyhow!(
                        "resource_servers[{i}].{key}[{j}]: client {id} is public; introspection needs a confidential client"
                    ));
                }
                if key == "exchange_clients" && !c.protocol.token_exchange {
                    return Err(anyhow!(
                        "resource_servers[{i}].{key}[{j}]: client {id} does not list {} in its grant_types",
                        idp_core::oidc::token::TOKEN_EXCHANGE
                    ));
                }
            }
        }
    }
    for c in clients.iter() {
        if c.protocol.token_exchange
            && !cfg
                .settings
                .resource_servers
                .iter()
                .any(|r| r.exchange_clients.iter().any(|x| *x == c.id.0))
        {
            return Err(anyhow!(
                "client {}: grant_types: token exchange is allowed, but no [[resource_servers]] entry lists this client in its exchange_clients",
                c.id
            ));
        }
        if !themes.has_theme(&c.theme) {
            return Err(anyhow!(
                "client {}: theme: no theme named {:?}",
                c.id,
                c.theme
            ));
        }
        let mut pages: Vec<String> = web::TEMPLATES.iter().map(|t| (*t).to_owned()).collect();
        pages.push("alternatives.html".into());
        // An organization's enforced second factor may be asked at any
        // client: its methods' pages, and the recovery codes page.
        for t in steps
            .all()
            .filter(|t| t.second_factor && !(t.needs_host_name && issuer_host_is_ip))
        {
            pages.extend(t.templates.iter().map(|p| format!("{p}.html")));
            if t.creates_recovery_codes {
                pages.push("recovery_codes.html".into());
            }
        }
        for m in c.login.methods() {
            let step = steps.get(m).ok_or_else(|| {
                anyhow!(
                    "client {}: login: the method {} is not available in this build",
                    c.id,
                    m.as_str()
                )
            })?;
            let traits = step.traits();
            pages.extend(traits.templates.iter().map(|t| format!("{t}.html")));
            if traits.creates_recovery_codes {
                pages.push("recovery_codes.html".into());
            }
            if traits.needs_host_name && issuer_host_is_ip {
                return Err(anyhow!(
                    "client {}: login: {} needs the issuer to be a host name (WebAuthn relying-party ids cannot be IP addresses); set issuer, e.g. http://localhost:8080",
                    c.id,
                    m.as_str()
                ));
            }
        }
        if federates(c)
            && !cfg
                .settings
                .upstreams
                .iter()
                .any(|u| u.clients.iter().any(|x| *x == c.id.0))
        {
            return Err(anyhow!(
                "client {}: login: a flow has an \"upstream\" step, but no [[upstreams]] entry lists this client in its clients",
                c.id
            ));
        }
        pages.sort();
        pages.dedup();
        let pages: Vec<&str> = pages.iter().map(String::as_str).collect();
        themes
            .check_templates(&c.theme, &pages)
            .map_err(|e| anyhow!("client {}: theme {}: {e}", c.id, c.theme))?;
    }
    Ok(())
}

/// The account page (`/account`) signs users in through OIDC like any
/// portal, as the built-in public client `account`, unless a client file
/// registers that client_id itself (to change its theme, name or flows):
/// that one must accept the account pages' redirect URI and scope.
pub(crate) fn add_account_client(
    clients: &mut ClientRegistry,
    cfg: &LoadedConfig,
) -> anyhow::Result<()> {
    let issuer = &cfg.issuer;
    let upstream = cfg
        .settings
        .upstreams
        .iter()
        .any(|u| u.clients.iter().any(|c| c == web::account::CLIENT_ID));
    match clients.get(web::account::CLIENT_ID) {
        None => clients.insert(web::account::builtin_client(issuer, upstream, &cfg.levels)?),
        Some(c) => web::account::check_client(&c, issuer)?,
    }
    Ok(())
}

/// Builds the provider and the app state.
pub async fn build_state(
    cfg: &LoadedConfig,
    clients: ClientRegistry,
    overrides: Overrides,
) -> anyhow::Result<AppState> {
    let storage = open_storage(cfg, cfg.settings.migrate_on_start).await?;
    // The short-lived store, and where changes that cached token reads rest
    // on are announced: Redis publish/subscribe for a cluster, the process
    // itself for a single node.
    let (store, changes): (
        Arc<dyn EphemeralStore>,
        Arc<dyn idp_core::changes::ChangeFeed>,
    ) = match &cfg.settings.redis_url {
        Some(url) => {
            let redis = idp_redis_store::RedisStore::connect(url, &cfg.settings.redis_key_prefix)
                .await
                .map_err(|e| anyhow!("redis_url: {e}"))?;
            let feed = Arc::new(redis.change_feed());
            (Arc::new(redis), feed)
        }
        None => (
            Arc::new(MemoryStore::new(overrides.clock.clone())),
            Arc::new(idp_core::changes::LocalChangeFeed::default()),
        ),
    };
    let mut clients = if cfg.settings.require_pushed_authorization_requests {
        ClientRegistry::new(clients.iter().map(|c| {
            let mut c = (**c).clone();
            c.protocol.require_par = true;
            c
        }))
    } else {
        clients
    };
    for c in overrides.extra_clients {
        if clients.get(&c.id.0).is_some() {
            return Err(anyhow!(
                "client {}: this client_id is reserved here; rename the client file's client_id",
                c.id
            ));
        }
        clients.insert(c);
    }
    add_account_client(&mut clients, cfg)?;
    let themes = Themes::load(cfg.themes_dir.as_deref()).map_err(|e| anyhow!("themes: {e}"))?;
    check_clients(cfg, &clients, &themes)?;
    let ports = ProviderPorts {
        users: storage.clone(),
        credentials: storage.clone(),
        families: storage.clone(),
        signing_keys: storage.clone(),
        consents: storage.clone(),
        audit: storage.clone(),
        client_states: storage.clone(),
        devices: storage.clone(),
        orgs: storage.clone(),
        webhooks: storage.clone(),
        registry: match overrides.registry {
            Some(r) => r,
            None => crate::registry::from_config(cfg)?,
        },
        identities: storage.clone(),
        upstreams: Arc::new(
            idp_upstream::OidcUpstreams::new(
                &cfg.issuer,
                crate::config::parse_upstreams(cfg)?,
                overrides.clock.clone(),
                UPSTREAM_TIMEOUT,
            )
            .map_err(|e| anyhow!("upstreams: {e}"))?,
        ),
        changes,
        client_jwks: Arc::new(crate::client_jwks::HttpJwksFetcher::new()?),
    };
    let pairwise: Vec<_> = clients
        .iter()
        .filter(|c| c.protocol.pairwise.is_some())
        .cloned()
        .collect();
    crate::sectors::check_sector_identifiers(&pairwise, ports.client_jwks.as_ref()).await?;
    let webhooks = Arc::new(match overrides.webhooks {
        Some(w) => w,
        None => crate::config::load_webhooks(cfg.clients_dir.as_deref())?,
    });
    let dispatcher = crate::webhooks::WebhookDispatcher::new(
        storage.clone(),
        webhooks.clone(),
        overrides.clock.clone(),
        cfg.settings.webhook_delivery,
    )?;
    let hasher = PasswordHasher::new(cfg.settings.password)?;
    let settings = ProviderSettings {
        issuer: cfg.issuer.clone(),
        session_lifetime_secs: cfg.settings.session_lifetime_secs,
        flow_lifetime_secs: cfg.settings.login_flow_lifetime_secs,
        customer_id_suffix: cfg.settings.customer_id_suffix.clone(),
        throttle: cfg.settings.throttle,
        methods: cfg.settings.login_methods.clone(),
        accounts: cfg.settings.accounts.clone(),
        webhooks,
        resource_servers: crate::config::parse_resource_servers(cfg)?,
        token_exchange_max_secs: cfg.settings.token_exchange.max_token_secs,
        device: crate::config::check_device_settings(cfg.settings.device)?,
    };
    let kek = key_encryption_key(cfg)?;
    let themes = Arc::new(themes);
    let notifier: Arc<dyn idp_core::notify::Notifier> = match overrides.notifier {
        Some(n) => n,
        None => {
            let (email, sms) = crate::notifier::senders_from_config(cfg, overrides.clock.clone())?;
            Arc::new(crate::notifier::ThemedNotifier::new(
                themes.clone(),
                email,
                sms,
            ))
        }
    };
    let provider = Provider::new(
        settings,
        clients,
        store,
        ports,
        hasher,
        overrides.clock,
        kek,
        notifier,
    )
    .await?;
    let issuer_url = url::Url::parse(&cfg.issuer)?;
    let dispatcher =
        dispatcher.with_logout_tokens(Arc::new(crate::logout_channels::LogoutTokenSender::new(
            cfg.issuer.clone(),
            provider.clients.clone(),
            provider.keys.clone(),
        )));
    let registration = Arc::new(idp_core::registration::Registration::new(
        storage.clone(),
        provider.ports.families.clone(),
        provider.clients.clone(),
        crate::registration::policy(cfg)?,
        crate::registration::template(cfg, &provider.clients)?,
        provider.clock.clone(),
        cfg.issuer.clone(),
        std::time::Duration::from_secs(u64::from(cfg.settings.registration.refresh_secs)),
        provider.throttle.clone(),
    ));
    registration
        .refresh()
        .await
        .map_err(|e| anyhow!("registered clients: {e}"))?;
    let mut discovery = web::discovery::document(
        &cfg.issuer,
        &cfg.levels.values(),
        &provider.clients.iter().map(|c| &**c).collect::<Vec<_>>(),
        cfg.settings.require_pushed_authorization_requests,
    );
    if registration.enabled() {
        discovery = web::registration::advertise(&discovery, &cfg.issuer);
    }
    Ok(AppState {
        registration,
        discovery: web::discovery::PublishedJson::new(discovery),
        origin: Arc::new(issuer_url.origin().ascii_serialization()),
        secure_cookies: issuer_url.scheme() == "https",
        trust_forwarded_for: cfg.settings.trust_forwarded_for,
        themes,
        provider: Arc::new(provider),
        webhooks: Arc::new(dispatcher),
    })
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    pub handle: tokio::task::JoinHandle<()>,
    /// Background tasks: signing key refresh, webhook delivery.
    pub workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops serving and the background tasks at once (in-flight requests
    /// are cut; a webhook delivery cut half-way is sent again once its
    /// lease expires).
    pub fn stop(&self) {
        self.handle.abort();
        for w in &self.workers {
            w.abort();
        }
    }
}

/// Serves `state` on `listener` in the background; refreshes signing keys
/// every minute so a rotation on any node is picked up, and sends the
/// webhook outbox.
pub fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<Running> {
    let addr = listener.local_addr()?;
    let router: Router = web::router(state.clone());
    let provider = state.provider.clone();
    let keys = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = provider.keys.reload().await {
                tracing::warn!(error = %e, "signing key refresh failed");
            }
        }
    });
    let handle = tokio::spawn(async move {
        let svc = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, svc)
            .with_graceful_shutdown(shutdown_signal())
            .await
        {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let webhooks = state.webhooks.clone().spawn();
    // Registered clients changed on other nodes (or by the command line)
    // are picked up within one period.
    let registration = state.registration.clone();
    let registered = tokio::spawn(async move {
        let mut tick = tokio::time::interval(registration.refresh_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = registration.refresh().await {
                tracing::warn!(error = %e, "registered clients refresh failed");
            }
        }
    });
    Ok(Running {
        addr,
        state,
        handle,
        workers: vec![keys, webhooks, registered],
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
