//! The core's error types for failures that are not protocol outcomes: a
//! port failed ([`RepoError`] for durable storage, [`StoreError`] for the
//! short-lived store), or a crypto operation failed. Logged once by the
//! caller, never shown. A leaf: every other module may use it.

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

/// Errors of the short-lived store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("short-lived store unavailable: {0}")]
    Unavailable(String),
    #[error("short-lived store value is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<josekit::JoseError> for CoreError {
    fn from(e: josekit::JoseError) -> Self {
        Self::Crypto(e.to_string())
    }
}
