//! The device authorization grant (RFC 8628): a device without a browser
//! (a command-line tool) asks for a device code and a user code; the user
//! types the user code on the hosted user-code page, signs in through the
//! requesting client's own flow (its steps, its assurance level: the same
//! [`crate::flow::FlowRunner`] as `/authorize`), approves or denies, and
//! the device, polling the token endpoint, gets the tokens.
//!
//! Device authorizations live minutes: they are kept in the short-lived
//! store (in-process or Redis), under the hash of the device code, with an
//! index from the hash of the user code. Neither code is stored in clear.
//!
//! # States
//!
//! ```text
//!   /device_authorization ──▶ Pending ──(the user typed the code and
//!                                │        confirmed, CSRF-checked)──▶ Claimed { browser }
//!                                │                                      │ the client's flow
//!                                │                                      ▼ completed
//!                                │                           Authenticated { browser, grant }
//!                                │                                      │ approve    │ deny
//!                                ▼                                      ▼            ▼
//!   poll: authorization_pending (slow_down when       Approved { grant }        Denied
//!   faster than the interval, +5 s each time)          │ poll: tokens,           │ poll: access_denied
//!   expires_at passed: expired_token                   ▼ single use (take)       ▼ (record gone)
//! ```
//!
//! A claimed authorization belongs to the browser that claimed it: another
//! browser typing the same code is told it is unknown. Guessing user codes
//! is throttled per browser, per IP and overall ([`crate::throttle`]):
//! a locked browser is refused even with the right code.

use super::authorize::{RawParams, acr_values, check_claims, check_no_duplicates, check_scope};
use super::codes::CodeRecord;
use super::error::{ErrorCode, OAuthError};
use super::resources::ResourceServers;
use crate::audit::Audit;
use crate::client::{Client, ClientRegistry};
use crate::clock::SharedClock;
use crate::domain::{RequestMeta, RequestedClaims, TokenHash, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::{CoreError, StoreError};
use crate::request::AuthorizeRequest;
use crate::throttle::{Attempt, Throttle};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The grant type's URN (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `[device]` in idp.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceSettings {
    /// How long a device code and its user code live (`expires_in`).
    pub code_lifetime_secs: u32,
    /// The minimum seconds between polls (`interval`); `slow_down` adds 5.
    pub interval_secs: u32,
    /// Wrong user codes a browser may type in a window before it is locked.
    pub user_code_max_failures: u32,
    /// Wrong user codes from one IP (IPv6: /64) in a window.
    pub user_code_ip_max_failures: u32,
    /// Wrong user codes over the whole provider in a window.
    pub user_code_global_max_failures: u32,
    /// The window of those counts: how long a lock lasts at most.
    pub user_code_lockout_secs: u32,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        Self {
            code_lifetime_secs: 600,
            interval_secs: 5,
            user_code_max_failures: 5,
            user_code_ip_max_failures: 20,
            user_code_global_max_failures: 1000,
            user_code_lockout_secs: 900,
        }
    }
}

/// The letters of user codes: consonants only (no vowels, so no words;
/// RFC 8628 §6.1), 20 of them, upper case.
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code: 20^8 ≈ 2^34.6 codes (RFC 8628 §5.1).
pub const USER_CODE_LEN: usize = 8;

/// A user code, normalized: [`USER_CODE_LEN`] letters of
/// [`USER_CODE_ALPHABET`]. Shown as `XXXX-XXXX`.
#[derive(Clone, PartialEq, Eq)]
pub struct UserCode(String);

impl UserCode {
    pub fn generate() -> Self {
        let code = (0..USER_CODE_LEN)
            .map(|_| char::from(USER_CODE_ALPHABET[crate::random::below(20) as usize]))
            .collect();
        Self(code)
    }

