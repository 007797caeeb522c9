//! The texted code step: a 6-digit code sent by SMS to the account's
//! verified mobile number (same rules as the emailed code, see
//! the private `one_time_code` module).
//!
//! A user without a verified number enrolls one during login, in two
//! phases kept in the scratch state: the number (E.164; spaces, dashes and a
//! leading `00` accepted), then the code texted to it. The confirmed number is
//! saved as verified; if it is the user's first second factor, recovery codes
//! are issued and shown once, and the next `acknowledge=1` passes the step.
//!
//! An unknown account goes through the enrollment pages like an account
//! without a number: nothing is sent and every code is refused.

use super::one_time_code::{
    CodeRules, CodeState, Destination, Purpose, after_resend, code_page, mask_phone, outcome,
};
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// RFC 8176 §2: confirmation by text message.
const AMR: &str = "sms";

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "sms_code";

static TRAITS: StepTraits = StepTraits {
    amr: &[AMR],
    enrollable: true,
    creates_recovery_codes: true,
    ..StepTraits::new(
        NAME,
        Assurance {
            restricted: true,
            ..Assurance::single(&[Factor::Possession])
        },
        &["code", "phone_enroll"],
    )
};

/// A texted code: possession of the phone (a restricted authenticator).
fn proven() -> Proven {
    Proven::new(&[AMR], &[Factor::Possession])
}

pub struct SmsCodeStep;

/// The step's state between requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Scratch {
    #[serde(default)]
    code: CodeState,
    /// Enrollment: the number typed (E.164), waiting for its code.
    #[serde(default)]
    phone: Option<String>,
    /// Enrollment done and the recovery codes shown: `acknowledge=1` passes.
    #[serde(default)]
    codes_shown: bool,
}

/// A mobile number as typed, in E.164 (`+` then 8 to 15 digits, no leading
/// zero); spaces, dashes and dots are dropped, a leading `00` means `+`.
pub(crate) fn parse_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '-' | '.')))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

fn phone_page() -> Challenge {
    Challenge::new("phone_enroll")
}

/// The code page while enrolling `phone`.
fn verify_page(rules: &CodeRules<'_>, phone: &str) -> Challenge {
    code_page(&ID, rules)
        .with("destination", mask_phone(phone))
        .with("change_phone", true)
}

/// The recovery codes, shown once; a reload shows the page without them.
fn recovery_page(codes: Option<Vec<String>>) -> Challenge {
    let shown = codes.is_none();
    Challenge::new("recovery_codes")
        .with("codes", codes.unwrap_or_default())
        .with("already_shown", shown)
}

fn acknowledge(input: &StepInput) -> StepOutcome {
    if input.get("acknowledge") == Some("1") {
        StepOutcome::Passed(proven())
    } else {
        StepOutcome::Again(recovery_page(None))
    }
}

/// Where a login code goes, and the page saying so.
fn login_target<'a>(cx: &StepCx<'a>, rules: &CodeRules<'_>) -> (Destination<'a>, Challenge) {
    let page = code_page(&ID, rules);
    match cx.subject().and_then(|u| u.phone.as_deref()) {
        Some(phone) => (
            Destination::Phone(phone),
            page.with("destination", mask_phone(phone)),
        ),
        None => (Destination::Nobody(cx.identifier.unwrap_or_default()), page),
    }
}

/// Where a confirmation code for `phone` goes: nowhere for an unknown account.
fn enrollment_target<'a>(cx: &StepCx<'_>, phone: &'a str) -> Destination<'a> {
    match cx.subject() {
        Some(_) => Destination::Phone(phone),
        None => Destination::Nobody(phone),
    }
}

