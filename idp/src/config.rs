//! Configuration: built-in defaults, then the TOML file, then `IDP_`
//! environment variables (`__` for nesting), then `IDP_*_FILE` variables whose
//! file holds the value (for secrets). Relying parties come from one TOML file
//! each in the clients folder. Everything is checked once here; every error
//! names the file and the field.

use anyhow::{Context, anyhow, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use idp_core::assurance::Levels;
use idp_core::client::{
    AccessTokenFormat, Client, ClientKeySource, ClientRegistry, ClientSecretHash, Lifetimes,
    TokenEndpointAuthMethod,
};
use idp_core::domain::ClientId;
use idp_core::keys::SigningAlg;
use idp_core::oidc::client_jwt::ClientKeys;
use idp_core::password::Argon2Settings;
use idp_core::request::ResponseMode;
use idp_core::secret::Secret;
use idp_core::throttle::ThrottleSettings;
use idp_core::webhooks::WebhookEndpoint;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The main configuration file (`config/idp.toml`). See `config/README.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Public base URL; default `http://<listen>`.
    pub issuer: Option<String>,
    pub listen: SocketAddr,
    /// Where the embedded SQLite database and generated key live.
    pub data_dir: PathBuf,
    /// Default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Default: the in-process store (one node only).
    pub redis_url: Option<String>,
    pub redis_key_prefix: String,
    /// Folder of client files; relative paths are from the config file's folder.
    pub clients_dir: PathBuf,
    /// Folder of extra themes; relative paths are from the config file's folder.
    pub themes_dir: Option<PathBuf>,
    /// 32 bytes, base64url. Encrypts signing keys at rest. Default: generated
    /// into `data_dir/kek` (SQLite only; required with PostgreSQL so that
    /// every node shares it).
    pub key_encryption_key: Option<String>,
    pub migrate_on_start: bool,
    pub customer_id_suffix: String,
    pub session_lifetime_secs: u32,
    pub login_flow_lifetime_secs: u32,
    /// Take the client IP from `X-Forwarded-For` (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Every client must push its authorization requests (RFC 9126 §5),
    /// whatever its file says.
    pub require_pushed_authorization_requests: bool,
    /// `text` or `json`.
    pub log_format: String,
    pub password: Argon2Settings,
    pub throttle: ThrottleSettings,
    /// Settings of the login methods (codes, TOTP, WebAuthn, devices).
    pub login_methods: idp_core::flow::MethodSettings,
    /// `[mail]`: how emails (login codes) are delivered.
    pub mail: MailSettings,
    /// `[sms]`: how text messages (login codes) are delivered.
    pub sms: SmsSettings,
    /// `[accounts]`: recovery links, throttles, the platform password policy.
    pub accounts: idp_core::accounts::AccountSettings,
    /// `[company_registry]`: where SIRET numbers are looked up.
    pub company_registry: CompanyRegistrySettings,
    /// `[webhook_delivery]`: how the webhooks of the client files are sent.
    pub webhook_delivery: WebhookDeliverySettings,
    /// `[[upstreams]]`: upstream OpenID providers users may sign in through.
    pub upstreams: Vec<UpstreamFile>,
    /// `[[assurance_levels]]`: the `acr` values clients' flows may claim,
    /// each with a label and a NIST AAL (default: `1`, `2`, `3`; see
    /// `config/README.md`, "Assurance levels").
    pub assurance_levels: Vec<idp_core::assurance::LevelSpec>,
    /// `[[resource_servers]]`: the APIs clients may ask tokens for with the
    /// `resource` parameter (RFC 8707; see `config/README.md`).
    pub resource_servers: Vec<ResourceServerFile>,
    /// `[token_exchange]`: tokens obtained by token exchange (RFC 8693).
    pub token_exchange: TokenExchangeSettings,
    /// `[registration]`: dynamic client registration (RFC 7591, RFC 7592),
    /// off by default (see `config/README.md`).
    pub registration: crate::registration::RegistrationSettings,
    /// `[device]`: the device authorization grant (RFC 8628; see
    /// `config/README.md`).
    pub device: idp_core::oidc::device::DeviceSettings,
}

/// `[token_exchange]` of the main configuration file. Who may exchange
/// what is each resource server's `exchange_clients`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenExchangeSettings {
    /// Exchanged tokens live at most this long (and never longer than the
    /// resource server's lifetime or the subject token's remaining life).
    pub max_token_secs: u32,
}

impl Default for TokenExchangeSettings {
    fn default() -> Self {
        Self {
            max_token_secs: 300,
        }
    }
}

/// The checked `[device]` section: every count and duration positive, the
/// polling interval shorter than the codes' lifetime.
pub fn check_device_settings(
    d: idp_core::oidc::device::DeviceSettings,
) -> anyhow::Result<idp_core::oidc::device::DeviceSettings> {
    for (name, v) in [
        ("code_lifetime_secs", d.code_lifetime_secs),
        ("interval_secs", d.interval_secs),
        ("user_code_max_failures", d.user_code_max_failures),
        ("user_code_ip_max_failures", d.user_code_ip_max_failures),
        (
            "user_code_global_max_failures",
            d.user_code_global_max_failures,
        ),
        ("user_code_lockout_secs", d.user_code_lockout_secs),
    ] {
        if v == 0 {
            bail!("device.{name}: must be positive");
        }
    }
    if d.interval_secs >= d.code_lifetime_secs {
        bail!("device.interval_secs: must be shorter than device.code_lifetime_secs");
    }
    Ok(d)
}

/// One `[[resource_servers]]` entry. See `config/README.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServerFile {
    /// Its resource indicator: an absolute URI without fragment.
    pub identifier: String,
    pub name: String,
    /// Tokens for it live at most this long.
    #[serde(default)]
    pub access_token_secs: Option<u32>,
    /// The clients that may ask for tokens for it.
    #[serde(default)]
    pub clients: Vec<String>,
    /// The (confidential) clients it introspects tokens with.
    #[serde(default)]
    pub introspection_clients: Vec<String>,
    /// The (confidential) clients that may obtain tokens for it by token
    /// exchange (RFC 8693).
    #[serde(default)]
    pub exchange_clients: Vec<String>,
}

/// The checked `[[resource_servers]]` of `cfg`; errors name the entry and
/// field (`resource_servers[0].identifier: ...`). The clients they name are
/// checked against the client files by `app::check_clients`.
pub fn parse_resource_servers(
    cfg: &LoadedConfig,
) -> anyhow::Result<Vec<idp_core::oidc::resources::ResourceServer>> {
    let admin_api = idp_core::access_token::admin_api_audience(&cfg.issuer);
    let mut out: Vec<idp_core::oidc::resources::ResourceServer> = Vec::new();
    for (i, r) in cfg.settings.resource_servers.iter().enumerate() {
        let field = |name: &str| format!("resource_servers[{i}].{name}");
        idp_core::oidc::resources::check_identifier(&r.identifier)
            .map_err(|why| anyhow!("{}: {why}", field("identifier")))?;
        if r.identifier == admin_api {
            bail!(
                "{}: {admin_api} is the admin API's own identifier (clients with the admin_api scope may ask for it)",
                field("identifier")
            );
        }
        if out.iter().any(|o| o.identifier == r.identifier) {
            bail!(
                "{}: {:?} is declared twice",
                field("identifier"),
                r.identifier
            );
        }
        if r.name.trim().is_empty() {
            bail!("{}: must not be empty", field("name"));
        }
        if r.access_token_secs == Some(0) {
            bail!("{}: must be positive", field("access_token_secs"));
        }
        let ids = |v: &[String]| {
            v.iter()
                .map(|c| idp_core::domain::ClientId(c.clone()))
                .collect()
        };
        out.push(idp_core::oidc::resources::ResourceServer {
            identifier: r.identifier.clone(),
            name: r.name.clone(),
            access_token_secs: r.access_token_secs,
            clients: ids(&r.clients),
            introspection_clients: ids(&r.introspection_clients),
            exchange_clients: ids(&r.exchange_clients),
        });
    }
    Ok(out)
}

/// One `[[upstreams]]` entry: an upstream OpenID provider. See
/// `config/README.md` ("Upstream identity providers").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// Its id in URLs, the CLI and the admin API: `a-z`, `0-9`, `-`, `_`.
    pub name: String,
    /// "Continue with <display_name>".
    pub display_name: String,
    /// Exactly as its discovery document writes it.
    pub issuer: String,
    /// Our registration at the upstream.
    pub client_id: String,
    /// The environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Or the file holding it (relative to the config file's folder).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Neither: a public registration (PKCE only), if the upstream allows.
    #[serde(default)]
    pub public_client: bool,
    #[serde(default = "default_upstream_scopes")]
    pub scopes: Vec<String>,
    /// Clients (`client_id`) whose login pages offer it.
    #[serde(default)]
    pub clients: Vec<String>,
    /// Create an account when an identity matches none (just in time).
    #[serde(default)]
    pub create_accounts: bool,
    /// Take the upstream's emails as verified even without `email_verified`.
    #[serde(default)]
    pub trust_email: bool,
    #[serde(default)]
    pub claims: UpstreamClaimsFile,
}

/// `[upstreams.claims]`: which upstream claims hold what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamClaimsFile {
    pub email: String,
    pub email_verified: String,
    pub name: String,
    /// Matched against customer identifiers (`ab12345-idp`) when set.
    pub username: Option<String>,
}

impl Default for UpstreamClaimsFile {
    fn default() -> Self {
        let d = idp_upstream::ClaimMapping::default();
        Self {
            email: d.email,
            email_verified: d.email_verified,
            name: d.name,
            username: d.username,
        }
    }
}

