//! The provider, assembled: the settings, the clients and the ports, and
//! the services built from them (sessions, the login flow runner,
//! authorization, tokens, accounts, devices, organizations). Each service holds only
//! what it uses; this is the one place that knows them all, and nothing in
//! the core depends on it.

use crate::accounts::creation::AccountCreator;
use crate::accounts::devices::{Devices, DevicesParts};
use crate::accounts::federated::FederatedAccounts;
use crate::accounts::links::Links;
use crate::accounts::orgs::{Organizations, OrganizationsConfig, OrganizationsPorts};
use crate::accounts::service::{Accounts, AccountsConfig, AccountsParts, AccountsPorts};
use crate::audit::Audit;
use crate::client::ClientRegistry;
use crate::clock::SharedClock;
use crate::ephemeral::EphemeralStore;
use crate::error::CoreError;
use crate::events::Events;
use crate::flow::runner::RunnerSettings;
use crate::flow::state::{FlowStore, StoredFlows};
use crate::flow::{FlowRunner, StepPorts, WebauthnSettings};
use crate::keys::KeyRing;
use crate::oidc::access_tokens::StoredAccessTokens;
use crate::oidc::announced::{AnnouncedFamilies, AnnouncedOrgs, AnnouncedUsers, Announcer};
use crate::oidc::authorization::Authorization;
use crate::oidc::codes::{CodeStore, StoredCodes};
use crate::oidc::token::Tokens;
use crate::password::PasswordHasher;
use crate::ports::{
    AuditRepo, ClientStateRepo, ConsentRepo, CredentialRepo, DeviceRepo, OrgRepo, SigningKeyRepo,
    TokenFamilyRepo, UserRepo,
};
use crate::secret::KeyEncryptionKey;
use crate::sessions::{Sessions, StoredSessions};
use crate::throttle::{StoredCounters, Throttle};
use std::sync::Arc;

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
    /// `[[resource_servers]]` (RFC 8707).
    pub resource_servers: Vec<crate::oidc::resources::ResourceServer>,
    /// Tokens obtained by token exchange (RFC 8693) live at most this long
    /// (`[token_exchange] max_token_secs`).
    pub token_exchange_max_secs: u32,
    /// `[device]`: the device authorization grant (RFC 8628).
    pub device: crate::oidc::device::DeviceSettings,
}

/// Durable storage ports, and the outside systems.
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
    /// Fetches clients' `jwks_uri` (an outside system).
    pub client_jwks: Arc<dyn crate::oidc::client_auth::JwksFetcher>,
}

