//! The authentication methods, one module each. Each implements
//! [`Step`](crate::flow::Step); [`registry`] lists them.

pub mod identifier;
pub mod password;
pub mod recovery_code;

use crate::flow::StepRegistry;
use std::sync::Arc;

/// Every built-in method.
pub fn registry() -> StepRegistry {
    let mut r = StepRegistry::default();
    r.register(Arc::new(identifier::IdentifierStep));
    r.register(Arc::new(password::PasswordStep));
    r.register(Arc::new(recovery_code::RecoveryCodeStep));
    r
}
