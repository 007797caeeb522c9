//! The interactive side of authorization: single sign-on sessions, the login
//! flow runner, and issuing the code.
//!
//! # Login flow states
//!
//! ```text
//!                 authorize (no usable session, or a step-up is needed)
//!                                  │
//!                                  ▼
//!            ┌──────────── Running { position, choice, enrolling } ◀──┐
//!            │                     │ submit                            │
//!            │      Rejected ──────┤ (failure counted, page again) ────┤
//!            │      Again ─────────┤ (page again) ─────────────────────┤
//!            │      Passed ────────┴─▶ next stage that applies ────────┘
//!            │                                   │ none left
//!            │ expires / other browser           ▼
//!            ▼                          Completed (session set, code issued)
//!         NotFound
//! ```
//!
//! A flow lives in the short-lived store under `flow:<id>` with a TTL, is bound
//! to the browser that started it (hash of the browser cookie), and carries a
//! CSRF token. The runner (this module) skips stages whose condition does not
//! hold, picks the method of a one-of stage (the user may switch), runs
//! enrollment when the user has none of a required stage's methods, counts
//! failures per user and method (and per IP), and completes the authorization
//! request. Every update is a compare-and-swap on the stored bytes with a
//! version bump, so a double submit cannot pass a step twice and only one
//! submit completes a flow. A submit names the step it answers; answering any
//! other step than the current one is refused, so steps cannot be skipped or
//! reordered by replaying requests.

use super::authorize::{AuthorizeRequest, redirect_with};
use super::error::{ErrorCode, OAuthError};
use super::federation::Resolution;
use super::provider::Provider;
use crate::client::Client;
use crate::domain::RequestMeta;
use crate::domain::{Consent, TokenHash, User, UserId, UserStatus};
use crate::ephemeral::{get_json, put_json};
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Step, StepCx, StepInput, StepOutcome};
use crate::method::MethodId;
use crate::policy::{Condition, FlowDef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// A single sign-on session, stored under `session:<hash of cookie>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoSession {
    /// Public session id (the `sid` claim).
    pub sid: String,
    pub user_id: UserId,
    /// Unix seconds.
    pub auth_time: i64,
    pub amr: Vec<String>,
    /// The highest level reached (the `acr` of the last completed flow).
    pub acr: String,
    /// Every acr level reached in this session.
    #[serde(default)]
    pub acrs: Vec<String>,
    /// Methods passed in this session (a step-up does not ask them again).
    #[serde(default)]
    pub methods: Vec<MethodId>,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A stage passed in a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedStep {
    pub kind: MethodId,
    pub amr: Vec<String>,
}

/// A login in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    pub id: String,
    pub version: u64,
    pub request: AuthorizeRequest,
    pub browser: TokenHash,
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Which of the client's flows runs.
    pub flow_name: String,
    /// Index of the current stage.
    pub position: usize,
    /// The method chosen for the current stage.
    pub choice: Option<MethodId>,
    /// The current stage enrolls `choice` first.
    pub enrolling: bool,
    /// Set once an identifying step passed (`None` also for an unknown identifier).
    pub user_id: Option<UserId>,
    pub identifier: Option<String>,
    pub passed: Vec<PassedStep>,
    /// Each step's own state.
    pub scratch: BTreeMap<MethodId, serde_json::Value>,
    pub completed: bool,
    /// Hash of the browser's device cookie, if it sent one: the device is
    /// known when a live device record with this hash belongs to the user.
    #[serde(default)]
    pub device: Option<TokenHash>,
    /// An upstream identity matched this local account: the user proves they
    /// own it through this flow, then the two are linked.
    #[serde(default)]
    pub pending_link: Option<crate::federation::PendingLink>,
}

impl LoginFlow {
    fn has_passed(&self, kind: &MethodId) -> bool {
        self.passed.iter().any(|p| p.kind == *kind)
    }
}

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
    /// An upstream's answer names no sign-in this provider started (tampered
    /// or replayed `state`, or one that expired).
    #[error("upstream answer matches no login in progress")]
    UnknownCallback,
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<crate::ports::RepoError> for FlowError {
    fn from(e: crate::ports::RepoError) -> Self {
        Self::Core(e.into())
    }
}

