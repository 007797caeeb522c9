//! Single sign-on sessions: what a browser's session cookie stands for.
//!
//! A session holds the proofs its user made ([`Proof`]: method, factors,
//! credential, time, browser), never a level: each authorization evaluates
//! the requesting client's flow against them (see `flow::runner`). A flow
//! that adds proofs to a session rotates its cookie and keeps its `sid`.
//!
//! # Storage
//!
//! Sessions live in the short-lived store under the hash of their cookie,
//! with the session's lifetime as TTL. Nothing there lists a user's
//! sessions, so each user has an index (`SessionEntry`s) updated by
//! compare-and-swap: two logins at the same moment cannot lose each other's
//! entry. Entries of expired sessions are pruned at each update; entries of
//! sessions ended elsewhere (logout) are pruned when the list is read. The
//! index lives as long as its longest session. Past `MAX_INDEXED_SESSIONS`
//! the oldest session is ended.
//!
//! Each session also has the set of clients it issued codes to
//! (`session_clients:<sid>`, compare-and-swap like the index): when the
//! session ends, the [`SessionEndListener`] (single logout, see
//! `oidc::logout_channels`) is told which clients to notify.

use crate::assurance::{Proof, merge_proofs};
use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::domain::{RequestMeta, TokenHash, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::{CoreError, StoreError};
use crate::ports::TokenFamilyRepo;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Sessions kept in a user's index; past it the oldest session is ended.
const MAX_INDEXED_SESSIONS: usize = 100;

/// A single sign-on session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoSession {
    /// Public session id (the `sid` claim); kept when the cookie rotates.
    pub sid: String,
    pub user_id: UserId,
    /// What the user proved in this session, oldest first.
    pub proofs: Vec<Proof>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

impl SsoSession {
    /// When the user last proved something (unix seconds).
    pub fn last_proof_at(&self) -> i64 {
        self.proofs
            .iter()
            .map(|p| p.at)
            .max()
            .unwrap_or(self.created_at)
    }
}

/// One of a user's SSO sessions, as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    /// The session's public id (the `sid` claim).
    pub sid: String,
    /// Unix seconds.
    pub created_at: i64,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Hash of the session cookie: lets the session be ended without it.
    pub key_hash: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A session that ended, with the clients it issued codes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    pub sid: String,
    pub user_id: UserId,
    /// Client ids, sorted, each once.
    pub clients: Vec<String>,
}

/// Told of every session that ends by logout or revocation (not of
/// sessions that expire or are replaced in the same browser).
#[async_trait]
pub trait SessionEndListener: Send + Sync {
    /// Called once per ended session, after it is gone. Failures are the
    /// listener's to log: the session is ended either way.
    async fn session_ended(&self, ended: &EndedSession, meta: &RequestMeta);
}