    /// RFC 8628 §6.1: what the user typed, case, dashes and spaces ignored.
    pub fn parse(typed: &str) -> Option<Self> {
        if typed.len() > 64 {
            return None;
        }
        let code: String = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let ok =
            code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b));
        ok.then_some(Self(code))
    }

    /// `XXXX-XXXX`.
    pub fn display(&self) -> String {
        let (a, b) = self.0.split_at(USER_CODE_LEN / 2);
        format!("{a}-{b}")
    }

    fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for UserCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserCode(..)")
    }
}

/// Who signed in for a device, and how: what its tokens will say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGrant {
    pub user_id: UserId,
    pub sid: String,
    pub auth_time: i64,
    pub acr: String,
    pub amr: Vec<String>,
}

/// Where a device authorization stands (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeviceState {
    Pending,
    Claimed {
        browser: TokenHash,
    },
    Authenticated {
        browser: TokenHash,
        grant: DeviceGrant,
    },
    Approved {
        grant: DeviceGrant,
    },
    Denied,
}

/// A device authorization's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub client_id: String,
    pub scope: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    #[serde(default)]
    pub claims: RequestedClaims,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Hash of the user code (its index is dropped once decided).
    pub user_code: TokenHash,
    pub expires_at: i64,
    /// Seconds the device must wait between polls (RFC 8628 §3.5).
    pub interval: u32,
    pub last_poll: Option<i64>,
    pub state: DeviceState,
}

/// The typed store of device authorizations.
#[async_trait]
pub trait DeviceCodeStore: Send + Sync {
    /// Stores a new authorization under `id` and its user code; `false`
    /// (nothing stored) when the user code is taken.
    async fn create(
        &self,
        id: &str,
        record: &DeviceRecord,
        user_code_ttl: Duration,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    async fn find(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    /// The id of the authorization of a user code.
    async fn find_id_by_user_code(
        &self,
        user_code: &TokenHash,
    ) -> Result<Option<String>, StoreError>;
    /// Replaces `old` by `new` if unchanged meanwhile; whether it did.
    async fn replace(
        &self,
        id: &str,
        old: &DeviceRecord,
        new: &DeviceRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// The record, used up (of two concurrent takes, one gets it).
    async fn take(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError>;
    async fn forget_user_code(&self, user_code: &TokenHash) -> Result<(), StoreError>;
}

/// [`DeviceCodeStore`] over the short-lived store.
pub struct StoredDeviceCodes {
    store: Arc<dyn EphemeralStore>,
}

impl StoredDeviceCodes {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }

    fn key(id: &str) -> String {
        format!("device:{id}")
    }

    fn user_key(user_code: &TokenHash) -> String {
        format!("device_user:{}", user_code.as_str())
    }
}

fn encode(r: &DeviceRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(r).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode(b: Option<Vec<u8>>) -> Result<Option<DeviceRecord>, StoreError> {
    b.map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

#[async_trait]
impl DeviceCodeStore for StoredDeviceCodes {
    async fn create(
        &self,
        id: &str,
        record: &DeviceRecord,
        user_code_ttl: Duration,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .store
            .put_new(
                &Self::user_key(&record.user_code),
                id.as_bytes(),
                user_code_ttl,
            )
            .await?;
        if claimed {
            self.store
                .put(&Self::key(id), &encode(record)?, ttl)
                .await?;
        }
        Ok(claimed)
    }

    async fn find(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        decode(self.store.get(&Self::key(id)).await?)
    }

    async fn find_id_by_user_code(
        &self,
        user_code: &TokenHash,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get(&Self::user_key(user_code))
            .await?
            .and_then(|b| String::from_utf8(b).ok()))
    }

    async fn replace(
        &self,
        id: &str,
        old: &DeviceRecord,
        new: &DeviceRecord,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.store
            .replace_if(&Self::key(id), &encode(old)?, &encode(new)?, ttl)
            .await
    }

    async fn take(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        decode(self.store.take(&Self::key(id)).await?)
    }

    async fn forget_user_code(&self, user_code: &TokenHash) -> Result<(), StoreError> {
        self.store.delete(&Self::user_key(user_code)).await
    }
}

/// The answer of the device authorization endpoint (RFC 8628 §3.2).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAuthorizationResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u32,
    pub interval: u32,
}

/// A device authorization as the user-code page shows it.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    /// The record's id (the hash of the device code: not a secret).
    pub id: String,
    pub client: Arc<Client>,
    pub scope: Vec<String>,
}

/// What a typed user code leads to.
#[derive(Debug)]
pub enum UserCodeLookup {
    Found(DeviceRequest),
    /// Wrong, expired, already used, or another browser's.
    Unknown,
    /// Too many wrong codes: refused, right or wrong, until then.
    Locked {
        until: OffsetDateTime,
    },
}

/// RFC 8628 §3.1: the client is allowed the grant by its file, else
/// `unauthorized_client` (RFC 6749 §5.2).
pub fn check_device_grant_allowed(client: &Client) -> Result<(), OAuthError> {
    if client.protocol.allow_device_code {
        Ok(())
    } else {
        Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the device authorization grant is not allowed for this client",
        ))
    }
}