#[async_trait]
impl Step for SmsCodeStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, enrolling: bool) -> &'static str {
        if enrolling { "phone_enroll" } else { "code" }
    }

    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        Ok(match cx.subject() {
            Some(u) if u.phone_verified && u.phone.is_some() => Applicability::Applies,
            // An unknown account looks like one without a number.
            _ => Applicability::Enroll,
        })
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let mut s: Scratch = cx.scratch();
        if s.codes_shown {
            // Enrolled a moment ago: the number now counts as verified.
            return Ok(recovery_page(None));
        }
        let rules = CodeRules::of(cx, &ID);
        let (to, page) = login_target(cx, &rules);
        let error = s.code.ensure_sent(cx, &rules, &to, Purpose::Login).await?;
        cx.set_scratch(&s)?;
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
        let mut s: Scratch = cx.scratch();
        if s.codes_shown {
            return Ok(acknowledge(input));
        }
        let rules = CodeRules::of(cx, &ID);
        let (to, page) = login_target(cx, &rules);
        let result = if input.get("resend") == Some("1") {
            let r = s.code.resend(cx, &rules, &to, Purpose::Login).await?;
            after_resend(page, r)
        } else {
            let typed = input.secret("code");
            let verdict = s.code.check(
                &rules,
                Purpose::Login,
                typed.as_ref().map_or("", |t| t.expose()),
            );
            outcome(verdict, page, proven())
        };
        cx.set_scratch(&s)?;
        Ok(result)
    }

    async fn present_enrollment(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let mut s: Scratch = cx.scratch();
        if s.codes_shown {
            return Ok(recovery_page(None));
        }
        let Some(phone) = s.phone.clone() else {
            return Ok(phone_page());
        };
        let rules = CodeRules::of(cx, &ID);
        let to = enrollment_target(cx, &phone);
        let error = s
            .code
            .ensure_sent(cx, &rules, &to, Purpose::PhoneVerification)
            .await?;
        let page = verify_page(&rules, &phone);
        cx.set_scratch(&s)?;
        Ok(match error {
            Some(e) => page.with_error(e),
            None => page,
        })
    }

    async fn submit_enrollment(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let mut s: Scratch = cx.scratch();
        if s.codes_shown {
            return Ok(acknowledge(input));
        }
        let rules = CodeRules::of(cx, &ID);

        // Phase 1: the number.
        if let Some(raw) = input.get("phone") {
            let raw = raw.trim();
            let Some(phone) = parse_phone(raw) else {
                return Ok(StepOutcome::Rejected {
                    challenge: phone_page()
                        .with("phone", raw)
                        .with_error("login.phone.invalid"),
                    count_failure: false,
                });
            };
            if let Some(left) = s.code.cooldown_left(&rules) {
                return Ok(StepOutcome::Again(
                    phone_page()
                        .with("phone", raw)
                        .with_error("login.code.wait")
                        .with("wait_seconds", left),
                ));
            }
            let to = enrollment_target(cx, &phone);
            let delivery = s
                .code
                .send(cx, &rules, &to, Purpose::PhoneVerification)
                .await?;
            if let Some(error) = delivery.error() {
                return Ok(StepOutcome::Again(
                    phone_page().with("phone", raw).with_error(error),
                ));
            }
            let page = verify_page(&rules, &phone);
            s.phone = Some(phone);
            cx.set_scratch(&s)?;
            return Ok(StepOutcome::Again(page));
        }
        let Some(phone) = s.phone.clone() else {
            return Ok(StepOutcome::Again(phone_page()));
        };
        if input.get("change_phone") == Some("1") {
            s.phone = None;
            s.code.discard();
            cx.set_scratch(&s)?;
            return Ok(StepOutcome::Again(phone_page()));
        }

        // Phase 2: the code texted to it.
        let to = enrollment_target(cx, &phone);
        let page = verify_page(&rules, &phone);
        if input.get("resend") == Some("1") {
            let r = s
                .code
                .resend(cx, &rules, &to, Purpose::PhoneVerification)
                .await?;
            cx.set_scratch(&s)?;
            return Ok(after_resend(page, r));
        }
        let typed = input.secret("code");
        let verdict = s.code.check(
            &rules,
            Purpose::PhoneVerification,
            typed.as_ref().map_or("", |t| t.expose()),
        );
        let result = match (outcome(verdict, page, proven()), cx.subject()) {
            (StepOutcome::Passed(proven), Some(user)) => {
                cx.ports
                    .users
                    .set_phone(user.id, Some(&phone), true)
                    .await?;
                match super::recovery_code::issue_if_first(cx, user).await? {
                    Some(codes) => {
                        s.codes_shown = true;
                        StepOutcome::Again(recovery_page(Some(codes)))
                    }
                    None => StepOutcome::Passed(proven),
                }
            }
            // Cannot happen: no code matches for an unknown account.
            (StepOutcome::Passed(_), None) => StepOutcome::Rejected {
                challenge: verify_page(&rules, &phone).with_error("login.code.invalid"),
                count_failure: true,
            },
            (other, _) => other,
        };
        cx.set_scratch(&s)?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalized_to_e164() {
        assert_eq!(
            parse_phone("+33 6 12 34 56 78").as_deref(),
            Some("+33612345678")
        );
        assert_eq!(
            parse_phone("0033-6-12-34-56-78").as_deref(),
            Some("+33612345678")
        );
        assert_eq!(
            parse_phone(" +1 415.555.2671 ").as_deref(),
            Some("+14155552671")
        );
        assert_eq!(parse_phone("+12345678").as_deref(), Some("+12345678"));
        assert_eq!(
            parse_phone("+123456789012345").as_deref(),
            Some("+123456789012345")
        );
    }

    #[test]
    fn numbers_without_country_code_or_of_the_wrong_length_are_refused() {
        for bad in [
            "",
            "0612345678",
            "+1234567",
            "+1234567890123456",
            "+33 6 12 34 56 7a",
            "+0612345678",
            "++33612345678",
            "+33 (0)6 12 34 56 78",
            "000033612345678",
        ] {
            assert_eq!(parse_phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn recovery_codes_are_shown_once() {
        let first = recovery_page(Some(vec!["abcde-fghjk".into()]));
        assert_eq!(first.data["codes"][0], "abcde-fghjk");
        assert_eq!(first.data["already_shown"], false);
        let again = recovery_page(None);
        assert_eq!(again.data["codes"], serde_json::json!([]));
        assert_eq!(again.data["already_shown"], true);
        assert_eq!(
            acknowledge(&StepInput::new([("acknowledge".into(), "1".into())])),
            StepOutcome::Passed(proven())
        );
        assert!(matches!(
            acknowledge(&StepInput::default()),
            StepOutcome::Again(_)
        ));
    }
}
