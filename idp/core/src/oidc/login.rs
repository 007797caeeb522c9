//! The interactive side of authorization: single sign-on sessions, the login
//! flow (identifier screen, then password screen) and issuing the code.
//!
//! # Login flow states
//!
//! ```text
//!   authorize ──(no usable session)──▶ Identifier ──identifier──▶ Password
//!                                          ▲                        │
//!                                          └──── change identifier ─┤
//!                                                                   │ right password
//!                                                                   ▼
//!                                              Completed (session set, code issued)
//! ```
//!
//! A flow lives in the short-lived store under `flow:<id>` with a TTL, is bound
//! to the browser that started it (hash of the browser cookie) and carries a
//! CSRF token. Every update is a compare-and-swap on the stored bytes with a
//! version bump, so a double submit cannot pass a step twice and only one
//! submit completes a flow.

use super::authorize::{AuthorizeRequest, redirect_with};
use super::client::Client;
use super::error::{ErrorCode, OAuthError};
use super::provider::{Provider, RequestMeta};
use crate::domain::{Consent, CustomerId, Email, TokenHash, User, UserId, UserStatus};
use crate::ephemeral::{get_json, put_json};
use crate::error::CoreError;
use crate::password::PasswordCheck;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
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
    pub acr: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The stage a login flow is at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum FlowStage {
    Identifier,
    Password {
        identifier: String,
        /// `None` when no account matches: the flow goes on identically.
        user_id: Option<UserId>,
    },
    Completed,
}

/// A login in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFlow {
    pub id: String,
    pub version: u64,
    pub request: AuthorizeRequest,
    pub browser: TokenHash,
    pub csrf: String,
    pub stage: FlowStage,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Why a flow step could not proceed.
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

