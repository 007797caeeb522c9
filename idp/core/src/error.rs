//! The core's error type for failures that are not protocol outcomes: a port
//! failed, or a crypto operation failed. Logged once by the caller, never shown.

use crate::ephemeral::StoreError;
use crate::ports::RepoError;

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
