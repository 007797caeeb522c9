//! The accounts service: what users do about their own account around
//! login (recovery, password and email changes, sessions), and account
//! creation by the operator. Its journeys live in the sibling modules
//! (`recovery`, `security`, `forms`); this holds what they use. Second
//! factors and known browsers are the [`Devices`](super::devices::Devices)
//! service's.

use super::creation::{AccountCreator, CreateUserError, applicable_policy, check_password_policy};
use super::links::Links;
use super::settings::AccountSettings;
use crate::audit::Audit;
use crate::client::ClientRegistry;
use crate::clock::SharedClock;
use crate::domain::{ClientId, Email, PasswordCredential, RequestMeta, User, UserId};
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use crate::events::Events;
use crate::flow::{FlowRunner, MethodSettings, StepPorts};
use crate::password::PasswordHasher;
use crate::ports::{AuditRepo, CredentialRepo, DeviceRepo, OrgRepo, UserRepo};
use crate::secret::KeyEncryptionKey;
use crate::secret::Secret;
use crate::sessions::Sessions;
use crate::throttle::Throttle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The durable storage the accounts service uses.
#[derive(Clone)]
pub struct AccountsPorts {
    pub users: Arc<dyn UserRepo>,
    pub credentials: Arc<dyn CredentialRepo>,
    pub orgs: Arc<dyn OrgRepo>,
    pub devices: Arc<dyn DeviceRepo>,
    pub audit: Arc<dyn AuditRepo>,
}

/// A pending change of primary email (see `security`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EmailChangeRecord {
    pub(crate) new_email: Email,
    /// Keyed hash of the code, bound to the user and the address.
    pub(crate) mac: String,
    pub(crate) attempts: u32,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    /// The session that asked (only it may confirm).
    pub(crate) sid: String,
    pub(crate) client_id: Option<ClientId>,
}

/// The short-lived records of the account journeys.
#[derive(Clone)]
pub(crate) struct AccountRecords {
    pub(crate) email_changes: Records<EmailChangeRecord>,
    pub(crate) proofs_of_work: Records<bool>,
}

/// Settings the accounts service reads.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// Exactly as published in discovery (links in emails start with it).
    pub issuer: String,
    pub accounts: AccountSettings,
    pub methods: MethodSettings,
}

/// The accounts service.
pub struct Accounts {
    pub(crate) settings: AccountsConfig,
    pub(crate) clients: Arc<ClientRegistry>,
    pub(crate) ports: AccountsPorts,
    pub(crate) records: AccountRecords,
    pub(crate) hasher: PasswordHasher,
    pub(crate) kek: KeyEncryptionKey,
    pub(crate) clock: SharedClock,
    pub(crate) throttle: Arc<Throttle>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) runner: Arc<FlowRunner>,
    pub(crate) step_ports: StepPorts,
    /// Emailed password links.
    pub links: Links,
    pub(crate) creator: AccountCreator,
    pub(crate) audit_log: Audit,
    pub(crate) events: Events,
}

/// What the accounts service is built from.
pub struct AccountsParts {
    pub settings: AccountsConfig,
    pub clients: Arc<ClientRegistry>,
    pub ports: AccountsPorts,
    pub store: Arc<dyn EphemeralStore>,
    pub hasher: PasswordHasher,
    pub kek: KeyEncryptionKey,
    pub clock: SharedClock,
    pub throttle: Arc<Throttle>,
    pub sessions: Arc<Sessions>,
    pub runner: Arc<FlowRunner>,
    pub step_ports: StepPorts,
    pub links: Links,
    pub creator: AccountCreator,
    pub audit: Audit,
    pub events: Events,
}

impl Accounts {
    pub fn new(p: AccountsParts) -> Self {
        let records = AccountRecords {
            email_changes: Records::new(p.store.clone(), Namespace::EmailChange),
            proofs_of_work: Records::new(p.store, Namespace::ProofOfWork),
        };
        Self {
            settings: p.settings,
            clients: p.clients,
            ports: p.ports,
            records,
            hasher: p.hasher,
            kek: p.kek,
            clock: p.clock,
            throttle: p.throttle,
            sessions: p.sessions,
            runner: p.runner,
            step_ports: p.step_ports,
            links: p.links,
            creator: p.creator,
            audit_log: p.audit,
            events: p.events,
        }
    }

    /// Creates an account with a password (the CLI, the demo). Refuses a
    /// duplicate email and a password breaking the platform's rules.
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
        self.creator
            .create(&email, name, Some(phc), None, &RequestMeta::default())
            .await?
            .ok_or(CreateUserError::EmailTaken)
    }

    /// Replaces a user's recovery codes with fresh ones and returns them (to
    /// be shown once: only their keyed hashes are kept).
    pub async fn regenerate_recovery_codes(&self, user: &User) -> Result<Vec<String>, CoreError> {
        let codes = crate::steps::recovery_code::regenerate(&self.step_ports, user).await?;
        self.audit_log
            .record(
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

    /// The password rules that apply: the platform's, the client's and
    /// every organization's, the strictest of each rule.
    pub(crate) fn password_policy_for(
        &self,
        client: Option<&crate::client::Client>,
        orgs: &[crate::domain::Organization],
    ) -> crate::password_policy::PasswordPolicy {
        applicable_policy(&self.settings.accounts.password_policy, client, orgs)
    }
}
