//! The command line: serve, migrate, users, keys, clients, config check, demo.
//! Errors print with their context and exit non-zero.

use crate::app::{self, Overrides};
use crate::config::{self, LoadedConfig};
use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use idp_core::client::ClientSecretHash;
use idp_core::domain::Email;
use idp_core::keys::SigningAlg;
use idp_core::ports::UserRepo;
use idp_core::secret::{KeyEncryptionKey, Secret};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "idp",
    version,
    about = "OpenID Connect identity provider for cloud customer portals"
)]
struct Cli {
    /// Configuration file (default: config/idp.toml if present, else built-in defaults).
    #[arg(long, env = "IDP_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the provider.
    Serve {
        /// Do not apply database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage organizations (platform operator): list, validate, reject, add members.
    Org {
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Clients: secrets for client files; list, show, disable registered ones.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the provider with a demo relying party and a demo user (development only).
    Demo {
        /// Port of the demo relying party.
        #[arg(long, default_value_t = 8081)]
        rp_port: u16,
    },
}

/// `idp org ...`: the platform operator's commands.
#[derive(Subcommand)]
pub enum OrgCommand {
    /// List organizations, oldest first.
    List {
        /// Only this status: pending, validated or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Validate a pending organization (emails every member).
    Validate { id: String },
    /// Reject a pending organization (emails its creator).
    Reject { id: String },
    /// Add a member: an existing account joins; otherwise an account is
    /// created and emailed a link to define its password.
    AddMember {
        org: String,
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// administrator, security_manager or member (repeatable; default member).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

/// Parses `idp org` arguments (without `idp org`), for callers embedding the CLI.
pub fn parse_org_command<I, S>(args: I) -> Result<OrgCommand, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    #[derive(Parser)]
    #[command(name = "idp org")]
    struct OrgCli {
        #[command(subcommand)]
        command: OrgCommand,
    }
    let args = std::iter::once(std::ffi::OsString::from("idp org"))
        .chain(args.into_iter().map(Into::into));
    OrgCli::try_parse_from(args).map(|c| c.command)
}

/// Runs an `idp org` command against a provider; returns what it prints.
pub async fn run_org_command(
    provider: &idp_core::Provider,
    command: OrgCommand,
) -> anyhow::Result<String> {
    use idp_core::accounts::orgs::{MemberManager, PlatformOperator, parse_roles};
    use idp_core::domain::{OrgId, OrgStatus};
    use std::fmt::Write;
    let op = PlatformOperator::command_line();
    let meta = idp_core::domain::RequestMeta::default();
    let org_id = |s: &str| {
        uuid::Uuid::parse_str(s.trim())
            .map(OrgId)
            .map_err(|_| anyhow!("{s:?} is not an organization id (a UUID, see `idp org list`)"))
    };
    let mut out = String::new();
    match command {
        OrgCommand::List {
            status,
            limit,
            offset,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(OrgStatus::parse(s).ok_or_else(|| {
                    anyhow!("--status: expected pending, validated or rejected, got {s:?}")
                })?),
            };
            let orgs = provider
                .organizations
                .list_organizations(&op, status, limit, offset)
                .await?;
            writeln!(
                out,
                "{:<36}  {:<9}  {:<7}  {:<14}  name",
                "id", "status", "country", "siret"
            )?;
            for o in orgs {
                writeln!(
                    out,
                    "{:<36}  {:<9}  {:<7}  {:<14}  {}",
                    o.id,
                    o.status.as_str(),
                    o.country,
                    o.siret.as_deref().unwrap_or("-"),
                    o.name
                )?;
            }
        }
        OrgCommand::Validate { id } => {
            let org = provider
                .organizations
                .decide_organization(&op, org_id(&id)?, true, &meta)
                .await?;
            writeln!(
                out,
                "organization {} ({}) validated; its members are emailed",
                org.id, org.name
            )?;
        }
        OrgCommand::Reject { id } => {
            let org = provider
                .organizations
                .decide_organization(&op, org_id(&id)?, false, &meta)
                .await?;
            writeln!(
                out,
                "organization {} ({}) rejected; its creator is emailed",
                org.id, org.name
            )?;
        }
        OrgCommand::AddMember {
            org,
            email,
            name,
            roles,
        } => {
            let email = Email::parse(&email).map_err(|e| anyhow!("email: {e}"))?;
            let roles = if roles.is_empty() {
                vec!["member".to_owned()]
            } else {
                roles
            };
            let roles = parse_roles(&roles).map_err(|e| anyhow!("--role: {e}"))?;
            let org = provider
                .organizations
                .operator_find_org(&op, org_id(&org)?)
                .await?;
            let name_of_org = org.name.clone();
            let added = provider
                .organizations
                .add_org_member(
                    &MemberManager::Operator(op, org),
                    &email,
                    name,
                    &roles,
                    &meta,
                )
                .await?;
            if added.created {
                writeln!(
                    out,
                    "created account {} (customer identifier {}) as a member of {name_of_org}; it was emailed a link to define its password",
                    added.user.id, added.user.customer_id
                )?;
            } else {
                writeln!(
                    out,
                    "added the existing account {} (customer identifier {}) to {name_of_org}",
                    added.user.id, added.user.customer_id
                )?;
            }
        }
    }
    Ok(out)
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Replace a user's recovery codes and print the new ones (they are
    /// shown only now; give them to the user over a trusted channel).
    RecoveryCodes {
        #[arg(long)]
        email: String,
    },
    /// List users.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// List a user's links to upstream identities.
    Identities {
        #[arg(long)]
        email: String,
    },
    /// Link an upstream identity (its `sub` at a configured upstream) to a user.
    Link {
        #[arg(long)]
        email: String,
        /// The upstream's name in `[[upstreams]]`.
        #[arg(long)]
        upstream: String,
        /// The identity's `sub` at that upstream.
        #[arg(long)]
        subject: String,
    },
    /// Unlink a user's identity at an upstream.
    Unlink {
        #[arg(long)]
        email: String,
        #[arg(long)]
        upstream: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new active signing key; the previous one stays published until its tokens expire.
    Rotate {
        /// ES256, RS256 or all.
        #[arg(long, default_value = "all")]
        alg: String,
    },
    /// Print a new random key-encryption key for `key_encryption_key`.
    NewKek,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Generate a client secret and the `secret_hash` line for its client file.
    Secret,
    #[command(flatten)]
    Registered(crate::registration::RegisteredClientCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and check the configuration and every client file, then exit.
    Check,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &LoadedConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IDP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if cfg.settings.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || config::load(cli.config.as_deref());
    match cli.command {
        Command::Serve { no_migrate } => {
            let mut cfg = load()?;
            init_logging(&cfg);
            if no_migrate {
                cfg.settings.migrate_on_start = false;
            }
            let clients = config::load_clients(cfg.clients_dir.as_deref(), &cfg.levels)?;
            let state = app::build_state(&cfg, clients, Overrides::default()).await?;
            let listener = tokio::net::TcpListener::bind(cfg.settings.listen)
                .await
                .with_context(|| format!("listen: cannot bind {}", cfg.settings.listen))?;
            let running = app::serve(listener, state)?;
            tracing::info!(issuer = %cfg.issuer, addr = %running.addr, "serving");
            running.handle.await?;
            Ok(())
        }
        Command::Migrate => {
            let cfg = load()?;
            app::open_storage(&cfg, true).await?;
            println!("migrations applied to {}", redact_url(&cfg.database_url));
            Ok(())
        }
        Command::User { command } => user(load()?, command).await,
        Command::Org { command } => {
            let cfg = load()?;
            let clients = config::load_clients(cfg.clients_dir.as_deref(), &cfg.levels)?;
            let state = app::build_state(&cfg, clients, Overrides::default()).await?;
            let out = run_org_command(&state.provider, command).await?;
            print!("{out}");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::NewKek,
        } => {
            println!("{}", KeyEncryptionKey::generate().encode());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { alg },
        } => {
            let cfg = load()?;
            let algs: Vec<SigningAlg> = match alg.as_str() {
                "all" => SigningAlg::ALL.to_vec(),
                a => vec![
                    SigningAlg::parse(a)
                        .ok_or_else(|| anyhow!("--alg: expected ES256, RS256 or all, got {a:?}"))?,
                ],
            };
            let storage = app::open_storage(&cfg, cfg.settings.migrate_on_start).await?;
            let kek = app::key_encryption_key(&cfg)?;
            let now = idp_core::clock::Clock::now(&idp_core::clock::SystemClock);
            for a in algs {
                let kid = idp_core::keys::rotate_key(storage.as_ref(), &kek, a, now).await?;
                println!("{a}: new active key {kid}");
            }
            println!(
                "running nodes publish the new keys within a minute and sign with them after {} s, once relying parties' JWKS caches have expired",
                idp_core::keys::PROPAGATION.whole_seconds()
            );
            Ok(())
        }
        Command::Client {
            command: ClientCommand::Secret,
        } => {
            let secret = idp_core::random::token();
            println!("client secret (give it to the relying party, it is not stored): {secret}");
            println!(
                "secret_hash = \"{}\"",
                ClientSecretHash::of(&secret).encode()
            );
            Ok(())
        }
        Command::Client {
            command: ClientCommand::Registered(command),
        } => {
            let out = crate::registration::run_client_command(&load()?, command).await?;
            print!("{out}");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let cfg = load()?;
            let files = config::load_client_files(cfg.clients_dir.as_deref(), &cfg.levels)?;
            let mut clients =
                idp_core::client::ClientRegistry::new(files.iter().map(|(_, c)| c.clone()));
            // The checks of `idp serve`: a client file registering the
            // account pages' client must fit them, else the built-in one is
            // added; then every client, that one included.
            let account_file = files
                .iter()
                .find(|(_, c)| c.id.0 == crate::web::account::CLIENT_ID)
                .map(|(path, _)| path);
            app::add_account_client(&mut clients, &cfg).map_err(|e| match account_file {
                Some(path) => anyhow!("{}: {e:#}", path.display()),
                None => e,
            })?;
            let themes = crate::theme::Themes::load(cfg.themes_dir.as_deref())
                .map_err(|e| anyhow!("themes: {e}"))?;
            app::check_clients(&cfg, &clients, &themes)?;
            crate::registration::policy(&cfg)?;
            crate::registration::template(&cfg, &clients)?;
            println!(
                "configuration OK: {} ({} client(s), issuer {})",
                cfg.source.as_ref().map_or_else(
                    || "built-in defaults".to_owned(),
                    |p| p.display().to_string()
                ),
                files.len(),
                cfg.issuer
            );
            Ok(())
        }
        Command::Demo { rp_port } => {
            let cfg = load()?;
            init_logging(&cfg);
            crate::demo::run(cfg, rp_port).await
        }
    }
}

async fn user(cfg: LoadedConfig, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            email,
            name,
            password_stdin: _,
        } => {
            let email = Email::parse(&email).map_err(|e| anyhow!("--email: {e}"))?;
            let mut pw = String::new();
            std::io::stdin()
                .read_to_string(&mut pw)
                .context("cannot read the password from standard input")?;
            let pw = pw.trim_end_matches(['\n', '\r']).to_owned();
            if pw.is_empty() {
                bail!("standard input: empty password");
            }
            let clients = config::load_clients(cfg.clients_dir.as_deref(), &cfg.levels)?;
            let state = app::build_state(&cfg, clients, Overrides::default()).await?;
            let user = state
                .provider
                .accounts
                .create_user(email, name, &Secret::new(pw))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "created user {} (customer identifier {})",
                user.id, user.customer_id
            );
            Ok(())
        }
        UserCommand::RecoveryCodes { email } => {
            let (state, user) = user_by_email(&cfg, &email).await?;
            for code in state
                .provider
                .accounts
                .regenerate_recovery_codes(&user)
                .await?
            {
                println!("{code}");
            }
            Ok(())
        }
        UserCommand::Identities { email } => {
            let (state, user) = user_by_email(&cfg, &email).await?;
            let links = state.provider.federated.linked_identities(user.id).await?;
            println!(
                "{:<20}  {:<40}  {:<30}  linked",
                "upstream", "subject", "email"
            );
            for l in links {
                println!(
                    "{:<20}  {:<40}  {:<30}  {}",
                    l.upstream,
                    l.subject,
                    l.email.as_deref().unwrap_or("-"),
                    l.created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        UserCommand::Link {
            email,
            upstream,
            subject,
        } => {
            use idp_core::accounts::federated::LinkError;
            let (state, user) = user_by_email(&cfg, &email).await?;
            let op = idp_core::accounts::orgs::PlatformOperator::command_line();
            let meta = idp_core::domain::RequestMeta::default();
            match state
                .provider
                .federated
                .link_identity(&op, &user, &upstream, &subject, &meta)
                .await
            {
                Ok(_) => {
                    println!("linked {upstream} identity {subject} to {}", user.email);
                    Ok(())
                }
                Err(e @ LinkError::UnknownUpstream(_)) => Err(anyhow!("--upstream: {e}")),
                Err(e @ LinkError::InvalidSubject) => Err(anyhow!("--subject: {e}")),
                Err(LinkError::AlreadyLinked) => Err(anyhow!(
                    "--subject: this identity is linked already, or {} already has a link at {upstream}",
                    user.email
                )),
                Err(LinkError::Core(e)) => Err(e.into()),
            }
        }
        UserCommand::Unlink { email, upstream } => {
            use idp_core::accounts::federated::UnlinkError;
            let (state, user) = user_by_email(&cfg, &email).await?;
            let op = idp_core::accounts::orgs::PlatformOperator::command_line();
            let meta = idp_core::domain::RequestMeta::default();
            match state
                .provider
                .federated
                .unlink_identity_as_operator(&op, user.id, &upstream, &meta)
                .await
            {
                Ok(()) => {
                    println!("unlinked {} from {upstream}", user.email);
                    Ok(())
                }
                Err(UnlinkError::NotLinked | UnlinkError::LastWayToSignIn) => Err(anyhow!(
                    "--upstream: {} has no link at {upstream:?}",
                    user.email
                )),
                Err(UnlinkError::Core(e)) => Err(e.into()),
            }
        }
        UserCommand::List { limit, offset } => {
            let storage = app::open_storage(&cfg, cfg.settings.migrate_on_start).await?;
            let users = storage.list(limit, offset).await?;
            println!(
                "{:<36}  {:<14}  {:<8}  email",
                "id", "customer_id", "status"
            );
            for u in users {
                println!(
                    "{:<36}  {:<14}  {:<8}  {}",
                    u.id,
                    u.customer_id,
                    u.status.as_str(),
                    u.email
                );
            }
            Ok(())
        }
    }
}

/// The provider (as `idp serve` builds it) and the user with `email`.
async fn user_by_email(
    cfg: &LoadedConfig,
    email: &str,
) -> anyhow::Result<(app::AppState, idp_core::domain::User)> {
    let email = Email::parse(email).map_err(|e| anyhow!("--email: {e}"))?;
    let clients = config::load_clients(cfg.clients_dir.as_deref(), &cfg.levels)?;
    let state = app::build_state(cfg, clients, Overrides::default()).await?;
    let user = state
        .provider
        .ports
        .users
        .find_by_email(&email)
        .await?
        .ok_or_else(|| anyhow!("--email: no user with this email"))?;
    Ok((state, user))
}

/// A database URL without its password, for messages.
pub(crate) fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) if p.password().is_some() => {
            let _ = p.set_password(Some("***"));
            p.to_string()
        }
        _ => u.to_owned(),
    }
}
