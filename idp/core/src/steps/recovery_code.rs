//! Recovery codes: ten single-use codes generated when a user enrolls their
//! first second factor, shown once, stored only as a keyed hash, and
//! regenerable. Entering one passes a second-factor step when the user's
//! device is not at hand.

use crate::domain::{StoredCredential, User};
use crate::error::CoreError;
use crate::flow::{
    Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome, StepPorts,
};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use async_trait::async_trait;
use uuid::Uuid;

pub const KIND: &str = "recovery_code";
const MAC_PURPOSE: &str = "recovery-code";
/// Unambiguous characters (no 0/o, 1/l/i).
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "recovery_code";

static TRAITS: StepTraits = StepTraits {
    amr: &["otp"],
    second_factor: true,
    ..StepTraits::new(NAME, Assurance::single(&[Factor::Possession]), &["code"])
};

pub struct RecoveryCodeStep;

/// A code as shown: `xxxxx-xxxxx` (about 49 bits).
fn new_code() -> String {
    let chars: String = (0..10)
        .map(|_| char::from(ALPHABET[crate::random::below(ALPHABET.len() as u32) as usize]))
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

/// What is hashed: lower case, without separators or spaces.
fn normalize(input: &str) -> String {
    input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Replaces the user's recovery codes with fresh ones; returns them (to be
/// shown once; only their keyed hashes are stored).
pub async fn regenerate(ports: &StepPorts, user: &User) -> Result<Vec<String>, CoreError> {
    ports
        .credentials
        .delete_credentials_of_kind(user.id, KIND)
        .await?;
    let now = ports.clock.now();
    let mut codes = Vec::new();
    for _ in 0..ports.settings.recovery_codes {
        let code = new_code();
        ports
            .credentials
            .create_credential(&StoredCredential {
                id: Uuid::now_v7(),
                user_id: user.id,
                kind: KIND.into(),
                label: None,
                secret: ports.kek.mac(MAC_PURPOSE, normalize(&code).as_bytes()),
                created_at: now,
                last_used_at: None,
            })
            .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// After a first second factor is enrolled: codes if the user had none.
pub async fn issue_if_first(
    cx: &StepCx<'_>,
    user: &User,
) -> Result<Option<Vec<String>>, CoreError> {
    issue_if_none(cx.ports, user).await
}

/// Fresh codes if the user has none left (to be shown once), else `None`.
pub async fn issue_if_none(
    ports: &StepPorts,
    user: &User,
) -> Result<Option<Vec<String>>, CoreError> {
    if remaining(ports, user).await? == 0 {
        Ok(Some(regenerate(ports, user).await?))
    } else {
        Ok(None)
    }
}

/// How many unused recovery codes the user has.
pub async fn remaining(ports: &StepPorts, user: &User) -> Result<usize, CoreError> {
    Ok(ports
        .credentials
        .list_credentials(user.id, KIND)
        .await?
        .len())
}

#[async_trait]
impl Step for RecoveryCodeStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "code"
    }

    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        Ok(match cx.subject() {
            Some(u)
                if !cx
                    .ports
                    .credentials
                    .list_credentials(u.id, KIND)
                    .await?
                    .is_empty() =>
            {
                Applicability::Applies
            }
            _ => Applicability::Skip,
        })
    }

    async fn present(&self, _cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        Ok(challenge())
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let rejected = || StepOutcome::Rejected {
            challenge: challenge().with_error("login.code.invalid"),
            count_failure: true,
        };
        let Some(user) = cx.subject() else {
            return Ok(rejected());
        };
        let typed = normalize(input.get("code").unwrap_or_default());
        if typed.len() != 10 {
            return Ok(rejected());
        }
        let mac = cx.ports.kek.mac(MAC_PURPOSE, typed.as_bytes());
        let codes = cx.ports.credentials.list_credentials(user.id, KIND).await?;
        let Some(found) = codes.iter().find(|c| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                c.secret.as_bytes(),
                mac.as_bytes(),
            ))
        }) else {
            return Ok(rejected());
        };
        // Single use: of two concurrent submits of one code, one deletes it.
        if !cx.ports.credentials.delete_credential(found.id).await? {
            return Ok(rejected());
        }
        // A look-up secret: something the user has.
        Ok(StepOutcome::Passed(
            Proven::new(&["otp"], &[Factor::Possession]).with_credential(found.id),
        ))
    }
}

fn challenge() -> Challenge {
    Challenge::new("code")
        .with("method", ID.as_str())
        .with("autocomplete", "off")
        .with("inputmode", "text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_shown_shape_and_normalize() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 11);
            assert_eq!(normalize(&c).len(), 10);
            assert!(normalize(&c).bytes().all(|b| ALPHABET.contains(&b)));
        }
        assert_eq!(normalize(" ABCDE-fghjk "), "abcdefghjk");
    }
}
