//! Dynamic client registration: the `[registration]` settings, the policy and
//! template built from them, and the `idp client list|show|disable|enable|
//! initial-token` commands (which cover file and registered clients).

use crate::config::LoadedConfig;
use anyhow::{anyhow, bail};
use idp_core::client::{Client, ClientRegistry, ClientSecretHash};
use idp_core::domain::ClientId;
use idp_core::ports::TokenFamilyRepo;
use idp_core::registration::{
    ClientTemplate, InitialAccessToken, RedirectPattern, RegisteredClientRepo, RegistrationPolicy,
    SUPPORTED_AUTH_METHODS, SUPPORTED_GRANT_TYPES,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// `[registration]` of `idp.toml`. See `config/README.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    /// `POST /register` and `/register/{client_id}` are served (off by default).
    pub enabled: bool,
    /// Registration without an initial access token.
    pub open: bool,
    /// Hashes (`sha256:...`, as printed by `idp client secret`) of initial
    /// access tokens; a list, or one text of hashes separated by white space
    /// (so `IDP_REGISTRATION__INITIAL_ACCESS_TOKENS_FILE` can name a file of
    /// one hash a line).
    #[serde(deserialize_with = "hash_list")]
    pub initial_access_tokens: Vec<String>,
    /// `scheme://host/path` patterns redirect URIs must match (`*` in the
    /// host: whole labels; in the path: anything).
    pub redirect_uri_patterns: Vec<String>,
    /// `http://127.0.0.1:<any port>/...` and `http://[::1]:<any port>/...`
    /// for native apps (RFC 8252 §7.3).
    pub allow_loopback_redirects: bool,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_methods: Vec<String>,
    pub scopes: Vec<String>,
    /// Given to a registration that names no `scope`.
    pub default_scopes: Vec<String>,
    /// A client file's `client_id` whose login flows and theme registered
    /// clients get (default: identifier then password, default theme).
    pub flows_from: Option<String>,
    /// PKCE for confidential registered clients too (public ones always).
    pub require_pkce: bool,
    /// How often each node checks the database for registrations made,
    /// changed or deleted on other nodes (seconds): the bound on how long a
    /// deleted client keeps working on another node.
    pub refresh_secs: u32,
    /// `POST /register` requests one client IP may make per hour.
    pub max_per_ip_per_hour: u32,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            open: false,
            initial_access_tokens: Vec::new(),
            redirect_uri_patterns: Vec::new(),
            allow_loopback_redirects: true,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            token_endpoint_auth_methods: SUPPORTED_AUTH_METHODS.map(String::from).to_vec(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            default_scopes: vec!["openid".into()],
            flows_from: None,
            require_pkce: true,
            refresh_secs: 5,
            max_per_ip_per_hour: 20,
        }
    }
}

fn hash_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::Text(t) => t.split_whitespace().map(str::to_owned).collect(),
    })
}

/// The policy of `[registration]` (`None` when registration is off), checked.
pub fn policy(cfg: &LoadedConfig) -> anyhow::Result<Option<RegistrationPolicy>> {
    let s = &cfg.settings.registration;
    if s.refresh_secs == 0 || s.refresh_secs > 300 {
        bail!("registration.refresh_secs: between 1 and 300");
    }
    if s.max_per_ip_per_hour == 0 {
        bail!("registration.max_per_ip_per_hour: must be positive");
    }
    if !s.enabled {
        return Ok(None);
    }
    let mut initial_token_hashes = Vec::new();
    for (i, h) in s.initial_access_tokens.iter().enumerate() {
        initial_token_hashes.push(ClientSecretHash::parse(h).ok_or_else(|| {
            anyhow!(
                "registration.initial_access_tokens[{i}]: expected \"sha256:<base64url>\" (the hash of a token, as `idp client secret` prints)"
            )
        })?);
    }
    let mut redirect_uri_patterns = Vec::new();
    for (i, p) in s.redirect_uri_patterns.iter().enumerate() {
        redirect_uri_patterns.push(
            RedirectPattern::parse(p)
                .map_err(|e| anyhow!("registration.redirect_uri_patterns[{i}]: {e}"))?,
        );
    }
    for (i, g) in s.grant_types.iter().enumerate() {
        if !SUPPORTED_GRANT_TYPES.contains(&g.as_str()) {
            bail!(
                "registration.grant_types[{i}]: {g:?} is not one of {}",
                SUPPORTED_GRANT_TYPES.join(", ")
            );
        }
    }
    for (i, m) in s.token_endpoint_auth_methods.iter().enumerate() {
        if !SUPPORTED_AUTH_METHODS.contains(&m.as_str()) {
            bail!(
                "registration.token_endpoint_auth_methods[{i}]: {m:?} is not one of {}",
                SUPPORTED_AUTH_METHODS.join(", ")
            );
        }
    }
    let scopes: BTreeSet<String> = s.scopes.iter().cloned().collect();
    if let Some(d) = s.default_scopes.iter().find(|d| !scopes.contains(*d)) {
        bail!("registration.default_scopes: {d:?} is not in registration.scopes");
    }
    Ok(Some(RegistrationPolicy {
        open: s.open,
        initial_token_hashes,
        redirect_uri_patterns,
        allow_loopback_redirects: s.allow_loopback_redirects,
        grant_types: s.grant_types.iter().cloned().collect(),
        auth_methods: s.token_endpoint_auth_methods.iter().cloned().collect(),
        scopes,
        default_scope: s.default_scopes.clone(),
        max_per_ip_per_hour: s.max_per_ip_per_hour,
    }))
}