/// What a password submit led to.
#[derive(Debug)]
pub enum PasswordOutcome {
    /// Wrong identifier or password: the same answer for both.
    Rejected(LoginFlow),
    /// Too many failures; retry after this time.
    Locked(LoginFlow, OffsetDateTime),
    /// Signed in: set the session cookie, redirect to the client.
    Completed {
        redirect: String,
        session_cookie: String,
        session_ttl: Duration,
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
    /// away from a usable session, an error for `prompt=none`, or a login flow.
    pub async fn authorize(
        &self,
        client: Arc<Client>,
        req: AuthorizeRequest,
        session_cookie: Option<&str>,
        browser_cookie: &str,
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
        let usable = session.filter(|s| {
            !req.prompt.login
                && req.max_age.is_none_or(|m| now - s.auth_time <= m as i64)
                && hint_sub
                    .as_ref()
                    .is_none_or(|sub| *sub == s.user_id.to_string())
        });
        if let Some(s) = usable
            && let Some(user) = self.ports.users.find_by_id(s.user_id).await?
            && user.status == UserStatus::Active
        {
            let redirect = self.issue_code(&client, &req, &s).await?;
            return Ok(AuthorizeOutcome::Redirect(redirect));
        }
        if req.prompt.none {
            return Ok(AuthorizeOutcome::Redirect(error_redirect(
                &self.settings.issuer,
                &req,
                &OAuthError::new(ErrorCode::LoginRequired, "the user must sign in"),
            )));
        }
        let flow = LoginFlow {
            id: crate::random::token(),
            version: 0,
            browser: TokenHash::of(browser_cookie),
            csrf: crate::random::token(),
            stage: FlowStage::Identifier,
            expires_at: now + i64::from(self.settings.flow_lifetime_secs),
            request: req,
        };
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
            .await
            .map_err(CoreError::from)?
            .ok_or(FlowError::NotFound)?;
        if flow.expires_at <= self.clock.now().unix_timestamp()
            || flow.stage == FlowStage::Completed
        {
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
        if !bool::from(flow.csrf.as_bytes().ct_eq(csrf.as_bytes())) {
            return Err(FlowError::Csrf);
        }
        Ok(flow)
    }

    /// Compare-and-swap the flow from `old` to `new` (version bumped here).
    async fn save_flow(&self, old: &LoginFlow, mut new: LoginFlow) -> Result<LoginFlow, FlowError> {
        new.version = old.version + 1;
        let old_bytes = serde_json::to_vec(old).map_err(|e| CoreError::Internal(e.to_string()))?;
        let new_bytes = serde_json::to_vec(&new).map_err(|e| CoreError::Internal(e.to_string()))?;
        let ttl = secs(new.expires_at - self.clock.now().unix_timestamp());
        let swapped = self
            .store
            .replace_if(&flow_key(&new.id), &old_bytes, &new_bytes, ttl)
            .await
            .map_err(CoreError::from)?;
        if swapped {
            Ok(new)
        } else {
            Err(FlowError::Conflict)
        }
    }

    /// Identifier screen: accepts an email or a customer identifier. Whether an
    /// account exists is not revealed: the password screen follows either way.
    /// Returns `Ok(None)` when the input has neither shape.
    pub async fn submit_identifier(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        identifier: &str,
    ) -> Result<Option<LoginFlow>, FlowError> {
        let flow = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        if flow.stage != FlowStage::Identifier {
            return Err(FlowError::WrongStage);
        }
        let Some(user) = self.find_by_identifier(identifier).await? else {
            if parse_identifier(identifier).is_none() {
                return Ok(None);
            }
            let next = LoginFlow {
                stage: FlowStage::Password {
                    identifier: identifier.trim().to_owned(),
                    user_id: None,
                },
                ..flow.clone()
            };
            return self.save_flow(&flow, next).await.map(Some);
        };
        let next = LoginFlow {
            stage: FlowStage::Password {
                identifier: identifier.trim().to_owned(),
                user_id: Some(user.id),
            },
            ..flow.clone()
        };
        self.save_flow(&flow, next).await.map(Some)
    }

    /// Back to the identifier screen ("not you?").
    pub async fn restart_identifier(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
    ) -> Result<LoginFlow, FlowError> {
        let flow = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let next = LoginFlow {
            stage: FlowStage::Identifier,
            ..flow.clone()
        };
        self.save_flow(&flow, next).await
    }

    async fn find_by_identifier(&self, identifier: &str) -> Result<Option<User>, CoreError> {
        Ok(match parse_identifier(identifier) {
            Some(Identifier::Email(e)) => self.ports.users.find_by_email(&e).await?,
            Some(Identifier::Customer(c)) => self.ports.users.find_by_customer_id(&c).await?,
            None => None,
        })
    }

    /// Password screen. Wrong identifier and wrong password are answered the
    /// same way after the same work; failures are throttled per identifier
    /// and per client IP.
    pub async fn submit_password(
        &self,
        flow_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        password: &Secret,
        meta: &RequestMeta,
    ) -> Result<PasswordOutcome, FlowError> {
        let flow = self.load_for_submit(flow_id, browser_cookie, csrf).await?;
        let FlowStage::Password {
            identifier,
            user_id,
        } = &flow.stage
        else {
            return Err(FlowError::WrongStage);
        };
        let client_id = crate::domain::ClientId(flow.request.client_id.clone());
        // Per account when the identifier names one (whichever identifier was
        // typed), else per identifier: unknown ones lock the same way.
        let acct_key = match user_id {
            Some(id) => format!("throttle:user:{id}"),
            None => format!(
                "throttle:ident:{}",
                TokenHash::of(&identifier.trim().to_lowercase()).as_str()
            ),
        };
        let ip_key = meta.ip.as_ref().map(|ip| format!("throttle:ip:{ip}"));
        if let Some(until) = self.locked_until(&acct_key, ip_key.as_deref()).await? {
            self.audit(
                "login.locked",
                *user_id,
                Some(&client_id),
                meta,
                serde_json::json!({}),
            )
            .await;
            return Ok(PasswordOutcome::Locked(flow.clone(), until));
        }
        let user = match user_id {
            Some(id) => self.ports.users.find_by_id(*id).await?,
            None => None,
        };
        let stored = match &user {
            Some(u) => self.ports.credentials.find_password(u.id).await?,
            None => None,
        };
        let check = self
            .hasher
            .verify(password, stored.as_ref().map(|c| c.phc.as_str()))
            .await?;
        let active_user = user.filter(|u| u.status == UserStatus::Active);
        let (user, needs_rehash) = match (check, active_user) {
            (PasswordCheck::Match { needs_rehash }, Some(u)) => (u, needs_rehash),
            _ => {
                let window = Duration::from_secs(u64::from(self.settings.throttle.window_secs));
                self.store
                    .incr(&acct_key, window)
                    .await
                    .map_err(CoreError::from)?;
                if let Some(k) = &ip_key {
                    self.store.incr(k, window).await.map_err(CoreError::from)?;
                }
                self.audit(
                    "login.failed",
                    *user_id,
                    Some(&client_id),
                    meta,
                    serde_json::json!({"method": "pwd"}),
                )
                .await;
                return Ok(PasswordOutcome::Rejected(flow.clone()));
            }
        };
        if needs_rehash && let Err(e) = self.set_password(user.id, password).await {
            tracing::warn!(error = %e, "password rehash failed");
        }
        // Only one submit may complete the flow.
        let done = LoginFlow {
            stage: FlowStage::Completed,
            ..flow.clone()
        };
        self.save_flow(&flow, done).await?;
        self.store
            .delete(&flow_key(&flow.id))
            .await
            .map_err(CoreError::from)?;
        self.store
            .delete(&acct_key)
            .await
            .map_err(CoreError::from)?;

        let now = self.clock.now().unix_timestamp();
        let session = SsoSession {
            sid: crate::random::token()[..22].to_owned(),
            user_id: user.id,
            auth_time: now,
            amr: vec!["pwd".to_owned()],
            acr: "1".to_owned(),
            expires_at: now + i64::from(self.settings.session_lifetime_secs),
        };
        let cookie = crate::random::token();
        let ttl = secs(i64::from(self.settings.session_lifetime_secs));
        put_json(self.store.as_ref(), &session_key(&cookie), &session, ttl)
            .await
            .map_err(CoreError::from)?;
        self.audit(
            "login.succeeded",
            Some(user.id),
            Some(&client_id),
            meta,
            serde_json::json!({"amr": session.amr, "sid": session.sid}),
        )
        .await;
        let client = self
            .clients
            .get(&flow.request.client_id)
            .ok_or_else(|| CoreError::Internal("client of a flow vanished".into()))?;
        let redirect = self.issue_code(&client, &flow.request, &session).await?;
        Ok(PasswordOutcome::Completed {
            redirect,
            session_cookie: cookie,
            session_ttl: ttl,
        })
    }

    async fn locked_until(
        &self,
        acct_key: &str,
        ip_key: Option<&str>,
    ) -> Result<Option<OffsetDateTime>, CoreError> {
        let t = self.settings.throttle;
        for (key, max) in [
            (Some(acct_key), t.account_max_failures),
            (ip_key, t.ip_max_failures),
        ] {
            let Some(key) = key else { continue };
            let count = self
                .store
                .get(key)
                .await?
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if count >= u64::from(max) {
                let left = self.store.ttl(key).await?.unwrap_or_default();
                let until = self.clock.now() + time::Duration::try_from(left).unwrap_or_default();
                return Ok(Some(until));
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

enum Identifier {
    Email(Email),
    Customer(CustomerId),
}

fn parse_identifier(raw: &str) -> Option<Identifier> {
    if raw.contains('@') {
        Email::parse(raw).ok().map(Identifier::Email)
    } else {
        CustomerId::parse(raw).map(Identifier::Customer)
    }
}
