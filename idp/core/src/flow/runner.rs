//! The login flow runner: evaluates a client's flow against what a session
//! proved, asks only what is missing, and runs the steps' pages and
//! submissions (CSRF, browser binding, expiry, throttling, saving, moving
//! on). A flow in progress is kept by [`super::state`].
//!
//! # States
//!
//! ```text
//!   authorize ──▶ evaluate the client's flow against the session's proofs
//!                   │ every stage satisfied          │ a stage is missing
//!                   ▼                                ▼ (prompt=none: interaction_required)
//!              Completed ◀──────────────── Running { position, choice, enrolling }
//!    (code issued; proofs added           │ submit ▲
//!     to the session, cookie rotated)     │        │ Again / Rejected (counted first) /
//!                   ▲                     │        │ Locked / choose another method
//!                   │ no stage left       ▼        │
//!                   └──────────────── Passed: next stage that is needed and
//!                                     not satisfied by a proof (skipped ones
//!                                     are evaluated for this client, now)
//!   Running ──(expired, other browser, completed)──▶ NotFound
//!   Running ──(upstream answer matched a local account)──▶ Running (link proof)
//!   Running ──("not you?")──▶ Running at position 0, no user, no session proofs
//!   Running ──(a callback link opened in another browser)──▶ Running, link unused
//! ```
//!
//! # Reuse rule
//!
//! Every authorization runs the requesting client's flow (the one of
//! `acr_values`, else its first). For each stage, in order:
//! - a stage the user already passed in this flow is done;
//! - the typed identifier is done when the session names the user;
//! - a condition (`enrolled`, `unknown_device`, `mfa_required`) is evaluated
//!   now, for this client: a stage whose condition does not hold is skipped;
//! - an `mfa_required` stage is done when the proofs relied on so far cover
//!   two kinds of factor;
//! - a stage is done by a proof of the session of a method it accepts, made
//!   at most `max_age` seconds ago (when the request says) and at most the
//!   client's `reuse_secs` (when its file says): the flow relies on it;
//! - otherwise the stage is asked (enrolling a method when the user has
//!   none and something was proven first).
//!
//! An organization that enforces a second factor for the client's kind adds
//! an `mfa_required` stage to a flow that has none. The code's `acr` is the
//! flow's level, its `amr` and `auth_time` those of the proofs relied on.
//!
//! # Throttling
//!
//! A submission to a step that checks a secret is counted before the step
//! runs ([`crate::throttle`]): concurrent guesses beyond the limit are not
//! checked at all.

use super::registry::StepRegistry;
use super::state::{FlowStore, LoginFlow};
use super::step::{
    Applicability, Challenge, Identified, Proven, Step, StepCx, StepInput, StepOutcome, StepPorts,
};
use crate::assurance::{Proof, is_multi_factor};
use crate::audit::Audit;
use crate::client::{Client, ClientRegistry};
use crate::domain::{RequestMeta, TokenHash, User, UserStatus};
use crate::error::CoreError;
use crate::federation::{PendingLink, UpstreamIdentity};
use crate::method::MethodId;
use crate::policy::{Condition, FlowDef, Stage};
use crate::ports::{DeviceRepo, OrgRepo};
use crate::request::AuthorizeRequest;
use crate::sessions::SsoSession;
use crate::throttle::{Attempt, Attempted, Throttle};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// Why a flow request could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("login flow not found or expired")]
    NotFound,
    #[error("login flow belongs to another browser")]
    WrongBrowser,
    #[error("CSRF token mismatch")]
    Csrf,
    #[error("the flow changed meanwhile")]
    Conflict,
    #[error("not the current step")]
    WrongStage,
    #[error("none of the methods of this step can be used or enrolled")]
    NoUsableMethod,
    /// A callback (an upstream's answer, an emailed link) names no sign-in
    /// in progress (tampered, replayed or expired).
    #[error("callback matches no login in progress")]
    UnknownCallback,
    /// A callback (an emailed link) opened in another browser than the one
    /// signing in to `client_id`: nothing was used up.
    #[error("opened in another browser than the one signing in")]
    OpenedElsewhere { client_id: String },
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<crate::error::RepoError> for FlowError {
    fn from(e: crate::error::RepoError) -> Self {
        Self::Core(e.into())
    }
}

impl From<crate::error::StoreError> for FlowError {
    fn from(e: crate::error::StoreError) -> Self {
        Self::Core(e.into())
    }
}

/// A page to show for a flow.
#[derive(Debug, Clone)]
pub struct FlowPage {
    pub flow: LoginFlow,
    pub step: MethodId,
    pub challenge: Challenge,
    /// Other methods of the current stage the user may switch to.
    pub alternatives: Vec<MethodId>,
    pub enrolling: bool,
    /// Set when the method is locked for now (too many attempts).
    pub locked_until: Option<OffsetDateTime>,
    /// "Continue with …" buttons of an identifier page (federation).
    pub upstreams: Vec<crate::federation::UpstreamInfo>,
}

/// A login whose every stage is satisfied: what the authorization needs to
/// open or extend the session and issue the code.
#[derive(Debug, Clone)]
pub struct Completion {
    pub request: AuthorizeRequest,
    pub user: User,
    /// The level of the flow that ran (the code's `acr`).
    pub acr: String,
    /// Carried proofs the flow relied on.
    pub relied: Vec<Proof>,
    /// Proofs made in this flow.
    pub made: Vec<Proof>,
    /// The session the flow started from (hash of its cookie), if any.
    pub session: Option<TokenHash>,
    /// A new device cookie to set (the browser passed a new-device check).
    pub device_cookie: Option<(String, Duration)>,
}

