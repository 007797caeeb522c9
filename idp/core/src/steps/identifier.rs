//! The identifier step: an email address or a customer identifier. Whether
//! an account exists is never revealed: the next step follows either way.

use crate::domain::{CustomerId, Email};
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, MethodId, StepTraits};
use async_trait::async_trait;

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "identifier";

static TRAITS: StepTraits = StepTraits {
    identifies: true,
    ..StepTraits::new(NAME, Assurance::NONE, &["identifier"])
};

pub struct IdentifierStep;

enum Identifier {
    Email(Email),
    Customer(CustomerId),
}

fn parse(raw: &str) -> Option<Identifier> {
    if raw.contains('@') {
        Email::parse(raw).ok().map(Identifier::Email)
    } else {
        CustomerId::parse(raw).map(Identifier::Customer)
    }
}

#[async_trait]
impl Step for IdentifierStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "identifier"
    }

    async fn applies(&self, _cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        Ok(Applicability::Applies)
    }

    async fn present(&self, _cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        Ok(Challenge::new("identifier"))
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let raw = input.get("identifier").unwrap_or_default().trim();
        let Some(id) = parse(raw) else {
            return Ok(StepOutcome::Rejected {
                challenge: Challenge::new("identifier")
                    .with_error("login.invalid_identifier")
                    .with("identifier", raw),
                count_failure: false,
            });
        };
        let user = match id {
            Identifier::Email(e) => cx.ports.users.find_by_email(&e).await?,
            Identifier::Customer(c) => cx.ports.users.find_by_customer_id(&c).await?,
        };
        cx.identify(user, raw.to_owned());
        Ok(StepOutcome::Passed(Proven::nothing()))
    }
}