impl From<crate::ephemeral::StoreError> for FlowError {
    fn from(e: crate::ephemeral::StoreError) -> Self {
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
    /// Set when the method is locked for now (too many failures).
    pub locked_until: Option<OffsetDateTime>,
    /// "Continue with …" buttons of an identifier page (federation).
    pub upstreams: Vec<crate::federation::UpstreamInfo>,
}

/// What a submit led to.
#[derive(Debug)]
pub enum SubmitOutcome {
    /// Moved on: show the flow page again.
    Next,
    /// Stay: show this page. `failed` for a wrong answer, `locked` when throttled.
    Show { page: Box<FlowPage>, failed: bool },
    /// Leave for this URL (an upstream provider's login).
    Redirect(String),
    /// Signed in: set the session cookie, redirect to the client.
    Completed {
        redirect: String,
        session_cookie: String,
        session_ttl: Duration,
        /// A new device cookie to set (the browser passed a new-device check).
        device_cookie: Option<(String, Duration)>,
    },
}

/// What the authorization endpoint does next.
#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// 303 to this URL (a code, or an error for the client).
    Redirect(String),
    /// Show the login flow with this id.
    Login(Box<LoginFlow>),
}

/// An authorization code as stored under `code:<hash>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) user_id: UserId,
    pub(crate) sid: String,
    pub(crate) auth_time: i64,
    pub(crate) acr: String,
    pub(crate) amr: Vec<String>,
    pub(crate) expires_at: i64,
}

/// Where the runner stands after skipping what does not apply.
enum Settled {
    At {
        step: MethodId,
        alternatives: Vec<MethodId>,
        enrolling: bool,
    },
    Done,
}

/// The flow's CSRF token, compared in constant time.
fn check_csrf(flow: &LoginFlow, csrf: &str) -> Result<(), FlowError> {
    if bool::from(flow.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
        Ok(())
    } else {
        Err(FlowError::Csrf)
    }
}

fn flow_key(id: &str) -> String {
    format!("flow:{id}")
}

fn session_key(cookie: &str) -> String {
    format!("session:{}", TokenHash::of(cookie).as_str())
}

pub(crate) fn code_key(code: &str) -> String {
    format!("code:{}", TokenHash::of(code).as_str())
}

pub(crate) fn code_used_key(code: &str) -> String {
    format!("code_used:{}", TokenHash::of(code).as_str())
}

pub(crate) fn code_replayed_key(code: &str) -> String {
    format!("code_replayed:{}", TokenHash::of(code).as_str())
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(1) as u64)
}

/// RFC 8176 values of each factor category, for the `mfa` claim value.
fn factor_category(amr: &str) -> Option<u8> {
    match amr {
        "pwd" | "pin" | "kba" => Some(0),
        "otp" | "sms" | "tel" | "hwk" | "swk" | "sc" => Some(1),
        // `user` (a presence test) is not a factor.
        "fpt" | "face" | "iris" | "retina" | "vbm" => Some(2),
        _ => None,
    }
}

/// The `amr` of a set of passed steps: their values, plus `mfa` when at
/// least two factor categories were proven (RFC 8176 §2).
pub fn combined_amr(passed: &[PassedStep]) -> Vec<String> {
    let mut amr: Vec<String> = Vec::new();
    for p in passed {
        for a in &p.amr {
            if !amr.contains(a) {
                amr.push(a.clone());
            }
        }
    }
    let mut cats: Vec<u8> = amr.iter().filter_map(|a| factor_category(a)).collect();
    cats.sort_unstable();
    cats.dedup();
    if cats.len() >= 2 && !amr.iter().any(|a| a == "mfa") {
        amr.push("mfa".into());
    }
    amr
}

impl Provider {
    /// The session a cookie points to, if live.
    pub async fn find_session(&self, cookie: &str) -> Result<Option<SsoSession>, CoreError> {
        let s: Option<SsoSession> = get_json(self.store.as_ref(), &session_key(cookie)).await?;
        let now = self.clock.now().unix_timestamp();
        Ok(s.filter(|s| s.expires_at > now))
    }

    /// Ends the session a cookie points to and revokes the grants born of it.
    pub async fn end_session(
        &self,
        cookie: &str,
        meta: &RequestMeta,
    ) -> Result<Option<SsoSession>, CoreError> {
        let session: Option<SsoSession> =
            crate::ephemeral::take_json(self.store.as_ref(), &session_key(cookie)).await?;
        if let Some(s) = &session {
            self.ports
                .families
                .revoke_families_of_session(&s.sid, self.clock.now(), "logout")
                .await?;
            self.audit(
                "logout",
                Some(s.user_id),
                None,
                meta,
                serde_json::json!({"sid": s.sid}),
            )
            .await;
        }
        Ok(session)
    }