impl Completion {
    /// Every proof the flow relied on.
    pub fn proofs(&self) -> Vec<Proof> {
        self.relied.iter().chain(&self.made).cloned().collect()
    }
}

/// What a submit led to.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Moved on: show the flow page again.
    Next,
    /// Stay: show this page. `failed` for a wrong answer or when locked.
    Show { page: Box<FlowPage>, failed: bool },
    /// Leave for this URL (an upstream provider's login).
    Redirect(String),
    /// Every stage is satisfied.
    Completed(Box<Completion>),
}

/// What evaluating a client's flow against a session led to.
#[derive(Debug)]
pub enum Started {
    /// Nothing is missing.
    Done(Box<Completion>),
    /// A stage must be asked: this flow (not stored yet).
    Ask(Box<LoginFlow>),
}

/// The session a flow starts from, with its (active) user.
pub struct StartFrom<'a> {
    pub session: &'a SsoSession,
    /// Hash of the session cookie.
    pub key: TokenHash,
    pub user: &'a User,
}

/// What an upstream identity leads to.
pub enum Resolution {
    /// Signed in to this (linked or new) account.
    SignedIn(User),
    /// Refused, with the page's message id.
    Refused(&'static str),
    /// The identity matched a local account: prove it through `flow`.
    Prove { link: PendingLink, flow: String },
}

/// Federation's part in a login: what an upstream identity leads to, and
/// the link made once the user proved they own the account. Implemented by
/// the accounts side (it creates and links accounts).
#[async_trait]
pub trait UpstreamAccounts: Send + Sync {
    async fn resolve(
        &self,
        client: &Client,
        def: &FlowDef,
        flow_user: Option<&User>,
        identity: &UpstreamIdentity,
        meta: &RequestMeta,
    ) -> Result<Resolution, CoreError>;

    async fn link_proven(
        &self,
        link: &PendingLink,
        client: &Client,
        meta: &RequestMeta,
    ) -> Result<(), CoreError>;
}

/// The runner's own settings.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    /// How long a login page may stay open.
    pub flow_lifetime_secs: u32,
    /// How long a browser is remembered after a new-device check.
    pub device_cookie_days: u32,
}

/// Where the runner stands after skipping what does not need asking.
/// What [`FlowRunner::load_settled`] returns.
struct Loaded {
    client: Arc<Client>,
    user: Option<User>,
    flow: LoginFlow,
    settled: Settled,
}

enum Settled {
    At {
        step: MethodId,
        alternatives: Vec<MethodId>,
        enrolling: bool,
    },
    Done,
}