/// The provider: settings, clients, ports, and the services.
pub struct Provider {
    pub settings: ProviderSettings,
    pub clients: Arc<ClientRegistry>,
    /// The ports, each write that changes a token read announced.
    pub ports: ProviderPorts,
    pub clock: SharedClock,
    /// The signing keys.
    pub keys: Arc<KeyRing>,
    /// Single sign-on sessions.
    pub sessions: Arc<Sessions>,
    /// Runs login flows (and knows the authentication methods).
    pub runner: Arc<FlowRunner>,
    /// Authorization requests and completed logins.
    pub authorization: Arc<Authorization>,
    /// The token endpoint, userinfo, introspection, revocation.
    pub tokens: Arc<Tokens>,
    /// Client authentication at the back-channel endpoints.
    pub client_auth: Arc<crate::oidc::client_auth::ClientAuthentication>,
    /// DPoP proofs (RFC 9449).
    pub dpop: Arc<crate::oidc::dpop::DpopProofs>,
    /// The resource servers tokens may be asked for (RFC 8707).
    pub resources: Arc<crate::oidc::resources::ResourceServers>,
    /// The token endpoint's pipeline.
    pub token_endpoint: Arc<crate::oidc::token_endpoint::TokenEndpoint>,
    /// The `sub` each client sees (pairwise or public, OIDC Core §8): for
    /// anything else that names a user to a client (logout tokens...).
    pub subjects: Arc<crate::oidc::subjects::Subjects>,
    /// The device authorization grant (RFC 8628).
    pub device_authorizations: Arc<crate::oidc::device::DeviceAuthorizations>,
    /// Counters of guesses and of things that cost (codes sent,
    /// registrations).
    pub throttle: Arc<Throttle>,
    /// Pushed authorization requests and request objects.
    pub request_objects: Arc<crate::oidc::pushed::RequestObjects>,
    /// The account journeys.
    pub accounts: Arc<Accounts>,
    /// Second factors and known browsers on the account page.
    pub devices: Arc<Devices>,
    /// Organizations and the operator's decisions.
    pub organizations: Arc<Organizations>,
    /// Accounts' links to upstream identities.
    pub federated: Arc<FederatedAccounts>,
    /// The short-lived store, for [`Provider::records`] and the health check.
    store: Arc<dyn EphemeralStore>,
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
        // makes them (see `oidc::announced`).
        let change_log = Arc::new(crate::changes::ChangeLog::new(clock.clone()));
        ports.changes.subscribe(change_log.clone());
        let announcer = Arc::new(Announcer {
            log: change_log.clone(),
            feed: ports.changes.clone(),
        });
        ports.users = Arc::new(AnnouncedUsers {
            inner: ports.users,
            announcer: announcer.clone(),
        });
        ports.families = Arc::new(AnnouncedFamilies {
            inner: ports.families,
            announcer: announcer.clone(),
        });
        ports.orgs = Arc::new(AnnouncedOrgs {
            inner: ports.orgs,
            announcer: announcer.clone(),
        });
        let clients = Arc::new(clients);
        let keys = Arc::new(
            KeyRing::load(
                ports.signing_keys.clone(),
                kek.clone(),
                clock.clone(),
                keep_published(&clients),
            )
            .await?,
        );
        let audit = Audit::new(ports.audit.clone(), clock.clone());
        let events = Events::new(
            settings.webhooks.clone(),
            ports.webhooks.clone(),
            ports.users.clone(),
            clock.clone(),
        );
        let creator = AccountCreator::new(
            ports.users.clone(),
            ports.credentials.clone(),
            audit.clone(),
            events.clone(),
            clock.clone(),
            settings.customer_id_suffix.clone(),
        );
        let federated = Arc::new(FederatedAccounts::new(
            ports.users.clone(),
            ports.credentials.clone(),
            ports.identities.clone(),
            ports.upstreams.clone(),
            creator.clone(),
            audit.clone(),
            clock.clone(),
        ));
        let throttle = Arc::new(Throttle::new(
            Arc::new(StoredCounters::new(store.clone())),
            settings.throttle,
            clock.clone(),
        ));
        let flows: Arc<dyn FlowStore> = Arc::new(StoredFlows::new(store.clone()));
        // Pairwise subjects (OIDC Core §8.1), the same on every node: the
        // salt is derived from the key-encryption key all nodes share.
        let subjects = Arc::new(crate::oidc::subjects::Subjects::from_kek(&kek));
        let sessions = Arc::new(
            Sessions::new(
                Arc::new(StoredSessions::new(store.clone())),
                ports.families.clone(),
                audit.clone(),
                clock.clone(),
                settings.session_lifetime_secs,
            )
            .with_end_listener(Arc::new(
                crate::oidc::logout_channels::SingleLogout::new(
                    clients.clone(),
                    subjects.clone(),
                    ports.webhooks.clone(),
                    clock.clone(),
                ),
            )),
        );
        let codes: Arc<dyn CodeStore> = Arc::new(StoredCodes::new(store.clone()));
        let step_ports = StepPorts {
            issuer: settings.issuer.clone(),
            users: ports.users.clone(),
            credentials: ports.credentials.clone(),
            flows: flows.clone(),
            throttle: throttle.clone(),
            hasher: hasher.clone(),
            clock: clock.clone(),
            kek: kek.clone(),
            notifier: notifier.clone(),
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
        let runner = Arc::new(FlowRunner::new(
            steps,
            step_ports.clone(),
            flows,
            throttle.clone(),
            clients.clone(),
            ports.devices.clone(),
            ports.orgs.clone(),
            federated.clone(),
            audit.clone(),
            RunnerSettings {
                flow_lifetime_secs: settings.flow_lifetime_secs,
                device_cookie_days: settings.methods.device_cookie_days,
            },
        ));
        let resources = Arc::new(crate::oidc::resources::ResourceServers::new(
            &settings.issuer,
            settings.resource_servers.clone(),
        ));
        let device_authorizations = Arc::new(crate::oidc::device::DeviceAuthorizations::new(
            settings.issuer.clone(),
            clients.clone(),
            resources.clone(),
            Arc::new(crate::oidc::device::StoredDeviceCodes::new(store.clone())),
            throttle.clone(),
            settings.device,
            audit.clone(),
            clock.clone(),
        ));
        let authorization = Arc::new(Authorization::new(
            settings.issuer.clone(),
            clients.clone(),
            keys.clone(),
            sessions.clone(),
            runner.clone(),
            codes.clone(),
            ports.consents.clone(),
            ports.users.clone(),
            audit.clone(),
            clock.clone(),
            subjects.clone(),
            device_authorizations.clone(),
        ));
        // DPoP nonces every node issues and accepts alike: keyed by the
        // key-encryption key all nodes share.
        let dpop_nonces = crate::oidc::dpop::DpopNonces::from_kek(&kek);
        let tokens = Arc::new(Tokens::new(
            resources.clone(),
            settings.issuer.clone(),
            keys.clone(),
            codes,
            Arc::new(StoredAccessTokens::new(store.clone())),
            ports.families.clone(),
            ports.client_states.clone(),
            audit.clone(),
            clock.clone(),
            change_log,
            announcer,
            subjects.clone(),
            settings.token_exchange_max_secs,
        ));
        let links = Links::new(
            settings.issuer.clone(),
            store.clone(),
            ports.users.clone(),
            ports.credentials.clone(),
            hasher.clone(),
            audit.clone(),
            clock.clone(),
        );
        let accounts = Arc::new(Accounts::new(AccountsParts {
            settings: AccountsConfig {
                issuer: settings.issuer.clone(),
                accounts: settings.accounts.clone(),
                methods: settings.methods.clone(),
            },
            clients: clients.clone(),
            ports: AccountsPorts {
                users: ports.users.clone(),
                credentials: ports.credentials.clone(),
                orgs: ports.orgs.clone(),
                devices: ports.devices.clone(),
                audit: ports.audit.clone(),
            },
            store: store.clone(),
            hasher: hasher.clone(),
            kek,
            clock: clock.clone(),
            throttle: throttle.clone(),
            sessions: sessions.clone(),
            runner: runner.clone(),
            step_ports: step_ports.clone(),
            links: links.clone(),
            creator: creator.clone(),
            audit: audit.clone(),
            events: events.clone(),
        }));
        let devices = Arc::new(Devices::new(DevicesParts {
            credentials: ports.credentials.clone(),
            orgs: ports.orgs.clone(),
            devices: ports.devices.clone(),
            store: store.clone(),
            clock: clock.clone(),
            sessions: sessions.clone(),
            runner: runner.clone(),
            step_ports,
            audit: audit.clone(),
        }));
        let organizations = Arc::new(Organizations::new(
            OrganizationsConfig {
                issuer: settings.issuer.clone(),
                accounts: settings.accounts.clone(),
            },
            clients.clone(),
            OrganizationsPorts {
                users: ports.users.clone(),
                credentials: ports.credentials.clone(),
                orgs: ports.orgs.clone(),
                registry: ports.registry.clone(),
                webhooks: ports.webhooks.clone(),
                audit: ports.audit.clone(),
            },
            store.clone(),
            hasher,
            clock.clone(),
            throttle.clone(),
            notifier,
            links,
            creator,
            audit,
            events,
        ));
        let client_auth = Arc::new(crate::oidc::client_auth::ClientAuthentication::new(
            clients.clone(),
            settings.issuer.clone(),
            clock.clone(),
            ports.client_jwks.clone(),
            store.clone(),
        ));
        let request_objects = Arc::new(crate::oidc::pushed::RequestObjects::new(
            clients.clone(),
            resources.clone(),
            client_auth.clone(),
            settings.issuer.clone(),
            clock.clone(),
            store.clone(),
        ));
        let dpop = Arc::new(crate::oidc::dpop::DpopProofs::new(
            store.clone(),
            clock.clone(),
            dpop_nonces,
        ));
        let token_endpoint = Arc::new(crate::oidc::token_endpoint::TokenEndpoint::new(
            client_auth.clone(),
            dpop.clone(),
            tokens.clone(),
            device_authorizations.clone(),
        ));
        Ok(Self {
            dpop,
            resources,
            token_endpoint,
            device_authorizations,
            throttle,
            request_objects,
            settings,
            clients,
            ports,
            clock,
            keys,
            sessions,
            runner,
            authorization,
            tokens,
            client_auth,
            accounts,
            devices,
            organizations,
            federated,
            store,
            subjects,
        })
    }
}