/// The typed store of sessions and of each user's index of them.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The session stored under the hash of its cookie.
    async fn find(&self, key: &TokenHash) -> Result<Option<SsoSession>, StoreError>;
    async fn put(
        &self,
        key: &TokenHash,
        session: &SsoSession,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Removes and returns the session (one of two concurrent takes gets it).
    async fn take(&self, key: &TokenHash) -> Result<Option<SsoSession>, StoreError>;
    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError>;
    /// A user's index, as stored (with its bytes, for [`Self::swap_index`]).
    async fn index(&self, user: UserId)
    -> Result<(Vec<SessionEntry>, Option<Vec<u8>>), StoreError>;
    /// Replaces the index if it is still `old` (absent: `None`).
    async fn swap_index(
        &self,
        user: UserId,
        old: Option<&[u8]>,
        new: &[SessionEntry],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// The clients session `sid` issued codes to, as stored (with its
    /// bytes, for [`Self::swap_clients`]).
    async fn clients(&self, sid: &str) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError>;
    /// Replaces the client set if it is still `old` (absent: `None`).
    async fn swap_clients(
        &self,
        sid: &str,
        old: Option<&[u8]>,
        new: &[String],
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Removes and returns the client set (one of two concurrent takes gets it).
    async fn take_clients(&self, sid: &str) -> Result<Vec<String>, StoreError>;
}

/// [`SessionStore`] over the short-lived store (in-process or Redis).
pub struct StoredSessions {
    store: Arc<dyn EphemeralStore>,
}

impl StoredSessions {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }

    fn key(hash: &TokenHash) -> String {
        format!("session:{}", hash.as_str())
    }

    fn index_key(user: UserId) -> String {
        format!("user_sessions:{user}")
    }

    fn clients_key(sid: &str) -> String {
        format!("session_clients:{sid}")
    }
}

fn decode<T: serde::de::DeserializeOwned>(b: Option<Vec<u8>>) -> Result<Option<T>, StoreError> {
    b.map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl SessionStore for StoredSessions {
    async fn find(&self, key: &TokenHash) -> Result<Option<SsoSession>, StoreError> {
        // A record of another shape (an older release's) is no session.
        Ok(decode(self.store.get(&Self::key(key)).await?).unwrap_or(None))
    }

    async fn put(
        &self,
        key: &TokenHash,
        session: &SsoSession,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.store
            .put(&Self::key(key), &encode(session)?, ttl)
            .await
    }

    async fn take(&self, key: &TokenHash) -> Result<Option<SsoSession>, StoreError> {
        Ok(decode(self.store.take(&Self::key(key)).await?).unwrap_or(None))
    }

    async fn delete(&self, key: &TokenHash) -> Result<(), StoreError> {
        self.store.delete(&Self::key(key)).await
    }

    async fn index(
        &self,
        user: UserId,
    ) -> Result<(Vec<SessionEntry>, Option<Vec<u8>>), StoreError> {
        let bytes = self.store.get(&Self::index_key(user)).await?;
        let list = match &bytes {
            Some(b) => serde_json::from_slice(b).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "session index unreadable; starting a new one");
                Vec::new()
            }),
            None => Vec::new(),
        };
        Ok((list, bytes))
    }

    async fn swap_index(
        &self,
        user: UserId,
        old: Option<&[u8]>,
        new: &[SessionEntry],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = Self::index_key(user);
        let bytes = encode(&new)?;
        match old {
            None => self.store.put_new(&key, &bytes, ttl).await,
            Some(old) => self.store.replace_if(&key, old, &bytes, ttl).await,
        }
    }

    async fn clients(&self, sid: &str) -> Result<(Vec<String>, Option<Vec<u8>>), StoreError> {
        let bytes = self.store.get(&Self::clients_key(sid)).await?;
        let list = decode(bytes.clone()).unwrap_or(None).unwrap_or_default();
        Ok((list, bytes))
    }

    async fn swap_clients(
        &self,
        sid: &str,
        old: Option<&[u8]>,
        new: &[String],
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = Self::clients_key(sid);
        let bytes = encode(&new)?;
        match old {
            None => self.store.put_new(&key, &bytes, ttl).await,
            Some(old) => self.store.replace_if(&key, old, &bytes, ttl).await,
        }
    }

    async fn take_clients(&self, sid: &str) -> Result<Vec<String>, StoreError> {
        Ok(decode(self.store.take(&Self::clients_key(sid)).await?)
            .unwrap_or(None)
            .unwrap_or_default())
    }
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(n.max(1) as u64)
}

