//! The provider: the ports, the clients, the keys and the settings every
//! endpoint works with, plus account creation shared by the CLI and the demo.

use crate::client::ClientRegistry;
use crate::clock::SharedClock;
use crate::domain::{
    AuditEvent, ClientId, CustomerId, Email, PasswordCredential, RequestMeta, User, UserId,
    UserStatus,
};
use crate::ephemeral::EphemeralStore;
use crate::error::CoreError;
use crate::flow::{StepPorts, StepRegistry};
use crate::keys::SigningKeys;
use crate::password::PasswordHasher;
use crate::ports::{
    AuditRepo, ClientStateRepo, ConsentRepo, CredentialRepo, DeviceRepo, OrgRepo, RepoError,
    SigningKeyRepo, TokenFamilyRepo, UserRepo,
};
use crate::secret::{KeyEncryptionKey, Secret};
use serde::Deserialize;
use std::sync::{Arc, RwLock};

/// Failed-login throttling: fixed windows counted in the short-lived store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Failures per identifier (known or not) before it is locked for the window.
    pub account_max_failures: u32,
    /// Failures per client IP before it is locked for the window.
    pub ip_max_failures: u32,
    pub window_secs: u32,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account_max_failures: 5,
            ip_max_failures: 50,
            window_secs: 900,
        }
    }
}

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
    pub throttle: ThrottleSettings,
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
    /// The authentication methods.
    pub steps: StepRegistry,
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
        let step_ports = StepPorts {
            users: ports.users.clone(),
            credentials: ports.credentials.clone(),
            store: store.clone(),
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
        Ok(Self {
            settings,
            clients,
            store,
            ports,
            hasher,
            clock,
            steps,
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
        self.audit_in_org(kind, user, None, client, meta, detail)
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
        let ev = AuditEvent {
            id: uuid::Uuid::now_v7(),
            at: self.clock.now(),
            kind: kind.to_owned(),
            user_id: user,
            client_id: client.cloned(),
            org_id: org,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            detail,
        };
        if let Err(e) = self.ports.audit.record(&ev).await {
            tracing::error!(error = %e, kind, "audit event not recorded");
        }
    }

    /// Queues `event` for every webhook endpoint subscribed to its type (one
    /// delivery each, written together). The change it reports has already
    /// happened: a failure to queue is logged, not returned.
    pub async fn emit(&self, event: crate::webhooks::WebhookEvent) {
        let body = event.body();
        let deliveries: Vec<_> = self
            .settings
            .webhooks
            .iter()
            .filter(|e| e.wants(event.event_type))
            .map(|e| crate::webhooks::WebhookDelivery::new(&event, e, &body))
            .collect();
        if deliveries.is_empty() {
            return;
        }
        if let Err(e) = self.ports.webhooks.enqueue(&deliveries).await {
            tracing::error!(error = %e, event = %event.event_type, id = %event.id, "webhook event not queued");
        }
    }

    /// Emits `kind` about `user` (`data.user`).
    pub(crate) async fn emit_user(&self, kind: crate::webhooks::WebhookEventType, user: &User) {
        let data = serde_json::json!({"user": webhook_user(user)});
        self.emit(crate::webhooks::WebhookEvent::new(
            kind,
            self.clock.now(),
            data,
        ))
        .await;
    }

    /// Emits `user.roles_changed`: `user`'s roles in `org` are now `roles`
    /// (empty: no longer a member).
    pub(crate) async fn emit_roles_changed(
        &self,
        org: &crate::domain::Organization,
        user: UserId,
        roles: &[crate::domain::Role],
    ) {
        let user = match self.ports.users.find_by_id(user).await {
            Ok(Some(u)) => webhook_user(&u),
            Ok(None) => serde_json::json!({"id": user}),
            Err(e) => {
                tracing::warn!(error = %e, "webhook: user not read, sending its id only");
                serde_json::json!({"id": user})
            }
        };
        let data = serde_json::json!({
            "user": user,
            "organization": {"id": org.id, "name": org.name, "status": org.status.as_str()},
            "roles": roles,
        });
        self.emit(crate::webhooks::WebhookEvent::new(
            crate::webhooks::WebhookEventType::UserRolesChanged,
            self.clock.now(),
            data,
        ))
        .await;
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

    /// Creates an active account for `email` (drawing customer identifiers
    /// until one is free), with the password of hash `phc` when given, and
    /// audits `user.created`. `None` when the email is taken.
    pub(crate) async fn insert_user(
        &self,
        email: &Email,
        name: Option<String>,
        phc: Option<String>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
    ) -> Result<Option<User>, CoreError> {
        let now = self.clock.now();
        for _ in 0..8 {
            let user = User {
                id: UserId::new_v7(),
                customer_id: CustomerId::generate(&self.settings.customer_id_suffix),
                email: email.clone(),
                email_verified: false,
                name: name.clone(),
                locale: None,
                status: UserStatus::Active,
                phone: None,
                phone_verified: false,
                mfa_required: false,
                last_method: None,
                backup_email: None,
                created_at: now,
                updated_at: now,
            };
            match self.ports.users.create(&user).await {
                Ok(()) => {
                    if let Some(phc) = phc {
                        self.ports
                            .credentials
                            .set_password(&PasswordCredential {
                                user_id: user.id,
                                phc,
                                updated_at: now,
                            })
                            .await?;
                    }
                    self.audit(
                        "user.created",
                        Some(user.id),
                        client,
                        meta,
                        serde_json::json!({}),
                    )
                    .await;
                    self.emit_user(crate::webhooks::WebhookEventType::UserCreated, &user)
                        .await;
                    return Ok(Some(user));
                }
                Err(RepoError::Conflict(_)) => {
                    if self.ports.users.find_by_email(email).await?.is_some() {
                        return Ok(None);
                    }
                    // A customer identifier collision: draw another.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CoreError::Internal(
            "could not draw a free customer identifier".into(),
        ))
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

/// A user as webhooks describe it.
fn webhook_user(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "customer_id": u.customer_id.as_str(),
        "email": u.email.as_str(),
        "email_verified": u.email_verified,
        "name": u.name,
    })
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
