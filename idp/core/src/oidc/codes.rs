//! Authorization codes (RFC 6749 §4.1.2): single use, short-lived, kept in
//! the short-lived store under the hash of the code, with markers that
//! catch a replay (RFC 6749 §4.1.2: a second use revokes what the first
//! issued).

use crate::domain::{TokenHash, UserId};
use crate::ephemeral::EphemeralStore;
use crate::error::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a redeemed code is remembered, to detect and punish its replay.
pub const REPLAY_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// An authorization code's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub user_id: UserId,
    pub sid: String,
    pub auth_time: i64,
    pub acr: String,
    pub amr: Vec<String>,
    pub expires_at: i64,
    /// Claims named by the `claims` request parameter.
    #[serde(default)]
    pub claims: crate::domain::RequestedClaims,
    /// The resources the authorization was for (RFC 8707 §2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The DPoP key the code may only be redeemed with (RFC 9449 §10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<String>,
}

/// The typed store of codes.
#[async_trait]
pub trait CodeStore: Send + Sync {
    async fn put(&self, code: &str, record: &CodeRecord, ttl: Duration) -> Result<(), StoreError>;
    /// The record, left in place (checks before the single use).
    async fn peek(&self, code: &str) -> Result<Option<CodeRecord>, StoreError>;
    /// The record, used up (of two concurrent takes, one gets it).
    async fn take(&self, code: &str) -> Result<Option<CodeRecord>, StoreError>;
    /// Marks the code redeemed; `false` when it already was.
    async fn mark_redeemed(&self, code: &str) -> Result<bool, StoreError>;
    async fn was_redeemed(&self, code: &str) -> Result<bool, StoreError>;
    /// Flags a replay of the code, for a redemption still running.
    async fn flag_replay(&self, code: &str) -> Result<(), StoreError>;
    async fn is_replayed(&self, code: &str) -> Result<bool, StoreError>;
}

/// [`CodeStore`] over the short-lived store (in-process or Redis).
pub struct StoredCodes {
    store: Arc<dyn EphemeralStore>,
}

impl StoredCodes {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }

    fn key(code: &str) -> String {
        format!("code:{}", TokenHash::of(code).as_str())
    }

    fn used_key(code: &str) -> String {
        format!("code_used:{}", TokenHash::of(code).as_str())
    }

    fn replayed_key(code: &str) -> String {
        format!("code_replayed:{}", TokenHash::of(code).as_str())
    }
}

fn decode(b: Option<Vec<u8>>) -> Result<Option<CodeRecord>, StoreError> {
    b.map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

#[async_trait]
impl CodeStore for StoredCodes {
    async fn put(&self, code: &str, record: &CodeRecord, ttl: Duration) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store.put(&Self::key(code), &bytes, ttl).await
    }

    async fn peek(&self, code: &str) -> Result<Option<CodeRecord>, StoreError> {
        decode(self.store.get(&Self::key(code)).await?)
    }

    async fn take(&self, code: &str) -> Result<Option<CodeRecord>, StoreError> {
        decode(self.store.take(&Self::key(code)).await?)
    }

    async fn mark_redeemed(&self, code: &str) -> Result<bool, StoreError> {
        self.store
            .put_new(&Self::used_key(code), b"1", REPLAY_MEMORY)
            .await
    }

    async fn was_redeemed(&self, code: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&Self::used_key(code)).await?.is_some())
    }

    async fn flag_replay(&self, code: &str) -> Result<(), StoreError> {
        self.store
            .put(&Self::replayed_key(code), b"1", REPLAY_MEMORY)
            .await
    }

    async fn is_replayed(&self, code: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&Self::replayed_key(code)).await?.is_some())
    }
}
