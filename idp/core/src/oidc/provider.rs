//! The provider: the ports, the clients, the keys and the settings every
//! endpoint works with, plus account creation shared by the CLI and the demo.

use crate::client::ClientRegistry;
use crate::clock::SharedClock;
use crate::domain::{ClientId, Email, PasswordCredential, RequestMeta, User, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::CoreError;
use crate::flow::StepPorts;
use crate::keys::SigningKeys;
use crate::password::PasswordHasher;
use crate::ports::{
    AuditRepo, ClientStateRepo, ConsentRepo, CredentialRepo, DeviceRepo, OrgRepo, RepoError,
    SigningKeyRepo, TokenFamilyRepo, UserRepo,
};
use crate::secret::{KeyEncryptionKey, Secret};
use std::sync::{Arc, RwLock};

/// Provider-wide settings (per-client ones live on [`crate::client::Client`]).
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Exactly as published in discovery (no trailing slash).
    pub issuer: String,
    /// Absolute lifetime of a single sign-on session, seconds.
    pub session_lifetime_secs: u32,
    /// How long a login page may stay open, seconds.
    pub flow_lifetime_secs: u32,
    pub customer_id_suffix: String,
    pub throttle: crate::throttle::ThrottleSettings,
    pub methods: crate::flow::MethodSettings,
    pub accounts: crate::accounts::AccountSettings,
    /// Webhook endpoints of the relying platforms (their client files).
    pub webhooks: Arc<Vec<crate::webhooks::WebhookEndpoint>>,
}

/// Durable storage ports.
#[derive(Clone)]
pub struct ProviderPorts {
    pub users: Arc<dyn UserRepo>,
    pub credentials: Arc<dyn CredentialRepo>,
    pub families: Arc<dyn TokenFamilyRepo>,
    pub signing_keys: Arc<dyn SigningKeyRepo>,
    pub consents: Arc<dyn ConsentRepo>,
    pub audit: Arc<dyn AuditRepo>,
    pub client_states: Arc<dyn ClientStateRepo>,
    pub devices: Arc<dyn DeviceRepo>,
    pub orgs: Arc<dyn OrgRepo>,
    /// The webhook outbox.
    pub webhooks: Arc<dyn crate::ports::WebhookRepo>,
    /// Looks up French companies by SIRET (not storage, but an outside system).
    pub registry: Arc<dyn crate::company::CompanyRegistry>,
    /// Links between upstream identities and accounts.
    pub identities: Arc<dyn crate::ports::FederatedIdentityRepo>,
    /// Upstream OpenID providers (an outside system).
    pub upstreams: Arc<dyn crate::federation::Upstreams>,
    /// Where changes that cached token reads rest on are announced to every
    /// node (see [`crate::changes`]).
    pub changes: Arc<dyn crate::changes::ChangeFeed>,
}