fn default_upstream_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// The checked `[[upstreams]]` of `cfg`, secrets read (`client_secret_file`
/// relative to the config file's folder); errors start with the field
/// (`upstreams[0].issuer: ...`) and never contain the secret.
pub fn parse_upstreams(cfg: &LoadedConfig) -> anyhow::Result<Vec<idp_upstream::UpstreamSettings>> {
    let base = cfg
        .source
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut out: Vec<idp_upstream::UpstreamSettings> = Vec::new();
    for (i, u) in cfg.settings.upstreams.iter().enumerate() {
        let field = |name: &str| format!("upstreams[{i}].{name}");
        if !idp_core::federation::is_valid_name(&u.name) {
            bail!(
                "{}: {:?}: 1 to 64 of a-z, 0-9, '-' and '_', starting with a letter or digit",
                field("name"),
                u.name
            );
        }
        if out.iter().any(|o| o.name == u.name) {
            bail!("{}: {:?} is defined twice", field("name"), u.name);
        }
        if u.display_name.trim().is_empty() || u.display_name.len() > 64 {
            bail!("{}: 1 to 64 characters", field("display_name"));
        }
        let issuer = url::Url::parse(&u.issuer).map_err(|e| {
            anyhow!(
                "{}: {:?} is not an absolute URL ({e})",
                field("issuer"),
                u.issuer
            )
        })?;
        if issuer.scheme() != "https" && !(issuer.scheme() == "http" && is_loopback(&issuer)) {
            bail!(
                "{}: must be an https URL (http is allowed only on a loopback address)",
                field("issuer")
            );
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            bail!("{}: must have no query or fragment", field("issuer"));
        }
        if u.issuer.trim_end_matches('/') == cfg.issuer {
            bail!(
                "{}: this provider's own issuer cannot be its upstream",
                field("issuer")
            );
        }
        if u.client_id.is_empty() {
            bail!("{}: must not be empty", field("client_id"));
        }
        let secret = match (&u.client_secret_env, &u.client_secret_file, u.public_client) {
            (Some(var), None, false) => Some(std::env::var(var).map_err(|_| {
                anyhow!(
                    "{}: the environment variable {var} is not set",
                    field("client_secret_env")
                )
            })?),
            (None, Some(path), false) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                Some(std::fs::read_to_string(&path).map_err(|e| {
                    anyhow!(
                        "{}: cannot read {} ({e})",
                        field("client_secret_file"),
                        path.display()
                    )
                })?)
            }
            (None, None, true) => None,
            _ => bail!(
                "{}: set exactly one of client_secret_env, client_secret_file and public_client = true (the secret itself never goes in the file)",
                field("client_secret_env")
            ),
        };
        let secret = match secret.map(|s| s.trim().to_owned()) {
            Some(s) if s.is_empty() => {
                bail!("{}: the client secret is empty", field("client_secret_env"))
            }
            s => s.map(idp_core::secret::Secret::new),
        };
        if !u.scopes.iter().any(|s| s == "openid") {
            bail!("{}: must include \"openid\"", field("scopes"));
        }
        if let Some(s) = u
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            bail!("{}: {s:?} is not a scope", field("scopes"));
        }
        for (name, claim) in [
            ("email", Some(&u.claims.email)),
            ("email_verified", Some(&u.claims.email_verified)),
            ("name", Some(&u.claims.name)),
            ("username", u.claims.username.as_ref()),
        ] {
            if claim.is_some_and(|c| c.trim().is_empty()) {
                bail!("{}: must not be empty", field(&format!("claims.{name}")));
            }
        }
        out.push(idp_upstream::UpstreamSettings {
            name: u.name.clone(),
            display_name: u.display_name.trim().to_owned(),
            issuer: u.issuer.clone(),
            client_id: u.client_id.clone(),
            client_secret: secret,
            scopes: u.scopes.clone(),
            clients: u.clients.clone(),
            policy: idp_core::federation::UpstreamPolicy {
                create_accounts: u.create_accounts,
                trust_email: u.trust_email,
            },
            claims: idp_upstream::ClaimMapping {
                email: u.claims.email.clone(),
                email_verified: u.claims.email_verified.clone(),
                name: u.claims.name.clone(),
                username: u.claims.username.clone(),
            },
        });
    }
    Ok(out)
}

/// `[webhook_delivery]` of the main configuration file (the endpoints
/// themselves are in the client files, `[[webhooks]]`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliverySettings {
    /// How often each node looks for due deliveries.
    pub poll_interval_secs: u32,
    /// Time limit of one request.
    pub timeout_secs: u32,
    /// Most deliveries a node claims per pass.
    pub batch_size: u32,
    /// Delay after the first failure; doubles after each further one.
    pub retry_base_secs: u32,
    /// Longest delay between two attempts.
    pub retry_max_delay_secs: u32,
    /// Give up after this many attempts.
    pub max_attempts: u32,
    /// Give up on deliveries older than this.
    pub give_up_after_hours: u32,
}

impl Default for WebhookDeliverySettings {
    fn default() -> Self {
        let p = idp_core::webhooks::RetryPolicy::default();
        Self {
            poll_interval_secs: 5,
            timeout_secs: 10,
            batch_size: 50,
            retry_base_secs: p.base_delay_secs,
            retry_max_delay_secs: p.max_delay_secs,
            max_attempts: p.max_attempts,
            give_up_after_hours: p.give_up_after_secs / 3600,
        }
    }
}

impl WebhookDeliverySettings {
    pub fn retry_policy(&self) -> idp_core::webhooks::RetryPolicy {
        idp_core::webhooks::RetryPolicy {
            base_delay_secs: self.retry_base_secs,
            max_delay_secs: self.retry_max_delay_secs,
            max_attempts: self.max_attempts,
            give_up_after_secs: self.give_up_after_hours.saturating_mul(3600),
        }
    }

    /// Checks the values; the error starts with the field.
    fn check(&self) -> Result<(), String> {
        let ranges: [(&str, u32, u32, u32); 7] = [
            ("poll_interval_secs", self.poll_interval_secs, 1, 86_400),
            ("timeout_secs", self.timeout_secs, 1, 300),
            ("batch_size", self.batch_size, 1, 1000),
            ("retry_base_secs", self.retry_base_secs, 1, 86_400),
            (
                "retry_max_delay_secs",
                self.retry_max_delay_secs,
                1,
                7 * 86_400,
            ),
            ("max_attempts", self.max_attempts, 1, 10_000),
            ("give_up_after_hours", self.give_up_after_hours, 1, 24 * 365),
        ];
        for (name, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(format!("{name}: must be between {lo} and {hi}, not {v}"));
            }
        }
        if self.retry_max_delay_secs < self.retry_base_secs {
            return Err("retry_max_delay_secs: must not be less than retry_base_secs".into());
        }
        Ok(())
    }
}

/// `[company_registry]` of the main configuration file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompanyRegistrySettings {
    /// `bundled` (a small data file shipped in the binary, for development and
    /// tests) or `sirene` (the INSEE Sirene API).
    pub kind: CompanyRegistryKind,
    /// Base URL of the Sirene API.
    pub base_url: String,
    /// The Sirene API key (`X-INSEE-Api-Key-Integration` header); also from
    /// `IDP_COMPANY_REGISTRY__API_KEY` or `IDP_COMPANY_REGISTRY__API_KEY_FILE`.
    pub api_key: Option<String>,
    pub timeout_secs: u32,
}

impl Default for CompanyRegistrySettings {
    fn default() -> Self {
        Self {
            kind: CompanyRegistryKind::Bundled,
            base_url: "https://api.insee.fr/api-sirene/3.11".into(),
            api_key: None,
            timeout_secs: 5,
        }
    }
}

impl std::fmt::Debug for CompanyRegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompanyRegistrySettings")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CompanyRegistryKind {
    #[default]
    Bundled,
    Sirene,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            issuer: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            redis_url: None,
            redis_key_prefix: "idp:".into(),
            clients_dir: PathBuf::from("clients"),
            themes_dir: None,
            key_encryption_key: None,
            migrate_on_start: true,
            customer_id_suffix: "idp".into(),
            session_lifetime_secs: 10 * 3600,
            login_flow_lifetime_secs: 30 * 60,
            trust_forwarded_for: false,
            require_pushed_authorization_requests: false,
            log_format: "text".into(),
            password: Argon2Settings::default(),
            throttle: ThrottleSettings::default(),
            login_methods: idp_core::flow::MethodSettings::default(),
            mail: MailSettings::default(),
            sms: SmsSettings::default(),
            accounts: idp_core::accounts::AccountSettings::default(),
            company_registry: CompanyRegistrySettings::default(),
            webhook_delivery: WebhookDeliverySettings::default(),
            upstreams: Vec::new(),
            resource_servers: Vec::new(),
            token_exchange: TokenExchangeSettings::default(),
            registration: Default::default(),
            device: Default::default(),
            assurance_levels: idp_core::assurance::Levels::builtin_specs(),
        }
    }
}

