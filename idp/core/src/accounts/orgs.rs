//! Organizations: creation from the public page (an existing account proves
//! its password, or a new one is created; a French company is looked up by
//! SIRET in the company registry, a foreign one is given by name and
//! country), validation or rejection by the platform operator, members and
//! their roles, and the security settings (enforced MFA per authentication
//! kind, password policy).
//!
//! Authorization lives here, not in the web layer: every action on an
//! organization goes through [`Organizations::org_actor`], which checks the
//! caller's roles in *that* organization; the platform operator is a
//! separate capability ([`PlatformOperator`]), held by a client with
//! `[account] platform_admin = true` or by the command line.

use crate::access_token::AccessTokenInfo;
use crate::accounts::creation::AccountCreator;
use crate::accounts::links::{LinkPurpose, Links};
use crate::audit::Audit;
use crate::client::{Client, ClientRegistry};
use crate::clock::SharedClock;
use crate::company::{Company, RegistryError, Siret};
use crate::domain::RequestMeta;
use crate::domain::{
    AuditEvent, ClientId, Email, Membership, OrgId, OrgStatus, Organization, Role, User, UserId,
    UserStatus,
};
use crate::ephemeral::{EphemeralStore, Namespace, Records};
use crate::error::CoreError;
use crate::events::Events;
use crate::notify::{Message, Notification};
use crate::password::PasswordCheck;
use crate::password::PasswordHasher;
use crate::password_policy::{PasswordPolicy, Violation};
use crate::ports::RepoError;
use crate::ports::{CredentialRepo, OrgRepo, UserRepo, WebhookRepo};
use crate::secret::Secret;
use crate::throttle::Throttle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long the confirmation page of an organization creation stays valid.
const REQUEST_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest organization or person name accepted.
const MAX_NAME_CHARS: usize = 200;
/// Most authentication kinds an organization may enforce MFA for.
const MAX_MFA_KINDS: usize = 16;
/// Most events the audit listing returns.
pub const MAX_AUDIT_EVENTS: u64 = 500;

/// ISO 3166-1 alpha-2 codes (officially assigned), for companies abroad.
const COUNTRY_CODES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// An ISO 3166-1 alpha-2 country code as typed (`de`, ` DE `), upper-cased;
/// `None` when it is not an assigned code.
pub fn parse_country(raw: &str) -> Option<String> {
    let code = raw.trim().to_ascii_uppercase();
    (code.len() == 2 && COUNTRY_CODES.split(' ').any(|c| c == code)).then_some(code)
}

/// A display name (organization, person): trimmed, 1 to 200 characters, no
/// control characters.
pub fn parse_name(raw: &str) -> Option<String> {
    let s = raw.trim();
    let n = s.chars().count();
    ((1..=MAX_NAME_CHARS).contains(&n) && !s.chars().any(char::is_control)).then(|| s.to_owned())
}

/// The account an organization is created with, as typed on the form.
pub enum CreatorInput {
    /// An existing account, which proves its password.
    Existing { email: String, password: Secret },
    /// A new account, created with this password (checked against the
    /// platform's and the client's password policy).
    New {
        email: String,
        name: String,
        password: Secret,
    },
}

/// Where the company is domiciled, as typed.
pub enum DomicileInput {
    /// Looked up in the company registry by SIRET.
    France {
        siret: String,
    },
    Abroad {
        name: String,
        country: String,
    },
}

/// The creator once checked. A new account's password is kept only as its
/// hash until the creation is confirmed.
#[derive(Clone, Serialize, Deserialize)]
pub enum Creator {
    Existing {
        user_id: UserId,
    },
    New {
        email: Email,
        name: String,
        phc: String,
    },
}

impl std::fmt::Debug for Creator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Existing { user_id } => f
                .debug_struct("Existing")
                .field("user_id", user_id)
                .finish(),
            Self::New { email, .. } => f
                .debug_struct("New")
                .field("email", email)
                .finish_non_exhaustive(),
        }
    }
}

/// An organization creation waiting for the creator's confirmation, kept in
/// the short-lived store under a random id. Everything shown on the
/// confirmation page comes from here (never from the browser).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrgRequest {
    pub creator: Creator,
    /// The account's email (shown on the confirmation page).
    pub email: Email,
    pub name: String,
    pub siret: Option<String>,
    /// The registry's address of a French company.
    pub address: Option<String>,
    pub country: String,
    pub client_id: Option<ClientId>,
    pub locale: String,
    /// The hash of the browser cookie it was made in (only that browser may
    /// confirm it).
    browser: String,
}

/// What the creation form submitted.
pub struct OrgCreationInput {
    pub account: CreatorInput,
    pub domicile: DomicileInput,
    pub client_id: Option<ClientId>,
    /// `en` or `fr`: the emails' language.
    pub locale: String,
    /// The browser cookie's value.
    pub browser: String,
}