impl Provider {
    /// Typed access to the short-lived records of `ns` (the server's own
    /// pages: a logout waiting for confirmation, the account pages' sign-in).
    pub fn records<T: serde::Serialize + serde::de::DeserializeOwned + Sync>(
        &self,
        ns: crate::ephemeral::Namespace,
    ) -> crate::ephemeral::Records<T> {
        crate::ephemeral::Records::new(self.store.clone(), ns)
    }

    /// Whether the short-lived store and the database answer (the health
    /// check).
    pub async fn health(&self) -> (bool, bool) {
        let probe: crate::ephemeral::Records<bool> =
            self.records(crate::ephemeral::Namespace::Health);
        let store_ok = probe.get("probe").await.is_ok();
        let db_ok = self
            .ports
            .client_states
            .find(&crate::domain::ClientId("healthz".into()))
            .await
            .is_ok();
        (store_ok, db_ok)
    }
}

/// The WebAuthn relying party of an issuer: its host is the RP id, its
/// origin the only accepted origin.
fn webauthn_settings(issuer: &str) -> Result<WebauthnSettings, CoreError> {
    let url = url::Url::parse(issuer).map_err(|e| CoreError::Internal(format!("issuer: {e}")))?;
    let rp_id = url
        .host_str()
        .ok_or_else(|| CoreError::Internal("issuer has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(WebauthnSettings {
        rp_name: rp_id.clone(),
        rp_id,
        origin: url.origin().ascii_serialization(),
    })
}

