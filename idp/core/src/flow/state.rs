//! A login in progress ([`LoginFlow`]) and where it is kept ([`FlowStore`]).
//!
//! The states a flow goes through are drawn in [`super::runner`].
//!
//! A flow is stored under its id with a TTL, bound to the browser that
//! started it (hash of the browser cookie), and carries a CSRF token. Every
//! update is a compare-and-swap on the stored bytes with a version bump, so
//! a double submit cannot pass a step twice and only one submit completes a
//! flow. A submit names the step it answers; answering another step than
//! the current one is refused.
//!
//! Steps that come back through a URL of their own (an upstream's answer,
//! an emailed sign-in link) bind a single-use token to the flow
//! ([`FlowStore::bind_callback`]).

use crate::assurance::Proof;
use crate::domain::{TokenHash, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::StoreError;
use crate::federation::PendingLink;
use crate::method::MethodId;
use crate::request::AuthorizeRequest;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
    /// Set once an identifying step passed (`None` also for an unknown
    /// identifier), or from the session the flow started from.
    pub user_id: Option<UserId>,
    /// What identifies the user (as typed, or the customer identifier of
    /// the session's user).
    pub identifier: Option<String>,
    /// The session's proofs this request may rely on (young enough for its
    /// `max_age` and the client's reuse window), not used by a stage yet.
    #[serde(default)]
    pub carried: Vec<Proof>,
    /// The carried proofs a stage used.
    #[serde(default)]
    pub relied: Vec<Proof>,
    /// The proofs made in this flow.
    #[serde(default)]
    pub made: Vec<Proof>,
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
    pub pending_link: Option<PendingLink>,
    /// The session this flow adds its proofs to (the hash of its cookie),
    /// when it started from one of the same user.
    #[serde(default)]
    pub session: Option<TokenHash>,
}

impl LoginFlow {
    /// Every proof this flow relies on, carried or made: the code's `amr`
    /// and `auth_time` come from them.
    pub fn proofs(&self) -> impl Iterator<Item = &Proof> {
        self.relied.iter().chain(&self.made)
    }

    /// Whether a proof of `method` was made in (or used by) this flow.
    pub fn has_proof_of(&self, method: &MethodId) -> bool {
        self.proofs().any(|p| p.method == *method)
    }

    /// Whether anything identifies the user or was proven yet.
    pub fn is_untouched(&self) -> bool {
        self.user_id.is_none()
            && self.identifier.is_none()
            && self.made.is_empty()
            && self.relied.is_empty()
            && self.pending_link.is_none()
    }
}

/// The typed store of login flows.
#[async_trait]
pub trait FlowStore: Send + Sync {
    async fn create(&self, flow: &LoginFlow, ttl: Duration) -> Result<(), StoreError>;
    async fn find(&self, id: &str) -> Result<Option<LoginFlow>, StoreError>;
    /// Replaces `old` by `new` only if the stored flow is still `old`
    /// (compare-and-swap). Returns whether it did.
    async fn swap(
        &self,
        old: &LoginFlow,
        new: &LoginFlow,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
    /// Binds a single-use `token` (an upstream's `state`, an emailed link)
    /// to the flow `flow_id`, with `value` for the step.
    async fn bind_callback(
        &self,
        token: &str,
        binding: &CallbackBinding,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// The binding of `token`, used up (of two concurrent takes, one gets it).
    async fn take_callback(&self, token: &str) -> Result<Option<CallbackBinding>, StoreError>;
    /// The binding of `token`, left in place.
    async fn peek_callback(&self, token: &str) -> Result<Option<CallbackBinding>, StoreError>;
}

/// What a callback token leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackBinding {
    pub flow_id: String,
    /// The step the token belongs to.
    pub method: MethodId,
    /// For the step (e.g. when the link was sent).
    #[serde(default)]
    pub value: serde_json::Value,
    /// Opened in another browser, the token stays usable in its own (an
    /// emailed link read on another device); otherwise such a use spends it
    /// (an upstream's answer: one chance).
    #[serde(default)]
    pub survives_other_browsers: bool,
}

/// [`FlowStore`] over the short-lived store (in-process or Redis).
pub struct StoredFlows {
    store: Arc<dyn EphemeralStore>,
}

impl StoredFlows {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }

    fn key(id: &str) -> String {
        format!("flow:{id}")
    }

    fn callback_key(token: &str) -> String {
        format!("flow_callback:{}", TokenHash::of(token).as_str())
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(b: Option<Vec<u8>>) -> Option<T> {
    // A record of another shape (an older release's, a tampered one) is
    // treated as absent: the user starts again.
    b.and_then(|b| serde_json::from_slice(&b).ok())
}

#[async_trait]
impl FlowStore for StoredFlows {
    async fn create(&self, flow: &LoginFlow, ttl: Duration) -> Result<(), StoreError> {
        self.store
            .put(&Self::key(&flow.id), &encode(flow)?, ttl)
            .await
    }

    async fn find(&self, id: &str) -> Result<Option<LoginFlow>, StoreError> {
        Ok(decode(self.store.get(&Self::key(id)).await?))
    }

    async fn swap(
        &self,
        old: &LoginFlow,
        new: &LoginFlow,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.store
            .replace_if(&Self::key(&new.id), &encode(old)?, &encode(new)?, ttl)
            .await
    }

    async fn bind_callback(
        &self,
        token: &str,
        binding: &CallbackBinding,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.store
            .put(&Self::callback_key(token), &encode(binding)?, ttl)
            .await
    }

    async fn take_callback(&self, token: &str) -> Result<Option<CallbackBinding>, StoreError> {
        Ok(decode(self.store.take(&Self::callback_key(token)).await?))
    }

    async fn peek_callback(&self, token: &str) -> Result<Option<CallbackBinding>, StoreError> {
        Ok(decode(self.store.get(&Self::callback_key(token)).await?))
    }
}