    /// Decides what a checked authorization request leads to: a code right
    /// away from a session that satisfies it, an error for `prompt=none`, or
    /// a login flow (a step-up flow for a session that lacks the requested
    /// level: the methods it already passed are not asked again).
    pub async fn authorize(
        &self,
        client: Arc<Client>,
        req: AuthorizeRequest,
        session_cookie: Option<&str>,
        browser_cookie: &str,
        device_cookie: Option<&str>,
    ) -> Result<AuthorizeOutcome, CoreError> {
        let now = self.clock.now().unix_timestamp();
        let session = match session_cookie {
            Some(c) => self.find_session(c).await?,
            None => None,
        };
        let hint_sub = match &req.id_token_hint {
            Some(hint) => match self.id_token_hint_subject(hint, &client) {
                Some(sub) => Some(sub),
                None => {
                    return Ok(AuthorizeOutcome::Redirect(error_redirect(
                        &self.settings.issuer,
                        &req,
                        &OAuthError::invalid_request("id_token_hint is not valid"),
                    )));
                }
            },
            None => None,
        };
        let flow_def = client.login.for_acr_values(&req.acr_values);
        let fresh_enough = |s: &SsoSession| {
            !req.prompt.login
                && req.max_age.is_none_or(|m| now - s.auth_time <= m as i64)
                && hint_sub
                    .as_ref()
                    .is_none_or(|sub| *sub == s.user_id.to_string())
        };
        let mut step_up_from = None;
        if let Some(s) = session.filter(|s| fresh_enough(s))
            && let Some(user) = self.ports.users.find_by_id(s.user_id).await?
            && user.status == UserStatus::Active
        {
            let level_reached = s.acrs.contains(&flow_def.acr) || s.acr == flow_def.acr;
            if req.acr_values.is_empty() || level_reached {
                let redirect = self.issue_code(&client, &req, &s).await?;
                return Ok(AuthorizeOutcome::Redirect(redirect));
            }
            step_up_from = Some((s, user));
        }
        if req.prompt.none {
            let e = if step_up_from.is_some() {
                OAuthError::new(
                    ErrorCode::InteractionRequired,
                    "the requested level needs the user to sign in again",
                )
            } else {
                OAuthError::new(ErrorCode::LoginRequired, "the user must sign in")
            };
            return Ok(AuthorizeOutcome::Redirect(error_redirect(
                &self.settings.issuer,
                &req,
                &e,
            )));
        }
        let mut flow = LoginFlow {
            id: crate::random::token(),
            version: 0,
            browser: TokenHash::of(browser_cookie),
            csrf: crate::random::token(),
            expires_at: now + i64::from(self.settings.flow_lifetime_secs),
            flow_name: flow_def.name.clone(),
            position: 0,
            choice: None,
            enrolling: false,
            user_id: None,
            identifier: None,
            passed: Vec::new(),
            scratch: BTreeMap::new(),
            completed: false,
            device: device_cookie.map(TokenHash::of),
            pending_link: None,
            request: req,
        };
        if let Some((s, user)) = step_up_from {
            // Step-up: the user is known, and what the session proved counts.
            // A session opened through an upstream steps up through the
            // level's upstream flow, if it has one: only what that flow adds
            // is asked (not a password the account may not have).
            if s.methods.iter().any(|m| self.federates(m))
                && let Some(alt) = client.login.upstream_alternative(flow_def)
            {
                flow.flow_name = alt.name.clone();
            }
            flow.user_id = Some(user.id);
            flow.identifier = Some(user.customer_id.as_str().to_owned());
            flow.passed.push(PassedStep {
                kind: crate::steps::identifier::ID.clone(),
                amr: vec![],
            });
            // What the session proved (its amr, `mfa` included) carries over.
            let mut session_amr = Some(s.amr.clone());
            for m in s
                .methods
                .iter()
                .filter(|m| **m != crate::steps::identifier::ID)
            {
                let amr = session_amr.take().unwrap_or_default();
                flow.passed.push(PassedStep {
                    kind: m.clone(),
                    amr,
                });
            }
        }
        put_json(
            self.store.as_ref(),
            &flow_key(&flow.id),
            &flow,
            secs(i64::from(self.settings.flow_lifetime_secs)),
        )
        .await?;
        Ok(AuthorizeOutcome::Login(Box::new(flow)))
    }

    /// Claims of an ID token this provider issued (signature, `typ` and
    /// `iss` checked; expired ones accepted, as OIDC Core §3.1.2.1 and
    /// RP-Initiated Logout §2 allow). Access tokens (`typ: at+jwt`) are not
    /// ID tokens and are refused.
    pub(crate) fn verify_id_token_hint(
        &self,
        hint: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (claims, typ) = self.keys().verify(hint).ok()?;
        let is_id_token = typ.as_deref() == Some("JWT")
            && claims.get("iss")?.as_str()? == self.settings.issuer
            && claims.get("client_id").is_none();
        is_id_token.then_some(claims)
    }

    /// `sub` of an ID token hint issued to this client.
    pub(crate) fn id_token_hint_subject(&self, hint: &str, client: &Client) -> Option<String> {
        let claims = self.verify_id_token_hint(hint)?;
        let aud_ok = match claims.get("aud")? {
            serde_json::Value::String(a) => *a == client.id.0,
            serde_json::Value::Array(a) => a.iter().any(|v| v.as_str() == Some(&client.id.0)),
            _ => false,
        };
        aud_ok.then(|| claims.get("sub")?.as_str().map(str::to_owned))?
    }