/// What registered clients get from the configuration: the flows and theme
/// of the file client `flows_from` (which must exist), else the built-in
/// identifier-then-password flow.
pub fn template(cfg: &LoadedConfig, clients: &ClientRegistry) -> anyhow::Result<ClientTemplate> {
    let s = &cfg.settings.registration;
    let (login, theme, account) = match &s.flows_from {
        Some(id) => {
            let c = clients
                .get(id)
                .filter(|_| clients.is_file_client(id))
                .ok_or_else(|| {
                    anyhow!("registration.flows_from: no client file has client_id {id:?}")
                })?;
            (c.login.clone(), c.theme.clone(), c.account.clone())
        }
        None => (
            idp_core::policy::LoginPolicy::password_only(&idp_core::steps::registry(), &cfg.levels)
                .map_err(|e| anyhow!("registration: {e}"))?,
            "default".to_owned(),
            Default::default(),
        ),
    };
    Ok(ClientTemplate {
        login,
        theme,
        account,
        require_par: cfg.settings.require_pushed_authorization_requests,
        require_pkce: s.require_pkce,
    })
}

/// `idp client ...` commands on registered clients (besides `secret`).
#[derive(clap::Subcommand, Debug)]
pub enum RegisteredClientCommand {
    /// List every client: id, name, source (file or registered), enabled.
    List,
    /// Show a client's settings (never its secrets).
    Show { client_id: String },
    /// Disable a registered client (it stops working on every node within
    /// `registration.refresh_secs`; its grants are revoked). File clients
    /// are disabled by removing their file.
    Disable { client_id: String },
    /// Enable a registered client disabled before.
    Enable { client_id: String },
    /// Mint an initial access token for `POST /register` (printed once;
    /// only its hash is stored).
    InitialToken {
        /// Validity in days (default: until deleted from the database).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// The client files and where each came from.
fn file_clients(cfg: &LoadedConfig) -> anyhow::Result<Vec<(PathBuf, Client)>> {
    crate::config::load_client_files(cfg.clients_dir.as_deref(), &cfg.levels)
}

/// Runs an `idp client` command on registered clients; returns what it prints.
pub async fn run_client_command(
    cfg: &LoadedConfig,
    command: RegisteredClientCommand,
) -> anyhow::Result<String> {
    use std::fmt::Write;
    let storage = crate::app::open_storage(cfg, cfg.settings.migrate_on_start).await?;
    let now = idp_core::clock::Clock::now(&idp_core::clock::SystemClock);
    let files = file_clients(cfg)?;
    let file_of = |id: &str| files.iter().find(|(_, c)| c.id.0 == id);
    let mut out = String::new();
    match command {
        RegisteredClientCommand::List => {
            writeln!(
                out,
                "{:<40}  {:<30}  {:<10}  enabled",
                "client_id", "name", "source"
            )?;
            for (_, c) in &files {
                writeln!(out, "{:<40}  {:<30}  {:<10}  yes", c.id.0, c.name, "file")?;
            }
            for r in storage.list_registered_clients().await? {
                let shadowed = file_of(&r.id.0).is_some();
                let name = r.metadata.client_name.clone().unwrap_or_default();
                let enabled = match (r.enabled, shadowed) {
                    (_, true) => "no (a client file has this id)",
                    (true, false) => "yes",
                    (false, false) => "no",
                };
                writeln!(
                    out,
                    "{:<40}  {:<30}  {:<10}  {enabled}",
                    r.id.0, name, "registered"
                )?;
            }
        }
        RegisteredClientCommand::Show { client_id } => {
            if let Some((path, c)) = file_of(&client_id) {
                writeln!(out, "client_id: {}", c.id)?;
                writeln!(out, "source: file {}", path.display())?;
                writeln!(out, "name: {}", c.name)?;
                writeln!(
                    out,
                    "token_endpoint_auth_method: {}",
                    c.auth_method.as_str()
                )?;
                writeln!(out, "redirect_uris: {}", c.redirect_uris.join(" "))?;
                let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
                writeln!(out, "scopes: {}", scopes.join(" "))?;
                writeln!(out, "enabled: yes")?;
            } else {
                let r = storage
                    .find_registered_client(&ClientId(client_id.clone()))
                    .await?
                    .ok_or_else(|| anyhow!("no client {client_id:?} (see `idp client list`)"))?;
                writeln!(out, "client_id: {}", r.id)?;
                writeln!(out, "source: registered")?;
                writeln!(out, "enabled: {}", if r.enabled { "yes" } else { "no" })?;
                writeln!(
                    out,
                    "created_at: {}",
                    r.created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                )?;
                writeln!(
                    out,
                    "metadata: {}",
                    serde_json::to_string_pretty(&r.metadata)?
                )?;
            }
        }
        RegisteredClientCommand::Disable { client_id }
        | RegisteredClientCommand::Enable { client_id }
            if file_of(&client_id).is_some() =>
        {
            let (path, _) = file_of(&client_id).expect("checked");
            bail!(
                "client {client_id} is defined by the file {}: remove or edit that file (and restart) to change it; disable/enable act on registered clients",
                path.display()
            );
        }
        RegisteredClientCommand::Disable { client_id } => {
            let id = ClientId(client_id.clone());
            if !storage
                .set_registered_client_enabled(&id, false, now)
                .await?
            {
                bail!("no registered client {client_id:?} (see `idp client list`)");
            }
            let grants = storage.live_grants_of_client(&id).await?;
            for g in &grants {
                storage.revoke_family(*g, now, "client_disabled").await?;
            }
            writeln!(
                out,
                "disabled client {client_id} ({} grant(s) revoked); every node stops accepting it within {} s",
                grants.len(),
                cfg.settings.registration.refresh_secs
            )?;
        }
        RegisteredClientCommand::Enable { client_id } => {
            if !storage
                .set_registered_client_enabled(&ClientId(client_id.clone()), true, now)
                .await?
            {
                bail!("no registered client {client_id:?} (see `idp client list`)");
            }
            writeln!(out, "enabled client {client_id}")?;
        }
        RegisteredClientCommand::InitialToken { expires_in_days } => {
            let token = idp_core::random::token();
            storage
                .create_initial_access_token(&InitialAccessToken {
                    hash: ClientSecretHash::of(&token),
                    created_at: now,
                    expires_at: expires_in_days.map(|d| now + time::Duration::days(i64::from(d))),
                })
                .await?;
            writeln!(
                out,
                "initial access token (give it to whoever registers a client, it is not stored): {token}"
            )?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> RegistrationSettings {
        toml::from_str(toml_text).expect("parses")
    }

    fn loaded(s: RegistrationSettings) -> LoadedConfig {
        let mut settings = crate::config::Settings {
            database_url: Some("sqlite::memory:".into()),
            ..Default::default()
        };
        settings.registration = s;
        LoadedConfig {
            settings,
            source: None,
            issuer: "http://127.0.0.1:8080".into(),
            database_url: "sqlite::memory:".into(),
            clients_dir: None,
            themes_dir: None,
            levels: idp_core::assurance::Levels::builtin(),
        }
    }

    fn error(s: RegistrationSettings) -> String {
        match policy(&loaded(s)) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn initial_tokens_are_a_list_or_a_text_of_hashes() {
        let h1 = ClientSecretHash::of("one").encode();
        let h2 = ClientSecretHash::of("two").encode();
        let list = settings(&format!("initial_access_tokens = [\"{h1}\", \"{h2}\"]"));
        assert_eq!(list.initial_access_tokens, [h1.clone(), h2.clone()]);
        // What IDP_REGISTRATION__INITIAL_ACCESS_TOKENS_FILE gives: the file's text.
        let text = settings(&format!("initial_access_tokens = \"{h1}\\n{h2}\\n\""));
        assert_eq!(text.initial_access_tokens, [h1, h2]);
    }

    #[test]
    fn off_by_default_and_each_key_checked() {
        assert!(
            policy(&loaded(RegistrationSettings::default()))
                .unwrap()
                .is_none()
        );
        let on = |extra: &str| settings(&format!("enabled = true\n{extra}"));
        assert!(policy(&loaded(on(""))).unwrap().is_some());
        assert!(
            error(on("initial_access_tokens = [\"plain-token\"]"))
                .contains("initial_access_tokens[0]")
        );
        assert!(
            error(on("redirect_uri_patterns = [\"http://x.example.com/*\"]"))
                .contains("redirect_uri_patterns[0]")
        );
        assert!(error(on("grant_types = [\"implicit\"]")).contains("grant_types[0]"));
        assert!(
            error(on("token_endpoint_auth_methods = [\"private_key_jwt\"]"))
                .contains("token_endpoint_auth_methods[0]")
        );
        assert!(error(on("default_scopes = [\"admin_api\"]")).contains("default_scopes"));
        assert!(error(on("refresh_secs = 0")).contains("refresh_secs"));
        let cfg = loaded(on("flows_from = \"nobody\""));
        let e = template(&cfg, &ClientRegistry::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("flows_from"), "{e}");
    }
}
