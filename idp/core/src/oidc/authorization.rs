//! The interactive side of authorization: what a checked authorization
//! request leads to (a code from a session that satisfies the client's
//! flow, `interaction_required`, or a login flow asking what is missing),
//! and what a completed login leads to (the session opened or given the
//! new proofs, and the code). The flow itself is run by
//! [`crate::flow::FlowRunner`]; see it for the reuse rule.

use super::codes::{CodeRecord, CodeStore};
use super::error::{ErrorCode, OAuthError};
use crate::assurance::combined_amr;
use crate::audit::Audit;
use crate::client::{Client, ClientRegistry};
use crate::clock::SharedClock;
use crate::domain::{Consent, RequestMeta, TokenHash, User, UserStatus};
use crate::error::CoreError;
use crate::flow::runner::{StartFrom, Started};
use crate::flow::{Completion, FlowRunner, LoginFlow};
use crate::keys::KeyRing;
use crate::ports::{ConsentRepo, UserRepo};
use crate::request::AuthorizeRequest;
use crate::sessions::Sessions;
use std::sync::Arc;
use std::time::Duration;

pub use super::authorize::redirect_with;
use super::response::{self, AuthorizationResponse, ResponseMode};

/// What the authorization endpoint does next.
#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// The response to the client (a code, or an error for it).
    Respond(AuthorizationResponse),
    /// Show the login flow with this id.
    Login(Box<LoginFlow>),
}

/// A completed login: where to send the browser, and the cookies to set.
#[derive(Debug)]
pub struct Finished {
    /// The response carrying the code to the client.
    pub response: AuthorizationResponse,
    /// A new session cookie (a new session, or new proofs in the session).
    pub session_cookie: Option<(String, Duration)>,
    /// A new device cookie (the browser passed a new-device check).
    pub device_cookie: Option<(String, Duration)>,
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(1) as u64)
}

/// Authorization requests, what a completed login leads to, and the checks
/// of ID tokens this provider issued (`id_token_hint`, logout).
pub struct Authorization {
    issuer: String,
    pub(crate) clients: Arc<ClientRegistry>,
    keys: Arc<KeyRing>,
    sessions: Arc<Sessions>,
    runner: Arc<FlowRunner>,
    codes: Arc<dyn CodeStore>,
    consents: Arc<dyn ConsentRepo>,
    users: Arc<dyn UserRepo>,
    audit_log: Audit,
    clock: SharedClock,
    /// The `sub` each client sees (an `id_token_hint`'s may be pairwise).
    subjects: Arc<super::subjects::Subjects>,
    /// Device authorizations (RFC 8628) a login may be for.
    device: Arc<super::device::DeviceAuthorizations>,
}