/// Whether `user` must use a second factor when signing in to a client of
/// authentication kind `auth_kind`: set on the account, or enforced by one
/// of the user's organizations (not rejected) for that kind.
pub async fn mfa_required(
    orgs: &dyn OrgRepo,
    user: &User,
    auth_kind: &str,
) -> Result<bool, CoreError> {
    if user.mfa_required {
        return Ok(true);
    }
    for m in orgs.memberships_of(user.id).await? {
        if let Some(org) = orgs.find_org(m.org_id).await?
            && org.status != crate::domain::OrgStatus::Rejected
            && org.mfa_required_for.iter().any(|k| k == auth_kind)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The flow's CSRF token, compared in constant time.
fn check_csrf(flow: &LoginFlow, csrf: &str) -> Result<(), FlowError> {
    if bool::from(flow.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
        Ok(())
    } else {
        Err(FlowError::Csrf)
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(1) as u64)
}

/// Runs login flows.
pub struct FlowRunner {
    steps: StepRegistry,
    ports: StepPorts,
    flows: Arc<dyn FlowStore>,
    throttle: Arc<Throttle>,
    clients: Arc<ClientRegistry>,
    devices: Arc<dyn DeviceRepo>,
    orgs: Arc<dyn OrgRepo>,
    accounts: Arc<dyn UpstreamAccounts>,
    audit: Audit,
    settings: RunnerSettings,
    /// The stage added to flows without an `mfa_required` one (an
    /// organization's enforced second factor).
    mfa_stage: Option<Stage>,
}

impl FlowRunner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        steps: StepRegistry,
        ports: StepPorts,
        flows: Arc<dyn FlowStore>,
        throttle: Arc<Throttle>,
        clients: Arc<ClientRegistry>,
        devices: Arc<dyn DeviceRepo>,
        orgs: Arc<dyn OrgRepo>,
        accounts: Arc<dyn UpstreamAccounts>,
        audit: Audit,
        settings: RunnerSettings,
    ) -> Self {
        let mfa_stage = Self::enforced_stage(&steps, &ports);
        Self {
            steps,
            ports,
            flows,
            throttle,
            clients,
            devices,
            orgs,
            accounts,
            audit,
            settings,
            mfa_stage,
        }
    }

    /// The second factors an organization's enforcement offers: the
    /// registered methods that say they are one (WebAuthn only when the
    /// issuer is a host name).
    fn enforced_stage(steps: &StepRegistry, ports: &StepPorts) -> Option<Stage> {
        let ip_issuer = ports.webauthn.rp_id.parse::<std::net::IpAddr>().is_ok();
        let methods: Vec<MethodId> = steps
            .all()
            .filter(|t| t.second_factor && !(t.needs_host_name && ip_issuer))
            .map(|t| t.method())
            .collect();
        (!methods.is_empty()).then_some(Stage {
            methods,
            when: Condition::MfaRequired,
            identifies: false,
            proves: true,
            federates: false,
        })
    }

    /// The methods an organization's enforcement may ask (for start-up
    /// checks of themes).
    pub fn enforced_methods(&self) -> Vec<MethodId> {
        self.mfa_stage
            .as_ref()
            .map(|s| s.methods.clone())
            .unwrap_or_default()
    }

    /// The registered methods.
    pub fn steps(&self) -> &StepRegistry {
        &self.steps
    }

    fn now(&self) -> i64 {
        self.ports.clock.now().unix_timestamp()
    }

    /// The stages a flow runs: its own, and the enforced second factor
    /// when it has no `mfa_required` stage.
    fn stages_of(&self, def: &FlowDef) -> Vec<Stage> {
        let mut stages = def.stages.clone();
        if !stages.iter().any(|s| s.when == Condition::MfaRequired)
            && let Some(s) = &self.mfa_stage
        {
            stages.push(s.clone());
        }
        stages
    }

    fn step(&self, id: &MethodId) -> Result<Arc<dyn Step>, FlowError> {
        self.steps.get(id).cloned().ok_or_else(|| {
            FlowError::Core(CoreError::Internal(format!("no step registered for {id}")))
        })
    }

    fn client_of(&self, flow: &LoginFlow) -> Result<Arc<Client>, FlowError> {
        self.clients.get(&flow.request.client_id).ok_or_else(|| {
            FlowError::Core(CoreError::Internal("the client of a flow vanished".into()))
        })
    }

    fn flow_def<'c>(client: &'c Client, flow: &LoginFlow) -> Result<&'c FlowDef, FlowError> {
        client.login.by_name(&flow.flow_name).ok_or_else(|| {
            FlowError::Core(CoreError::Internal(
                "the flow definition of a flow vanished".into(),
            ))
        })
    }

    async fn flow_user(&self, flow: &LoginFlow) -> Result<Option<User>, FlowError> {
        Ok(match flow.user_id {
            Some(id) => self
                .ports
                .users
                .find_by_id(id)
                .await?
                .filter(|u| u.status == UserStatus::Active),
            None => None,
        })
    }

    /// Evaluates `client`'s flow for `req` against the session `from` (if
    /// any): done when nothing is missing, else the flow to ask (not
    /// stored: see [`Self::save_new`]). `prompt=login` and a session of
    /// another user than `id_token_hint` are the caller's to drop.
    pub async fn start(
        &self,
        client: &Client,
        req: AuthorizeRequest,
        from: Option<StartFrom<'_>>,
        browser: &str,
        device: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<Started, FlowError> {
        let now = self.now();
        let def = client.login.for_acr_values(&req.acr_values);
        let mut flow = LoginFlow {
            id: crate::random::token(),
            version: 0,
            browser: TokenHash::of(browser),
            csrf: crate::random::token(),
            expires_at: now + i64::from(self.settings.flow_lifetime_secs),
            flow_name: def.name.clone(),
            position: 0,
            choice: None,
            enrolling: false,
            user_id: None,
            identifier: None,
            carried: Vec::new(),
            relied: Vec::new(),
            made: Vec::new(),
            scratch: BTreeMap::new(),
            completed: false,
            device: device.map(TokenHash::of),
            pending_link: None,
            session: None,
            request: req,
        };
        let Some(from) = from else {
            return Ok(Started::Ask(Box::new(flow)));
        };
        flow.user_id = Some(from.user.id);
        flow.identifier = Some(from.user.customer_id.as_str().to_owned());
        flow.session = Some(from.key);
        flow.carried = from
            .session
            .proofs
            .iter()
            .filter(|p| p.is_fresh(now, flow.request.max_age, client.login.reuse_secs))
            .cloned()
            .collect();
        // A session opened through an upstream runs the level's upstream
        // flow, if it has one: its own steps are what it proved.
        let federated = flow.carried.iter().any(|p| {
            self.steps
                .get(&p.method)
                .is_some_and(|s| s.traits().federates)
        });
        if federated && let Some(alt) = client.login.upstream_alternative(def) {
            flow.flow_name = alt.name.clone();
        }
        match self
            .settle(&mut flow, client, Some(from.user), meta)
            .await?
        {
            Settled::At { .. } => Ok(Started::Ask(Box::new(flow))),
            Settled::Done => {
                let def = Self::flow_def(client, &flow)?;
                Ok(Started::Done(Box::new(Completion {
                    acr: def.acr.clone(),
                    request: flow.request,
                    user: from.user.clone(),
                    relied: flow.relied,
                    made: Vec::new(),
                    session: flow.session,
                    device_cookie: None,
                })))
            }
        }
    }

    /// Stores a flow [`Self::start`] asked for.
    pub async fn save_new(&self, flow: &LoginFlow) -> Result<(), FlowError> {
        let ttl = secs(flow.expires_at - self.now());
        Ok(self.flows.create(flow, ttl).await?)
    }

    /// Loads a flow for this browser.
    pub async fn load(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<LoginFlow, FlowError> {
        let flow = self.flows.find(flow_id).await?.ok_or(FlowError::NotFound)?;
        if flow.expires_at <= self.now() || flow.completed {
            return Err(FlowError::NotFound);
        }
        let Some(browser) = browser_cookie else {
            return Err(FlowError::WrongBrowser);
        };
        if TokenHash::of(browser) != flow.browser {
            return Err(FlowError::WrongBrowser);
        }
        Ok(flow)
    }

    async fn load_for_submit(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
    ) -> Result<LoginFlow, FlowError> {
        let flow = self.load(flow_id, browser_cookie).await?;
        check_csrf(&flow, csrf)?;
        Ok(flow)
    }

    /// Compare-and-swap the flow from `old` to `new` (version bumped here).
    async fn save(&self, old: &LoginFlow, new: LoginFlow) -> Result<LoginFlow, FlowError> {
        let ttl = secs(new.expires_at - self.now());
        self.swap(old, new, ttl).await
    }

    /// Compare-and-swap the flow from `old` to its completed state, kept only
    /// a moment: of two submissions completing it at once, only one swaps,
    /// and a completed flow is never loaded again.
    async fn finish(&self, old: &LoginFlow, new: LoginFlow) -> Result<LoginFlow, FlowError> {
        debug_assert!(new.completed);
        self.swap(old, new, Duration::from_secs(1)).await
    }

    async fn swap(
        &self,
        old: &LoginFlow,
        mut new: LoginFlow,
        ttl: Duration,
    ) -> Result<LoginFlow, FlowError> {
        if *old == new {
            return Ok(new);
        }
        new.version = old.version + 1;
        if self.flows.swap(old, &new, ttl).await? {
            Ok(new)
        } else {
            Err(FlowError::Conflict)
        }
    }

    /// What a step of `flow` sees: the client, the user, the flow's
    /// definition, how old the authentication may be (`max_age`, `0` for
    /// `prompt=login`), the request facts, and `scratch` as its own state.
    fn step_cx<'a>(
        &'a self,
        client: &'a Client,
        flow: &'a LoginFlow,
        user: Option<&'a User>,
        meta: &'a RequestMeta,
        locale: &'a str,
        scratch: &'a mut serde_json::Value,
    ) -> Result<StepCx<'a>, FlowError> {
        let def = Self::flow_def(client, flow)?;
        let max_age = if flow.request.prompt.login {
            Some(0)
        } else {
            flow.request.max_age
        };
        Ok(StepCx::new(
            &self.ports,
            client,
            &flow.id,
            user,
            flow.identifier.as_deref(),
            meta,
            locale,
            scratch,
        )
        .in_flow(def)
        .with_max_age(max_age))
    }

    /// Whether a method applies to this user, with a throwaway scratch.
    async fn applicability(
        &self,
        client: &Client,
        flow: &LoginFlow,
        user: Option<&User>,
        kind: &MethodId,
        meta: &RequestMeta,
    ) -> Result<Applicability, FlowError> {
        let step = self.step(kind)?;
        let mut scratch = flow.scratch.get(kind).cloned().unwrap_or_default();
        let cx = self.step_cx(client, flow, user, meta, "en", &mut scratch)?;
        Ok(step.applies(&cx).await?)
    }

    /// Uses a carried proof of a method `stage` accepts, if there is one.
    fn rely_on_carried(flow: &mut LoginFlow, stage: &Stage) -> bool {
        match flow.carried.iter().position(|p| stage.accepts(&p.method)) {
            Some(i) => {
                let p = flow.carried.remove(i);
                flow.relied.push(p);
                true
            }
            None => false,
        }
    }

    fn advance(flow: &mut LoginFlow) {
        flow.position += 1;
        flow.choice = None;
        flow.enrolling = false;
    }

    /// Skips or satisfies the stages that need no asking (see the module
    /// documentation), then picks the method of the current one.
    async fn settle(
        &self,
        flow: &mut LoginFlow,
        client: &Client,
        user: Option<&User>,
        meta: &RequestMeta,
    ) -> Result<Settled, FlowError> {
        let def = Self::flow_def(client, flow)?.clone();
        let stages = self.stages_of(&def);
        loop {
            let Some(stage) = stages.get(flow.position) else {
                return Ok(Settled::Done);
            };
            let passed = stage.methods.iter().any(|m| flow.has_proof_of(m));
            let identified = stage.is_typed_identifier() && flow.identifier.is_some();
            if passed || identified {
                Self::advance(flow);
                continue;
            }
            let mut usable = Vec::new();
            let mut enrollable = Vec::new();
            for m in &stage.methods {
                match self.applicability(client, flow, user, m, meta).await? {
                    Applicability::Applies => usable.push(m.clone()),
                    Applicability::Enroll => enrollable.push(m.clone()),
                    Applicability::Skip => {}
                }
            }
            let needed = match stage.when {
                Condition::Always => true,
                Condition::Enrolled => !usable.is_empty(),
                Condition::UnknownDevice => !self.is_known_device(flow, user).await?,
                Condition::MfaRequired => match user {
                    Some(u) => {
                        mfa_required(self.orgs.as_ref(), u, &client.account.auth_kind).await?
                    }
                    None => false,
                },
            };
            // An unknown identifier goes through every stage the same way as
            // a known one would: it fails at its first secret, like a wrong
            // password, and never reveals that the account does not exist.
            if !needed {
                Self::advance(flow);
                continue;
            }
            if stage.when == Condition::MfaRequired && is_multi_factor(flow.proofs()) {
                Self::advance(flow);
                continue;
            }
            if Self::rely_on_carried(flow, stage) {
                Self::advance(flow);
                continue;
            }
            // Enrolling a new factor is allowed only once something was
            // proven (in this flow, or in the session it comes from): an
            // identifier alone must never let a stranger attach their own
            // authenticator to someone's account.
            let proves = |p: &Proof| {
                self.steps
                    .get(&p.method)
                    .is_some_and(|s| s.traits().assurance.proves)
            };
            if !flow.proofs().any(proves) && !flow.carried.iter().any(proves) {
                enrollable.clear();
            }
            if usable.is_empty() && enrollable.is_empty() {
                return Err(FlowError::NoUsableMethod);
            }
            let (pool, enrolling) = if usable.is_empty() {
                (enrollable, true)
            } else {
                (usable, false)
            };
            let step = match flow.choice.clone().filter(|c| pool.contains(c)) {
                Some(c) => c,
                None => Self::preferred_method(user, &pool),
            };
            flow.choice = Some(step.clone());
            flow.enrolling = enrolling;
            let alternatives = pool.into_iter().filter(|m| *m != step).collect();
            return Ok(Settled::At {
                step,
                alternatives,
                enrolling,
            });
        }
    }

    /// The method the user used last among `pool`, else the first listed.
    fn preferred_method(user: Option<&User>, pool: &[MethodId]) -> MethodId {
        let last = user.and_then(|u| u.last_method.as_deref());
        pool.iter()
            .find(|k| Some(k.as_str()) == last)
            .unwrap_or(&pool[0])
            .clone()
    }

    /// Whether the flow's browser is a device this user signed in from.
    async fn is_known_device(
        &self,
        flow: &LoginFlow,
        user: Option<&User>,
    ) -> Result<bool, FlowError> {
        let (Some(hash), Some(user)) = (&flow.device, user) else {
            return Ok(false);
        };
        Ok(self
            .devices
            .find_device(hash)
            .await?
            .is_some_and(|d| d.user_id == user.id && d.revoked_at.is_none()))
    }

    /// The buckets a submission to `step` is counted in.
    fn buckets(
        &self,
        step: &MethodId,
        flow: &LoginFlow,
        meta: &RequestMeta,
    ) -> Vec<crate::throttle::Bucket> {
        let who = match (flow.user_id, &flow.identifier) {
            (Some(id), _) => Attempted::User(id),
            (None, Some(typed)) => Attempted::Typed(typed),
            (None, None) => Attempted::Flow(&flow.id),
        };
        self.throttle.login(step.as_str(), who, meta.ip.as_deref())
    }

    /// A loaded flow's client and user, and a copy of it moved on to the
    /// stage now due.
    async fn load_settled(&self, old: &LoginFlow, meta: &RequestMeta) -> Result<Loaded, FlowError> {
        let client = self.client_of(old)?;
        let user = self.flow_user(old).await?;
        let mut flow = old.clone();
        let settled = self.settle(&mut flow, &client, user.as_ref(), meta).await?;
        Ok(Loaded {
            client,
            user,
            flow,
            settled,
        })
    }

    /// Whether submissions to `step` check a secret (and are counted).
    fn checks_secret(&self, step: &MethodId) -> bool {
        self.steps.get(step).is_some_and(|s| {
            let t = s.traits();
            t.assurance.proves && !t.callback
        })
    }

    /// The page of a flow's current step (it may send a code or prepare a
    /// WebAuthn challenge, kept in the step's scratch state), for a flow the
    /// caller has just loaded with [`Self::load`].
    pub async fn page_of(
        &self,
        old: LoginFlow,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<FlowPage, FlowError> {
        let Loaded {
            client,
            user,
            mut flow,
            settled,
        } = self.load_settled(&old, meta).await?;
        let Settled::At {
            step,
            alternatives,
            enrolling,
        } = settled
        else {
            // Nothing left to ask: the next submit completes.
            return Err(FlowError::WrongStage);
        };
        let s = self.step(&step)?;
        let mut scratch = flow.scratch.get(&step).cloned().unwrap_or_default();
        let challenge = {
            let mut cx = self.step_cx(&client, &flow, user.as_ref(), meta, locale, &mut scratch)?;
            if enrolling {
                s.present_enrollment(&mut cx).await?
            } else {
                s.present(&mut cx).await?
            }
        };
        flow.scratch.insert(step.clone(), scratch);
        let flow = self.save(&old, flow).await?;
        let locked_until = if self.checks_secret(&step) {
            self.throttle
                .locked_until(&self.buckets(&step, &flow, meta))
                .await?
        } else {
            None
        };
        let upstreams = self.offered_upstreams(&client, &flow, &step);
        Ok(FlowPage {
            flow,
            step,
            challenge,
            alternatives,
            enrolling,
            locked_until,
            upstreams,
        })
    }

    /// A submission for step `step_name` (which must be the current step) to
    /// a flow the caller has just loaded with [`Self::load`]. The CSRF token
    /// is checked here.
    pub async fn submit_to(
        &self,
        old: LoginFlow,
        csrf: &str,
        step_name: &str,
        input: &StepInput,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<SubmitOutcome, FlowError> {
        check_csrf(&old, csrf)?;
        // Only the runner marks a submission as a callback.
        let input = input.without(super::step::CALLBACK_FIELD);
        self.submit_loaded(old, step_name, &input, meta, locale)
            .await
    }

    /// A callback (an upstream's answer at
    /// `/login/upstream/<name>/callback`, an emailed link at
    /// `/login/callback`): `token` names the login flow, which must belong
    /// to this browser. The token is used up (single use), also by a use in
    /// another browser, unless its binding survives other browsers: then
    /// such a use leaves it as it is ([`FlowError::OpenedElsewhere`]). The
    /// step checks the rest. No CSRF token: the token, bound to the
    /// flow and the browser, plays that part. Returns the flow's id with the
    /// outcome.
    pub async fn callback(
        &self,
        token: &str,
        params: Vec<(String, String)>,
        browser_cookie: Option<&str>,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<(String, SubmitOutcome), FlowError> {
        let peeked = self
            .flows
            .peek_callback(token)
            .await?
            .ok_or(FlowError::UnknownCallback)?;
        if !peeked.survives_other_browsers {
            let binding = self
                .flows
                .take_callback(token)
                .await?
                .ok_or(FlowError::UnknownCallback)?;
            let old = self.load(&binding.flow_id, browser_cookie).await?;
            return self.run_callback(old, binding, params, meta, locale).await;
        }
        let old = match self.load(&peeked.flow_id, browser_cookie).await {
            Ok(flow) => flow,
            Err(FlowError::WrongBrowser) => {
                let client_id = self
                    .flows
                    .find(&peeked.flow_id)
                    .await?
                    .map(|f| f.request.client_id)
                    .unwrap_or_default();
                return Err(FlowError::OpenedElsewhere { client_id });
            }
            Err(e) => return Err(e),
        };
        let binding = self
            .flows
            .take_callback(token)
            .await?
            .filter(|b| *b == peeked)
            .ok_or(FlowError::UnknownCallback)?;
        self.run_callback(old, binding, params, meta, locale).await
    }

    /// The submission a callback stands for, to the step it was bound to.
    async fn run_callback(
        &self,
        old: LoginFlow,
        binding: super::state::CallbackBinding,
        mut params: Vec<(String, String)>,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<(String, SubmitOutcome), FlowError> {
        params.retain(|(k, _)| k != super::step::CALLBACK_FIELD);
        params.push((super::step::CALLBACK_FIELD.to_owned(), "1".to_owned()));
        let input = StepInput::new(params).with_binding(binding.value);
        let outcome = self
            .submit_loaded(old, binding.method.as_str(), &input, meta, locale)
            .await?;
        Ok((binding.flow_id, outcome))
    }

    /// "Continue with `upstream`" on an identifier page: switches to the
    /// client's flow of the same level that starts with a federating step,
    /// and starts the sign-in at that upstream.
    pub async fn federate(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        upstream: &str,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<SubmitOutcome, FlowError> {
        let old = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let client = self.client_of(&old)?;
        let def = Self::flow_def(&client, &old)?;
        // Only before anyone is identified (not in a step-up or a link proof).
        if !old.is_untouched() {
            return Err(FlowError::WrongStage);
        }
        let target = if def.starts_with_federation() {
            def
        } else {
            client
                .login
                .upstream_alternative(def)
                .ok_or(FlowError::WrongStage)?
        };
        let step = target.stages[0].methods[0].clone();
        let switched = LoginFlow {
            flow_name: target.name.clone(),
            position: 0,
            choice: None,
            enrolling: false,
            identifier: None,
            scratch: BTreeMap::new(),
            ..old.clone()
        };
        let switched = self.save(&old, switched).await?;
        let input = StepInput::new([("upstream".to_owned(), upstream.to_owned())]);
        self.submit_loaded(switched, step.as_str(), &input, meta, locale)
            .await
    }

    /// The "Continue with …" buttons of a flow's current page: on a typed
    /// identifier page, before anyone is identified, when the flow's level
    /// has a way in through an upstream.
    fn offered_upstreams(
        &self,
        client: &Client,
        flow: &LoginFlow,
        step: &MethodId,
    ) -> Vec<crate::federation::UpstreamInfo> {
        let typed_identifier = self
            .steps
            .get(step)
            .is_some_and(|s| s.traits().identifies && !s.traits().assurance.proves);
        let offers = typed_identifier
            && flow.is_untouched()
            && client
                .login
                .by_name(&flow.flow_name)
                .is_some_and(|def| client.login.upstream_alternative(def).is_some());
        if offers {
            self.ports.upstreams.for_client(&client.id)
        } else {
            Vec::new()
        }
    }

    /// "Use another method": switches the current stage to `method`.
    pub async fn choose_method(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        method: &str,
        meta: &RequestMeta,
    ) -> Result<(), FlowError> {
        let old = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let Loaded {
            mut flow, settled, ..
        } = self.load_settled(&old, meta).await?;
        let Settled::At {
            step, alternatives, ..
        } = settled
        else {
            return Err(FlowError::WrongStage);
        };
        if method != step.as_str() {
            let Some(wanted) = alternatives.into_iter().find(|m| m.as_str() == method) else {
                return Err(FlowError::WrongStage);
            };
            flow.scratch.remove(&wanted);
            flow.choice = Some(wanted);
        }
        self.save(&old, flow).await?;
        Ok(())
    }

    /// Back to the start ("not you?"): forgets who was identified, and the
    /// session the flow started from (another account may sign in).
    pub async fn restart(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
    ) -> Result<LoginFlow, FlowError> {
        let old = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let client = self.client_of(&old)?;
        let flow = LoginFlow {
            flow_name: client
                .login
                .for_acr_values(&old.request.acr_values)
                .name
                .clone(),
            position: 0,
            choice: None,
            enrolling: false,
            user_id: None,
            identifier: None,
            carried: Vec::new(),
            relied: Vec::new(),
            made: Vec::new(),
            scratch: BTreeMap::new(),
            pending_link: None,
            session: None,
            ..old.clone()
        };
        self.save(&old, flow).await
    }

    /// A submission for the current step of `old` (loaded and checked).
    async fn submit_loaded(
        &self,
        old: LoginFlow,
        step_name: &str,
        input: &StepInput,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<SubmitOutcome, FlowError> {
        let Loaded {
            client,
            user,
            mut flow,
            settled,
        } = self.load_settled(&old, meta).await?;
        let Settled::At {
            step,
            alternatives,
            enrolling,
        } = settled
        else {
            return self.complete(&old, flow, &client, meta).await;
        };
        if step_name != step.as_str() {
            return Err(FlowError::WrongStage);
        }
        let s = self.step(&step)?;
        let upstreams = self.offered_upstreams(&client, &flow, &step);
        let page = |flow: LoginFlow, challenge: Challenge, locked_until| FlowPage {
            flow,
            step: step.clone(),
            challenge,
            alternatives: alternatives.clone(),
            enrolling,
            locked_until,
            upstreams: upstreams.clone(),
        };
        // Counted before the secret is checked: concurrent guesses past the
        // limit are never checked.
        let ticket = if self.checks_secret(&step) {
            match self
                .throttle
                .attempt(self.buckets(&step, &flow, meta))
                .await?
            {
                Attempt::Allowed(t) => Some(t),
                Attempt::Locked { until } => {
                    self.audit
                        .record(
                            "login.locked",
                            flow.user_id,
                            Some(&client.id),
                            meta,
                            serde_json::json!({"method": step.as_str()}),
                        )
                        .await;
                    let challenge =
                        Challenge::new(s.template(enrolling)).with_error("login.locked");
                    return Ok(SubmitOutcome::Show {
                        page: Box::new(page(old.clone(), challenge, Some(until))),
                        failed: true,
                    });
                }
            }
        } else {
            None
        };
        let mut scratch = flow.scratch.get(&step).cloned().unwrap_or_default();
        let def = Self::flow_def(&client, &flow)?;
        let (outcome, identified) = {
            let mut cx = self.step_cx(&client, &flow, user.as_ref(), meta, locale, &mut scratch)?;
            let outcome = if enrolling {
                s.submit_enrollment(&mut cx, input).await
            } else {
                s.submit(&mut cx, input).await
            };
            (outcome, cx.take_identified())
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if let Some(t) = ticket {
                    self.throttle.refund(t).await?;
                }
                return Err(e.into());
            }
        };
        // What an upstream's identity leads to.
        let (outcome, identified) = match outcome {
            StepOutcome::Federated(identity) => {
                match self
                    .accounts
                    .resolve(&client, def, user.as_ref(), &identity, meta)
                    .await?
                {
                    Resolution::SignedIn(account) => {
                        let identifier = account.customer_id.as_str().to_owned();
                        (
                            StepOutcome::Passed(Proven {
                                amr: crate::federation::amr_of(&identity),
                                factors: s.traits().assurance.factors.to_vec(),
                                credential: None,
                            }),
                            Some(Identified {
                                user: Some(account),
                                identifier,
                            }),
                        )
                    }
                    Resolution::Refused(message) => {
                        let mut cx = self.step_cx(
                            &client,
                            &flow,
                            user.as_ref(),
                            meta,
                            locale,
                            &mut scratch,
                        )?;
                        let challenge = s.present(&mut cx).await?.with_error(message);
                        (
                            StepOutcome::Rejected {
                                challenge,
                                count_failure: false,
                            },
                            None,
                        )
                    }
                    Resolution::Prove { link, flow: local } => {
                        return self.start_link_proof(&old, flow, link, &local).await;
                    }
                }
            }
            o => (o, identified),
        };
        // An identifying step in a flow whose user is known (a step-up, a
        // link proof) must name that same user.
        let (outcome, identified) = match (&identified, flow.user_id) {
            (Some(id), Some(known)) if id.user.as_ref().map(|u| u.id) != Some(known) => {
                let mut cx =
                    self.step_cx(&client, &flow, user.as_ref(), meta, locale, &mut scratch)?;
                let challenge = s.present(&mut cx).await?.with_error("login.other_account");
                (
                    StepOutcome::Rejected {
                        challenge,
                        count_failure: true,
                    },
                    None,
                )
            }
            _ => (outcome, identified),
        };
        match outcome {
            StepOutcome::Passed(proven) => {
                if let Some(t) = ticket {
                    self.throttle.succeeded(t).await?;
                }
                flow.scratch.remove(&step);
                if s.traits().assurance.proves {
                    flow.made.push(self.proof_of(&step, proven, &flow));
                }
                Self::advance(&mut flow);
                let mut next_user = user;
                if let Some(id) = identified {
                    flow.user_id = id.user.as_ref().map(|u| u.id);
                    flow.identifier = Some(id.identifier);
                    next_user = id.user;
                }
                // The alternative picked is offered first next time.
                if let Some(uid) = flow.user_id.filter(|_| !alternatives.is_empty()) {
                    self.ports.users.set_last_method(uid, step.as_str()).await?;
                }
                match self
                    .settle(&mut flow, &client, next_user.as_ref(), meta)
                    .await?
                {
                    Settled::Done => self.complete(&old, flow, &client, meta).await,
                    Settled::At { .. } => {
                        self.save(&old, flow).await?;
                        Ok(SubmitOutcome::Next)
                    }
                }
            }
            StepOutcome::Redirect { location } => {
                if let Some(t) = ticket {
                    self.throttle.refund(t).await?;
                }
                flow.scratch.insert(step.clone(), scratch);
                self.save(&old, flow).await?;
                Ok(SubmitOutcome::Redirect(location))
            }
            StepOutcome::Federated(_) => Err(FlowError::Core(CoreError::Internal(
                "an upstream identity was not resolved".into(),
            ))),
            StepOutcome::Again(challenge) => {
                if let Some(t) = ticket {
                    self.throttle.refund(t).await?;
                }
                flow.scratch.insert(step.clone(), scratch);
                let flow = self.save(&old, flow).await?;
                Ok(SubmitOutcome::Show {
                    page: Box::new(page(flow, challenge, None)),
                    failed: false,
                })
            }
            StepOutcome::Rejected {
                challenge,
                count_failure,
            } => {
                match ticket {
                    Some(t) if count_failure => self.throttle.failed(t),
                    Some(t) => self.throttle.refund(t).await?,
                    None => {}
                }
                // Recorded before the flow is saved: a concurrent submission
                // may win the save, but this answer was checked.
                if count_failure {
                    self.audit
                        .record(
                            "login.failed",
                            flow.user_id,
                            Some(&client.id),
                            meta,
                            serde_json::json!({"method": step.as_str()}),
                        )
                        .await;
                }
                flow.scratch.insert(step.clone(), scratch);
                let flow = self.save(&old, flow).await?;
                Ok(SubmitOutcome::Show {
                    page: Box::new(page(flow, challenge, None)),
                    failed: true,
                })
            }
        }
    }

    /// The proof a pass of `step` made now, in `flow`'s browser.
    fn proof_of(&self, step: &MethodId, proven: Proven, flow: &LoginFlow) -> Proof {
        Proof {
            method: step.clone(),
            factors: proven.factors,
            amr: proven.amr,
            credential: proven.credential,
            at: self.now(),
            device: flow.device.clone(),
        }
    }

    /// The identity matched a local account: the flow goes on through the
    /// client's own flow `local`, for that account (identified already),
    /// and links at the end. Nothing of the upstream login counts as proof
    /// meanwhile: a second factor can be enrolled only after the account's
    /// own proof.
    async fn start_link_proof(
        &self,
        old: &LoginFlow,
        flow: LoginFlow,
        link: PendingLink,
        local: &str,
    ) -> Result<SubmitOutcome, FlowError> {
        let account = self
            .ports
            .users
            .find_by_id(link.user_id)
            .await?
            .ok_or(FlowError::Core(CoreError::Internal(
                "the account to link vanished".into(),
            )))?;
        let proof = LoginFlow {
            flow_name: local.to_owned(),
            position: 0,
            choice: None,
            enrolling: false,
            user_id: Some(account.id),
            identifier: Some(account.email.as_str().to_owned()),
            carried: Vec::new(),
            relied: Vec::new(),
            made: Vec::new(),
            scratch: BTreeMap::new(),
            pending_link: Some(link),
            ..flow
        };
        self.save(old, proof).await?;
        Ok(SubmitOutcome::Next)
    }

    /// Every stage passed: one submit wins the flow.
    async fn complete(
        &self,
        old: &LoginFlow,
        mut flow: LoginFlow,
        client: &Client,
        meta: &RequestMeta,
    ) -> Result<SubmitOutcome, FlowError> {
        let user = self.flow_user(&flow).await?.ok_or_else(|| {
            // Unreachable for an unknown identifier: its secrets never pass.
            FlowError::Core(CoreError::Internal(
                "a flow completed without a user".into(),
            ))
        })?;
        flow.completed = true;
        self.finish(old, flow.clone()).await?;
        // The user proved they own the account an upstream identity matched.
        if let Some(link) = flow.pending_link.take()
            && link.user_id == user.id
        {
            self.accounts.link_proven(&link, client, meta).await?;
            if let Some(upstream) = self.steps.all().find(|t| t.federates) {
                let proven = Proven {
                    amr: crate::federation::amr_of(&link.identity),
                    factors: upstream.assurance.factors.to_vec(),
                    credential: None,
                };
                flow.made
                    .push(self.proof_of(&upstream.method(), proven, &flow));
            }
        }
        let device_cookie = self.remember_device(client, &flow, &user, meta).await?;
        let def = Self::flow_def(client, &flow)?;
        Ok(SubmitOutcome::Completed(Box::new(Completion {
            acr: def.acr.clone(),
            request: flow.request,
            user,
            relied: flow.relied,
            made: flow.made,
            session: flow.session,
            device_cookie,
        })))
    }

    /// After a login: a known device is touched; a new one is remembered (a
    /// fresh random cookie, only its hash stored) when the client checks for
    /// new devices, so the check is not asked again from this browser.
    async fn remember_device(
        &self,
        client: &Client,
        flow: &LoginFlow,
        user: &User,
        meta: &RequestMeta,
    ) -> Result<Option<(String, Duration)>, FlowError> {
        let now = self.ports.clock.now();
        if let Some(hash) = &flow.device
            && let Some(d) = self.devices.find_device(hash).await?
            && d.user_id == user.id
            && d.revoked_at.is_none()
        {
            self.devices.touch_device(d.id, now).await?;
            return Ok(None);
        }
        let checks_devices = client
            .login
            .flows
            .iter()
            .any(|f| f.stages.iter().any(|s| s.when == Condition::UnknownDevice));
        if !checks_devices {
            return Ok(None);
        }
        let token = crate::random::token();
        self.devices
            .create_device(&crate::domain::KnownDevice {
                id: uuid::Uuid::now_v7(),
                user_id: user.id,
                token_hash: TokenHash::of(&token),
                label: meta.user_agent.clone(),
                created_at: now,
                last_seen_at: now,
                revoked_at: None,
            })
            .await?;
        self.audit
            .record(
                "device.remembered",
                Some(user.id),
                Some(&client.id),
                meta,
                serde_json::json!({}),
            )
            .await;
        let days = u64::from(self.settings.device_cookie_days);
        Ok(Some((token, Duration::from_secs(days * 24 * 3600))))
    }

    /// Whether `session` satisfies `client`'s default flow now, without
    /// asking anything (the account pages' check of a session opened
    /// elsewhere).
    pub async fn session_satisfies(
        &self,
        client: &Client,
        session: &SsoSession,
        key: TokenHash,
        user: &User,
        device: Option<&str>,
        max_age: Option<u64>,
    ) -> Result<bool, FlowError> {
        let req = AuthorizeRequest {
            client_id: client.id.0.clone(),
            redirect_uri: String::new(),
            scope: Vec::new(),
            state: None,
            nonce: None,
            code_challenge: None,
            prompt: Default::default(),
            max_age,
            login_hint: None,
            ui_locales: None,
            id_token_hint: None,
            acr_values: Vec::new(),
            response_mode: Default::default(),
            claims: Default::default(),
            resources: Vec::new(),
            dpop_jkt: None,
            device: None,
        };
        let from = StartFrom { session, key, user };
        let started = self
            .start(client, req, Some(from), "", device, &RequestMeta::default())
            .await?;
        Ok(matches!(started, Started::Done(_)))
    }
}