/// Why an organization creation was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrgCreateError {
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("the name must have 1 to 200 characters")]
    InvalidName,
    /// Unknown email or wrong password: the same answer for both.
    #[error("the email or password is incorrect")]
    InvalidCredentials,
    #[error("too many attempts")]
    Locked { until: OffsetDateTime },
    /// A new account was asked for an address that has one.
    #[error("an account already uses this email address")]
    EmailTaken,
    #[error("the password does not meet the rules")]
    WeakPassword(Vec<Violation>),
    #[error("invalid SIRET number: {0}")]
    InvalidSiret(crate::company::SiretError),
    #[error("no establishment has this SIRET number")]
    UnknownSiret,
    #[error("this establishment is closed")]
    InactiveCompany,
    /// The registry could not answer: the user may retry.
    #[error("the company registry is unavailable")]
    RegistryUnavailable,
    #[error("the company name must have 1 to 200 characters")]
    InvalidCompanyName,
    #[error("not an ISO 3166-1 country code")]
    InvalidCountry,
    /// A company domiciled in France is identified by its SIRET number.
    #[error("a company domiciled in France is identified by its SIRET number")]
    FranceNeedsSiret,
    /// A pending or validated organization already has this SIRET.
    #[error("an organization is already registered for this SIRET number")]
    SiretTaken,
    /// The confirmation expired, was used, or belongs to another browser.
    #[error("this request has expired")]
    Expired,
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<RepoError> for OrgCreateError {
    fn from(e: RepoError) -> Self {
        Self::Core(e.into())
    }
}

/// Why an action on an existing organization was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The caller may not do this here (not a member of the organization, or
    /// lacking the role; not the platform operator).
    #[error("you are not allowed to do this in this organization")]
    Forbidden,
    /// The organization enforces a second factor, and the token's sign-in
    /// did not use two kinds of factor (RFC 9470 step-up).
    #[error("this organization requires a sign-in with a second factor")]
    MfaRequired,
    #[error("no such organization")]
    NotFound,
    #[error("no such member")]
    MemberNotFound,
    /// The organization was already validated or rejected.
    #[error("the organization is already {0}")]
    AlreadyDecided(&'static str),
    #[error("this account is already a member")]
    AlreadyMember,
    /// The change would leave the organization without an administrator.
    #[error("an organization keeps at least one administrator")]
    LastAdministrator,
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The security settings break rules: one message per rule.
    #[error("invalid security settings")]
    InvalidSettings(Vec<SettingsProblem>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<RepoError> for OrgError {
    fn from(e: RepoError) -> Self {
        Self::Core(e.into())
    }
}

/// One broken rule of submitted security settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsProblem {
    /// The field (`password_policy.min_length`, `mfa_required_for[0]`).
    pub field: String,
    pub message: String,
}

/// The platform operator: validates and rejects organizations.
#[derive(Debug, Clone)]
pub struct PlatformOperator {
    /// The client whose token was used; `None` for the command line.
    pub client_id: Option<ClientId>,
}

impl PlatformOperator {
    /// The operator at the command line (whoever can read the configuration
    /// and reach the database).
    pub fn command_line() -> Self {
        Self { client_id: None }
    }
}

/// A member acting on their organization, with their roles there.
#[derive(Debug, Clone)]
pub struct OrgActor {
    pub user_id: UserId,
    pub client_id: Option<ClientId>,
    pub org: Organization,
    pub roles: Vec<Role>,
}

/// Who performs an action on an organization's members.
#[derive(Debug, Clone)]
pub enum MemberManager {
    Member(OrgActor),
    /// The platform operator (CLI `idp org add-member`).
    Operator(PlatformOperator, Organization),
}

impl MemberManager {
    fn org(&self) -> &Organization {
        match self {
            Self::Member(a) => &a.org,
            Self::Operator(_, o) => o,
        }
    }

    fn user(&self) -> Option<UserId> {
        match self {
            Self::Member(a) => Some(a.user_id),
            Self::Operator(..) => None,
        }
    }

    fn client(&self) -> Option<&ClientId> {
        match self {
            Self::Member(a) => a.client_id.as_ref(),
            Self::Operator(op, _) => op.client_id.as_ref(),
        }
    }
}

/// What a member may do; each maps to the roles allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgAction {
    /// See the organization (any member).
    View,
    /// List members (administrator or security manager).
    ListMembers,
    /// Add, remove members, change roles (administrator).
    ManageMembers,
    /// See and change enforced MFA and the password policy (security manager
    /// or administrator).
    ManageSecurity,
    /// Read the organization's audit trail (administrator or security manager).
    ReadAudit,
}

impl OrgAction {
    /// Whether someone with `roles` may do this.
    pub fn allowed(self, roles: &[Role]) -> bool {
        let has = |r: Role| roles.contains(&r);
        match self {
            Self::View => !roles.is_empty(),
            Self::ManageMembers => has(Role::Administrator),
            Self::ListMembers | Self::ManageSecurity | Self::ReadAudit => {
                has(Role::Administrator) || has(Role::SecurityManager)
            }
        }
    }
}

/// A member as listed.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub user_id: UserId,
    pub email: String,
    pub name: Option<String>,
    pub customer_id: String,
    pub roles: Vec<Role>,
    /// The account has no password yet (invitation not used).
    pub invitation_pending: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

/// The result of adding a member.
#[derive(Debug, Clone)]
pub struct AddedMember {
    pub user: User,
    /// A new account was created and invited to define its password; `false`
    /// when an existing account was added.
    pub created: bool,
}

/// Security settings as submitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    pub mfa_required_for: Vec<String>,
    pub password_policy: PasswordPolicy,
}