/// RFC 8628 §3.4 and RFC 6749 §5.2: a device code was issued to the client
/// presenting it, else `invalid_grant` (as for an unknown one).
pub fn check_device_client(record: &DeviceRecord, client: &Client) -> Result<(), OAuthError> {
    if record.client_id == client.id.0 {
        Ok(())
    } else {
        Err(unknown_device_code())
    }
}

/// RFC 8628 §3.5: past `expires_in`, `expired_token`.
pub fn check_device_expiry(record: &DeviceRecord, now: i64) -> Result<(), OAuthError> {
    if now < record.expires_at {
        Ok(())
    } else {
        Err(OAuthError::new(
            ErrorCode::ExpiredToken,
            "the device code has expired",
        ))
    }
}

/// RFC 8628 §3.5: a poll sooner than `interval` after the last one is
/// `slow_down` (and the interval grows by 5 seconds: see
/// [`DeviceAuthorizations::poll`]).
pub fn check_poll_interval(record: &DeviceRecord, now: i64) -> Result<(), OAuthError> {
    match record.last_poll {
        Some(last) if now - last < i64::from(record.interval) => Err(OAuthError::new(
            ErrorCode::SlowDown,
            "polling too fast: wait the interval between requests",
        )),
        _ => Ok(()),
    }
}

fn unknown_device_code() -> OAuthError {
    OAuthError::invalid_grant("the device code is invalid or was already used")
}

/// How many times a compare-and-swap is retried against concurrent polls.
const CAS_ATTEMPTS: usize = 8;

/// The device authorization grant's service (see the module docs).
pub struct DeviceAuthorizations {
    issuer: String,
    clients: Arc<ClientRegistry>,
    resources: Arc<ResourceServers>,
    store: Arc<dyn DeviceCodeStore>,
    throttle: Arc<Throttle>,
    settings: DeviceSettings,
    audit: Audit,
    clock: SharedClock,
}