/// `[mail]` of the main configuration file.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// `outbox` (default): one `.eml` file per email in `<data_dir>/outbox`;
    /// `smtp`: submitted to `smtp_host`.
    pub transport: MailTransport,
    /// The `From` address (`Example <no-reply@example.com>`); required with
    /// `smtp`. Default for the outbox: `Sign-in <no-reply@localhost>`.
    pub from: Option<String>,
    pub smtp_host: Option<String>,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls` (SMTPS) or `none` (a local relay only).
    pub smtp_tls: SmtpTlsMode,
    pub smtp_username: Option<String>,
    /// Secret: prefer `IDP_MAIL__SMTP_PASSWORD` or `IDP_MAIL__SMTP_PASSWORD_FILE`.
    #[serde(deserialize_with = "lenient_string")]
    pub smtp_password: Option<String>,
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("transport", &self.transport)
            .field("from", &self.from)
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_tls", &self.smtp_tls)
            .field("smtp_username", &self.smtp_username)
            .field(
                "smtp_password",
                &self.smtp_password.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    #[default]
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTlsMode {
    None,
    #[default]
    Starttls,
    Tls,
}

/// `[sms]` of the main configuration file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsSettings {
    /// `outbox` (default): JSON lines appended to `<data_dir>/sms-outbox.jsonl`;
    /// `http`: one POST per message to `url`.
    pub transport: SmsTransport,
    /// The provider's endpoint: https (http only on a loopback address).
    pub url: Option<String>,
    /// A header carrying the credential, e.g. `Authorization`.
    pub auth_header_name: Option<String>,
    /// Secret: prefer `IDP_SMS__AUTH_HEADER_VALUE` or `IDP_SMS__AUTH_HEADER_VALUE_FILE`.
    #[serde(deserialize_with = "lenient_string")]
    pub auth_header_value: Option<String>,
    /// The request body; `{to}` and `{text}` are replaced by the number and
    /// the message, escaped for the inside of a JSON string.
    pub body_template: String,
    pub content_type: String,
}

impl Default for SmsSettings {
    fn default() -> Self {
        Self {
            transport: SmsTransport::default(),
            url: None,
            auth_header_name: None,
            auth_header_value: None,
            body_template: idp_sms::DEFAULT_BODY_TEMPLATE.into(),
            content_type: "application/json".into(),
        }
    }
}

impl std::fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsSettings")
            .field("transport", &self.transport)
            .field("url", &self.url.as_ref().map(|_| "[set]"))
            .field("auth_header_name", &self.auth_header_name)
            .field(
                "auth_header_value",
                &self.auth_header_value.as_ref().map(|_| "[redacted]"),
            )
            .field("body_template", &self.body_template)
            .field("content_type", &self.content_type)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransport {
    #[default]
    Outbox,
    Http,
}

/// A secret that may be all digits: environment variables and `_FILE`
/// values that read as numbers arrive as numbers.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Signed(i64),
        Unsigned(u64),
        Float(f64),
        Flag(bool),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Text(s) => s,
        Raw::Signed(n) => n.to_string(),
        Raw::Unsigned(n) => n.to_string(),
        Raw::Float(n) => n.to_string(),
        Raw::Flag(b) => b.to_string(),
    }))
}

/// Checks `[accounts]`; the error starts with the field (under `accounts.`).
fn check_accounts(a: &idp_core::accounts::AccountSettings) -> Result<(), String> {
    a.password_policy.validate()?;
    let ranges: [(&str, u64, u64, u64); 6] = [
        ("invite_link_hours", a.invite_link_hours.into(), 1, 24 * 30),
        (
            "reset_link_minutes",
            a.reset_link_minutes.into(),
            1,
            24 * 60,
        ),
        (
            "email_change_code_minutes",
            a.email_change_code_minutes.into(),
            1,
            60,
        ),
        (
            "recovery_max_per_ip",
            a.recovery_max_per_ip.into(),
            1,
            1_000_000,
        ),
        (
            "recovery_max_per_account",
            a.recovery_max_per_account.into(),
            1,
            1000,
        ),
        (
            "challenge_max_number",
            a.challenge_max_number,
            1,
            10_000_000,
        ),
    ];
    for (name, v, lo, hi) in ranges {
        if !(lo..=hi).contains(&v) {
            return Err(format!("{name}: must be between {lo} and {hi}, not {v}"));
        }
    }
    if a.recovery_window_secs == 0 {
        return Err("recovery_window_secs: must be positive".into());
    }
    Ok(())
}

/// Checks a client file's `[account]`; the error starts with the field.
fn check_client_account(a: &idp_core::client::ClientAccountSettings) -> Result<(), String> {
    a.password_policy.validate()?;
    if let Some(m) = a.reset_link_minutes
        && !(1..=24 * 60).contains(&m)
    {
        return Err(format!(
            "reset_link_minutes: must be between 1 and 1440, not {m}"
        ));
    }
    if a.auth_kind.is_empty()
        || a.auth_kind.len() > 32
        || !a
            .auth_kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("auth_kind: 1 to 32 lower-case letters, digits, '-' or '_'".into());
    }
    Ok(())
}

/// Checks `[mail]` and `[sms]`; the error starts with the field.
fn check_delivery(mail: &MailSettings, sms: &SmsSettings) -> Result<(), String> {
    if let Some(from) = &mail.from {
        idp_mail::parse_from(from).map_err(|e| format!("mail.from: {e}"))?;
    }
    if mail.smtp_username.is_some() != mail.smtp_password.is_some() {
        return Err("mail.smtp_username, mail.smtp_password: set both or neither".into());
    }
    if mail.smtp_port == Some(0) {
        return Err("mail.smtp_port: must be between 1 and 65535".into());
    }
    if mail.transport == MailTransport::Smtp {
        if mail.from.is_none() {
            return Err("mail.from: required with transport = \"smtp\"".into());
        }
        let host = mail.smtp_host.as_deref().unwrap_or_default();
        if host.is_empty() {
            return Err("mail.smtp_host: required with transport = \"smtp\"".into());
        }
        if host.contains(['/', ':', ' ', '@']) && !host.starts_with('[') {
            return Err(format!(
                "mail.smtp_host: {host:?} must be a host name or IP address, without scheme or port (see smtp_port)"
            ));
        }
        let is_local = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if mail.smtp_tls == SmtpTlsMode::None && mail.smtp_password.is_some() && !is_local {
            return Err(
                "mail.smtp_tls: \"none\" would send the SMTP password in clear text to a remote host; use \"starttls\" or \"tls\"".into(),
            );
        }
    }
    if sms.auth_header_name.is_some() != sms.auth_header_value.is_some() {
        return Err("sms.auth_header_name, sms.auth_header_value: set both or neither".into());
    }
    if let Some(name) = &sms.auth_header_name
        && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
    {
        return Err(format!(
            "sms.auth_header_name: {name:?} is not a valid HTTP header name"
        ));
    }
    if let Some(value) = &sms.auth_header_value
        && reqwest::header::HeaderValue::from_str(value).is_err()
    {
        return Err("sms.auth_header_value: not a valid HTTP header value".into());
    }
    if reqwest::header::HeaderValue::from_str(&sms.content_type).is_err() {
        return Err(format!(
            "sms.content_type: {:?} is not a valid HTTP header value",
            sms.content_type
        ));
    }
    if !(sms.body_template.contains("{to}") && sms.body_template.contains("{text}")) {
        return Err("sms.body_template: must contain the {to} and {text} placeholders".into());
    }
    if sms.transport == SmsTransport::Http {
        let Some(url) = &sms.url else {
            return Err("sms.url: required with transport = \"http\"".into());
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("sms.url: {e}"))?;
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && is_loopback(&parsed)) {
            return Err(
                "sms.url: must be an https URL (http is allowed only on a loopback address)".into(),
            );
        }
        if parsed.fragment().is_some() {
            return Err("sms.url: must not have a fragment".into());
        }
    }
    Ok(())
}

/// Settings after loading, with paths resolved and derived values filled.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub settings: Settings,
    /// The config file read, if any.
    pub source: Option<PathBuf>,
    pub issuer: String,
    pub database_url: String,
    pub clients_dir: Option<PathBuf>,
    pub themes_dir: Option<PathBuf>,
    /// The declared assurance levels, checked.
    pub levels: idp_core::assurance::Levels,
}

/// Loads the configuration. `explicit` is `--config`/`IDP_CONFIG`: it must
/// exist. Without it, `config/idp.toml` is read if present, else defaults.
pub fn load(explicit: Option<&Path>) -> anyhow::Result<LoadedConfig> {
    let (path, must_exist) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("config/idp.toml"), false),
    };
    let exists = path.is_file();
    if must_exist && !exists {
        bail!("{}: config file not found", path.display());
    }
    let mut fig = Figment::from(Serialized::defaults(Settings::default()));
    if exists {
        fig = fig.merge(Toml::file_exact(&path));
    }
    fig = fig.merge(
        Env::prefixed("IDP_")
            .split("__")
            .filter(|k| is_setting_variable(k.as_str())),
    );
    // Secrets keep their exact text: figment reads `000123` as the number 123.
    for key in VERBATIM_SETTINGS {
        let var = format!("IDP_{}", key.to_ascii_uppercase().replace('.', "__"));
        if let Ok(v) = std::env::var(&var) {
            fig = fig.merge((key, v));
        }
    }
    for (k, v) in std::env::vars() {
        if let Some(name) = k.strip_prefix("IDP_").and_then(|n| n.strip_suffix("_FILE")) {
            let value =
                std::fs::read_to_string(&v).with_context(|| format!("{k}: cannot read {v}"))?;
            let key = name.to_ascii_lowercase().replace("__", ".");
            let value = if VERBATIM_SETTINGS.contains(&key.as_str()) {
                figment::value::Value::from(value.trim().to_owned())
            } else {
                file_value(value.trim())
            };
            fig = fig.merge((key, value));
        }
    }
    let settings: Settings = fig.extract().map_err(|e| {
        let file = if exists {
            path.display().to_string()
        } else {
            "configuration".into()
        };
        anyhow!("{file}: {e}")
    })?;
    resolve(settings, exists.then_some(path))
}

/// Settings read as text from `IDP_*` variables and files, never as numbers.
const VERBATIM_SETTINGS: [&str; 3] = [
    "mail.smtp_password",
    "sms.auth_header_value",
    "company_registry.api_key",
];

/// `IDP_*` variables that are not settings: the config path, the log filter,
/// the test suite's URLs, and `*_FILE` indirections (read separately).
fn is_setting_variable(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !(k == "config" || k == "log" || k.starts_with("test_") || k.ends_with("_file"))
}

/// A value read from an `IDP_*_FILE` file: a number or boolean when it reads
/// as one (for numeric settings), else the text.
fn file_value(text: &str) -> figment::value::Value {
    use figment::value::Value;
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    match text {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => Value::from(text.to_owned()),
    }
}

fn resolve(settings: Settings, source: Option<PathBuf>) -> anyhow::Result<LoadedConfig> {
    let where_ = source
        .as_ref()
        .map_or_else(|| "configuration".to_owned(), |p| p.display().to_string());
    let base = source
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let issuer = settings
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.listen));
    let issuer = issuer.trim_end_matches('/').to_owned();
    let parsed = url::Url::parse(&issuer).map_err(|e| anyhow!("{where_}: issuer: {e}"))?;
    if parsed.scheme() != "https" && !(parsed.scheme() == "http" && is_loopback(&parsed)) {
        bail!(
            "{where_}: issuer: must be an https URL (http is allowed only on a loopback address)"
        );
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        bail!("{where_}: issuer: must not have a query or fragment");
    }
    let database_url = match &settings.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}/idp.db?mode=rwc", settings.data_dir.display()),
    };
    if !(database_url.starts_with("sqlite:")
        || database_url.starts_with("postgres://")
        || database_url.starts_with("postgresql://"))
    {
        bail!("{where_}: database_url: must start with sqlite:, postgres:// or postgresql://");
    }
    if let Some(r) = &settings.redis_url
        && !(r.starts_with("redis://") || r.starts_with("rediss://"))
    {
        bail!("{where_}: redis_url: must start with redis:// or rediss://");
    }
    if database_url.starts_with("postgres") && settings.key_encryption_key.is_none() {
        bail!(
            "{where_}: key_encryption_key: required with PostgreSQL (every node must share it); generate one with `idp keys new-kek`"
        );
    }
    if let Some(k) = &settings.key_encryption_key {
        idp_core::secret::KeyEncryptionKey::parse(k)
            .map_err(|e| anyhow!("{where_}: key_encryption_key: {e}"))?;
    }
    if idp_core::steps::webauthn::UserVerification::parse(
        &settings.login_methods.webauthn_user_verification,
    )
    .is_none()
    {
        bail!(
            "{where_}: login_methods.webauthn_user_verification: must be \"required\", \"preferred\" or \"discouraged\""
        );
    }
    if !matches!(settings.log_format.as_str(), "text" | "json") {
        bail!("{where_}: log_format: must be \"text\" or \"json\"");
    }
    check_accounts(&settings.accounts).map_err(|e| anyhow!("{where_}: accounts.{e}"))?;
    let sfx = &settings.customer_id_suffix;
    if sfx.is_empty()
        || sfx.len() > 16
        || !sfx
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        bail!("{where_}: customer_id_suffix: 1 to 16 lower-case letters or digits");
    }
    if settings.session_lifetime_secs < 60 || settings.login_flow_lifetime_secs < 60 {
        bail!("{where_}: session_lifetime_secs and login_flow_lifetime_secs: at least 60");
    }
    if settings.throttle.account_max_failures == 0
        || settings.throttle.ip_max_failures == 0
        || settings.throttle.window_secs == 0
    {
        bail!("{where_}: throttle: limits and window must be positive");
    }
    idp_core::password::PasswordHasher::new(settings.password)
        .map_err(|e| anyhow!("{where_}: password: {e}"))?;
    check_delivery(&settings.mail, &settings.sms).map_err(|e| anyhow!("{where_}: {e}"))?;
    settings
        .webhook_delivery
        .check()
        .map_err(|e| anyhow!("{where_}: webhook_delivery.{e}"))?;
    let levels = idp_core::assurance::Levels::from_specs(&settings.assurance_levels)
        .map_err(|e| anyhow!("{where_}: {e}"))?;
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    // With a config file, its clients folder must exist; with built-in
    // defaults only (no file), a missing `./clients` means no clients.
    let clients_path = rel(&settings.clients_dir);
    if source.is_some() && !clients_path.is_dir() {
        bail!(
            "{where_}: clients_dir: {} is not a folder",
            clients_path.display()
        );
    }
    let clients_dir = Some(clients_path).filter(|p| p.is_dir());
    let themes_dir = settings.themes_dir.as_deref().map(rel);
    if let Some(t) = &themes_dir
        && !t.is_dir()
    {
        bail!("{where_}: themes_dir: {} is not a folder", t.display());
    }
    let loaded = LoadedConfig {
        settings,
        source,
        issuer,
        database_url,
        clients_dir,
        themes_dir,
        levels,
    };
    parse_upstreams(&loaded).map_err(|e| anyhow!("{where_}: {e}"))?;
    if loaded.settings.token_exchange.max_token_secs == 0 {
        bail!("{where_}: token_exchange.max_token_secs: must be positive");
    }
    parse_resource_servers(&loaded).map_err(|e| anyhow!("{where_}: {e}"))?;
    Ok(loaded)
}

pub(crate) fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// One relying party's file (`clients/<name>.toml`). See `config/README.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    pub client_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ClientKind,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default = "default_grants")]
    pub grant_types: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_theme")]
    pub theme: String,
    #[serde(default)]
    pub access_token_format: TokenFormat,
    /// ID tokens: RS256 unless named (OpenID Connect Dynamic Client
    /// Registration 1.0 §2, `id_token_signed_response_alg`).
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    /// JWT access tokens: ES256 unless named (cheaper to sign, on the token
    /// endpoint's hot path).
    #[serde(default)]
    pub access_token_signed_response_alg: Option<String>,
    #[serde(default)]
    pub require_pkce: bool,
    /// Response modes besides `query` the client may ask for: `form_post`,
    /// `jwt` / `query.jwt`, `form_post.jwt` (JARM).
    #[serde(default)]
    pub response_modes: Vec<String>,
    /// JARM responses: RS256 unless named (JARM §3).
    #[serde(default)]
    pub authorization_signed_response_alg: Option<String>,
    /// How it authenticates at the back-channel endpoints:
    /// `client_secret_basic` (the default of a confidential client; the
    /// secret by Basic or in the form), `client_secret_post` (the same),
    /// `private_key_jwt`, `client_secret_jwt`, `none` (public clients).
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// Its public keys, as a JWK Set (an inline table, or its JSON text).
    #[serde(default)]
    pub jwks: Option<toml::Value>,
    /// Where its public keys are published (fetched and cached).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Authorization requests only through the PAR endpoint (RFC 9126 §5).
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// Its access tokens are bound to a DPoP key (RFC 9449 §5.2).
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    /// Its DPoP proofs must carry a server-provided nonce (RFC 9449 §8).
    #[serde(default)]
    pub require_dpop_nonce: bool,
    /// `fapi2`: the FAPI 2.0 Security Profile (see config/README.md).
    #[serde(default)]
    pub security_profile: Option<String>,
    /// `public` (default) or `pairwise` (OpenID Connect Core §8).
    #[serde(default)]
    pub subject_type: Option<String>,
    /// A pairwise client's sector: an https URL of a JSON array of its
    /// redirect URIs (OpenID Connect Core §8.1), fetched at start-up.
    #[serde(default)]
    pub sector_identifier_uri: Option<String>,
    /// `client_secret_jwt`: an environment variable holding the secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `client_secret_jwt`: a file holding the secret (relative paths are
    /// from the client file's folder).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub lifetimes: LifetimesFile,
    /// The login flows (`[[login.flows]]`); none means identifier then password.
    #[serde(default)]
    pub login: LoginFile,
    /// `[account]`: journeys offered around login, password policy.
    #[serde(default)]
    pub account: idp_core::client::ClientAccountSettings,
    /// `[[webhooks]]`: endpoints of this platform told about accounts.
    #[serde(default)]
    pub webhooks: Vec<WebhookFile>,
    /// Back-Channel Logout 1.0: where logout tokens are POSTed.
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    #[serde(default)]
    pub backchannel_logout_session_required: bool,
    /// Front-Channel Logout 1.0: loaded in an iframe of the logout page.
    #[serde(default)]
    pub frontchannel_logout_uri: Option<String>,
    #[serde(default)]
    pub frontchannel_logout_session_required: bool,
}