/// Parses roles given as names; empty or unknown names are refused.
pub fn parse_roles<S: AsRef<str>>(names: &[S]) -> Result<Vec<Role>, String> {
    let mut roles = Vec::new();
    for n in names {
        let r = Role::parse(n.as_ref().trim()).ok_or_else(|| {
            format!(
                "unknown role {:?} (expected administrator, security_manager or member)",
                n.as_ref()
            )
        })?;
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    if roles.is_empty() {
        return Err("at least one role is needed".into());
    }
    roles.sort();
    Ok(roles)
}

/// Every rule the security settings break (an empty list when they are fine).
pub fn check_security_settings(s: &SecuritySettings) -> Vec<SettingsProblem> {
    let mut problems = Vec::new();
    let mut push = |field: String, message: String| {
        problems.push(SettingsProblem { field, message });
    };
    if s.mfa_required_for.len() > MAX_MFA_KINDS {
        push(
            "mfa_required_for".into(),
            format!("at most {MAX_MFA_KINDS} authentication kinds"),
        );
    }
    for (i, k) in s.mfa_required_for.iter().enumerate() {
        let ok = (1..=32).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            push(
                format!("mfa_required_for[{i}]"),
                "an authentication kind is 1 to 32 characters among a-z, 0-9, - and _".into(),
            );
        }
    }
    let p = &s.password_policy;
    // Each rule of PasswordPolicy::validate, reported separately.
    let probes = [
        PasswordPolicy {
            max_length: p.max_length,
            min_length: 8,
            allowed_special: None,
            ..PasswordPolicy::default()
        },
        PasswordPolicy {
            min_length: p.min_length,
            max_length: p.min_length.max(128),
            allowed_special: None,
            ..PasswordPolicy::default()
        },
        PasswordPolicy {
            allowed_special: p.allowed_special.clone(),
            ..PasswordPolicy::default()
        },
    ];
    for probe in probes {
        if let Err(e) = probe.validate() {
            let (field, message) = e.split_once(": ").unwrap_or(("password_policy", &e));
            push(field.to_owned(), message.to_owned());
        }
    }
    if p.min_length >= 8 && p.max_length >= 64 && p.min_length > p.max_length {
        push(
            "password_policy.min_length".into(),
            format!("must not exceed max_length ({})", p.max_length),
        );
    }
    problems
}

/// A checked request is kept under the hash of its id.
fn request_id(id: &str) -> String {
    crate::domain::TokenHash::of(id).as_str().to_owned()
}

fn browser_tag(browser: &str) -> String {
    crate::domain::TokenHash::of(&format!("org-browser:{browser}"))
        .as_str()
        .to_owned()
}

/// The durable storage the organizations service uses.
#[derive(Clone)]
pub struct OrganizationsPorts {
    pub users: Arc<dyn UserRepo>,
    pub credentials: Arc<dyn CredentialRepo>,
    pub orgs: Arc<dyn OrgRepo>,
    /// Looks up French companies by SIRET (an outside system).
    pub registry: Arc<dyn crate::company::CompanyRegistry>,
    /// The webhook outbox (the operator's view of deliveries).
    pub webhooks: Arc<dyn WebhookRepo>,
    /// The audit trail (an organization's events).
    pub audit: Arc<dyn crate::ports::AuditRepo>,
}

/// Settings the organizations service reads.
#[derive(Debug, Clone)]
pub struct OrganizationsConfig {
    /// Exactly as published in discovery (links in emails start with it).
    pub issuer: String,
    pub accounts: crate::accounts::AccountSettings,
}

/// Organizations: creation, validation, members and roles, enforced
/// security, and the platform operator's decisions.
pub struct Organizations {
    settings: OrganizationsConfig,
    clients: Arc<ClientRegistry>,
    ports: OrganizationsPorts,
    requests: Records<OrgRequest>,
    hasher: PasswordHasher,
    clock: SharedClock,
    throttle: Arc<Throttle>,
    notifier: Arc<dyn crate::notify::Notifier>,
    links: Links,
    creator: AccountCreator,
    audit_log: Audit,
    events: Events,
}