pub struct Provider {
    pub settings: ProviderSettings,
    pub clients: Arc<ClientRegistry>,
    pub store: Arc<dyn EphemeralStore>,
    pub ports: ProviderPorts,
    pub hasher: PasswordHasher,
    pub clock: SharedClock,
    /// Runs login flows (and knows the authentication methods).
    pub runner: Arc<crate::flow::FlowRunner>,
    /// Single sign-on sessions.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// Authorization codes.
    pub(crate) codes: Arc<dyn super::codes::CodeStore>,
    /// Throttling of secret checks and sends.
    pub throttle: Arc<crate::throttle::Throttle>,
    pub(crate) audit_log: crate::audit::Audit,
    pub(crate) events: crate::events::Events,
    pub(crate) creator: crate::accounts::creation::AccountCreator,
    /// Accounts' links to upstream identities.
    pub federated: Arc<crate::accounts::federated::FederatedAccounts>,
    pub(crate) step_ports: StepPorts,
    pub(crate) kek: KeyEncryptionKey,
    keys: RwLock<Arc<SigningKeys>>,
    /// Access tokens whose signature verified (see its module).
    pub(crate) verified_tokens: super::verified_tokens::VerifiedTokens,
    /// The changes this node has heard of (see [`crate::changes`]).
    pub(crate) change_log: Arc<crate::changes::ChangeLog>,
    /// Announces changes (the repositories of `ports` do it on their own).
    pub(crate) announcer: Arc<super::announced::Announcer>,
    /// When each client was last recorded as used (see `touch_client`).
    client_touched: std::sync::Mutex<std::collections::HashMap<ClientId, i64>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.settings.issuer)
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Builds the provider, creating signing keys on first start.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        settings: ProviderSettings,
        clients: ClientRegistry,
        store: Arc<dyn EphemeralStore>,
        mut ports: ProviderPorts,
        hasher: PasswordHasher,
        clock: SharedClock,
        kek: KeyEncryptionKey,
        notifier: Arc<dyn crate::notify::Notifier>,
    ) -> Result<Self, CoreError> {
        // Writes that change what token reads answer are announced, whoever
        // makes them (see `announced`).
        let change_log = Arc::new(crate::changes::ChangeLog::new(clock.clone()));
        ports.changes.subscribe(change_log.clone());
        let announcer = Arc::new(super::announced::Announcer {
            log: change_log.clone(),
            feed: ports.changes.clone(),
        });
        ports.users = Arc::new(super::announced::AnnouncedUsers {
            inner: ports.users,
            announcer: announcer.clone(),
        });
        ports.families = Arc::new(super::announced::AnnouncedFamilies {
            inner: ports.families,
            announcer: announcer.clone(),
        });
        ports.orgs = Arc::new(super::announced::AnnouncedOrgs {
            inner: ports.orgs,
            announcer: announcer.clone(),
        });
        let stored =
            crate::keys::ensure_keys(ports.signing_keys.as_ref(), &kek, clock.now()).await?;
        let clients = Arc::new(clients);
        let keys = SigningKeys::from_stored(&stored, &kek, clock.now(), keep_published(&clients))?;
        let audit_log = crate::audit::Audit::new(ports.audit.clone(), clock.clone());
        let events = crate::events::Events::new(
            settings.webhooks.clone(),
            ports.webhooks.clone(),
            ports.users.clone(),
            clock.clone(),
        );
        let creator = crate::accounts::creation::AccountCreator::new(
            ports.users.clone(),
            ports.credentials.clone(),
            audit_log.clone(),
            events.clone(),
            clock.clone(),
            settings.customer_id_suffix.clone(),
        );
        let federated = Arc::new(crate::accounts::federated::FederatedAccounts::new(
            ports.users.clone(),
            ports.credentials.clone(),
            ports.identities.clone(),
            ports.upstreams.clone(),
            creator.clone(),
            audit_log.clone(),
            clock.clone(),
        ));
        let throttle = Arc::new(crate::throttle::Throttle::new(
            Arc::new(crate::throttle::StoredCounters::new(store.clone())),
            settings.throttle,
            clock.clone(),
        ));
        let flows: Arc<dyn crate::flow::state::FlowStore> =
            Arc::new(crate::flow::state::StoredFlows::new(store.clone()));
        let sessions = Arc::new(crate::sessions::Sessions::new(
            Arc::new(crate::sessions::StoredSessions::new(store.clone())),
            ports.families.clone(),
            audit_log.clone(),
            clock.clone(),
            settings.session_lifetime_secs,
        ));
        let codes: Arc<dyn super::codes::CodeStore> =
            Arc::new(super::codes::StoredCodes::new(store.clone()));
        let step_ports = StepPorts {
            users: ports.users.clone(),
            credentials: ports.credentials.clone(),
            flows: flows.clone(),
            throttle: throttle.clone(),
            hasher: hasher.clone(),
            clock: clock.clone(),
            kek: kek.clone(),
            notifier,
            settings: settings.methods.clone(),
            webauthn: webauthn_settings(&settings.issuer)?,
            upstreams: ports.upstreams.clone(),
        };
        let steps = crate::steps::registry();
        for c in clients.iter() {
            if let Some(m) = c.login.methods().find(|m| !steps.has(m)) {
                return Err(CoreError::Internal(format!(
                    "client {}: the login method {} is not available in this build",
                    c.id,
                    m.as_str()
                )));
            }
        }
        let runner = Arc::new(crate::flow::FlowRunner::new(
            steps,
            step_ports.clone(),
            flows,
            throttle.clone(),
            clients.clone(),
            ports.devices.clone(),
            ports.orgs.clone(),
            federated.clone(),
            audit_log.clone(),
            crate::flow::runner::RunnerSettings {
                flow_lifetime_secs: settings.flow_lifetime_secs,
                device_cookie_days: settings.methods.device_cookie_days,
            },
        ));
        Ok(Self {
            settings,
            clients,
            store,
            ports,
            hasher,
            clock,
            runner,
            sessions,
            codes,
            throttle,
            audit_log,
            events,
            creator,
            federated,
            step_ports,
            kek,
            keys: RwLock::new(Arc::new(keys)),
            verified_tokens: Default::default(),
            change_log,
            announcer,
            client_touched: Default::default(),
        })
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<SigningKeys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads keys from the database (after `idp keys rotate` on any node).
    pub async fn reload_keys(&self) -> Result<(), CoreError> {
        let stored = self.ports.signing_keys.list().await?;
        let keys = SigningKeys::from_stored(
            &stored,
            &self.kek,
            self.clock.now(),
            keep_published(&self.clients),
        )?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Records that `client` obtained tokens, at most once a minute per
    /// client and node: the token endpoint is a hot path, and "last used" does
    /// not need more precision than that.
    pub(crate) async fn touch_client(
        &self,
        client: &ClientId,
        at: time::OffsetDateTime,
    ) -> Result<(), CoreError> {
        let now = at.unix_timestamp();
        {
            let mut seen = self
                .client_touched
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match seen.get(client) {
                Some(last) if now - *last < 60 => return Ok(()),
                _ => {
                    seen.insert(client.clone(), now);
                }
            }
        }
        Ok(self.ports.client_states.touch(client, at).await?)
    }

    pub(crate) async fn audit(
        &self,
        kind: &str,
        user: Option<UserId>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) {
        self.audit_log
            .record(kind, user, client, meta, detail)
            .await;
    }

    /// Records an event that concerns an organization (listed to its
    /// administrators as well as to the user).
    pub(crate) async fn audit_in_org(
        &self,
        kind: &str,
        user: Option<UserId>,
        org: Option<crate::domain::OrgId>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) {
        self.audit_log
            .record_in_org(kind, user, org, client, meta, detail)
            .await;
    }

    /// Queues a webhook event (see [`crate::events::Events::emit`]).
    pub async fn emit(&self, event: crate::webhooks::WebhookEvent) {
        self.events.emit(event).await;
    }

    /// Emits `kind` about `user` (`data.user`).
    pub(crate) async fn emit_user(&self, kind: crate::webhooks::WebhookEventType, user: &User) {
        self.events.user(kind, user).await;
    }

    /// Emits `user.roles_changed`: `user`'s roles in `org` are now `roles`.
    pub(crate) async fn emit_roles_changed(
        &self,
        org: &crate::domain::Organization,
        user: UserId,
        roles: &[crate::domain::Role],
    ) {
        self.events.roles_changed(org, user, roles).await;
    }

    /// Creates an account with a password. Refuses a duplicate email.
    pub async fn create_user(
        &self,
        email: Email,
        name: Option<String>,
        password: &Secret,
    ) -> Result<User, CreateUserError> {
        let local_part = email
            .as_str()
            .rsplit_once('@')
            .map_or(email.as_str(), |(local, _)| local);
        check_password_policy(
            &self.settings.accounts.password_policy,
            password,
            &[local_part],
        )?;
        let phc = self.hasher.hash(password).await?;
        self.insert_user(&email, name, Some(phc), None, &RequestMeta::default())
            .await?
            .ok_or(CreateUserError::EmailTaken)
    }

    /// Creates an active account for `email` (see
    /// [`crate::accounts::creation::AccountCreator::create`]). `None` when
    /// the email is taken.
    pub(crate) async fn insert_user(
        &self,
        email: &Email,
        name: Option<String>,
        phc: Option<String>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
    ) -> Result<Option<User>, CoreError> {
        self.creator.create(email, name, phc, client, meta).await
    }

    /// Replaces a user's recovery codes with fresh ones and returns them (to
    /// be shown once: only their keyed hashes are kept).
    pub async fn regenerate_recovery_codes(&self, user: &User) -> Result<Vec<String>, CoreError> {
        let codes = crate::steps::recovery_code::regenerate(&self.step_ports, user).await?;
        self.audit(
            "recovery_codes.regenerated",
            Some(user.id),
            None,
            &RequestMeta::default(),
            serde_json::json!({}),
        )
        .await;
        Ok(codes)
    }

    /// Replaces a user's password (CLI, demo reset).
    pub async fn set_password(
        &self,
        user: UserId,
        password: &Secret,
    ) -> Result<(), CreateUserError> {
        let Some(account) = self.ports.users.find_by_id(user).await? else {
            return Err(CreateUserError::Core(CoreError::Internal(format!(
                "no account with id {user}"
            ))));
        };
        let local_part = account
            .email
            .as_str()
            .rsplit_once('@')
            .map_or(account.email.as_str(), |(local, _)| local);
        check_password_policy(
            &self.settings.accounts.password_policy,
            password,
            &[local_part, account.customer_id.as_str()],
        )?;
        let phc = self.hasher.hash(password).await?;
        self.ports
            .credentials
            .set_password(&PasswordCredential {
                user_id: user,
                phc,
                updated_at: self.clock.now(),
            })
            .await?;
        Ok(())
    }

    /// The password rules that apply: the platform's (`[accounts]
    /// password_policy`), the client's and every organization's, the
    /// strictest of each rule
    /// ([`crate::password_policy::PasswordPolicy::strictest`]).
    pub fn password_policy_for(
        &self,
        client: Option<&crate::client::Client>,
        orgs: &[crate::domain::Organization],
    ) -> crate::password_policy::PasswordPolicy {
        let platform = self.settings.accounts.password_policy.clone();
        let with_client = match client {
            Some(c) => platform.strictest(&c.account.password_policy),
            None => platform,
        };
        orgs.iter().fold(with_client, |policy, org| {
            policy.strictest(&org.password_policy)
        })
    }
}

/// The WebAuthn relying party of an issuer: its host is the RP id, its
/// origin the only accepted origin.
fn webauthn_settings(issuer: &str) -> Result<crate::flow::WebauthnSettings, CoreError> {
    let url = url::Url::parse(issuer).map_err(|e| CoreError::Internal(format!("issuer: {e}")))?;
    let rp_id = url
        .host_str()
        .ok_or_else(|| CoreError::Internal("issuer has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(crate::flow::WebauthnSettings {
        rp_name: rp_id.clone(),
        rp_id,
        origin: url.origin().ascii_serialization(),
    })
}

/// How long a retired key stays published: the longest token lifetime of any
/// client, plus a margin for clock skew.
fn keep_published(clients: &ClientRegistry) -> time::Duration {
    let longest = clients
        .iter()
        .map(|c| c.lifetimes.access_token.max(c.lifetimes.id_token))
        .max()
        .unwrap_or(3600);
    time::Duration::seconds(i64::from(longest) + 300)
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Every rule the password breaks.
    #[error("{}", crate::password_policy::english_all(.0))]
    WeakPassword(Vec<crate::password_policy::Violation>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<RepoError> for CreateUserError {
    fn from(e: RepoError) -> Self {
        Self::Core(e.into())
    }
}

/// Checks `pw` against `policy`; `context` holds what it must not contain
/// (email local part, customer identifier). Every broken rule is reported.
pub fn check_password_policy(
    policy: &crate::password_policy::PasswordPolicy,
    pw: &Secret,
    context: &[&str],
) -> Result<(), CreateUserError> {
    let violations = policy.check(pw.expose(), context);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(CreateUserError::WeakPassword(violations))
    }
}
