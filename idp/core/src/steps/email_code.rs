//! The emailed code step: a 6-digit code sent to the account's address when
//! the page is first shown, entered on the same page, with "send a new code"
//! after a cool-down (see the private `one_time_code` module for the
//! rules). Applies to every identified user.
//!
//! No enumeration: for an identifier that matches no account the page is the
//! same (the destination shown is derived from what was typed), nothing is
//! sent, and every code is refused the way a wrong code is.

use super::one_time_code::{
    CodeRules, CodeState, Destination, Purpose, after_resend, code_page, mask_email, outcome,
};
use crate::domain::Email;
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, MethodId, StepTraits};
use async_trait::async_trait;

/// RFC 8176 registers no value for a code sent by email, and an emailed
/// code is not an authenticator (NIST SP 800-63B §5.1.3.1): it is reported
/// as this unregistered value, never as `otp` (an authenticator app's code),
/// and never counts as a factor (no `mfa` with a password).
pub const AMR: &str = "email_otp";

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "email_code";

static TRAITS: StepTraits = StepTraits {
    amr: &[AMR],
    ..StepTraits::new(NAME, Assurance::NOT_AN_AUTHENTICATOR, &["code"])
};

pub struct EmailCodeStep;

/// Where the code goes, and the page saying so. The address shown is the
/// typed one, masked, for a known and an unknown account alike; when the
/// user typed a customer identifier the page names no address at all.
fn target<'a>(cx: &StepCx<'a>, rules: &CodeRules<'_>) -> (Destination<'a>, Challenge) {
    let page = code_page(&ID, rules);
    let page = match cx.identifier.and_then(|i| Email::parse(i).ok()) {
        Some(typed) => page.with("destination", mask_email(typed.as_str())),
        None => page,
    };
    let to = match cx.subject() {
        Some(user) => Destination::Email(&user.email),
        None => Destination::Nobody(cx.identifier.unwrap_or_default()),
    };
    (to, page)
}

#[async_trait]
impl Step for EmailCodeStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "code"
    }

    async fn applies(&self, _cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        // Every account has an address; an unknown one is answered the same.
        Ok(Applicability::Applies)
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let mut state: CodeState = cx.scratch();
        let rules = CodeRules::of(cx, &ID);
        let (to, page) = target(cx, &rules);
        let error = state.ensure_sent(cx, &rules, &to, Purpose::Login).await?;
        cx.set_scratch(&state)?;
        Ok(match error {
            Some(e) => page.with_error(e),
            None => page,
        })
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let mut state: CodeState = cx.scratch();
        let rules = CodeRules::of(cx, &ID);
        let (to, page) = target(cx, &rules);
        let result = if input.get("resend") == Some("1") {
            let r = state.resend(cx, &rules, &to, Purpose::Login).await?;
            after_resend(page, r)
        } else {
            let typed = input.secret("code");
            let verdict = state.check(
                &rules,
                Purpose::Login,
                typed.as_ref().map_or("", |s| s.expose()),
            );
            outcome(verdict, page, Proven::new(&[AMR], &[]))
        };
        cx.set_scratch(&state)?;
        Ok(result)
    }
}