impl Authorization {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        issuer: String,
        clients: Arc<ClientRegistry>,
        keys: Arc<KeyRing>,
        sessions: Arc<Sessions>,
        runner: Arc<FlowRunner>,
        codes: Arc<dyn CodeStore>,
        consents: Arc<dyn ConsentRepo>,
        users: Arc<dyn UserRepo>,
        audit_log: Audit,
        clock: SharedClock,
        subjects: Arc<super::subjects::Subjects>,
        device: Arc<super::device::DeviceAuthorizations>,
    ) -> Self {
        Self {
            issuer,
            clients,
            keys,
            sessions,
            runner,
            codes,
            consents,
            users,
            audit_log,
            clock,
            subjects,
            device,
        }
    }

    /// Decides what a checked authorization request leads to: the
    /// requesting client's flow is evaluated against the browser's session
    /// (see [`crate::flow::runner`]); a code right away when nothing is
    /// missing, an error for `prompt=none` when something is, else a login
    /// flow asking only what is missing.
    #[allow(clippy::too_many_arguments)]
    pub async fn authorize(
        &self,
        client: Arc<Client>,
        req: AuthorizeRequest,
        session_cookie: Option<&str>,
        browser_cookie: &str,
        device_cookie: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<AuthorizeOutcome, CoreError> {
        let hint_sub = match &req.id_token_hint {
            Some(hint) => match self.id_token_hint_subject(hint, &client) {
                Some(sub) => Some(sub),
                None => {
                    return Ok(AuthorizeOutcome::Respond(self.error_response(
                        &client,
                        &req,
                        &OAuthError::invalid_request("id_token_hint is not valid"),
                    )?));
                }
            },
            None => None,
        };
        let session = match session_cookie {
            Some(c) if !req.prompt.login => {
                self.sessions.find(c).await?.map(|s| (s, TokenHash::of(c)))
            }
            _ => None,
        };
        // The session counts only for its own, active user, and only for
        // the user an id_token_hint names (by the `sub` this client sees,
        // OIDC Core §8).
        let mut from_user: Option<(crate::sessions::SsoSession, TokenHash, User)> = None;
        if let Some((s, key)) = session
            && hint_sub
                .as_ref()
                .is_none_or(|sub| *sub == self.subjects.sub(&client, s.user_id))
            && let Some(user) = self.users.find_by_id(s.user_id).await?
            && user.status == UserStatus::Active
        {
            from_user = Some((s, key, user));
        }
        let from = from_user.as_ref().map(|(session, key, user)| StartFrom {
            session,
            key: key.clone(),
            user,
        });
        let signed_in = from.is_some();
        // Proofs too old for this request (`max_age`, the client's reuse
        // window): what is missing is a new authentication.
        let now = self.clock.now().unix_timestamp();
        let stale = from.as_ref().is_some_and(|f| {
            f.session
                .proofs
                .iter()
                .any(|p| !p.is_fresh(now, req.max_age, client.login.reuse_secs))
        });
        let prompt_none = req.prompt.none;
        let started = self
            .runner
            .start(&client, req, from, browser_cookie, device_cookie, meta)
            .await
            .map_err(flow_core_error)?;
        match started {
            Started::Done(completion) => {
                let finished = self.finish(*completion, meta).await?;
                Ok(AuthorizeOutcome::Respond(finished.response))
            }
            Started::Ask(flow) if prompt_none => {
                let e = if signed_in && !stale {
                    OAuthError::new(
                        ErrorCode::InteractionRequired,
                        "this client's flow needs a step the session has not passed",
                    )
                } else {
                    OAuthError::new(ErrorCode::LoginRequired, "the user must sign in")
                };
                Ok(AuthorizeOutcome::Respond(self.error_response(
                    &client,
                    &flow.request,
                    &e,
                )?))
            }
            Started::Ask(flow) => {
                self.runner.save_new(&flow).await.map_err(flow_core_error)?;
                Ok(AuthorizeOutcome::Login(flow))
            }
        }
    }

    /// A login whose every stage is satisfied: the session is opened (or
    /// given the new proofs, under a new cookie and the same `sid`), the
    /// login audited, and the code issued with the flow's `acr` and the
    /// `amr` and `auth_time` of the proofs it relied on.
    pub async fn finish(&self, c: Completion, meta: &RequestMeta) -> Result<Finished, CoreError> {
        let client = self.clients.get(&c.request.client_id).ok_or_else(|| {
            CoreError::Internal("the client of a completed login vanished".into())
        })?;
        let proofs = c.proofs();
        let kept = match &c.session {
            Some(key) if c.made.is_empty() => self
                .sessions
                .find_by_key(key)
                .await?
                .filter(|s| s.user_id == c.user.id)
                .map(|s| (None, s)),
            Some(key) => self
                .sessions
                .add_proofs(key, &c.made, meta)
                .await?
                .filter(|(_, s)| s.user_id == c.user.id)
                .map(|(cookie, s)| (Some(cookie), s)),
            None => None,
        };
        let (cookie, session) = match kept {
            Some(k) => k,
            None => {
                let (cookie, s) = self.sessions.open(c.user.id, proofs.clone(), meta).await?;
                (Some(cookie), s)
            }
        };
        let amr = combined_amr(&proofs);
        let auth_time = proofs
            .iter()
            .map(|p| p.at)
            .min()
            .unwrap_or(session.created_at);
        if !c.made.is_empty() {
            self.audit_log
                .record(
                    "login.succeeded",
                    Some(c.user.id),
                    Some(&client.id),
                    meta,
                    serde_json::json!({"amr": amr, "acr": c.acr, "sid": session.sid}),
                )
                .await;
        }
        let grant = Grant {
            user: &c.user,
            sid: &session.sid,
            auth_time,
            acr: &c.acr,
            amr,
        };
        let response = match &c.request.device {
            Some(id) => self.device_authenticated(id, &grant).await?,
            None => self.issue_code(&client, &c.request, &grant).await?,
        };
        let now = self.clock.now().unix_timestamp();
        Ok(Finished {
            response,
            session_cookie: cookie.map(|v| (v, secs(session.expires_at - now))),
            device_cookie: c.device_cookie,
        })
    }

    /// Claims of an ID token this provider issued (signature, `typ` and
    /// `iss` checked; expired ones accepted, as OIDC Core §3.1.2.1 and
    /// RP-Initiated Logout §2 allow). Access tokens (`typ: at+jwt`) are not
    /// ID tokens and are refused.
    pub(crate) fn verify_id_token_hint(
        &self,
        hint: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (claims, typ) = self.keys.current().verify(hint).ok()?;
        let is_id_token = typ.as_deref() == Some("JWT")
            && claims.get("iss")?.as_str()? == self.issuer
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

    /// A login for a device authorization (RFC 8628) completed: no code,
    /// the grant awaits the user's approval on the user-code page.
    async fn device_authenticated(
        &self,
        id: &str,
        grant: &Grant<'_>,
    ) -> Result<AuthorizationResponse, CoreError> {
        self.device
            .authenticated(
                id,
                super::device::DeviceGrant {
                    user_id: grant.user.id,
                    sid: grant.sid.to_owned(),
                    auth_time: grant.auth_time,
                    acr: grant.acr.to_owned(),
                    amr: grant.amr.clone(),
                },
            )
            .await?;
        // Whether or not it still awaited this (expired meanwhile), the
        // page says what it finds.
        response::build(
            &format!("{}/approve", self.device.verification_uri()),
            vec![("request".to_owned(), id.to_owned())],
            ResponseMode::Query,
            None,
        )
    }

    /// Stores a fresh code for this request and grant; returns the response.
    pub(crate) async fn issue_code(
        &self,
        client: &Client,
        req: &AuthorizeRequest,
        grant: &Grant<'_>,
    ) -> Result<AuthorizationResponse, CoreError> {
        let now = self.clock.now();
        let scope = req.scope_string();
        let user = grant.user.id;
        let consent = self.consents.find(user, &client.id).await?;
        if consent.as_ref().is_none_or(|c| c.scope != scope) {
            self.consents
                .upsert(&Consent {
                    user_id: user,
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
            user_id: user,
            sid: grant.sid.to_owned(),
            auth_time: grant.auth_time,
            acr: grant.acr.to_owned(),
            amr: grant.amr.clone(),
            expires_at: now.unix_timestamp() + lifetime,
            claims: req.claims.clone(),
            resources: req.resources.clone(),
            dpop_jkt: req.dpop_jkt.clone(),
        };
        // Single logout reaches every client the session issued codes to
        // that has a logout channel; the others are not recorded (a store
        // round trip saved on their every authorization).
        if client.protocol.logout.is_listening() {
            self.sessions.add_client(grant.sid, &client.id.0).await?;
        }
        self.codes.put(&code, &record, secs(lifetime)).await?;
        let mut params = vec![("code".to_owned(), code)];
        if let Some(s) = &req.state {
            params.push(("state".to_owned(), s.clone()));
        }
        params.push(("iss".to_owned(), self.issuer.clone()));
        self.respond(client, &req.redirect_uri, params, req.response_mode)
    }

    /// An error for the client of a checked request, in its response mode.
    pub fn error_response(
        &self,
        client: &Client,
        req: &AuthorizeRequest,
        e: &OAuthError,
    ) -> Result<AuthorizationResponse, CoreError> {
        self.error_response_to(
            client,
            &req.redirect_uri,
            req.state.as_deref(),
            req.response_mode,
            e,
        )
    }

    /// An error for the client at a redirect URI already checked against its
    /// registration (RFC 6749 §4.1.2.1, RFC 9207 `iss`).
    pub fn error_response_to(
        &self,
        client: &Client,
        redirect_uri: &str,
        state: Option<&str>,
        mode: ResponseMode,
        e: &OAuthError,
    ) -> Result<AuthorizationResponse, CoreError> {
        let mut params = vec![
            ("error".to_owned(), e.code.as_str().to_string()),
            ("error_description".to_owned(), e.description.to_string()),
        ];
        if let Some(s) = state {
            params.push(("state".to_owned(), s.to_owned()));
        }
        params.push(("iss".to_owned(), self.issuer.clone()));
        self.respond(client, redirect_uri, params, mode)
    }

    fn respond(
        &self,
        client: &Client,
        redirect_uri: &str,
        params: Vec<(String, String)>,
        mode: ResponseMode,
    ) -> Result<AuthorizationResponse, CoreError> {
        let jarm = mode.is_jwt().then(|| response::Jarm {
            keys: &self.keys,
            issuer: &self.issuer,
            client_id: &client.id.0,
            alg: client.protocol.authorization_signed_response_alg,
            now: self.clock.now().unix_timestamp(),
        });
        response::build(redirect_uri, params, mode, jarm)
    }
}

/// What a code stands for.
pub(crate) struct Grant<'a> {
    pub(crate) user: &'a User,
    pub(crate) sid: &'a str,
    pub(crate) auth_time: i64,
    pub(crate) acr: &'a str,
    pub(crate) amr: Vec<String>,
}

/// A runner error that is not the browser's to see here.
fn flow_core_error(e: crate::flow::FlowError) -> CoreError {
    match e {
        crate::flow::FlowError::Core(e) => e,
        other => CoreError::Internal(other.to_string()),
    }
}
