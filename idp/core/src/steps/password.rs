//! The password step: argon2id verification off the async runtime. An
//! unknown account is checked against a dummy hash, so it costs the same and
//! answers the same as a wrong password. Hashes made with older parameters
//! are upgraded on success.

use crate::domain::PasswordCredential;
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use crate::password::PasswordCheck;
use async_trait::async_trait;

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "password";

static TRAITS: StepTraits = StepTraits {
    amr: &["pwd"],
    ..StepTraits::new(NAME, Assurance::single(&[Factor::Knowledge]), &["password"])
};

pub struct PasswordStep;

#[async_trait]
impl Step for PasswordStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "password"
    }

    async fn applies(&self, _cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        // Answered the same for every account, known or not.
        Ok(Applicability::Applies)
    }

    async fn present(&self, _cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        Ok(Challenge::new("password"))
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let password = input
            .secret("password")
            .unwrap_or_else(|| crate::secret::Secret::new(""));
        let stored = match cx.subject() {
            Some(u) => cx.ports.credentials.find_password(u.id).await?,
            None => None,
        };
        let check = cx
            .ports
            .hasher
            .verify(&password, stored.as_ref().map(|c| c.phc.as_str()))
            .await?;
        match (check, cx.subject()) {
            (PasswordCheck::Match { needs_rehash }, Some(user)) => {
                if needs_rehash {
                    match cx.ports.hasher.hash(&password).await {
                        Ok(phc) => {
                            let cred = PasswordCredential {
                                user_id: user.id,
                                phc,
                                updated_at: cx.ports.clock.now(),
                            };
                            if let Err(e) = cx.ports.credentials.set_password(&cred).await {
                                tracing::warn!(error = %e, "password rehash not stored");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "password rehash failed"),
                    }
                }
                Ok(StepOutcome::Passed(Proven::new(
                    &["pwd"],
                    &[Factor::Knowledge],
                )))
            }
            _ => Ok(StepOutcome::Rejected {
                challenge: Challenge::new("password").with_error("login.invalid_credentials"),
                count_failure: true,
            }),
        }
    }
}