/// One `[[webhooks]]` entry of a client file. The secret is never written in
/// the file itself: it comes from an environment variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// https (http only on a loopback address).
    pub url: String,
    /// An environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file holding the signing secret (relative paths are from the client
    /// file's folder).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Event types (`user.created`, ...).
    pub events: Vec<String>,
}

/// `[login]` of a client file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFile {
    #[serde(default)]
    pub flows: Vec<idp_core::policy::FlowSpec>,
    /// How long a single sign-on session's proofs may be relied on by this
    /// client's flows (seconds); default: as long as the session lasts.
    #[serde(default)]
    pub reuse_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Confidential,
    Public,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    #[default]
    Jwt,
    Opaque,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifetimesFile {
    pub authorization_code_secs: u32,
    pub access_token_secs: u32,
    pub id_token_secs: u32,
    pub refresh_token_secs: u32,
}

impl Default for LifetimesFile {
    fn default() -> Self {
        let d = Lifetimes::default();
        Self {
            authorization_code_secs: d.authorization_code,
            access_token_secs: d.access_token,
            id_token_secs: d.id_token,
            refresh_token_secs: d.refresh_token,
        }
    }
}

fn default_grants() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_theme() -> String {
    "default".into()
}
/// OpenID Connect Dynamic Client Registration 1.0 §2: "The default, if
/// omitted, is RS256", which every relying-party library supports.
fn default_id_token_alg() -> String {
    "RS256".into()
}
/// RFC 9068 leaves the algorithm to the provider; an ES256 signature costs a
/// fraction of an RS256 (2048-bit) one and is shorter.
fn default_access_token_alg() -> String {
    "ES256".into()
}

/// Reads every `*.toml` in the folder (sorted by name).
pub fn load_clients(dir: Option<&Path>, levels: &Levels) -> anyhow::Result<ClientRegistry> {
    Ok(ClientRegistry::new(
        load_client_files(dir, levels)?.into_iter().map(|(_, c)| c),
    ))
}

