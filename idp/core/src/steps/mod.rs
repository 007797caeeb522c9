//! The authentication methods, one module each. Each implements
//! [`Step`](crate::flow::Step); [`registry`] lists them.

pub mod email_code;
pub mod identifier;
mod one_time_code;
pub mod passkey;
pub mod password;
pub mod recovery_code;
pub mod sms_code;
pub mod totp;
pub mod webauthn;

use crate::flow::StepRegistry;
use std::sync::Arc;

/// Every built-in method.
pub fn registry() -> StepRegistry {
    let mut r = StepRegistry::default();
    r.register(Arc::new(identifier::IdentifierStep));
    r.register(Arc::new(password::PasswordStep));
    r.register(Arc::new(recovery_code::RecoveryCodeStep));
    r.register(Arc::new(email_code::EmailCodeStep));
    r.register(Arc::new(sms_code::SmsCodeStep));
    r.register(Arc::new(totp::TotpStep));
    r.register(Arc::new(webauthn::WebauthnStep));
    r.register(Arc::new(passkey::PasskeyStep));
    r
}