impl DeviceAuthorizations {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        issuer: String,
        clients: Arc<ClientRegistry>,
        resources: Arc<ResourceServers>,
        store: Arc<dyn DeviceCodeStore>,
        throttle: Arc<Throttle>,
        settings: DeviceSettings,
        audit: Audit,
        clock: SharedClock,
    ) -> Self {
        Self {
            issuer,
            clients,
            resources,
            store,
            throttle,
            settings,
            audit,
            clock,
        }
    }

    pub fn settings(&self) -> DeviceSettings {
        self.settings
    }

    /// The user-code page (`verification_uri`).
    pub fn verification_uri(&self) -> String {
        format!("{}/device", self.issuer)
    }

    /// The page with the code filled in (`verification_uri_complete`).
    pub fn verification_uri_complete(&self, user_code: &str) -> String {
        super::authorize::redirect_with(&self.verification_uri(), &[("user_code", user_code)])
    }

    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// A record is kept past its expiry for as long again, so that a late
    /// poll hears `expired_token` rather than `invalid_grant`.
    fn ttl_of(&self, record: &DeviceRecord) -> Duration {
        let left = record.expires_at + i64::from(self.settings.code_lifetime_secs) - self.now();
        Duration::from_secs(left.max(1) as u64)
    }

    /// The device authorization endpoint (RFC 8628 §3.1, §3.2), for a
    /// client authenticated as at the token endpoint: the grant allowed,
    /// no parameter twice, the scope (RFC 6749 §3.3, `offline_access` as
    /// at `/authorize`), `acr_values` and `claims` (OIDC Core §3.1.2.1,
    /// §5.5) and the resources (RFC 8707 §2), checked as at `/authorize`.
    pub async fn request(
        &self,
        client: &Client,
        params: &RawParams,
    ) -> Result<DeviceAuthorizationResponse, OAuthError> {
        check_device_grant_allowed(client)?;
        check_no_duplicates(params)?;
        let scope = check_scope(params, client)?;
        let (claims, acr_values) = check_claims(params, client, acr_values(params))?;
        let resources = self.resources.check_requested(client, params.resources())?;
        let lifetime = self.settings.code_lifetime_secs;
        for _ in 0..4 {
            let device_code = crate::random::token();
            let user_code = UserCode::generate();
            let record = DeviceRecord {
                client_id: client.id.0.clone(),
                scope: scope.clone(),
                acr_values: acr_values.clone(),
                claims: claims.clone(),
                resources: resources.clone(),
                user_code: user_code.hash(),
                expires_at: self.now() + i64::from(lifetime),
                interval: self.settings.interval_secs,
                last_poll: None,
                state: DeviceState::Pending,
            };
            let id = TokenHash::of(&device_code).as_str().to_owned();
            let created = self
                .store
                .create(
                    &id,
                    &record,
                    Duration::from_secs(u64::from(lifetime)),
                    self.ttl_of(&record),
                )
                .await
                .map_err(CoreError::from)?;
            if created {
                let shown = user_code.display();
                return Ok(DeviceAuthorizationResponse {
                    device_code,
                    verification_uri: self.verification_uri(),
                    verification_uri_complete: self.verification_uri_complete(&shown),
                    user_code: shown,
                    expires_in: lifetime,
                    interval: self.settings.interval_secs,
                });
            }
        }
        Err(OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "no user code is free: try again",
        ))
    }

    /// The live authorization of a user code this browser may go on with:
    /// pending, or already claimed by this browser.
    async fn live(
        &self,
        code: &UserCode,
        browser: Option<&TokenHash>,
    ) -> Result<Option<(String, DeviceRecord)>, CoreError> {
        // A known code and an unknown one cost the same two reads: the
        // answer's timing does not tell them apart.
        let id = self.store.find_id_by_user_code(&code.hash()).await?;
        let known = id.is_some();
        let id = id.unwrap_or_else(|| "-".to_owned());
        let Some(record) = self.store.find(&id).await?.filter(|_| known) else {
            return Ok(None);
        };
        let usable = match (&record.state, browser) {
            (DeviceState::Pending, _) => true,
            (DeviceState::Claimed { browser: b }, Some(mine)) => b == mine,
            _ => false,
        };
        Ok((usable && self.now() < record.expires_at).then_some((id, record)))
    }

    /// Whether a user code names a live pending authorization (the QR
    /// code): counted as a guess like a typed code (the answer tells a live
    /// code from another), and says nothing of whose it is.
    pub async fn is_live(
        &self,
        typed: &str,
        browser: Option<&str>,
        meta: &RequestMeta,
    ) -> Result<bool, CoreError> {
        let ticket = match self.throttle.attempt(self.guesses(browser, meta)).await? {
            Attempt::Allowed(t) => t,
            Attempt::Locked { .. } => return Ok(false),
        };
        let live = match UserCode::parse(typed) {
            Some(code) => self.live(&code, None).await?.is_some(),
            None => false,
        };
        if live {
            // Not a guess after all; but showing a code's QR does not clear
            // a browser's count of wrong ones either.
            self.throttle.refund(ticket).await?;
        } else {
            self.throttle.failed(ticket);
        }
        Ok(live)
    }

    fn guesses(&self, browser: Option<&str>, meta: &RequestMeta) -> Vec<crate::throttle::Bucket> {
        let s = &self.settings;
        Throttle::device_user_code(
            browser,
            meta.ip.as_deref(),
            [
                s.user_code_max_failures,
                s.user_code_ip_max_failures,
                s.user_code_global_max_failures,
            ],
            Duration::from_secs(u64::from(s.user_code_lockout_secs)),
        )
    }

    /// A user code typed in a browser (RFC 8628 §3.3, §5.1): every try is
    /// counted first, per browser, IP and overall; a locked browser is
    /// refused even with the right code; a right code clears the browser's
    /// count.
    pub async fn find_typed(
        &self,
        typed: &str,
        browser: &str,
        meta: &RequestMeta,
    ) -> Result<UserCodeLookup, CoreError> {
        let buckets = self.guesses(Some(browser), meta);
        let ticket = match self.throttle.attempt(buckets).await? {
            Attempt::Allowed(t) => t,
            Attempt::Locked { until } => return Ok(UserCodeLookup::Locked { until }),
        };
        let found = match UserCode::parse(typed) {
            Some(code) => self.live(&code, Some(&TokenHash::of(browser))).await?,
            None => None,
        };
        let Some((id, record)) = found else {
            self.throttle.failed(ticket);
            self.audit
                .record(
                    "device.user_code_failed",
                    None,
                    None,
                    meta,
                    serde_json::json!({}),
                )
                .await;
            return Ok(UserCodeLookup::Unknown);
        };
        self.throttle.succeeded(ticket).await?;
        match self.request_of(id, &record) {
            Some(r) => Ok(UserCodeLookup::Found(r)),
            None => Ok(UserCodeLookup::Unknown),
        }
    }

    fn request_of(&self, id: String, record: &DeviceRecord) -> Option<DeviceRequest> {
        Some(DeviceRequest {
            id,
            client: self.clients.get(&record.client_id)?,
            scope: record.scope.clone(),
        })
    }

    /// Applies `change` to a record, retrying when a poll changed it
    /// meanwhile; the new record, or `None` when `change` refused.
    async fn update(
        &self,
        id: &str,
        change: impl Fn(&DeviceRecord) -> Option<DeviceRecord>,
    ) -> Result<Option<DeviceRecord>, CoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let Some(old) = self.store.find(id).await? else {
                return Ok(None);
            };
            if self.now() >= old.expires_at {
                return Ok(None);
            }
            let Some(new) = change(&old) else {
                return Ok(None);
            };
            if self
                .store
                .replace(id, &old, &new, self.ttl_of(&new))
                .await?
            {
                return Ok(Some(new));
            }
        }
        Err(CoreError::Internal(
            "a device authorization kept changing".into(),
        ))
    }

    /// The user confirmed the request the page showed: the authorization
    /// becomes this browser's, and the login request for the client's
    /// flow is returned (for [`super::authorization::Authorization::authorize`]).
    pub async fn claim(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<(Arc<Client>, AuthorizeRequest)>, CoreError> {
        let mine = TokenHash::of(browser);
        let claimed = self
            .update(id, |r| match &r.state {
                DeviceState::Pending => Some(DeviceRecord {
                    state: DeviceState::Claimed {
                        browser: mine.clone(),
                    },
                    ..r.clone()
                }),
                // The same browser again (back button): unchanged.
                DeviceState::Claimed { browser } if *browser == mine => Some(r.clone()),
                _ => None,
            })
            .await?;
        let Some(record) = claimed else {
            return Ok(None);
        };
        let Some(client) = self.clients.get(&record.client_id) else {
            return Ok(None);
        };
        let req = AuthorizeRequest {
            client_id: record.client_id.clone(),
            redirect_uri: self.verification_uri(),
            scope: record.scope.clone(),
            state: None,
            nonce: None,
            code_challenge: None,
            prompt: Default::default(),
            max_age: None,
            login_hint: None,
            ui_locales: None,
            id_token_hint: None,
            acr_values: record.acr_values.clone(),
            response_mode: Default::default(),
            claims: record.claims.clone(),
            resources: record.resources.clone(),
            dpop_jkt: None,
            device: Some(id.to_owned()),
        };
        Ok(Some((client, req)))
    }

    /// The client's flow completed for a claimed authorization (the flow
    /// runner checked it ran in the claiming browser): it awaits the user's
    /// approval. Whether it did.
    pub(crate) async fn authenticated(
        &self,
        id: &str,
        grant: DeviceGrant,
    ) -> Result<bool, CoreError> {
        let done = self
            .update(id, |r| match &r.state {
                DeviceState::Claimed { browser } => Some(DeviceRecord {
                    state: DeviceState::Authenticated {
                        browser: browser.clone(),
                        grant: grant.clone(),
                    },
                    ..r.clone()
                }),
                _ => None,
            })
            .await?;
        Ok(done.is_some())
    }

    /// The authorization awaiting this browser's approval, if any.
    pub async fn awaiting_approval(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<DeviceRequest>, CoreError> {
        let Some(record) = self.store.find(id).await? else {
            return Ok(None);
        };
        let mine = matches!(&record.state,
            DeviceState::Authenticated { browser: b, .. } if *b == TokenHash::of(browser));
        if !mine || self.now() >= record.expires_at {
            return Ok(None);
        }
        Ok(self.request_of(id.to_owned(), &record))
    }

    /// The user approved (or denied) the authorization awaiting this
    /// browser's decision; the user code is spent either way. `None` when
    /// nothing awaited it.
    pub async fn decide(
        &self,
        id: &str,
        browser: &str,
        approve: bool,
        meta: &RequestMeta,
    ) -> Result<Option<DeviceRequest>, CoreError> {
        let mine = TokenHash::of(browser);
        let decided = self
            .update(id, |r| match &r.state {
                DeviceState::Authenticated { browser, grant } if *browser == mine => {
                    Some(DeviceRecord {
                        state: if approve {
                            DeviceState::Approved {
                                grant: grant.clone(),
                            }
                        } else {
                            DeviceState::Denied
                        },
                        ..r.clone()
                    })
                }
                _ => None,
            })
            .await?;
        let Some(record) = decided else {
            return Ok(None);
        };
        self.store.forget_user_code(&record.user_code).await?;
        let user = match &record.state {
            DeviceState::Approved { grant } => Some(grant.user_id),
            _ => None,
        };
        let client = self.clients.get(&record.client_id);
        self.audit
            .record(
                if approve {
                    "device.approved"
                } else {
                    "device.denied"
                },
                user,
                client.as_ref().map(|c| &c.id),
                meta,
                serde_json::json!({"scope": record.scope}),
            )
            .await;
        Ok(self.request_of(id.to_owned(), &record))
    }

    /// A poll of the token endpoint with `grant_type`
    /// `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4,
    /// §3.5), for a client the pipeline authenticated and allowed the
    /// grant: the code is the client's (`check_device_client`), live
    /// (`check_device_expiry`), not polled too fast (`check_poll_interval`,
    /// which adds 5 s to the interval each time), then pending, denied, or
    /// approved: the approved grant, used up (of two concurrent polls, one
    /// gets it). Returns the device code and the grant as a code record.
    pub(crate) async fn poll<'f>(
        &self,
        client: &Client,
        form: &'f RawParams,
    ) -> Result<(&'f str, CodeRecord), OAuthError> {
        let code = form
            .get("device_code")
            .ok_or_else(|| OAuthError::invalid_request("device_code is missing"))?;
        let id = TokenHash::of(code).as_str().to_owned();
        let record = self
            .store
            .find(&id)
            .await
            .map_err(CoreError::from)?
            .ok_or_else(unknown_device_code)?;
        check_device_client(&record, client)?;
        let now = self.now();
        check_device_expiry(&record, now)?;
        if let Err(e) = check_poll_interval(&record, now) {
            let slower = DeviceRecord {
                interval: record.interval.saturating_add(5),
                last_poll: Some(now),
                ..record.clone()
            };
            // Lost to a concurrent change: that one counts.
            self.store
                .replace(&id, &record, &slower, self.ttl_of(&slower))
                .await
                .map_err(CoreError::from)?;
            return Err(e);
        }
        match &record.state {
            DeviceState::Approved { .. } => {
                let taken = self.store.take(&id).await.map_err(CoreError::from)?;
                let Some(DeviceRecord {
                    state: DeviceState::Approved { grant },
                    ..
                }) = taken
                else {
                    return Err(unknown_device_code());
                };
                Ok((
                    code,
                    CodeRecord {
                        client_id: record.client_id.clone(),
                        redirect_uri: String::new(),
                        scope: record.scope.join(" "),
                        nonce: None,
                        code_challenge: None,
                        user_id: grant.user_id,
                        sid: grant.sid,
                        auth_time: grant.auth_time,
                        acr: grant.acr,
                        amr: grant.amr,
                        expires_at: record.expires_at,
                        claims: record.claims.clone(),
                        resources: record.resources.clone(),
                        dpop_jkt: None,
                    },
                ))
            }
            DeviceState::Denied => {
                self.store.take(&id).await.map_err(CoreError::from)?;
                Err(OAuthError::new(
                    ErrorCode::AccessDenied,
                    "the user denied the authorization",
                ))
            }
            DeviceState::Pending
            | DeviceState::Claimed { .. }
            | DeviceState::Authenticated { .. } => {
                let polled = DeviceRecord {
                    last_poll: Some(now),
                    ..record.clone()
                };
                self.store
                    .replace(&id, &record, &polled, self.ttl_of(&polled))
                    .await
                    .map_err(CoreError::from)?;
                Err(OAuthError::new(
                    ErrorCode::AuthorizationPending,
                    "the user has not finished yet",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_normalized() {
        let code = UserCode::parse(" bcdf-ghjk ").expect("parses");
        assert_eq!(code.display(), "BCDF-GHJK");
        assert_eq!(UserCode::parse("BCDFGHJK"), Some(code.clone()));
        assert_eq!(UserCode::parse("bc df gh jk"), Some(code));
        // Vowels and digits are not in the alphabet; lengths are exact.
        for bad in [
            "BCDF-GHJA",
            "BCDF-GHJ1",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "",
            "ÉCDF-GHJK",
        ] {
            assert_eq!(UserCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn generated_user_codes_parse_back() {
        for _ in 0..100 {
            let code = UserCode::generate();
            assert_eq!(UserCode::parse(&code.display()), Some(code.clone()));
            assert_eq!(format!("{code:?}"), "UserCode(..)");
        }
    }

    fn record(last_poll: Option<i64>, interval: u32) -> DeviceRecord {
        DeviceRecord {
            client_id: "cli".into(),
            scope: vec!["openid".into()],
            acr_values: Vec::new(),
            claims: RequestedClaims::default(),
            resources: Vec::new(),
            user_code: TokenHash::of("BCDFGHJK"),
            expires_at: 1_000,
            interval,
            last_poll,
            state: DeviceState::Pending,
        }
    }

    #[test]
    fn polls_keep_the_interval_and_expire() {
        assert!(check_poll_interval(&record(None, 5), 100).is_ok());
        assert_eq!(
            check_poll_interval(&record(Some(98), 5), 100)
                .unwrap_err()
                .code,
            ErrorCode::SlowDown
        );
        assert!(check_poll_interval(&record(Some(95), 5), 100).is_ok());
        assert!(check_device_expiry(&record(None, 5), 999).is_ok());
        assert_eq!(
            check_device_expiry(&record(None, 5), 1_000)
                .unwrap_err()
                .code,
            ErrorCode::ExpiredToken
        );
    }
}