/// The `*.toml` files of the clients folder, sorted by name.
fn client_file_paths(dir: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read clients folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Like [`load_clients`], with the file each client comes from (in name
/// order), for messages that name the file.
pub fn load_client_files(
    dir: Option<&Path>,
    levels: &Levels,
) -> anyhow::Result<Vec<(PathBuf, Client)>> {
    let mut loaded: Vec<(PathBuf, Client)> = Vec::new();
    for f in client_file_paths(dir)? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        let parsed: ClientFile =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let base = f.parent().unwrap_or_else(|| Path::new("."));
        parse_webhooks(&parsed, base).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let jwt_secret =
            read_client_jwt_secret(&parsed, base).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let mut client =
            parse_client(parsed, levels).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        client.protocol.jwt_secret = jwt_secret.map(Arc::new);
        if let Some(p) = &mut client.protocol.pairwise {
            p.declared_in = f.display().to_string();
        }
        if loaded.iter().any(|(_, c)| c.id == client.id) {
            bail!(
                "{}: client_id: {} is already registered by another file",
                f.display(),
                client.id
            );
        }
        loaded.push((f, client));
    }
    Ok(loaded)
}

/// The webhook endpoints of every client file of the folder (in file name
/// order), with their secrets read; errors name the file and the field.
pub fn load_webhooks(dir: Option<&Path>) -> anyhow::Result<Vec<WebhookEndpoint>> {
    let mut out = Vec::new();
    let Some(dir) = dir else {
        return Ok(out);
    };
    for f in client_file_paths(Some(dir))? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("{}: cannot read", f.display()))?;
        let parsed: ClientFile =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let base = f.parent().unwrap_or_else(|| Path::new("."));
        out.extend(parse_webhooks(&parsed, base).map_err(|e| anyhow!("{}: {e}", f.display()))?);
    }
    Ok(out)
}

/// The checked `[[webhooks]]` of a client file, secrets read (`secret_file`
/// relative to `base`); errors start with the field (`webhooks[0].url: ...`)
/// and never contain the secret.
pub fn parse_webhooks(f: &ClientFile, base: &Path) -> anyhow::Result<Vec<WebhookEndpoint>> {
    use idp_core::webhooks::{WebhookEventType, WebhookSecret};
    let mut out: Vec<WebhookEndpoint> = Vec::new();
    for (i, w) in f.webhooks.iter().enumerate() {
        let field = |name: &str| format!("webhooks[{i}].{name}");
        let url = url::Url::parse(&w.url)
            .map_err(|e| anyhow!("{}: {:?} is not an absolute URL ({e})", field("url"), w.url))?;
        if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)) {
            bail!(
                "{}: must be an https URL (http is allowed only on a loopback address)",
                field("url")
            );
        }
        if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            bail!("{}: must have no fragment and no credentials", field("url"));
        }
        if out.iter().any(|e| e.url == w.url) {
            bail!("{}: {} is listed twice", field("url"), w.url);
        }
        if w.events.is_empty() {
            bail!("{}: at least one event type is needed", field("events"));
        }
        let mut events = std::collections::BTreeSet::new();
        for (j, e) in w.events.iter().enumerate() {
            let t = WebhookEventType::parse(e).ok_or_else(|| {
                anyhow!(
                    "{}[{j}]: unknown event type {e:?} (expected one of {})",
                    field("events"),
                    WebhookEventType::ALL.map(|t| t.as_str()).join(", ")
                )
            })?;
            events.insert(t);
        }
        let raw = match (&w.secret_env, &w.secret_file) {
            (Some(var), None) => std::env::var(var).map_err(|_| {
                anyhow!(
                    "{}: the environment variable {var} is not set",
                    field("secret_env")
                )
            })?,
            (None, Some(path)) => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base.join(path)
                };
                std::fs::read_to_string(&path).map_err(|e| {
                    anyhow!(
                        "{}: cannot read {} ({e})",
                        field("secret_file"),
                        path.display()
                    )
                })?
            }
            _ => bail!(
                "{}: set exactly one of secret_env and secret_file (the secret itself never goes in the file)",
                field("secret_env")
            ),
        };
        let secret = WebhookSecret::parse(&raw).map_err(|e| {
            let name = if w.secret_env.is_some() {
                "secret_env"
            } else {
                "secret_file"
            };
            anyhow!("{}: the secret {e}", field(name))
        })?;
        out.push(WebhookEndpoint {
            client_id: ClientId(f.client_id.clone()),
            url: w.url.clone(),
            events,
            secret,
        });
    }
    Ok(out)
}

/// Turns a client file into a checked [`Client`]; errors name the field.
pub fn parse_client(f: ClientFile, levels: &Levels) -> anyhow::Result<Client> {
    if f.client_id.is_empty()
        || f.client_id.len() > 64
        || !f
            .client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        bail!("client_id: 1 to 64 characters among letters, digits, '-', '.', '_'");
    }
    if f.name.trim().is_empty() {
        bail!("name: must not be empty");
    }
    let auth_method = match (f.kind, f.token_endpoint_auth_method.as_deref()) {
        (ClientKind::Public, None | Some("none")) => TokenEndpointAuthMethod::None,
        (ClientKind::Public, Some(m)) => {
            bail!("token_endpoint_auth_method: a public client has no credentials (none), not {m}")
        }
        (ClientKind::Confidential, None | Some("client_secret_basic")) => {
            TokenEndpointAuthMethod::ClientSecretBasic
        }
        (ClientKind::Confidential, Some("client_secret_post")) => {
            TokenEndpointAuthMethod::ClientSecretPost
        }
        (ClientKind::Confidential, Some("private_key_jwt")) => {
            TokenEndpointAuthMethod::PrivateKeyJwt
        }
        (ClientKind::Confidential, Some("client_secret_jwt")) => {
            TokenEndpointAuthMethod::ClientSecretJwt
        }
        (ClientKind::Confidential, Some(m)) => bail!(
            "token_endpoint_auth_method: {m:?} is not one of client_secret_basic, client_secret_post, private_key_jwt, client_secret_jwt (none is for public clients)"
        ),
    };
    let secret_hash = match (auth_method, &f.secret_hash) {
        (
            TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost,
            Some(h),
        ) => Some(ClientSecretHash::parse(h).ok_or_else(|| {
            anyhow!(
                "secret_hash: expected \"sha256:<base64url>\" as printed by `idp client secret`"
            )
        })?),
        (
            TokenEndpointAuthMethod::ClientSecretBasic | TokenEndpointAuthMethod::ClientSecretPost,
            None,
        ) => bail!(
            "secret_hash: required for a confidential client that authenticates with a secret"
        ),
        (TokenEndpointAuthMethod::None, Some(_)) => {
            bail!("secret_hash: a public client has no secret")
        }
        (m, Some(_)) => bail!(
            "secret_hash: not used with token_endpoint_auth_method = {:?}; remove it",
            m.as_str()
        ),
        (_, None) => None,
    };
    let keys = parse_client_keys(&f)?;
    if auth_method == TokenEndpointAuthMethod::PrivateKeyJwt && keys.is_none() {
        bail!("jwks: private_key_jwt needs the client's public keys: set jwks or jwks_uri");
    }
    let secret_sources = f.client_secret_env.is_some() as u8 + f.client_secret_file.is_some() as u8;
    match (auth_method, secret_sources) {
        (TokenEndpointAuthMethod::ClientSecretJwt, 1) | (_, 0) => {}
        (TokenEndpointAuthMethod::ClientSecretJwt, _) => bail!(
            "client_secret_env: set exactly one of client_secret_env and client_secret_file for client_secret_jwt"
        ),
        (_, _) => bail!(
            "client_secret_env: only client_secret_jwt reads a secret (others use secret_hash)"
        ),
    }
    if auth_method == TokenEndpointAuthMethod::ClientSecretJwt && secret_sources == 0 {
        bail!(
            "client_secret_env: client_secret_jwt needs the secret itself: set client_secret_env or client_secret_file"
        );
    }
    let mut grants = (false, false, false);
    let mut token_exchange = false;
    let mut device_code = false;
    for g in &f.grant_types {
        match g.as_str() {
            idp_core::oidc::device::DEVICE_CODE_GRANT => device_code = true,
            "authorization_code" => grants.0 = true,
            "refresh_token" => grants.1 = true,
            "client_credentials" => grants.2 = true,
            idp_core::oidc::token::TOKEN_EXCHANGE => token_exchange = true,
            "password" | "implicit" => {
                bail!("grant_types: {g} is not supported (RFC 9700 §2.4, §2.1.2)")
            }
            other => bail!("grant_types: unknown grant type {other:?}"),
        }
    }
    if grants.2 && f.kind == ClientKind::Public {
        bail!("grant_types: a public client cannot use client_credentials");
    }
    if token_exchange && f.kind == ClientKind::Public {
        bail!(
            "grant_types: a public client cannot use token exchange (RFC 8693 needs client authentication)"
        );
    }
    if grants.0 && f.redirect_uris.is_empty() {
        bail!("redirect_uris: at least one is needed for authorization_code");
    }
    for (i, u) in f.redirect_uris.iter().enumerate() {
        check_redirect(u).map_err(|e| anyhow!("redirect_uris[{i}]: {e}"))?;
    }
    for (i, u) in f.post_logout_redirect_uris.iter().enumerate() {
        check_redirect(u).map_err(|e| anyhow!("post_logout_redirect_uris[{i}]: {e}"))?;
    }
    for (i, s) in f.scopes.iter().enumerate() {
        if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            bail!("scopes[{i}]: not a valid scope token");
        }
    }
    let fapi2 = match f.security_profile.as_deref() {
        None => false,
        Some("fapi2") => true,
        Some(other) => bail!("security_profile: unknown profile {other:?} (expected fapi2)"),
    };
    // FAPI 2.0 Security Profile §5.4.1: PS256, ES256 or EdDSA only; ES256 is
    // the one the provider signs with, and the default under the profile.
    let alg = |key: &str, value: &Option<String>, default: fn() -> String| {
        let value = match value {
            Some(v) => v.clone(),
            None if fapi2 => "ES256".to_owned(),
            None => default(),
        };
        let parsed =
            SigningAlg::parse(&value).ok_or_else(|| anyhow!("{key}: must be ES256 or RS256"))?;
        if fapi2 && parsed != SigningAlg::ES256 {
            bail!("{key}: security_profile = \"fapi2\" signs with ES256 only (FAPI 2.0 §5.4.1)");
        }
        Ok::<_, anyhow::Error>(parsed)
    };
    let id_token_alg = alg(
        "id_token_signed_response_alg",
        &f.id_token_signed_response_alg,
        default_id_token_alg,
    )?;
    let access_token_alg = alg(
        "access_token_signed_response_alg",
        &f.access_token_signed_response_alg,
        default_access_token_alg,
    )?;
    let authorization_signed_response_alg = alg(
        "authorization_signed_response_alg",
        &f.authorization_signed_response_alg,
        default_id_token_alg,
    )?;
    if fapi2 {
        // FAPI 2.0 Security Profile §5.3.1.1 items 1 and 7, §5.3.2.1 items
        // 1 and 2, §5.3.2.2 item 3.
        if auth_method != TokenEndpointAuthMethod::PrivateKeyJwt {
            bail!(
                "token_endpoint_auth_method: security_profile = \"fapi2\" needs a confidential client with private_key_jwt"
            );
        }
        if f.lifetimes.authorization_code_secs > 60 {
            bail!(
                "lifetimes.authorization_code_secs: at most 60 with security_profile = \"fapi2\" (FAPI 2.0 §5.3.2.1)"
            );
        }
    }
    if f.require_dpop_nonce && !(f.dpop_bound_access_tokens || fapi2) {
        bail!("require_dpop_nonce: only for a client with dpop_bound_access_tokens = true");
    }
    check_client_account(&f.account).map_err(|e| anyhow!("account.{e}"))?;
    let pairwise = parse_subject_type(&f)?;
    let mut response_modes = std::collections::BTreeSet::new();
    for (i, m) in f.response_modes.iter().enumerate() {
        let mode = ResponseMode::parse(m).ok_or_else(|| {
            anyhow!(
                "response_modes[{i}]: unknown response mode {m:?} (expected query, form_post, jwt, query.jwt or form_post.jwt)"
            )
        })?;
        if mode != ResponseMode::Query {
            response_modes.insert(mode);
        }
    }
    let l = f.lifetimes;
    if l.authorization_code_secs == 0 || l.authorization_code_secs > 600 {
        bail!("lifetimes.authorization_code_secs: between 1 and 600");
    }
    for (name, v) in [
        ("access_token_secs", l.access_token_secs),
        ("id_token_secs", l.id_token_secs),
        ("refresh_token_secs", l.refresh_token_secs),
    ] {
        if v == 0 {
            bail!("lifetimes.{name}: must be positive");
        }
    }
    let logout = crate::logout_channels::parse_client_channels(&f)?;
    Ok(Client {
        id: ClientId(f.client_id),
        name: f.name,
        auth_method,
        secret_hash,
        redirect_uris: f.redirect_uris,
        post_logout_redirect_uris: f.post_logout_redirect_uris,
        allow_authorization_code: grants.0,
        allow_refresh_token: grants.1,
        allow_client_credentials: grants.2,
        scopes: f.scopes.into_iter().collect(),
        theme: f.theme,
        access_token_format: match f.access_token_format {
            TokenFormat::Jwt => AccessTokenFormat::Jwt,
            TokenFormat::Opaque => AccessTokenFormat::Opaque,
        },
        id_token_alg,
        access_token_alg,
        require_pkce: f.require_pkce || fapi2,
        login: idp_core::policy::LoginPolicy {
            reuse_secs: f.login.reuse_secs,
            ..idp_core::policy::parse_policy(&f.login.flows, &idp_core::steps::registry(), levels)
                .map_err(|e| anyhow!("login.{e}"))?
        },
        account: f.account,
        protocol: idp_core::client::ProtocolSettings {
            response_modes,
            authorization_signed_response_alg,
            keys,
            // Read by `read_client_jwt_secret`, which knows the file's folder.
            jwt_secret: None,
            require_par: f.require_pushed_authorization_requests || fapi2,
            dpop_bound: f.dpop_bound_access_tokens || fapi2,
            require_dpop_nonce: f.require_dpop_nonce,
            fapi2,
            logout,
            token_exchange,
            pairwise,
            allow_device_code: device_code,
        },
        lifetimes: Lifetimes {
            authorization_code: l.authorization_code_secs,
            access_token: l.access_token_secs,
            id_token: l.id_token_secs,
            refresh_token: l.refresh_token_secs,
        },
    })
}