/// Sessions: finding, opening, adding proofs to, listing and ending them.
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    families: Arc<dyn TokenFamilyRepo>,
    audit: Audit,
    clock: SharedClock,
    lifetime_secs: u32,
    listener: Option<Arc<dyn SessionEndListener>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn SessionStore>,
        families: Arc<dyn TokenFamilyRepo>,
        audit: Audit,
        clock: SharedClock,
        lifetime_secs: u32,
    ) -> Self {
        Self {
            store,
            families,
            audit,
            clock,
            lifetime_secs,
            listener: None,
        }
    }

    /// Tells `listener` of every session ended from now on.
    pub fn with_end_listener(mut self, listener: Arc<dyn SessionEndListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Records that session `sid` issued a code to `client` (once per
    /// client; compare-and-swap, retried on contention, so concurrent
    /// authorizations in one session lose no client).
    pub async fn add_client(&self, sid: &str, client: &str) -> Result<(), CoreError> {
        let ttl = secs(i64::from(self.lifetime_secs));
        for _ in 0..32 {
            let (mut list, old) = self.store.clients(sid).await?;
            if list.iter().any(|c| c == client) {
                return Ok(());
            }
            list.push(client.to_owned());
            list.sort();
            if self
                .store
                .swap_clients(sid, old.as_deref(), &list, ttl)
                .await?
            {
                return Ok(());
            }
        }
        Err(CoreError::Internal(
            "the session's client set kept changing; giving up".into(),
        ))
    }

    /// The clients session `sid` issued codes to, sorted.
    pub async fn clients_of(&self, sid: &str) -> Result<Vec<String>, CoreError> {
        Ok(self.store.clients(sid).await?.0)
    }

    /// Takes the session's client set and tells the listener it ended.
    async fn ended(
        &self,
        sid: &str,
        user_id: UserId,
        meta: &RequestMeta,
    ) -> Result<EndedSession, CoreError> {
        let ended = EndedSession {
            sid: sid.to_owned(),
            user_id,
            clients: self.store.take_clients(sid).await?,
        };
        if let Some(l) = &self.listener {
            l.session_ended(&ended, meta).await;
        }
        Ok(ended)
    }

    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// The live session a cookie points to.
    pub async fn find(&self, cookie: &str) -> Result<Option<SsoSession>, CoreError> {
        self.find_by_key(&TokenHash::of(cookie)).await
    }

    /// The live session stored under the hash of its cookie.
    pub async fn find_by_key(&self, key: &TokenHash) -> Result<Option<SsoSession>, CoreError> {
        let now = self.now();
        Ok(self.store.find(key).await?.filter(|s| s.expires_at > now))
    }

    /// Opens a session for `user` with `proofs`; returns its cookie.
    pub async fn open(
        &self,
        user: UserId,
        proofs: Vec<Proof>,
        meta: &RequestMeta,
    ) -> Result<(String, SsoSession), CoreError> {
        let now = self.now();
        let session = SsoSession {
            sid: crate::random::token()[..22].to_owned(),
            user_id: user,
            proofs,
            created_at: now,
            expires_at: now + i64::from(self.lifetime_secs),
        };
        let cookie = crate::random::token();
        let key = TokenHash::of(&cookie);
        self.store
            .put(&key, &session, secs(session.expires_at - now))
            .await?;
        self.index(&session, &key, meta).await?;
        Ok((cookie, session))
    }

    /// Adds `proofs` to the session under `key` (same user, same `sid`,
    /// same expiry) under a new cookie, which is returned; the old cookie
    /// stops working. `None` when the session is gone.
    pub async fn add_proofs(
        &self,
        key: &TokenHash,
        proofs: &[Proof],
        meta: &RequestMeta,
    ) -> Result<Option<(String, SsoSession)>, CoreError> {
        let Some(mut session) = self.store.take(key).await? else {
            return Ok(None);
        };
        let now = self.now();
        if session.expires_at <= now {
            return Ok(None);
        }
        merge_proofs(&mut session.proofs, proofs);
        let cookie = crate::random::token();
        let new_key = TokenHash::of(&cookie);
        self.store
            .put(&new_key, &session, secs(session.expires_at - now))
            .await?;
        self.index(&session, &new_key, meta).await?;
        Ok(Some((cookie, session)))
    }

    /// Adds `proofs` to the session under `key`, in place (an enrollment on
    /// the account pages proves possession of the new authenticator, in a
    /// session already signed in).
    pub async fn record(&self, key: &TokenHash, proofs: &[Proof]) -> Result<(), CoreError> {
        let Some(mut session) = self.find_by_key(key).await? else {
            return Ok(());
        };
        merge_proofs(&mut session.proofs, proofs);
        let ttl = secs(session.expires_at - self.now());
        Ok(self.store.put(key, &session, ttl).await?)
    }

    /// Applies `change` to the user's index (compare-and-swap, retried on
    /// contention). Expired entries are dropped; past
    /// [`MAX_INDEXED_SESSIONS`] the oldest are dropped and returned.
    async fn update_index(
        &self,
        user: UserId,
        change: impl Fn(&mut Vec<SessionEntry>),
    ) -> Result<Vec<SessionEntry>, CoreError> {
        for _ in 0..32 {
            let now = self.now();
            let (mut list, old) = self.store.index(user).await?;
            list.retain(|e| e.expires_at > now);
            change(&mut list);
            list.sort_by_key(|e| e.created_at);
            let evicted: Vec<SessionEntry> = if list.len() > MAX_INDEXED_SESSIONS {
                list.drain(..list.len() - MAX_INDEXED_SESSIONS).collect()
            } else {
                Vec::new()
            };
            let ttl = secs(list.iter().map(|e| e.expires_at).max().unwrap_or(now) - now);
            if self
                .store
                .swap_index(user, old.as_deref(), &list, ttl)
                .await?
            {
                return Ok(evicted);
            }
        }
        Err(CoreError::Internal(
            "the session index kept changing; giving up".into(),
        ))
    }

    /// Lists `session` (under `key`) in its user's index.
    async fn index(
        &self,
        session: &SsoSession,
        key: &TokenHash,
        meta: &RequestMeta,
    ) -> Result<(), CoreError> {
        let entry = SessionEntry {
            sid: session.sid.clone(),
            created_at: session.created_at,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            key_hash: key.as_str().to_owned(),
            expires_at: session.expires_at,
        };
        let evicted = self
            .update_index(session.user_id, |list| {
                list.retain(|e| e.sid != entry.sid);
                list.push(entry.clone());
            })
            .await?;
        for e in evicted {
            self.store
                .delete(&TokenHash::from_stored(e.key_hash.clone()))
                .await?;
        }
        Ok(())
    }

    /// The user's live sessions, newest first. Entries of sessions ended
    /// meanwhile (logout, expiry) are dropped from the index.
    pub async fn list(&self, user: UserId) -> Result<Vec<SessionEntry>, CoreError> {
        let now = self.now();
        let (list, _) = self.store.index(user).await?;
        let mut live = Vec::new();
        let mut gone = Vec::new();
        for e in list {
            let exists = e.expires_at > now
                && self
                    .store
                    .find(&TokenHash::from_stored(e.key_hash.clone()))
                    .await?
                    .is_some_and(|s| s.sid == e.sid && s.user_id == user && s.expires_at > now);
            if exists {
                live.push(e);
            } else {
                gone.push(e.sid);
            }
        }
        if !gone.is_empty() {
            self.update_index(user, |list| list.retain(|e| !gone.contains(&e.sid)))
                .await?;
        }
        live.sort_by_key(|e| std::cmp::Reverse(e.created_at));
        Ok(live)
    }

    /// Ends the session a cookie points to and revokes the grants born of
    /// it; its clients are told (single logout) and returned.
    pub async fn end(
        &self,
        cookie: &str,
        meta: &RequestMeta,
    ) -> Result<Option<EndedSession>, CoreError> {
        let session = self.store.take(&TokenHash::of(cookie)).await?;
        let mut ended = None;
        if let Some(s) = &session {
            self.families
                .revoke_families_of_session(&s.sid, self.clock.now(), "logout")
                .await?;
            self.audit
                .record(
                    "logout",
                    Some(s.user_id),
                    None,
                    meta,
                    serde_json::json!({"sid": s.sid}),
                )
                .await;
            ended = Some(self.ended(&s.sid, s.user_id, meta).await?);
        }
        Ok(ended)
    }

    /// Ends every session of the user but `current_sid`, and revokes the
    /// tokens issued from them. Returns how many were ended.
    pub async fn end_others(
        &self,
        user: UserId,
        current_sid: &str,
        meta: &RequestMeta,
    ) -> Result<usize, CoreError> {
        self.end_sessions(user, Some(current_sid), "user", meta)
            .await
    }

    /// Ends every session of the user (an operator's revocation: `by` says
    /// who, in the audit log), revokes the grants issued from them, and
    /// tells their portals (back-channel logout). The number ended.
    pub async fn end_all(
        &self,
        user: UserId,
        by: &str,
        meta: &RequestMeta,
    ) -> Result<usize, CoreError> {
        self.end_sessions(user, None, by, meta).await
    }

    async fn end_sessions(
        &self,
        user: UserId,
        keep_sid: Option<&str>,
        by: &str,
        meta: &RequestMeta,
    ) -> Result<usize, CoreError> {
        let others: Vec<SessionEntry> = self
            .list(user)
            .await?
            .into_iter()
            .filter(|e| Some(e.sid.as_str()) != keep_sid)
            .collect();
        let reason = if by == "user" {
            "signed_out_by_user"
        } else {
            "revoked_by_operator"
        };
        let now = self.clock.now();
        for e in &others {
            self.store
                .delete(&TokenHash::from_stored(e.key_hash.clone()))
                .await?;
            let grants = self
                .families
                .revoke_families_of_session(&e.sid, now, reason)
                .await?
                .len();
            self.audit
                .record(
                    "session.revoked",
                    Some(user),
                    None,
                    meta,
                    serde_json::json!({"sid": e.sid, "grants_revoked": grants, "by": by}),
                )
                .await;
            self.ended(&e.sid, user, meta).await?;
        }
        let ended: Vec<String> = others.iter().map(|e| e.sid.clone()).collect();
        self.update_index(user, |list| list.retain(|e| !ended.contains(&e.sid)))
            .await?;
        Ok(others.len())
    }

    /// Ends a session this browser no longer uses (its cookie, of hash
    /// `key`, was replaced by a new login), without revoking the tokens
    /// issued from it: the same person holds them.
    pub async fn forget_replaced(&self, key: &TokenHash) -> Result<(), CoreError> {
        if let Some(s) = self.store.take(key).await? {
            self.update_index(s.user_id, |list| list.retain(|e| e.sid != s.sid))
                .await?;
        }
        Ok(())
    }
}