impl Organizations {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: OrganizationsConfig,
        clients: Arc<ClientRegistry>,
        ports: OrganizationsPorts,
        store: Arc<dyn EphemeralStore>,
        hasher: PasswordHasher,
        clock: SharedClock,
        throttle: Arc<Throttle>,
        notifier: Arc<dyn crate::notify::Notifier>,
        links: Links,
        creator: AccountCreator,
        audit_log: Audit,
        events: Events,
    ) -> Self {
        Self {
            settings,
            clients,
            ports,
            requests: Records::new(store, Namespace::OrgRequest),
            hasher,
            clock,
            throttle,
            notifier,
            links,
            creator,
            audit_log,
            events,
        }
    }

    /// The latest webhook deliveries, newest first, optionally of one status
    /// (the platform operator's view of the outbox).
    pub async fn list_webhook_deliveries(
        &self,
        _op: &PlatformOperator,
        status: Option<crate::webhooks::DeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<crate::webhooks::WebhookDelivery>, RepoError> {
        self.ports.webhooks.list_deliveries(status, limit).await
    }

    /// The password rules of a new account created from `client`'s pages:
    /// the platform's and the client's, the strictest wins.
    pub fn signup_password_policy(&self, client: Option<&Client>) -> PasswordPolicy {
        let platform = &self.settings.accounts.password_policy;
        client.map_or_else(
            || platform.clone(),
            |c| platform.strictest(&c.account.password_policy),
        )
    }

    /// First step of an organization creation: checks the account (an
    /// existing one proves its password; failures are throttled like the
    /// login's password step and look the same for an unknown email), the
    /// company (a SIRET is checked, then looked up and must be active), and
    /// keeps the request for the confirmation page. Returns its id.
    pub async fn prepare_organization(
        &self,
        input: OrgCreationInput,
        meta: &RequestMeta,
    ) -> Result<(String, OrgRequest), OrgCreateError> {
        let client = input
            .client_id
            .as_ref()
            .and_then(|c| self.clients.get(&c.0));
        // Cheap checks of the company first.
        let (siret, name, country) = match &input.domicile {
            DomicileInput::France { siret } => {
                let s = Siret::parse(siret).map_err(OrgCreateError::InvalidSiret)?;
                (Some(s), None, "FR".to_owned())
            }
            DomicileInput::Abroad { name, country } => {
                let name = parse_name(name).ok_or(OrgCreateError::InvalidCompanyName)?;
                let country = parse_country(country).ok_or(OrgCreateError::InvalidCountry)?;
                if country == "FR" {
                    return Err(OrgCreateError::FranceNeedsSiret);
                }
                (None, Some(name), country)
            }
        };
        let (creator, email) = self
            .check_creator(input.account, client.as_deref(), meta)
            .await?;
        let (name, address, siret) = match siret {
            Some(s) => {
                let company = self.lookup_company(&s).await?;
                (company.name, company.address, Some(company.siret))
            }
            None => (name.unwrap_or_default(), None, None),
        };
        let request = OrgRequest {
            creator,
            email,
            name,
            siret,
            address,
            country,
            client_id: client.map(|c| c.id.clone()),
            locale: input.locale,
            browser: browser_tag(&input.browser),
        };
        let id = crate::random::token();
        self.requests
            .put(&request_id(&id), &request, REQUEST_TTL)
            .await
            .map_err(CoreError::from)?;
        Ok((id, request))
    }

    /// The pending request `id` when it belongs to this browser.
    pub async fn org_request(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<OrgRequest>, CoreError> {
        if id.is_empty() || id.len() > 128 {
            return Ok(None);
        }
        let r = self.requests.get(&request_id(id)).await?;
        Ok(r.filter(|r| r.browser == browser_tag(browser)))
    }

    /// Confirms request `id`: creates the account if new, the organization
    /// (pending validation) with its creator as administrator, emails the
    /// creator and records `organization.created`.
    pub async fn confirm_organization(
        &self,
        id: &str,
        browser: &str,
        meta: &RequestMeta,
    ) -> Result<(Organization, User), OrgCreateError> {
        if self.org_request(id, browser).await?.is_none() {
            return Err(OrgCreateError::Expired);
        }
        let request = self
            .requests
            .take(&request_id(id))
            .await
            .map_err(CoreError::from)?
            .filter(|r| r.browser == browser_tag(browser))
            .ok_or(OrgCreateError::Expired)?;
        let user = match &request.creator {
            Creator::Existing { user_id } => self
                .ports
                .users
                .find_by_id(*user_id)
                .await?
                .filter(|u| u.status == UserStatus::Active)
                .ok_or(OrgCreateError::Expired)?,
            Creator::New { email, name, phc } => self
                .creator
                .create(
                    email,
                    Some(name.clone()),
                    Some(phc.clone()),
                    request.client_id.as_ref(),
                    meta,
                )
                .await?
                .ok_or(OrgCreateError::EmailTaken)?,
        };
        let now = self.clock.now();
        let org = Organization {
            id: OrgId::new_v7(),
            name: request.name.clone(),
            siret: request.siret.clone(),
            country: request.country.clone(),
            status: OrgStatus::Pending,
            created_by: user.id,
            created_at: now,
            decided_at: None,
            mfa_required_for: Vec::new(),
            password_policy: PasswordPolicy::default(),
        };
        let membership = Membership {
            org_id: org.id,
            user_id: user.id,
            roles: vec![Role::Administrator],
            created_at: now,
        };
        match self.ports.orgs.create_org(&org, &membership).await {
            Ok(()) => {}
            Err(RepoError::Conflict(_)) => return Err(OrgCreateError::SiretTaken),
            Err(e) => return Err(e.into()),
        }
        self.audit_log
            .record_in_org(
                "organization.created",
                Some(user.id),
                Some(org.id),
                request.client_id.as_ref(),
                meta,
                serde_json::json!({
                    "org_id": org.id,
                    "name": org.name,
                    "siret": org.siret,
                    "country": org.country,
                    "new_account": matches!(request.creator, Creator::New { .. }),
                }),
            )
            .await;
        self.notify_in_background(
            user.email.clone(),
            Message::OrganizationCreated {
                org_name: org.name.clone(),
            },
            &request.locale,
            request.client_id.as_ref(),
        );
        Ok((org, user))
    }

    /// Looks a checked SIRET up; a closed establishment is refused.
    pub async fn lookup_company(&self, siret: &Siret) -> Result<Company, OrgCreateError> {
        match self.ports.registry.lookup(siret).await {
            Ok(Some(c)) if c.active => Ok(c),
            Ok(Some(_)) => Err(OrgCreateError::InactiveCompany),
            Ok(None) => Err(OrgCreateError::UnknownSiret),
            Err(RegistryError::Unavailable(e)) => {
                tracing::warn!(error = %e, "company registry unavailable");
                Err(OrgCreateError::RegistryUnavailable)
            }
        }
    }

    async fn check_creator(
        &self,
        account: CreatorInput,
        client: Option<&Client>,
        meta: &RequestMeta,
    ) -> Result<(Creator, Email), OrgCreateError> {
        match account {
            CreatorInput::Existing { email, password } => {
                let typed = email.trim().to_lowercase();
                let parsed = Email::parse(&email).ok();
                let user = match &parsed {
                    Some(e) => self
                        .ports
                        .users
                        .find_by_email(e)
                        .await?
                        .filter(|u| u.status == UserStatus::Active),
                    None => None,
                };
                // The login's password-step counters: attempts here and at
                // login add up, per account (or typed identifier) and per
                // IP, counted before the password is checked.
                let who = match &user {
                    Some(u) => crate::throttle::Attempted::User(u.id),
                    None => crate::throttle::Attempted::Typed(&typed),
                };
                let buckets = self.throttle.login("password", who, meta.ip.as_deref());
                let ticket = match self
                    .throttle
                    .attempt(buckets)
                    .await
                    .map_err(CoreError::from)?
                {
                    crate::throttle::Attempt::Allowed(t) => t,
                    crate::throttle::Attempt::Locked { until } => {
                        return Err(OrgCreateError::Locked { until });
                    }
                };
                let stored = match &user {
                    Some(u) => self.ports.credentials.find_password(u.id).await?,
                    None => None,
                };
                // An unknown account is checked against a dummy hash: same
                // cost, same answer as a wrong password.
                let check = self
                    .hasher
                    .verify(&password, stored.as_ref().map(|c| c.phc.as_str()))
                    .await?;
                match (check, user) {
                    (PasswordCheck::Match { .. }, Some(u)) => {
                        self.throttle
                            .succeeded(ticket)
                            .await
                            .map_err(CoreError::from)?;
                        Ok((Creator::Existing { user_id: u.id }, u.email))
                    }
                    _ => {
                        self.throttle.failed(ticket);
                        self.audit_log
                            .record(
                                "organization.creation_refused",
                                None,
                                client.map(|c| &c.id),
                                meta,
                                serde_json::json!({"reason": "invalid_credentials"}),
                            )
                            .await;
                        Err(OrgCreateError::InvalidCredentials)
                    }
                }
            }
            CreatorInput::New {
                email,
                name,
                password,
            } => {
                let email = Email::parse(&email).map_err(|_| OrgCreateError::InvalidEmail)?;
                let name = parse_name(&name).ok_or(OrgCreateError::InvalidName)?;
                let policy = self.signup_password_policy(client);
                let local = email.as_str().split('@').next().unwrap_or("");
                let violations = policy.check(password.expose(), &[local]);
                if !violations.is_empty() {
                    return Err(OrgCreateError::WeakPassword(violations));
                }
                if self.ports.users.find_by_email(&email).await?.is_some() {
                    return Err(OrgCreateError::EmailTaken);
                }
                let phc = self.hasher.hash(&password).await?;
                Ok((
                    Creator::New {
                        email: email.clone(),
                        name,
                        phc,
                    },
                    email,
                ))
            }
        }
    }

    /// Creates an account without a password (a member invited by an
    /// administrator defines it through the emailed link). `None` when the
    /// email is taken.
    pub async fn create_user_without_password(
        &self,
        email: &Email,
        name: Option<String>,
        meta: &RequestMeta,
    ) -> Result<Option<User>, CoreError> {
        self.creator.create(email, name, None, None, meta).await
    }

    /// Sends an email and waits for it (admin actions: nothing to hide, and
    /// the command line must not exit before it left). A failure is logged.
    async fn notify_now(
        &self,
        to: &Email,
        message: Message,
        locale: &str,
        client_id: Option<&ClientId>,
    ) {
        let n = self.notification(message, locale, client_id);
        if let Err(e) = self.notifier.email(to, &n).await {
            tracing::warn!(error = %e, template = n.message.template(), "organization email not delivered");
        }
    }

    fn notification(
        &self,
        message: Message,
        locale: &str,
        client_id: Option<&ClientId>,
    ) -> Notification {
        let client = client_id.and_then(|c| self.clients.get(&c.0));
        Notification {
            message,
            locale: if locale == "fr" { "fr" } else { "en" }.to_owned(),
            theme: client
                .as_ref()
                .map_or_else(|| "default".to_owned(), |c| c.theme.clone()),
            client_name: client.as_ref().map_or_else(String::new, |c| c.name.clone()),
        }
    }

    /// Sends an email without making the caller wait (and without the
    /// delivery time showing in the response).
    fn notify_in_background(
        &self,
        to: Email,
        message: Message,
        locale: &str,
        client_id: Option<&ClientId>,
    ) {
        let n = self.notification(message, locale, client_id);
        let notifier = self.notifier.clone();
        tokio::spawn(async move {
            if let Err(e) = notifier.email(&to, &n).await {
                tracing::warn!(error = %e, template = n.message.template(), "organization email not delivered");
            }
        });
    }

    // ---- The platform operator -------------------------------------------

    /// The platform operator behind an access token: a `client_credentials`
    /// token of a client with `[account] platform_admin = true`.
    pub fn platform_operator(&self, token: &AccessTokenInfo) -> Result<PlatformOperator, OrgError> {
        let client = self
            .clients
            .get(&token.client_id)
            .ok_or(OrgError::Forbidden)?;
        if token.user_id.is_some() || !client.account.platform_admin {
            return Err(OrgError::Forbidden);
        }
        Ok(PlatformOperator {
            client_id: Some(client.id.clone()),
        })
    }

    /// Organizations, oldest first, optionally of one status.
    pub async fn list_organizations(
        &self,
        _op: &PlatformOperator,
        status: Option<OrgStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<Organization>, OrgError> {
        Ok(self.ports.orgs.list_orgs(status, limit, offset).await?)
    }

    /// Any organization, for the operator.
    pub async fn operator_find_org(
        &self,
        _op: &PlatformOperator,
        id: OrgId,
    ) -> Result<Organization, OrgError> {
        self.ports
            .orgs
            .find_org(id)
            .await?
            .ok_or(OrgError::NotFound)
    }

    /// Validates (`approve`) or rejects a pending organization. Validation
    /// emails every member, rejection the creator.
    pub async fn decide_organization(
        &self,
        op: &PlatformOperator,
        id: OrgId,
        approve: bool,
        meta: &RequestMeta,
    ) -> Result<Organization, OrgError> {
        let org = self
            .ports
            .orgs
            .find_org(id)
            .await?
            .ok_or(OrgError::NotFound)?;
        let new = if approve {
            OrgStatus::Validated
        } else {
            OrgStatus::Rejected
        };
        let now = self.clock.now();
        if !self
            .ports
            .orgs
            .set_status(id, OrgStatus::Pending, new, now)
            .await?
        {
            let current = self
                .ports
                .orgs
                .find_org(id)
                .await?
                .map_or(org.status, |o| o.status);
            return Err(OrgError::AlreadyDecided(current.as_str()));
        }
        let org = Organization {
            status: new,
            decided_at: Some(now),
            ..org
        };
        let kind = if approve {
            "organization.validated"
        } else {
            "organization.rejected"
        };
        self.audit_log.record_in_org(
            kind,
            None,
            Some(org.id),
            op.client_id.as_ref(),
            meta,
            serde_json::json!({"org_id": org.id, "by": op.client_id.as_ref().map_or("cli", |c| c.0.as_str())}),
        )
        .await;
        let recipients: Vec<UserId> = if approve {
            let members = self.ports.orgs.list_members(org.id).await?;
            self.events
                .emit(crate::webhooks::WebhookEvent::new(
                    crate::webhooks::WebhookEventType::OrganizationValidated,
                    now,
                    serde_json::json!({"organization": {
                        "id": org.id,
                        "name": org.name,
                        "siret": org.siret,
                        "country": org.country,
                        "status": org.status.as_str(),
                        "members": members
                            .iter()
                            .map(|m| serde_json::json!({"user_id": m.user_id, "roles": m.roles}))
                            .collect::<Vec<_>>(),
                    }}),
                ))
                .await;
            members.into_iter().map(|m| m.user_id).collect()
        } else {
            vec![org.created_by]
        };
        for uid in recipients {
            if let Some(u) = self.ports.users.find_by_id(uid).await? {
                let message = if approve {
                    Message::OrganizationValidated {
                        org_name: org.name.clone(),
                    }
                } else {
                    Message::OrganizationRejected {
                        org_name: org.name.clone(),
                    }
                };
                self.notify_now(&u.email, message, u.locale.as_deref().unwrap_or("en"), None)
                    .await;
            }
        }
        Ok(org)
    }

    // ---- Members ---------------------------------------------------------

    /// The caller acting on organization `org` for `action`: their roles in
    /// that organization must allow it. Not a member (or no such
    /// organization) and lacking the role are both [`OrgError::Forbidden`],
    /// so outsiders learn nothing about other organizations.
    /// `multi_factor` says whether the caller's sign-in used two kinds of
    /// factor: an organization that enforces a second factor (for any kind
    /// of sign-in) is managed only with such a sign-in.
    pub async fn org_actor(
        &self,
        user: UserId,
        client_id: Option<&ClientId>,
        org: OrgId,
        action: OrgAction,
        multi_factor: bool,
    ) -> Result<OrgActor, OrgError> {
        let membership = self
            .ports
            .orgs
            .find_membership(org, user)
            .await?
            .ok_or(OrgError::Forbidden)?;
        if !action.allowed(&membership.roles) {
            return Err(OrgError::Forbidden);
        }
        let org = self
            .ports
            .orgs
            .find_org(org)
            .await?
            .ok_or(OrgError::Forbidden)?;
        if !org.mfa_required_for.is_empty() && !multi_factor {
            return Err(OrgError::MfaRequired);
        }
        Ok(OrgActor {
            user_id: user,
            client_id: client_id.cloned(),
            org,
            roles: membership.roles,
        })
    }

    /// The members of the actor's organization, oldest first.
    pub async fn list_org_members(&self, actor: &OrgActor) -> Result<Vec<MemberView>, OrgError> {
        require(actor, OrgAction::ListMembers)?;
        let mut out = Vec::new();
        for m in self.ports.orgs.list_members(actor.org.id).await? {
            let Some(u) = self.ports.users.find_by_id(m.user_id).await? else {
                continue;
            };
            let invitation_pending = self.ports.credentials.find_password(u.id).await?.is_none();
            out.push(MemberView {
                user_id: u.id,
                email: u.email.as_str().to_owned(),
                name: u.name.clone(),
                customer_id: u.customer_id.as_str().to_owned(),
                roles: m.roles,
                invitation_pending,
                joined_at: m.created_at,
            });
        }
        Ok(out)
    }

    /// Adds a member: an existing account (by email) just joins; otherwise an
    /// account without password is created and emailed an invitation link
    /// valid `[accounts] invite_link_hours` to define it.
    pub async fn add_org_member(
        &self,
        by: &MemberManager,
        email: &Email,
        name: Option<String>,
        roles: &[Role],
        meta: &RequestMeta,
    ) -> Result<AddedMember, OrgError> {
        if let MemberManager::Member(a) = by {
            require(a, OrgAction::ManageMembers)?;
        }
        if roles.is_empty() {
            return Err(OrgError::Invalid("at least one role is needed".into()));
        }
        let name = match name {
            Some(n) if !n.trim().is_empty() => Some(
                parse_name(&n)
                    .ok_or_else(|| OrgError::Invalid("name: 1 to 200 characters".into()))?,
            ),
            _ => None,
        };
        let org = by.org();
        let (user, created) = match self.ports.users.find_by_email(email).await? {
            Some(u) => (u, false),
            None => match self
                .creator
                .create(email, name, None, by.client(), meta)
                .await?
            {
                Some(u) => (u, true),
                // Created concurrently: join it.
                None => (
                    self.ports
                        .users
                        .find_by_email(email)
                        .await?
                        .ok_or_else(|| CoreError::Internal("account vanished".into()))?,
                    false,
                ),
            },
        };
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        match self
            .ports
            .orgs
            .add_member(&Membership {
                org_id: org.id,
                user_id: user.id,
                roles: roles.clone(),
                created_at: self.clock.now(),
            })
            .await
        {
            Ok(()) => {}
            Err(RepoError::Conflict(_)) => return Err(OrgError::AlreadyMember),
            Err(e) => return Err(e.into()),
        }
        self.audit_log
            .record_in_org(
                "organization.member_added",
                by.user(),
                Some(org.id),
                by.client(),
                meta,
                serde_json::json!({
                    "org_id": org.id,
                    "member": user.id,
                    "roles": roles,
                    "new_account": created,
                }),
            )
            .await;
        self.events.roles_changed(org, user.id, &roles).await;
        if created {
            let hours = self.settings.accounts.invite_link_hours;
            let token = self
                .links
                .create_link(
                    &user,
                    LinkPurpose::Invitation,
                    by.client(),
                    Duration::from_secs(u64::from(hours) * 3600),
                )
                .await?;
            let url = format!("{}/reset-password?token={token}", self.settings.issuer);
            self.notify_now(
                &user.email,
                Message::InvitationLink {
                    url,
                    valid_hours: hours,
                    org_name: org.name.clone(),
                    customer_id: user.customer_id.as_str().to_owned(),
                },
                user.locale.as_deref().unwrap_or("en"),
                by.client(),
            )
            .await;
        }
        Ok(AddedMember { user, created })
    }

    /// Replaces a member's roles. The last administrator cannot be demoted.
    pub async fn set_org_member_roles(
        &self,
        actor: &OrgActor,
        member: UserId,
        roles: &[Role],
        meta: &RequestMeta,
    ) -> Result<Membership, OrgError> {
        require(actor, OrgAction::ManageMembers)?;
        if roles.is_empty() {
            return Err(OrgError::Invalid("at least one role is needed".into()));
        }
        let current = self
            .membership_to_change(actor, member, roles.contains(&Role::Administrator))
            .await?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        if !self
            .ports
            .orgs
            .set_roles(actor.org.id, member, &roles)
            .await?
        {
            return Err(OrgError::MemberNotFound);
        }
        self.audit_by_actor(
            "organization.roles_changed",
            actor,
            meta,
            serde_json::json!({
                "org_id": actor.org.id,
                "member": member,
                "from": current.roles,
                "to": roles,
            }),
        )
        .await;
        self.events.roles_changed(&actor.org, member, &roles).await;
        Ok(Membership { roles, ..current })
    }

    /// Removes a member (the account stays). The last administrator cannot
    /// be removed.
    pub async fn remove_org_member(
        &self,
        actor: &OrgActor,
        member: UserId,
        meta: &RequestMeta,
    ) -> Result<(), OrgError> {
        require(actor, OrgAction::ManageMembers)?;
        self.membership_to_change(actor, member, false).await?;
        if !self.ports.orgs.remove_member(actor.org.id, member).await? {
            return Err(OrgError::MemberNotFound);
        }
        self.audit_by_actor(
            "organization.member_removed",
            actor,
            meta,
            serde_json::json!({"org_id": actor.org.id, "member": member}),
        )
        .await;
        self.events.roles_changed(&actor.org, member, &[]).await;
        Ok(())
    }

    /// Audits `kind` in the actor's organization, by the actor (and the
    /// client it acts through).
    async fn audit_by_actor(
        &self,
        kind: &str,
        actor: &OrgActor,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) {
        self.audit_log
            .record_in_org(
                kind,
                Some(actor.user_id),
                Some(actor.org.id),
                actor.client_id.as_ref(),
                meta,
                detail,
            )
            .await;
    }

    /// The current membership of `member` in the actor's organization, for
    /// a change after which the member is an administrator or not
    /// (`stays_administrator`). Refused when the member is not one, or when
    /// the change would leave the organization without an administrator.
    async fn membership_to_change(
        &self,
        actor: &OrgActor,
        member: UserId,
        stays_administrator: bool,
    ) -> Result<Membership, OrgError> {
        let current = self
            .ports
            .orgs
            .find_membership(actor.org.id, member)
            .await?
            .ok_or(OrgError::MemberNotFound)?;
        if current.roles.contains(&Role::Administrator)
            && !stays_administrator
            && self.administrators(actor.org.id).await? <= 1
        {
            return Err(OrgError::LastAdministrator);
        }
        Ok(current)
    }

    async fn administrators(&self, org: OrgId) -> Result<usize, OrgError> {
        Ok(self
            .ports
            .orgs
            .list_members(org)
            .await?
            .iter()
            .filter(|m| m.roles.contains(&Role::Administrator))
            .count())
    }

    // ---- Security settings and audit ---------------------------------------

    /// Replaces the organization's enforced MFA kinds and password policy.
    /// Every broken rule is reported at once.
    pub async fn update_org_security(
        &self,
        actor: &OrgActor,
        settings: SecuritySettings,
        meta: &RequestMeta,
    ) -> Result<Organization, OrgError> {
        require(actor, OrgAction::ManageSecurity)?;
        let problems = check_security_settings(&settings);
        if !problems.is_empty() {
            return Err(OrgError::InvalidSettings(problems));
        }
        let mut kinds = settings.mfa_required_for;
        kinds.sort();
        kinds.dedup();
        self.ports
            .orgs
            .update_security(actor.org.id, &kinds, &settings.password_policy)
            .await?;
        self.audit_by_actor(
            "organization.policy_changed",
            actor,
            meta,
            serde_json::json!({
                "org_id": actor.org.id,
                "mfa_required_for": {"from": actor.org.mfa_required_for, "to": kinds},
                "password_policy": settings.password_policy,
            }),
        )
        .await;
        Ok(Organization {
            mfa_required_for: kinds,
            password_policy: settings.password_policy,
            ..actor.org.clone()
        })
    }

    /// The organization's recent audit events, newest first.
    pub async fn org_audit(
        &self,
        actor: &OrgActor,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, OrgError> {
        require(actor, OrgAction::ReadAudit)?;
        Ok(self
            .ports
            .audit
            .list_for_org(actor.org.id, limit.clamp(1, MAX_AUDIT_EVENTS))
            .await?)
    }

    /// The organizations a user belongs to, with their roles (the
    /// `organizations` claim).
    pub async fn user_organizations(
        &self,
        user: UserId,
    ) -> Result<Vec<(Organization, Vec<Role>)>, CoreError> {
        let mut out = Vec::new();
        for m in self.ports.orgs.memberships_of(user).await? {
            if let Some(o) = self.ports.orgs.find_org(m.org_id).await? {
                out.push((o, m.roles));
            }
        }
        Ok(out)
    }
}

fn require(actor: &OrgActor, action: OrgAction) -> Result<(), OrgError> {
    if action.allowed(&actor.roles) {
        Ok(())
    } else {
        Err(OrgError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_iso_codes() {
        assert_eq!(parse_country(" de ").as_deref(), Some("DE"));
        assert_eq!(parse_country("FR").as_deref(), Some("FR"));
        for bad in ["", "D", "DEU", "XX", "ZZ", "1A"] {
            assert!(parse_country(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn roles_allow_what_their_names_say() {
        use OrgAction::*;
        let admin = [Role::Administrator];
        let sec = [Role::SecurityManager];
        let member = [Role::Member];
        assert!(ManageMembers.allowed(&admin) && !ManageMembers.allowed(&sec));
        assert!(ManageSecurity.allowed(&sec) && ManageSecurity.allowed(&admin));
        assert!(!ManageSecurity.allowed(&member) && !ListMembers.allowed(&member));
        assert!(ReadAudit.allowed(&sec) && !ReadAudit.allowed(&member));
        assert!(View.allowed(&member) && !View.allowed(&[]));
    }

    #[test]
    fn roles_parse_and_refuse_unknown_or_none() {
        assert_eq!(
            parse_roles(&["member", "administrator", "member"]).unwrap(),
            vec![Role::Administrator, Role::Member]
        );
        assert!(parse_roles::<&str>(&[]).is_err());
        assert!(parse_roles(&["owner"]).is_err());
    }

    #[test]
    fn every_broken_settings_rule_is_reported() {
        let s = SecuritySettings {
            mfa_required_for: vec!["console".into(), "Bad Kind".into()],
            password_policy: PasswordPolicy {
                min_length: 4,
                max_length: 20,
                allowed_special: Some("é".into()),
                ..PasswordPolicy::default()
            },
        };
        let fields: Vec<String> = check_security_settings(&s)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "mfa_required_for[1]",
                "password_policy.max_length",
                "password_policy.min_length",
                "password_policy.allowed_special"
            ]
        );
        let ok = SecuritySettings {
            mfa_required_for: vec!["console".into()],
            password_policy: PasswordPolicy {
                min_length: 12,
                ..PasswordPolicy::default()
            },
        };
        assert!(check_security_settings(&ok).is_empty());
        let inverted = SecuritySettings {
            mfa_required_for: vec![],
            password_policy: PasswordPolicy {
                min_length: 100,
                max_length: 80,
                ..PasswordPolicy::default()
            },
        };
        assert_eq!(
            check_security_settings(&inverted)
                .into_iter()
                .map(|p| p.field)
                .collect::<Vec<_>>(),
            ["password_policy.min_length"]
        );
    }
}