/// `subject_type` and `sector_identifier_uri` (OpenID Connect Core §8.1):
/// a pairwise client's sector is the host of its `sector_identifier_uri`
/// (https; http only on loopback, as redirect URIs), else the one host of
/// its redirect URIs; several hosts need a `sector_identifier_uri`. The
/// document itself is fetched and checked at start-up (see
/// `crate::sectors`).
fn parse_subject_type(f: &ClientFile) -> anyhow::Result<Option<idp_core::client::PairwiseSubject>> {
    match f.subject_type.as_deref() {
        None | Some("public") => {
            if f.sector_identifier_uri.is_some() {
                bail!("sector_identifier_uri: only for subject_type = \"pairwise\"");
            }
            return Ok(None);
        }
        Some("pairwise") => {}
        Some(other) => bail!("subject_type: {other:?} is not \"public\" or \"pairwise\""),
    }
    let sector = match &f.sector_identifier_uri {
        Some(uri) => {
            let p = url::Url::parse(uri).map_err(|e| {
                anyhow!("sector_identifier_uri: {uri:?} is not an absolute URL ({e})")
            })?;
            match p.scheme() {
                "https" => {}
                "http" if is_loopback(&p) => {}
                _ => bail!(
                    "sector_identifier_uri: {uri:?} must use https (http only for loopback addresses)"
                ),
            }
            if p.fragment().is_some() {
                bail!("sector_identifier_uri: {uri:?} must not have a fragment");
            }
            p.host_str()
                .ok_or_else(|| anyhow!("sector_identifier_uri: {uri:?} has no host"))?
                .to_owned()
        }
        None => {
            let mut hosts: Vec<String> = f
                .redirect_uris
                .iter()
                .filter_map(|u| url::Url::parse(u).ok()?.host_str().map(str::to_owned))
                .collect();
            hosts.sort();
            hosts.dedup();
            match hosts.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "subject_type: a pairwise client needs redirect_uris with a host, or a sector_identifier_uri"
                ),
                many => bail!(
                    "sector_identifier_uri: required for a pairwise client whose redirect_uris have several hosts ({})",
                    many.join(", ")
                ),
            }
        }
    };
    Ok(Some(idp_core::client::PairwiseSubject {
        sector,
        sector_identifier_uri: f.sector_identifier_uri.clone(),
        declared_in: format!("client {}", f.client_id),
    }))
}

/// `jwks` (an inline table or JSON text) or `jwks_uri`, at most one.
fn parse_client_keys(f: &ClientFile) -> anyhow::Result<Option<ClientKeySource>> {
    match (&f.jwks, &f.jwks_uri) {
        (Some(_), Some(_)) => bail!("jwks: set jwks or jwks_uri, not both"),
        (Some(v), None) => {
            let json = match v {
                toml::Value::String(text) => text.clone(),
                other => serde_json::to_string(other).map_err(|e| anyhow!("jwks: {e}"))?,
            };
            let keys = ClientKeys::from_jwks(&json).map_err(|e| anyhow!("jwks: {e}"))?;
            if keys.is_empty() {
                bail!("jwks: no usable signing key (EC P-256 or RSA of 2048 bits or more)");
            }
            Ok(Some(ClientKeySource::Inline(Arc::new(keys))))
        }
        (None, Some(uri)) => {
            check_redirect(uri).map_err(|e| anyhow!("jwks_uri: {e}"))?;
            Ok(Some(ClientKeySource::Remote(uri.clone())))
        }
        (None, None) => Ok(None),
    }
}

/// The secret of a `client_secret_jwt` client, read from
/// `client_secret_env` or `client_secret_file` (relative to `base`, the
/// client file's folder); at least 32 bytes (HS256's key size).
pub fn read_client_jwt_secret(f: &ClientFile, base: &Path) -> anyhow::Result<Option<Secret>> {
    let raw = match (&f.client_secret_env, &f.client_secret_file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| anyhow!("client_secret_env: the environment variable {var} is not set"))?,
        (None, Some(path)) => {
            let path = if path.is_absolute() {
                path.clone()
            } else {
                base.join(path)
            };
            std::fs::read_to_string(&path)
                .map_err(|e| anyhow!("client_secret_file: cannot read {} ({e})", path.display()))?
        }
        _ => return Ok(None),
    };
    let secret = raw.trim_end_matches(['\r', '\n']);
    if secret.len() < 32 {
        let field = if f.client_secret_env.is_some() {
            "client_secret_env"
        } else {
            "client_secret_file"
        };
        bail!("{field}: the secret has fewer than 32 bytes (HS256 needs 32)");
    }
    Ok(Some(Secret::new(secret)))
}

