//! Ports: what the core needs from durable storage, split by role so each part
//! depends only on what it uses. `adapters/storage` implements them on sea-orm
//! (SQLite and PostgreSQL).

use crate::domain::{
    AuditEvent, ClientId, ClientState, Consent, CustomerId, Email, PasswordCredential,
    RefreshTokenRecord, StoredSigningKey, TokenFamily, TokenHash, User, UserId,
};
use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

/// Errors of a repository. `Conflict` is the only one callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A unique constraint was hit (duplicate email, customer id, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data could not be turned back into a domain value.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed or is unreachable.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Accounts.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts `user`. A duplicate email (case-insensitive) or customer id
    /// gives [`RepoError::Conflict`] and writes nothing.
    async fn create(&self, user: &User) -> Result<(), RepoError>;
    async fn find_by_id(&self, id: UserId) -> Result<Option<User>, RepoError>;
    /// Case-insensitive on the address.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepoError>;
    async fn find_by_customer_id(&self, id: &CustomerId) -> Result<Option<User>, RepoError>;
    /// Users ordered by creation time.
    async fn list(&self, limit: u64, offset: u64) -> Result<Vec<User>, RepoError>;
}

/// Authentication credentials of users (password for now; TOTP, WebAuthn, ...
/// come with the login-flow work).
#[async_trait]
pub trait CredentialRepo: Send + Sync {
    async fn find_password(&self, user: UserId) -> Result<Option<PasswordCredential>, RepoError>;
    /// Creates or replaces the user's password hash.
    async fn set_password(&self, cred: &PasswordCredential) -> Result<(), RepoError>;
}

/// Grants (token families) and their refresh tokens.
#[async_trait]
pub trait TokenFamilyRepo: Send + Sync {
    /// Inserts the family and its first refresh token (if any) in one transaction.
    async fn create_family(
        &self,
        family: &TokenFamily,
        first_token: Option<&RefreshTokenRecord>,
    ) -> Result<(), RepoError>;
    async fn find_family(&self, id: Uuid) -> Result<Option<TokenFamily>, RepoError>;
    /// Marks the family revoked (first reason wins); returns whether this call
    /// revoked it. Its refresh tokens stop working with it.
    async fn revoke_family(
        &self,
        id: Uuid,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<bool, RepoError>;
    /// Revokes every live family born of SSO session `sid`; returns how many.
    async fn revoke_families_of_session(
        &self,
        sid: &str,
        at: OffsetDateTime,
        reason: &str,
    ) -> Result<u64, RepoError>;
    async fn find_refresh_token(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<RefreshTokenRecord>, RepoError>;
    /// Atomically marks `old` used and inserts `new` in the same family.
    /// Returns `false` (and inserts nothing) when `old` was already used:
    /// of two concurrent rotations exactly one succeeds.
    async fn rotate_refresh_token(
        &self,
        old: Uuid,
        at: OffsetDateTime,
        new: &RefreshTokenRecord,
    ) -> Result<bool, RepoError>;
}

/// Token signing keys.
#[async_trait]
pub trait SigningKeyRepo: Send + Sync {
    /// All keys, oldest first.
    async fn list(&self) -> Result<Vec<StoredSigningKey>, RepoError>;
    async fn create(&self, key: &StoredSigningKey) -> Result<(), RepoError>;
    /// Sets `retired_at` on a key that has none.
    async fn retire(&self, kid: &str, at: OffsetDateTime) -> Result<(), RepoError>;
}

/// Consents given by users to clients.
#[async_trait]
pub trait ConsentRepo: Send + Sync {
    async fn find(&self, user: UserId, client: &ClientId) -> Result<Option<Consent>, RepoError>;
    /// Creates or replaces.
    async fn upsert(&self, consent: &Consent) -> Result<(), RepoError>;
}

/// The audit trail.
#[async_trait]
pub trait AuditRepo: Send + Sync {
    async fn record(&self, event: &AuditEvent) -> Result<(), RepoError>;
    /// A user's most recent events, newest first.
    async fn list_for_user(&self, user: UserId, limit: u64) -> Result<Vec<AuditEvent>, RepoError>;
}

/// Runtime state of registered clients.
#[async_trait]
pub trait ClientStateRepo: Send + Sync {
    /// Records that `client` obtained tokens at `at` (creates the row on first use).
    async fn touch(&self, client: &ClientId, at: OffsetDateTime) -> Result<(), RepoError>;
    async fn find(&self, client: &ClientId) -> Result<Option<ClientState>, RepoError>;
}
