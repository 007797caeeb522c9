//! Opaque access tokens (random handles, checked by introspection) and
//! revoked access tokens (by `jti`, until they would have expired), kept in
//! the short-lived store.

use crate::access_token::AccessTokenInfo;
use crate::domain::TokenHash;
use crate::ephemeral::EphemeralStore;
use crate::error::StoreError;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// The typed store of opaque access tokens and revocations.
#[async_trait]
pub trait AccessTokenStore: Send + Sync {
    async fn put_opaque(
        &self,
        token: &str,
        info: &AccessTokenInfo,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    async fn find_opaque(&self, token: &str) -> Result<Option<AccessTokenInfo>, StoreError>;
    async fn delete_opaque(&self, token: &str) -> Result<(), StoreError>;
    /// Marks the token of `jti` revoked for `ttl` (what is left of its life).
    async fn revoke(&self, jti: &str, ttl: Duration) -> Result<(), StoreError>;
    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError>;
}

/// [`AccessTokenStore`] over the short-lived store (in-process or Redis).
pub struct StoredAccessTokens {
    store: Arc<dyn EphemeralStore>,
}

impl StoredAccessTokens {
    pub fn new(store: Arc<dyn EphemeralStore>) -> Self {
        Self { store }
    }

    fn opaque_key(token: &str) -> String {
        format!("at:{}", TokenHash::of(token).as_str())
    }

    fn revoked_key(jti: &str) -> String {
        format!("revoked_jti:{jti}")
    }
}

#[async_trait]
impl AccessTokenStore for StoredAccessTokens {
    async fn put_opaque(
        &self,
        token: &str,
        info: &AccessTokenInfo,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(info).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store.put(&Self::opaque_key(token), &bytes, ttl).await
    }

    async fn find_opaque(&self, token: &str) -> Result<Option<AccessTokenInfo>, StoreError> {
        self.store
            .get(&Self::opaque_key(token))
            .await?
            .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn delete_opaque(&self, token: &str) -> Result<(), StoreError> {
        self.store.delete(&Self::opaque_key(token)).await
    }

    async fn revoke(&self, jti: &str, ttl: Duration) -> Result<(), StoreError> {
        self.store.put(&Self::revoked_key(jti), b"1", ttl).await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        Ok(self.store.get(&Self::revoked_key(jti)).await?.is_some())
    }
}