/// How long a retired key stays published: the longest token lifetime of any
/// client, plus a margin for clock skew. Registered clients (RFC 7591), which
/// come and go while the server runs, get the default lifetimes: those count
/// too.
fn keep_published(clients: &ClientRegistry) -> time::Duration {
    let registered = crate::client::Lifetimes::default();
    let longest = clients
        .iter()
        .map(|c| &c.lifetimes)
        .chain(std::iter::once(&registered))
        .map(|l| l.access_token.max(l.id_token))
        .max()
        .unwrap_or(3600);
    time::Duration::seconds(i64::from(longest) + 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File clients with short lifetimes do not unpublish a retired key
    /// before a registered client's tokens (default lifetimes) expire; a
    /// file client with longer ones keeps it longer.
    #[test]
    fn retired_keys_outlive_every_clients_tokens() {
        let mut short = crate::oidc::authorize::tests::client(false);
        short.lifetimes.access_token = 60;
        short.lifetimes.id_token = 60;
        let clients = ClientRegistry::new([short.clone()]);
        let registered = crate::client::Lifetimes::default().access_token;
        assert_eq!(
            keep_published(&clients),
            time::Duration::seconds(i64::from(registered) + 300)
        );
        short.lifetimes.id_token = 7200;
        let clients = ClientRegistry::new([short]);
        assert_eq!(keep_published(&clients), time::Duration::seconds(7500));
    }
}
