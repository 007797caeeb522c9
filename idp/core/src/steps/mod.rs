//! The authentication methods, one module each. Each implements
//! [`Step`](crate::flow::Step); [`registry`] lists them.

pub mod email_code;
pub mod identifier;
pub mod magic_link;
mod one_time_code;
pub mod passkey;
pub mod password;
pub mod recovery_code;
pub mod sms_code;
pub mod totp;
pub mod upstream;
pub mod webauthn;

use crate::error::CoreError;
use crate::flow::{Applicability, StepCx, StepRegistry};
use std::sync::Arc;

/// Applicability of a method backed by enrolled credentials of `kind`: a
/// known user with none enrolls one; an unknown identifier is asked like
/// anyone (and fails), so nothing tells whether the account exists.
pub(crate) async fn enrolled_or_enroll(
    cx: &StepCx<'_>,
    kind: &str,
) -> Result<Applicability, CoreError> {
    Ok(match cx.subject() {
        Some(u)
            if cx
                .ports
                .credentials
                .list_credentials(u.id, kind)
                .await?
                .is_empty() =>
        {
            Applicability::Enroll
        }
        _ => Applicability::Applies,
    })
}

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
    r.register(Arc::new(upstream::UpstreamStep));
    r.register(Arc::new(magic_link::MagicLinkStep));
    r
}