    /// Loads a flow for this browser.
    pub async fn load_flow(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<LoginFlow, FlowError> {
        let flow: LoginFlow = get_json(self.store.as_ref(), &flow_key(flow_id))
            .await?
            .ok_or(FlowError::NotFound)?;
        if flow.expires_at <= self.clock.now().unix_timestamp() || flow.completed {
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
        let flow = self.load_flow(flow_id, browser_cookie).await?;
        check_csrf(&flow, csrf)?;
        Ok(flow)
    }

    /// Compare-and-swap the flow from `old` to `new` (version bumped here).
    pub(super) async fn save_flow(
        &self,
        old: &LoginFlow,
        new: LoginFlow,
    ) -> Result<LoginFlow, FlowError> {
        let ttl = secs(new.expires_at - self.clock.now().unix_timestamp());
        self.swap_flow(old, new, ttl).await
    }

    /// Compare-and-swap the flow from `old` to its completed state, kept only
    /// a moment: of two submissions completing it at once, only one swaps
    /// (the other's `old` no longer matches), and a completed flow is never
    /// loaded again ([`Self::load_flow`]), so it need not be deleted after.
    async fn finish_flow(&self, old: &LoginFlow, new: LoginFlow) -> Result<LoginFlow, FlowError> {
        debug_assert!(new.completed);
        self.swap_flow(old, new, Duration::from_secs(1)).await
    }

    async fn swap_flow(
        &self,
        old: &LoginFlow,
        mut new: LoginFlow,
        ttl: Duration,
    ) -> Result<LoginFlow, FlowError> {
        if *old == new {
            return Ok(new);
        }
        new.version = old.version + 1;
        let old_bytes = serde_json::to_vec(old).map_err(|e| CoreError::Internal(e.to_string()))?;
        let new_bytes = serde_json::to_vec(&new).map_err(|e| CoreError::Internal(e.to_string()))?;
        let swapped = self
            .store
            .replace_if(&flow_key(&new.id), &old_bytes, &new_bytes, ttl)
            .await?;
        if swapped {
            Ok(new)
        } else {
            Err(FlowError::Conflict)
        }
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

    /// Whether `method` signs in through an upstream provider.
    fn federates(&self, method: &MethodId) -> bool {
        self.steps.get(method).is_some_and(|s| s.traits().federates)
    }

    /// Whether `method` proves something (all but the identifier).
    fn proves(&self, method: &MethodId) -> bool {
        self.steps
            .get(method)
            .is_some_and(|s| s.traits().assurance.proves)
    }

    fn step(&self, kind: &MethodId) -> Result<Arc<dyn Step>, FlowError> {
        self.steps.get(kind).cloned().ok_or_else(|| {
            FlowError::Core(CoreError::Internal(format!(
                "no step registered for {}",
                kind.as_str()
            )))
        })
    }

    /// What a step of `flow` sees: the client, the user, the flow's
    /// definition, how old the authentication may be (`max_age`, `0` for
    /// `prompt=login`), the request facts, and `scratch` as its own state.
    #[allow(clippy::too_many_arguments)]
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
            &self.step_ports,
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

    /// Whether each method applies to this user, with a throwaway scratch.
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

    /// Skips stages that do not apply, picks the method of the current one.
    async fn settle(
        &self,
        flow: &mut LoginFlow,
        client: &Client,
        user: Option<&User>,
        meta: &RequestMeta,
    ) -> Result<Settled, FlowError> {
        let def = Self::flow_def(client, flow)?.clone();
        loop {
            let Some(stage) = def.stages.get(flow.position) else {
                return Ok(Settled::Done);
            };
            // Already proven in this flow (or in the session, for a step-up).
            if stage.methods.iter().any(|m| flow.has_passed(m)) {
                flow.position += 1;
                flow.choice = None;
                flow.enrolling = false;
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
                    Some(u) => self.mfa_required(u, client).await?,
                    None => false,
                },
            };
            // An unknown identifier goes through every stage the same way as
            // a known one would: it fails at its first secret, like a wrong
            // password, and never reveals that the account does not exist.
            if !needed {
                flow.position += 1;
                flow.choice = None;
                flow.enrolling = false;
                continue;
            }
            // Enrolling a new factor is allowed only once something was
            // proven in this flow (or the session, for a step-up): an
            // identifier alone must never let a stranger attach their own
            // authenticator to someone's account.
            let proven = flow.passed.iter().any(|p| self.proves(&p.kind));
            if !proven {
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
                None => self.preferred_method(user, &pool).await?,
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

    /// Whether `user` must use a second factor when signing in to `client`:
    /// set on the account, or enforced by one of the user's organizations for
    /// the client's authentication kind (`[account] auth_kind`).
    pub async fn mfa_required(&self, user: &User, client: &Client) -> Result<bool, CoreError> {
        if user.mfa_required {
            return Ok(true);
        }
        for m in self.ports.orgs.memberships_of(user.id).await? {
            if let Some(org) = self.ports.orgs.find_org(m.org_id).await?
                && org.status != crate::domain::OrgStatus::Rejected
                && org
                    .mfa_required_for
                    .iter()
                    .any(|k| k == &client.account.auth_kind)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The method the user used last among `pool`, else the first listed.
    async fn preferred_method(
        &self,
        user: Option<&User>,
        pool: &[MethodId],
    ) -> Result<MethodId, FlowError> {
        // Kept async: a future preference source may need the database.
        let last = user.and_then(|u| u.last_method.as_deref());
        Ok(pool
            .iter()
            .find(|k| Some(k.as_str()) == last)
            .unwrap_or(&pool[0])
            .clone())
    }

    /// The page of a flow's current step (it may send a code or prepare a
    /// WebAuthn challenge, kept in the step's scratch state), for a flow the
    /// caller has just loaded with [`Self::load_flow`] (the web layer picks
    /// the page's language from it first, so it is read once).
    pub async fn page_of(
        &self,
        old: LoginFlow,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<FlowPage, FlowError> {
        let client = self.client_of(&old)?;
        let user = self.flow_user(&old).await?;
        let mut flow = old.clone();
        let Settled::At {
            step,
            alternatives,
            enrolling,
        } = self.settle(&mut flow, &client, user.as_ref(), meta).await?
        else {
            // Nothing left to ask (a step-up already satisfied): the next submit completes.
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
        let flow = self.save_flow(&old, flow).await?;
        let locked_until = self.locked_until(&step, &flow, meta).await?;
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
    /// a flow the caller has just loaded with [`Self::load_flow`] (the web
    /// layer picks the page's language from it first, so it is read once).
    /// The CSRF token is checked here.
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
        // Only the runner marks a submission as an upstream's answer.
        let input = input.without(crate::steps::upstream::CALLBACK_FIELD);
        self.submit_loaded(old, step_name, &input, meta, locale)
            .await
    }

    /// An upstream provider's answer (`/login/upstream/<name>/callback`):
    /// its `state` names the login flow (single use), which must belong to
    /// this browser; the `upstream` step checks the rest. No CSRF token: the
    /// `state`, bound to the flow and the browser, plays that part. Returns
    /// the flow's id with the outcome.
    pub async fn upstream_callback(
        &self,
        upstream: &str,
        params: Vec<(String, String)>,
        browser_cookie: Option<&str>,
        meta: &RequestMeta,
        locale: &str,
    ) -> Result<(String, SubmitOutcome), FlowError> {
        use crate::steps::upstream::{CALLBACK_FIELD, state_key};
        let state = params
            .iter()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.clone())
            .ok_or(FlowError::UnknownCallback)?;
        let flow_id = self
            .store
            .take(&state_key(&state))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(FlowError::UnknownCallback)?;
        let old = self.load_flow(&flow_id, browser_cookie).await?;
        let input = StepInput::new(
            params
                .into_iter()
                .filter(|(k, _)| k != CALLBACK_FIELD && k != "upstream")
                .chain([
                    (CALLBACK_FIELD.to_owned(), "1".to_owned()),
                    ("upstream".to_owned(), upstream.to_owned()),
                ]),
        );
        let outcome = self
            .submit_loaded(
                old,
                crate::steps::upstream::ID.as_str(),
                &input,
                meta,
                locale,
            )
            .await?;
        Ok((flow_id, outcome))
    }

    /// "Continue with <upstream>" on an identifier page: switches to the
    /// client's flow of the same level that starts with `upstream`, and
    /// starts the sign-in at that upstream.
    #[allow(clippy::too_many_arguments)]
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
        if old.user_id.is_some() || !old.passed.is_empty() || old.pending_link.is_some() {
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
        let switched = LoginFlow {
            flow_name: target.name.clone(),
            position: 0,
            choice: None,
            enrolling: false,
            identifier: None,
            scratch: BTreeMap::new(),
            ..old.clone()
        };
        let switched = self.save_flow(&old, switched).await?;
        let input = StepInput::new([("upstream".to_owned(), upstream.to_owned())]);
        self.submit_loaded(
            switched,
            crate::steps::upstream::ID.as_str(),
            &input,
            meta,
            locale,
        )
        .await
    }

    /// The "Continue with …" buttons of a flow's current page: on an
    /// identifier page, before anyone is identified, when the flow's level
    /// has a way in through an upstream.
    fn offered_upstreams(
        &self,
        client: &Client,
        flow: &LoginFlow,
        step: &MethodId,
    ) -> Vec<crate::federation::UpstreamInfo> {
        let offers = *step == crate::steps::identifier::ID
            && flow.passed.is_empty()
            && flow.pending_link.is_none()
            && client
                .login
                .by_name(&flow.flow_name)
                .is_some_and(|def| client.login.upstream_alternative(def).is_some());
        if offers {
            self.step_ports.upstreams.for_client(&client.id)
        } else {
            Vec::new()
        }
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
        let client = self.client_of(&old)?;
        let user = self.flow_user(&old).await?;
        let mut flow = old.clone();
        let Settled::At {
            step,
            alternatives,
            enrolling,
        } = self.settle(&mut flow, &client, user.as_ref(), meta).await?
        else {
            return self.complete(&old, flow, &client, meta).await;
        };
        if step_name != step.as_str() {
            return Err(FlowError::WrongStage);
        }
        let s = self.step(&step)?;
        let upstreams = self.offered_upstreams(&client, &flow, &step);
        if let Some(until) = self.locked_until(&step, &flow, meta).await? {
            self.audit(
                "login.locked",
                flow.user_id,
                Some(&client.id),
                meta,
                serde_json::json!({"method": step.as_str()}),
            )
            .await;
            let challenge = Challenge::new(s.template(enrolling)).with_error("login.locked");
            let page = FlowPage {
                flow: old.clone(),
                step,
                challenge,
                alternatives,
                enrolling,
                locked_until: Some(until),
                upstreams,
            };
            return Ok(SubmitOutcome::Show {
                page: Box::new(page),
                failed: true,
            });
        }
        let mut scratch = flow.scratch.get(&step).cloned().unwrap_or_default();
        let def = Self::flow_def(&client, &flow)?;
        let (outcome, identified) = {
            let mut cx = self.step_cx(&client, &flow, user.as_ref(), meta, locale, &mut scratch)?;
            let outcome = if enrolling {
                s.submit_enrollment(&mut cx, input).await?
            } else {
                s.submit(&mut cx, input).await?
            };
            (outcome, cx.take_identified())
        };
        // What an upstream's identity leads to.
        let (outcome, identified) = match outcome {
            StepOutcome::Federated(identity) => {
                match self
                    .resolve_upstream(&client, def, user.as_ref(), &identity, meta)
                    .await?
                {
                    Resolution::SignedIn(account) => {
                        let identifier = account.customer_id.as_str().to_owned();
                        (
                            StepOutcome::Passed(crate::steps::upstream::proven(&identity)),
                            Some(crate::flow::Identified {
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
        match outcome {
            StepOutcome::Passed(proven) => {
                flow.scratch.remove(&step);
                flow.passed.push(PassedStep {
                    kind: step.clone(),
                    amr: proven.amr,
                });
                flow.position += 1;
                flow.choice = None;
                flow.enrolling = false;
                let mut next_user = user;
                if let Some(id) = identified {
                    flow.user_id = id.user.as_ref().map(|u| u.id);
                    flow.identifier = Some(id.identifier);
                    next_user = id.user;
                }
                self.store.delete(&self.throttle_key(&step, &flow)).await?;
                // The method shown first next time: a second factor picked.
                if let Some(uid) = flow.user_id.filter(|_| {
                    step != crate::steps::identifier::ID && step != crate::steps::password::ID
                }) {
                    self.ports.users.set_last_method(uid, step.as_str()).await?;
                }
                match self
                    .settle(&mut flow, &client, next_user.as_ref(), meta)
                    .await?
                {
                    Settled::Done => self.complete(&old, flow, &client, meta).await,
                    Settled::At { .. } => {
                        self.save_flow(&old, flow).await?;
                        Ok(SubmitOutcome::Next)
                    }
                }
            }
            StepOutcome::Redirect { location } => {
                flow.scratch.insert(step.clone(), scratch);
                self.save_flow(&old, flow).await?;
                Ok(SubmitOutcome::Redirect(location))
            }
            StepOutcome::Federated(_) => Err(FlowError::Core(CoreError::Internal(
                "an upstream identity was not resolved".into(),
            ))),
            StepOutcome::Again(challenge) => {
                flow.scratch.insert(step.clone(), scratch);
                let flow = self.save_flow(&old, flow).await?;
                let page = FlowPage {
                    flow,
                    step,
                    challenge,
                    alternatives,
                    enrolling,
                    locked_until: None,
                    upstreams,
                };
                Ok(SubmitOutcome::Show {
                    page: Box::new(page),
                    failed: false,
                })
            }
            StepOutcome::Rejected {
                challenge,
                count_failure,
            } => {
                flow.scratch.insert(step.clone(), scratch);
                let flow = self.save_flow(&old, flow).await?;
                if count_failure {
                    self.count_failure(&step, &flow, meta).await?;
                    self.audit(
                        "login.failed",
                        flow.user_id,
                        Some(&client.id),
                        meta,
                        serde_json::json!({"method": step.as_str()}),
                    )
                    .await;
                }
                let page = FlowPage {
                    flow,
                    step,
                    challenge,
                    alternatives,
                    enrolling,
                    locked_until: None,
                    upstreams,
                };
                Ok(SubmitOutcome::Show {
                    page: Box::new(page),
                    failed: true,
                })
            }
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
        let client = self.client_of(&old)?;
        let user = self.flow_user(&old).await?;
        let mut flow = old.clone();
        let Settled::At {
            step, alternatives, ..
        } = self.settle(&mut flow, &client, user.as_ref(), meta).await?
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
        self.save_flow(&old, flow).await?;
        Ok(())
    }

    /// Back to the start ("not you?"): forgets who was identified.
    pub async fn restart_flow(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
    ) -> Result<LoginFlow, FlowError> {
        let old = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let flow = LoginFlow {
            position: 0,
            choice: None,
            enrolling: false,
            user_id: None,
            identifier: None,
            passed: Vec::new(),
            scratch: BTreeMap::new(),
            pending_link: None,
            ..old.clone()
        };
        self.save_flow(&old, flow).await
    }

    /// Every stage passed: one submit wins the flow, sets the session and
    /// issues the code.
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
        self.finish_flow(old, flow.clone()).await?;
        // The user proved they own the account an upstream identity matched.
        if let Some(link) = flow.pending_link.take()
            && link.user_id == user.id
        {
            self.link_proven(&link, client, meta).await?;
            flow.passed.push(PassedStep {
                kind: crate::steps::upstream::ID.clone(),
                amr: crate::steps::upstream::proven(&link.identity).amr,
            });
        }
        let def = Self::flow_def(client, &flow)?;
        let now = self.clock.now().unix_timestamp();
        let methods: Vec<MethodId> = flow.passed.iter().map(|p| p.kind.clone()).collect();
        let session = SsoSession {
            sid: crate::random::token()[..22].to_owned(),
            user_id: user.id,
            auth_time: now,
            amr: combined_amr(&flow.passed),
            acr: def.acr.clone(),
            acrs: self.levels_reached(client, &methods),
            methods,
            expires_at: now + i64::from(self.settings.session_lifetime_secs),
        };
        let cookie = crate::random::token();
        let ttl = secs(i64::from(self.settings.session_lifetime_secs));
        put_json(self.store.as_ref(), &session_key(&cookie), &session, ttl).await?;
        // Listed on the account page ("active sessions", "sign out other
        // sessions"): see `accounts::security` for the index.
        self.index_session(&session, &cookie, meta).await?;
        self.audit(
            "login.succeeded",
            Some(user.id),
            Some(&client.id),
            meta,
            serde_json::json!({"amr": session.amr, "acr": session.acr, "sid": session.sid}),
        )
        .await;
        let device_cookie = self.remember_device(client, &flow, &user, meta).await?;
        let redirect = self.issue_code(client, &flow.request, &session).await?;
        Ok(SubmitOutcome::Completed {
            redirect,
            session_cookie: cookie,
            session_ttl: ttl,
            device_cookie,
        })
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
            .ports
            .devices
            .find_device(hash)
            .await?
            .is_some_and(|d| d.user_id == user.id && d.revoked_at.is_none()))
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
        let now = self.clock.now();
        if let Some(hash) = &flow.device
            && let Some(d) = self.ports.devices.find_device(hash).await?
            && d.user_id == user.id
            && d.revoked_at.is_none()
        {
            self.ports.devices.touch_device(d.id, now).await?;
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
        self.ports
            .devices
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
        self.audit(
            "device.remembered",
            Some(user.id),
            Some(&client.id),
            meta,
            serde_json::json!({}),
        )
        .await;
        let days = u64::from(self.settings.methods.device_cookie_days);
        Ok(Some((token, Duration::from_secs(days * 24 * 3600))))
    }

    /// Levels of this client whose every unconditional stage was passed.
    fn levels_reached(&self, client: &Client, methods: &[MethodId]) -> Vec<String> {
        client
            .login
            .flows
            .iter()
            .filter(|f| {
                f.stages
                    .iter()
                    .filter(|s| s.when == Condition::Always)
                    .all(|s| s.methods.iter().any(|m| methods.contains(m)))
            })
            .map(|f| f.acr.clone())
            .collect()
    }

    /// Failures count per user (or per typed identifier when unknown) and
    /// method, and per client IP.
    fn throttle_key(&self, step: &MethodId, flow: &LoginFlow) -> String {
        match (flow.user_id, &flow.identifier) {
            (Some(id), _) => format!("throttle:{}:user:{id}", step.as_str()),
            (None, Some(ident)) => format!(
                "throttle:{}:ident:{}",
                step.as_str(),
                TokenHash::of(&ident.trim().to_lowercase()).as_str()
            ),
            (None, None) => format!("throttle:{}:flow:{}", step.as_str(), flow.id),
        }
    }

    async fn count_failure(
        &self,
        step: &MethodId,
        flow: &LoginFlow,
        meta: &RequestMeta,
    ) -> Result<(), FlowError> {
        let window = Duration::from_secs(u64::from(self.settings.throttle.window_secs));
        self.store
            .incr(&self.throttle_key(step, flow), window)
            .await?;
        if let Some(ip) = &meta.ip {
            self.store
                .incr(&format!("throttle:ip:{ip}"), window)
                .await?;
        }
        Ok(())
    }

    async fn locked_until(
        &self,
        step: &MethodId,
        flow: &LoginFlow,
        meta: &RequestMeta,
    ) -> Result<Option<OffsetDateTime>, FlowError> {
        let ip_key = meta.ip.as_ref().map(|ip| format!("throttle:ip:{ip}"));
        let acct_key = self.throttle_key(step, flow);
        Ok(self.locked_until_keys(&acct_key, ip_key.as_deref()).await?)
    }

    /// Until when failures lock out: the account's key (`acct_key`) past
    /// `[throttle] account_max_failures`, or the client IP's (`ip_key`) past
    /// `ip_max_failures`; `None` when neither is.
    pub(crate) async fn locked_until_keys(
        &self,
        acct_key: &str,
        ip_key: Option<&str>,
    ) -> Result<Option<OffsetDateTime>, CoreError> {
        let t = self.settings.throttle;
        let mut checks = vec![(acct_key, t.account_max_failures)];
        checks.extend(ip_key.map(|k| (k, t.ip_max_failures)));
        // Both counters in one read.
        let keys: Vec<&str> = checks.iter().map(|(k, _)| *k).collect();
        let counts = self.store.get_many(&keys).await?;
        for ((key, max), count) in checks.into_iter().zip(counts) {
            let count = count
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if count >= u64::from(max) {
                let left = self.store.ttl(key).await?.unwrap_or_default();
                return Ok(Some(
                    self.clock.now() + time::Duration::try_from(left).unwrap_or_default(),
                ));
            }
        }
        Ok(None)
    }

    /// Stores a fresh code for this request and session; returns the redirect.
    pub(crate) async fn issue_code(
        &self,
        client: &Client,
        req: &AuthorizeRequest,
        session: &SsoSession,
    ) -> Result<String, CoreError> {
        let now = self.clock.now();
        let scope = req.scope_string();
        let consent = self
            .ports
            .consents
            .find(session.user_id, &client.id)
            .await?;
        if consent.as_ref().is_none_or(|c| c.scope != scope) {
            self.ports
                .consents
                .upsert(&Consent {
                    user_id: session.user_id,
                    client_id: client.id.clone(),
                    scope: scope.clone(),
                    granted_at: now,
                })
                .await?;
        }
        let code = crate::random::token();
        let lifetime = i64::from(client.lifetimes.authorization_code);
        let record = CodeRecord {
            client_id: client.id.0.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scope,
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            user_id: session.user_id,
            sid: session.sid.clone(),
            auth_time: session.auth_time,
            acr: session.acr.clone(),
            amr: session.amr.clone(),
            expires_at: now.unix_timestamp() + lifetime,
        };
        put_json(
            self.store.as_ref(),
            &code_key(&code),
            &record,
            secs(lifetime),
        )
        .await?;
        let mut params: Vec<(&str, &str)> = vec![("code", &code)];
        if let Some(s) = &req.state {
            params.push(("state", s));
        }
        params.push(("iss", &self.settings.issuer));
        Ok(redirect_with(&req.redirect_uri, &params))
    }
}

/// The redirect carrying an error to the client (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
pub fn error_redirect(issuer: &str, req: &AuthorizeRequest, e: &OAuthError) -> String {
    authorize_error_redirect(issuer, &req.redirect_uri, req.state.as_deref(), e)
}

pub fn authorize_error_redirect(
    issuer: &str,
    redirect_uri: &str,
    state: Option<&str>,
    e: &OAuthError,
) -> String {
    let mut params: Vec<(&str, &str)> = vec![
        ("error", e.code.as_str()),
        ("error_description", &e.description),
    ];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", issuer));
    redirect_with(redirect_uri, &params)
}