/// RFC 9700 §2.6 / RFC 6749 §3.1.2: absolute, no fragment, https (http only on loopback).
fn check_redirect(u: &str) -> anyhow::Result<()> {
    let p = url::Url::parse(u).map_err(|e| anyhow!("{u:?} is not an absolute URL ({e})"))?;
    if p.fragment().is_some() {
        bail!("{u:?} must not have a fragment");
    }
    match p.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&p) => Ok(()),
        "http" => bail!("{u:?}: http is allowed only for loopback addresses; use https"),
        // Private-use schemes of native apps (RFC 8252 §7.1) contain a dot.
        s if s.contains('.') => Ok(()),
        s => bail!("{u:?}: scheme {s} is not allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a client file made of a minimal public client plus `extra`
    /// (which may replace the redirect URIs); errors as the loader reports them.
    fn file(extra: &str) -> Result<Client, String> {
        let redirect = if extra.starts_with("redirect_uris") {
            ""
        } else {
            "redirect_uris = [\"https://rp.example/cb\"]\n"
        };
        let text = format!(
            "client_id = \"portal\"\nname = \"Portal\"\ntype = \"public\"\n{redirect}{extra}"
        );
        let f: ClientFile = toml::from_str(&text).map_err(|e| e.to_string())?;
        parse_client(f, &Levels::builtin()).map_err(|e| e.to_string())
    }

    /// A confidential client file with `extra` (no secret unless given).
    fn confidential(extra: &str) -> Result<Client, String> {
        let text = format!(
            "client_id = \"portal\"\nname = \"Portal\"\ntype = \"confidential\"\nredirect_uris = [\"https://rp.example/cb\"]\n{extra}"
        );
        let f: ClientFile = toml::from_str(&text).map_err(|e| e.to_string())?;
        parse_client(f, &Levels::builtin()).map_err(|e| e.to_string())
    }

    #[test]
    fn jwt_client_authentication_settings_are_checked() {
        let public_key = r#"{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let hash = "secret_hash = \"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"\n";
        let cases = [
            ("token_endpoint_auth_method = \"private_key_jwt\"", "jwks"),
            (
                &format!(
                    "token_endpoint_auth_method = \"private_key_jwt\"\n{hash}jwks = '{{\"keys\":[{public_key}]}}'"
                ),
                "secret_hash",
            ),
            (
                "token_endpoint_auth_method = \"client_secret_jwt\"",
                "client_secret_env",
            ),
            (
                "token_endpoint_auth_method = \"tls_client_auth\"",
                "token_endpoint_auth_method",
            ),
            (
                "token_endpoint_auth_method = \"private_key_jwt\"\njwks_uri = \"http://rp.example/jwks\"",
                "jwks_uri",
            ),
            (
                "token_endpoint_auth_method = \"private_key_jwt\"\njwks = '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}'",
                "jwks",
            ),
            (
                &format!("{hash}client_secret_env = \"X\""),
                "client_secret_env",
            ),
        ];
        for (extra, field) in cases {
            let err = confidential(extra).unwrap_err();
            assert!(err.starts_with(field), "{extra}: {err}");
        }
        let c = confidential(&format!(
            "token_endpoint_auth_method = \"private_key_jwt\"\njwks = '{{\"keys\":[{public_key}]}}'"
        ))
        .unwrap();
        assert_eq!(c.auth_method, TokenEndpointAuthMethod::PrivateKeyJwt);
        assert!(matches!(c.protocol.keys, Some(ClientKeySource::Inline(_))));
        let c = confidential(
            "token_endpoint_auth_method = \"private_key_jwt\"\njwks_uri = \"https://rp.example/jwks\"",
        )
        .unwrap();
        assert!(matches!(c.protocol.keys, Some(ClientKeySource::Remote(_))));
        let c = confidential(
            "token_endpoint_auth_method = \"client_secret_jwt\"\nclient_secret_env = \"PORTAL_SECRET\"",
        )
        .unwrap();
        assert_eq!(c.auth_method, TokenEndpointAuthMethod::ClientSecretJwt);
        let err = file("token_endpoint_auth_method = \"private_key_jwt\"").unwrap_err();
        assert!(err.starts_with("token_endpoint_auth_method"), "{err}");

        // The secret itself: read from the file, 32 bytes at least.
        let dir = std::env::temp_dir().join(format!("idp-jwt-secret-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("short"), "too short\n").unwrap();
        std::fs::write(dir.join("good"), "0123456789abcdef0123456789abcdef\n").unwrap();
        let with_file = |name: &str| -> ClientFile {
            toml::from_str(&format!(
                "client_id = \"p\"\nname = \"P\"\ntype = \"confidential\"\ntoken_endpoint_auth_method = \"client_secret_jwt\"\nclient_secret_file = \"{name}\""
            ))
            .unwrap()
        };
        let err = read_client_jwt_secret(&with_file("short"), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("client_secret_file"), "{err}");
        let err = read_client_jwt_secret(&with_file("missing"), &dir)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("client_secret_file"), "{err}");
        let s = read_client_jwt_secret(&with_file("good"), &dir)
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "0123456789abcdef0123456789abcdef");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Loads a config file holding `text` (with an empty clients folder);
    /// errors as the loader reports them.
    fn load_settings(text: &str) -> Result<LoadedConfig, String> {
        let dir = std::env::temp_dir().join(format!("idp-config-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("clients")).expect("create folders");
        let path = dir.join("idp.toml");
        std::fs::write(&path, text).expect("write config");
        let loaded = load(Some(&path)).map_err(|e| format!("{e:#}"));
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    #[test]
    fn mail_and_sms_settings_default_to_outboxes_and_errors_name_file_and_field() {
        let ok = load_settings("").expect("defaults are valid");
        assert_eq!(ok.settings.mail.transport, MailTransport::Outbox);
        assert_eq!(ok.settings.sms.transport, SmsTransport::Outbox);

        let smtp = "[mail]\ntransport = \"smtp\"\nfrom = \"Sign-in <no-reply@example.com>\"\n";
        let ok = load_settings(&format!(
            "{smtp}smtp_host = \"smtp.example.com\"\nsmtp_username = \"mailer\"\nsmtp_password = 123456\n"
        ))
        .expect("valid SMTP settings");
        assert_eq!(ok.settings.mail.smtp_password.as_deref(), Some("123456"));
        assert!(
            !format!("{:?}", ok.settings).contains("123456"),
            "password in Debug"
        );
        let ok = load_settings(
            "[sms]\ntransport = \"http\"\nurl = \"https://sms.example/send\"\nauth_header_name = \"Authorization\"\nauth_header_value = \"Bearer t0ken\"\n",
        )
        .expect("valid SMS settings");
        assert!(
            !format!("{:?}", ok.settings).contains("t0ken"),
            "credential in Debug"
        );

        let cases = [
            (
                "[mail]\ntransport = \"smtp\"\nsmtp_host = \"smtp.example.com\"",
                "mail.from: required",
            ),
            (smtp, "mail.smtp_host: required"),
            ("[mail]\nfrom = \"not an address\"", "mail.from:"),
            ("[mail]\ntransport = \"pigeon\"", "pigeon"),
            (
                "[mail]\nsmtp_username = \"mailer\"",
                "mail.smtp_username, mail.smtp_password",
            ),
            ("[mail]\nsmtp_tls = \"ssl\"", "ssl"),
            ("[mail]\nsmtp_hostname = \"x\"", "smtp_hostname"),
            (
                &format!("{smtp}smtp_host = \"smtp://smtp.example.com:25\""),
                "mail.smtp_host:",
            ),
            (
                &format!(
                    "{smtp}smtp_host = \"smtp.example.com\"\nsmtp_tls = \"none\"\nsmtp_username = \"u\"\nsmtp_password = \"p\""
                ),
                "mail.smtp_tls:",
            ),
            ("[sms]\ntransport = \"http\"", "sms.url: required"),
            (
                "[sms]\ntransport = \"http\"\nurl = \"http://sms.example/send\"",
                "sms.url: must be an https URL",
            ),
            (
                "[sms]\nurl = \"not a url\"\ntransport = \"http\"",
                "sms.url:",
            ),
            (
                "[sms]\nauth_header_name = \"Authorization\"",
                "sms.auth_header_name, sms.auth_header_value",
            ),
            (
                "[sms]\nauth_header_name = \"Bad Header\"\nauth_header_value = \"x\"",
                "sms.auth_header_name:",
            ),
            ("[sms]\nbody_template = \"{to}\"", "sms.body_template:"),
            ("[sms]\ncontent_type = \"a\\nb\"", "sms.content_type:"),
            ("[sms]\napi_key = \"x\"", "api_key"),
        ];
        for (text, expected) in cases {
            let error = load_settings(text).expect_err(text);
            assert!(error.contains("idp.toml"), "{text}: {error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
        // Plain SMTP with a password is fine to a relay on this machine.
        load_settings(&format!(
            "{smtp}smtp_host = \"127.0.0.1\"\nsmtp_tls = \"none\"\nsmtp_username = \"u\"\nsmtp_password = \"p\""
        ))
        .expect("loopback relay");
    }

    #[test]
    fn fapi2_profile_implies_its_settings_and_refuses_weaker_ones() {
        let public_key = r#"{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
        let fapi = format!(
            "security_profile = \"fapi2\"\ntoken_endpoint_auth_method = \"private_key_jwt\"\njwks = '{{\"keys\": [{public_key}]}}'\n"
        );
        let c = confidential(&fapi).unwrap();
        assert!(c.protocol.fapi2);
        assert!(c.protocol.require_par && c.protocol.dpop_bound && c.require_pkce);
        assert_eq!(c.id_token_alg, SigningAlg::ES256, "ES256 by default");
        assert_eq!(
            c.protocol.authorization_signed_response_alg,
            SigningAlg::ES256
        );
        assert_eq!(c.lifetimes.authorization_code, 60);
        for (extra, field) in [
            (
                "id_token_signed_response_alg = \"RS256\"",
                "id_token_signed_response_alg",
            ),
            (
                "authorization_signed_response_alg = \"RS256\"",
                "authorization_signed_response_alg",
            ),
            (
                "[lifetimes]\nauthorization_code_secs = 61",
                "lifetimes.authorization_code_secs",
            ),
        ] {
            let err = confidential(&format!("{fapi}{extra}")).unwrap_err();
            assert!(err.starts_with(field), "{extra}: {err}");
        }
        let hash = "secret_hash = \"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"\n";
        let err = confidential(&format!("security_profile = \"fapi2\"\n{hash}")).unwrap_err();
        assert!(err.starts_with("token_endpoint_auth_method"), "{err}");
        let err = file("security_profile = \"fapi2\"").unwrap_err();
        assert!(err.starts_with("token_endpoint_auth_method"), "{err}");
        let err = confidential(&format!("security_profile = \"fapi1\"\n{hash}")).unwrap_err();
        assert!(err.starts_with("security_profile"), "{err}");
        let err = confidential(&format!("require_dpop_nonce = true\n{hash}")).unwrap_err();
        assert!(err.starts_with("require_dpop_nonce"), "{err}");
        let c = confidential(&format!(
            "dpop_bound_access_tokens = true\nrequire_dpop_nonce = true\n{hash}"
        ))
        .unwrap();
        assert!(c.protocol.require_dpop_nonce);
    }

    #[test]
    fn the_device_grant_is_enabled_per_client_and_its_settings_checked() {
        let grant = idp_core::oidc::device::DEVICE_CODE_GRANT;
        let c = file(&format!("grant_types = [\"{grant}\", \"refresh_token\"]")).unwrap();
        assert!(c.protocol.allow_device_code && c.allow_refresh_token);
        assert!(!c.allow_authorization_code, "only the grants named");
        assert!(
            !file("").unwrap().protocol.allow_device_code,
            "off by default"
        );
        let d = idp_core::oidc::device::DeviceSettings::default();
        assert_eq!((d.code_lifetime_secs, d.interval_secs), (600, 5));
        assert!(check_device_settings(d).is_ok());
        for (bad, field) in [
            (
                idp_core::oidc::device::DeviceSettings {
                    interval_secs: 0,
                    ..d
                },
                "device.interval_secs",
            ),
            (
                idp_core::oidc::device::DeviceSettings {
                    interval_secs: 600,
                    ..d
                },
                "device.interval_secs",
            ),
            (
                idp_core::oidc::device::DeviceSettings {
                    user_code_max_failures: 0,
                    ..d
                },
                "device.user_code_max_failures",
            ),
        ] {
            let e = check_device_settings(bad).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn resource_servers_are_checked() {
        for (text, field) in [
            (
                "[[resource_servers]]\nidentifier = \"billing\"\nname = \"B\"",
                "resource_servers[0].identifier",
            ),
            (
                "[[resource_servers]]\nidentifier = \"https://b.example/#x\"\nname = \"B\"",
                "resource_servers[0].identifier",
            ),
            (
                "[[resource_servers]]\nidentifier = \"https://b.example/\"\nname = \" \"",
                "resource_servers[0].name",
            ),
            (
                "[[resource_servers]]\nidentifier = \"https://b.example/\"\nname = \"B\"\naccess_token_secs = 0",
                "resource_servers[0].access_token_secs",
            ),
            (
                "[[resource_servers]]\nidentifier = \"https://b.example/\"\nname = \"B\"\n[[resource_servers]]\nidentifier = \"https://b.example/\"\nname = \"C\"",
                "resource_servers[1].identifier",
            ),
            (
                "[[resource_servers]]\nidentifier = \"https://b.example/\"\nname = \"B\"\nscopes = [\"x\"]",
                "scopes",
            ),
        ] {
            let err = load_settings(text).unwrap_err();
            assert!(err.contains("idp.toml"), "{text}: {err}");
            assert!(err.contains(field), "{text}: {err}");
        }
        let ok = load_settings(
            "[[resource_servers]]\nidentifier = \"https://b.example/api\"\nname = \"Billing\"\naccess_token_secs = 300\nclients = [\"portal\"]",
        )
        .unwrap();
        let parsed = parse_resource_servers(&ok).unwrap();
        assert_eq!(parsed[0].identifier, "https://b.example/api");
        assert_eq!(parsed[0].access_token_secs, Some(300));
    }

    #[test]
    fn account_settings_errors_name_the_field() {
        for (text, field) in [
            (
                "[accounts.password_policy]\nmin_length = 4",
                "accounts.password_policy.min_length",
            ),
            (
                "[accounts]\ninvite_link_hours = 0",
                "accounts.invite_link_hours",
            ),
            (
                "[accounts]\nchallenge_max_number = 0",
                "accounts.challenge_max_number",
            ),
        ] {
            let err = load_settings(text).unwrap_err();
            assert!(err.contains(field), "{text}: {err}");
        }
        let ok = load_settings("[accounts]\nreset_link_minutes = 15").unwrap();
        assert_eq!(ok.settings.accounts.reset_link_minutes, 15);
    }

    #[test]
    fn pairwise_sectors_come_from_the_sector_uri_or_the_one_redirect_host() {
        let sector = |extra: &str| file(extra).map(|c| c.protocol.pairwise.map(|p| p.sector));
        assert_eq!(sector(""), Ok(None), "public by default");
        assert_eq!(sector("subject_type = \"public\""), Ok(None));
        assert_eq!(
            sector("subject_type = \"pairwise\""),
            Ok(Some("rp.example".into()))
        );
        assert_eq!(
            sector(
                "redirect_uris = [\"https://a.rp.example/cb\", \"https://b.rp.example/cb\"]\nsubject_type = \"pairwise\"\nsector_identifier_uri = \"https://rp.example/sector.json\""
            ),
            Ok(Some("rp.example".into()))
        );
        let c = file("subject_type = \"pairwise\"\nsector_identifier_uri = \"https://sectors.example/s.json\"").unwrap();
        let p = c.protocol.pairwise.unwrap();
        assert_eq!(p.sector, "sectors.example");
        assert_eq!(
            p.sector_identifier_uri.as_deref(),
            Some("https://sectors.example/s.json")
        );
        for (extra, field) in [
            (
                "redirect_uris = [\"https://a.rp.example/cb\", \"https://b.rp.example/cb\"]\nsubject_type = \"pairwise\"",
                "sector_identifier_uri: required",
            ),
            (
                "subject_type = \"pairwise\"\nsector_identifier_uri = \"http://sectors.example/s.json\"",
                "sector_identifier_uri: ",
            ),
            (
                "subject_type = \"pairwise\"\nsector_identifier_uri = \"not a url\"",
                "sector_identifier_uri: ",
            ),
            (
                "sector_identifier_uri = \"https://sectors.example/s.json\"",
                "sector_identifier_uri: only for",
            ),
            ("subject_type = \"secret\"", "subject_type: "),
        ] {
            let e = file(extra).unwrap_err();
            assert!(e.starts_with(field), "{extra}: {e}");
        }
        // http on loopback, as for redirect URIs (tests and development).
        assert!(
            file(
                "subject_type = \"pairwise\"\nsector_identifier_uri = \"http://127.0.0.1:9/s.json\""
            )
            .is_ok()
        );
    }

    #[test]
    fn token_exchange_is_a_grant_of_confidential_clients() {
        let hash = "secret_hash = \"sha256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU\"\n";
        let grant = "grant_types = [\"authorization_code\", \"urn:ietf:params:oauth:grant-type:token-exchange\"]";
        let c = confidential(&format!("{hash}{grant}")).unwrap();
        assert!(c.protocol.token_exchange && c.allow_authorization_code);
        assert!(!confidential(hash).unwrap().protocol.token_exchange);
        let e = file(grant).unwrap_err();
        assert!(e.starts_with("grant_types: a public client"), "{e}");
        let e = load_settings("[token_exchange]\nmax_token_secs = 0").unwrap_err();
        assert!(e.contains("token_exchange.max_token_secs"), "{e}");
        let ok = load_settings("[token_exchange]\nmax_token_secs = 120").unwrap();
        assert_eq!(ok.settings.token_exchange.max_token_secs, 120);
        assert_eq!(
            load_settings("")
                .unwrap()
                .settings
                .token_exchange
                .max_token_secs,
            300
        );
    }

    #[test]
    fn client_file_errors_name_the_field() {
        assert!(file("").is_ok());
        let cases = [
            (
                "redirect_uris = [\"http://rp.example/cb\"]",
                "redirect_uris[0]",
            ),
            (
                "redirect_uris = [\"https://rp.example/cb#x\"]",
                "redirect_uris[0]",
            ),
            ("redirect_uris = [\"/relative\"]", "redirect_uris[0]"),
            ("secret_hash = \"sha256:abc\"", "secret_hash"),
            ("grant_types = [\"password\"]", "grant_types"),
            ("grant_types = [\"client_credentials\"]", "grant_types"),
            (
                "id_token_signed_response_alg = \"HS256\"",
                "id_token_signed_response_alg",
            ),
            (
                "access_token_signed_response_alg = \"none\"",
                "access_token_signed_response_alg",
            ),
            ("response_modes = [\"fragment\"]", "response_modes[0]"),
            (
                "response_modes = [\"form_post\", \"fragment.jwt\"]",
                "response_modes[1]",
            ),
            (
                "authorization_signed_response_alg = \"none\"",
                "authorization_signed_response_alg",
            ),
            ("colour = \"red\"", "colour"),
            (
                "[lifetimes]\nauthorization_code_secs = 0",
                "authorization_code_secs",
            ),
            (
                "[account.password_policy]\nmax_length = 20",
                "account.password_policy.max_length",
            ),
            (
                "[account]\nreset_link_minutes = 0",
                "account.reset_link_minutes",
            ),
            ("[account]\nauth_kind = \"Console!\"", "account.auth_kind"),
            ("[account]\nallow_org = true", "allow_org"),
        ];
        for (extra, field) in cases {
            let err = file(extra).unwrap_err();
            assert!(err.contains(field), "{extra}: {err}");
        }
        assert!(file("redirect_uris = [\"http://127.0.0.1:9000/cb\"]").is_ok());
        let c = file("response_modes = [\"form_post\", \"jwt\"]").unwrap();
        assert!(c.protocol.allows_response_mode(ResponseMode::FormPost));
        assert!(c.protocol.allows_response_mode(ResponseMode::QueryJwt));
        assert!(!c.protocol.allows_response_mode(ResponseMode::FormPostJwt));
    }

    #[test]
    fn id_tokens_default_to_rs256_and_access_tokens_to_es256() {
        // Dynamic Client Registration 1.0 §2: RS256 when the client names none.
        let c = file("").unwrap();
        assert_eq!(c.id_token_alg, SigningAlg::RS256);
        assert_eq!(c.access_token_alg, SigningAlg::ES256);
        // Each is chosen on its own.
        let c = file("id_token_signed_response_alg = \"ES256\"").unwrap();
        assert_eq!(c.id_token_alg, SigningAlg::ES256);
        assert_eq!(c.access_token_alg, SigningAlg::ES256);
        let c = file("access_token_signed_response_alg = \"RS256\"").unwrap();
        assert_eq!(c.id_token_alg, SigningAlg::RS256);
        assert_eq!(c.access_token_alg, SigningAlg::RS256);
    }
}
