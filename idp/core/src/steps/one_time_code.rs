//! One-time codes that a step sends (by email, by SMS, or to confirm a phone
//! number being enrolled): what `email_code` and `sms_code` share.
//!
//! A code is 6 digits drawn uniformly. The step's scratch state (which lives
//! with the flow in the short-lived store) keeps only its keyed hash (HMAC
//! under the key-encryption key, bound to the flow and the method, so a copy
//! of the store cannot be searched for it), its expiry, when it was sent and
//! how many wrong entries it took. After `code_max_attempts` wrong entries the
//! code is dead and a new one must be asked for; a new one is sent at most
//! once per `code_resend_cooldown_secs`. Codes are compared in constant time
//! and work once.
//!
//! The cool-down is per flow; starting new flows does not get around it for
//! long: at most [`MAX_SENDS_PER_HOUR`] codes go to one address or number per
//! hour, whatever the flows (a counter in the short-lived store).
//!
//! For an unknown account the same state is kept around a hash that no code
//! matches, and nothing is sent: the pages, answers and counters are those
//! of a real account.

use crate::domain::Email;
use crate::error::CoreError;
use crate::flow::{Challenge, MethodSettings, Proven, StepCx, StepOutcome};
use crate::method::MethodId;
use crate::notify::{DeliveryError, Message, Notification};
use crate::secret::KeyEncryptionKey;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

const MAC_PURPOSE: &str = "one-time-code";
const SENDS_PURPOSE: &str = "one-time-code-sends";
/// Codes sent to one address or number per hour, at most (against mail and
/// SMS bombing through new flows).
pub(crate) const MAX_SENDS_PER_HOUR: u64 = 10;
const CODE_LEN: usize = 6;
const CODE_SPACE: u32 = 1_000_000;

/// A code sent and not used yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingCode {
    /// Keyed hash of the code (hex); random bytes for an unknown account.
    mac: String,
    /// What it was sent for: a phone confirmation code does not sign in.
    purpose: Purpose,
    /// Unix seconds.
    expires_at: i64,
    /// Wrong entries so far.
    failures: u32,
}

/// A step's code state, kept in its scratch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CodeState {
    #[serde(default)]
    pending: Option<PendingCode>,
    /// When a code was last sent (unix seconds): the resend cool-down runs
    /// from here, also across a change of phone number.
    #[serde(default)]
    last_sent_at: Option<i64>,
}

/// Where a code goes.
pub(crate) enum Destination<'a> {
    Email(&'a Email),
    /// E.164.
    Phone(&'a str),
    /// An unknown account: nothing is sent, the state is kept all the same.
    /// Holds what was typed (address or number), counted as a real one is.
    Nobody(&'a str),
}

impl Destination<'_> {
    /// What the hourly count of sends is kept under: the same for a typed
    /// address whether an account has it or not.
    fn count_key(&self, kek: &KeyEncryptionKey) -> String {
        let who = match self {
            Self::Email(e) => e.normalized(),
            Self::Phone(p) => (*p).to_owned(),
            Self::Nobody(typed) => typed.trim().to_lowercase(),
        };
        kek.mac(SENDS_PURPOSE, who.as_bytes())
    }
}

/// Whether a code went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    Sent,
    /// The provider refused or was unreachable: nothing kept, retry possible.
    Failed,
    /// [`MAX_SENDS_PER_HOUR`] reached for this destination.
    Limited,
}

impl Delivery {
    /// The message id to show, if not sent.
    pub(crate) fn error(self) -> Option<&'static str> {
        match self {
            Self::Sent => None,
            Self::Failed => Some("login.code.send_failed"),
            Self::Limited => Some("login.code.too_many_sent"),
        }
    }
}

/// What the message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Purpose {
    Login,
    PhoneVerification,
}

/// What a typed code is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Valid,
    /// Wrong; `dead` when that was the last entry allowed for this code.
    Wrong {
        dead: bool,
    },
    /// The code took its maximum of wrong entries: a new one is needed.
    Dead,
    Expired,
    /// No code was sent (sending failed).
    NoCode,
    /// Not 6 digits: not a guess, not counted.
    Malformed,
}

/// What asking for a new code led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Too early: seconds left.
    Wait(u32),
    Done(Delivery),
}

/// What the code rules need from the flow, so they can be checked alone.
pub(crate) struct CodeRules<'a> {
    kek: &'a KeyEncryptionKey,
    settings: &'a MethodSettings,
    flow_id: &'a str,
    kind: &'static MethodId,
    /// Unix seconds.
    now: i64,
}

impl<'a> CodeRules<'a> {
    pub(crate) fn of(cx: &'a StepCx<'_>, kind: &'static MethodId) -> Self {
        Self {
            kek: &cx.ports.kek,
            settings: &cx.ports.settings,
            flow_id: cx.flow_id,
            kind,
            now: cx.ports.clock.now().unix_timestamp(),
        }
    }

    fn mac(&self, code: &str) -> String {
        let bound = format!("{}\0{}\0{code}", self.flow_id, self.kind.as_str());
        self.kek.mac(MAC_PURPOSE, bound.as_bytes())
    }

    fn ttl(&self) -> i64 {
        i64::from(self.settings.code_ttl_secs)
    }

    /// Minutes the message says the code is valid (rounded up).
    pub(crate) fn valid_minutes(&self) -> u32 {
        self.settings.code_ttl_secs.div_ceil(60).max(1)
    }
}

/// A fresh code: 6 digits, uniform over 000000..=999999.
fn new_code() -> String {
    format!(
        "{:0width$}",
        crate::random::below(CODE_SPACE),
        width = CODE_LEN
    )
}

/// The typed code without spaces or dashes, if it is 6 ASCII digits.
fn normalize(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CodeState {
    /// Seconds before a new code may be sent, if any.
    pub(crate) fn cooldown_left(&self, rules: &CodeRules<'_>) -> Option<u32> {
        let last = self.last_sent_at?;
        let left = last + i64::from(rules.settings.code_resend_cooldown_secs) - rules.now;
        (left > 0).then(|| u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// The pending code, if it was sent for `purpose`.
    fn pending_for(&self, purpose: Purpose) -> Option<&PendingCode> {
        self.pending.as_ref().filter(|p| p.purpose == purpose)
    }

    /// A code was sent for `purpose`, is not expired and may still be tried.
    fn is_live(&self, rules: &CodeRules<'_>, purpose: Purpose) -> bool {
        self.pending_for(purpose).is_some_and(|p| {
            rules.now < p.expires_at && p.failures < rules.settings.code_max_attempts
        })
    }

    /// Replaces the pending code by a new one; returns it to be sent, or
    /// `None` for an unknown account (a hash nothing matches is kept).
    fn issue(&mut self, rules: &CodeRules<'_>, purpose: Purpose, real: bool) -> Option<String> {
        let (mac, code) = if real {
            let code = new_code();
            (rules.mac(&code), Some(code))
        } else {
            (hex(&crate::random::bytes(32)), None)
        };
        self.pending = Some(PendingCode {
            mac,
            purpose,
            expires_at: rules.now + rules.ttl(),
            failures: 0,
        });
        self.last_sent_at = Some(rules.now);
        code
    }

    /// Forgets the pending code (the cool-down stays).
    pub(crate) fn discard(&mut self) {
        self.pending = None;
    }

    /// Checks a typed code. A valid code is consumed; a wrong one counts
    /// against the code's maximum of entries.
    pub(crate) fn check(
        &mut self,
        rules: &CodeRules<'_>,
        purpose: Purpose,
        typed: &str,
    ) -> Verdict {
        let max = rules.settings.code_max_attempts;
        let Some(p) = self.pending.as_mut().filter(|p| p.purpose == purpose) else {
            return Verdict::NoCode;
        };
        if p.failures >= max {
            return Verdict::Dead;
        }
        if rules.now >= p.expires_at {
            return Verdict::Expired;
        }
        let Some(code) = normalize(typed) else {
            return Verdict::Malformed;
        };
        if bool::from(rules.mac(&code).as_bytes().ct_eq(p.mac.as_bytes())) {
            self.pending = None;
            return Verdict::Valid;
        }
        p.failures += 1;
        Verdict::Wrong {
            dead: p.failures >= max,
        }
    }

    /// Issues and sends a new code; when it does not go out, nothing is kept.
    pub(crate) async fn send(
        &mut self,
        cx: &StepCx<'_>,
        rules: &CodeRules<'_>,
        to: &Destination<'_>,
        purpose: Purpose,
    ) -> Result<Delivery, CoreError> {
        let bucket = crate::throttle::Throttle::code_sends(
            &to.count_key(rules.kek),
            MAX_SENDS_PER_HOUR as u32,
        );
        if !cx.ports.throttle.spend(bucket).await? {
            tracing::warn!(
                method = rules.kind.as_str(),
                "hourly code sends reached for a destination"
            );
            return Ok(Delivery::Limited);
        }
        let before = self.clone();
        let real = !matches!(to, Destination::Nobody(_));
        let Some(code) = self.issue(rules, purpose, real) else {
            return Ok(Delivery::Sent);
        };
        let valid_minutes = rules.valid_minutes();
        let message = match purpose {
            Purpose::Login => Message::LoginCode {
                code,
                valid_minutes,
            },
            Purpose::PhoneVerification => Message::PhoneVerificationCode {
                code,
                valid_minutes,
            },
        };
        let n = Notification {
            message,
            locale: cx.locale.to_owned(),
            theme: cx.client.theme.clone(),
            client_name: cx.client.name.clone(),
        };
        let notifier = &cx.ports.notifier;
        let sent = match to {
            Destination::Email(e) => notifier.email(e, &n).await,
            Destination::Phone(p) => notifier.sms(p, &n).await,
            Destination::Nobody(_) => Ok(()),
        };
        match sent {
            Ok(()) => Ok(Delivery::Sent),
            Err(e) => {
                match &e {
                    DeliveryError::Failed(_) => {
                        tracing::warn!(error = %e, method = rules.kind.as_str(), "code not delivered")
                    }
                    DeliveryError::Invalid(_) => {
                        tracing::error!(error = %e, method = rules.kind.as_str(), "code message could not be built")
                    }
                }
                *self = before;
                Ok(Delivery::Failed)
            }
        }
    }

    /// For showing the page: sends a code when none was sent or the last one
    /// expired (so a reload does not send again). Returns the error to show.
    pub(crate) async fn ensure_sent(
        &mut self,
        cx: &StepCx<'_>,
        rules: &CodeRules<'_>,
        to: &Destination<'_>,
        purpose: Purpose,
    ) -> Result<Option<&'static str>, CoreError> {
        if self.is_live(rules, purpose) {
            return Ok(None);
        }
        let expired = match self.pending_for(purpose) {
            Some(p) if rules.now < p.expires_at => return Ok(Some("login.code.too_many")),
            Some(_) => true,
            None => false,
        };
        if self.cooldown_left(rules).is_some() {
            return Ok(expired.then_some("login.code.expired"));
        }
        Ok(self.send(cx, rules, to, purpose).await?.error())
    }

    /// "Send a new code": only after the cool-down. The old code stops working.
    pub(crate) async fn resend(
        &mut self,
        cx: &StepCx<'_>,
        rules: &CodeRules<'_>,
        to: &Destination<'_>,
        purpose: Purpose,
    ) -> Result<Resend, CoreError> {
        if let Some(left) = self.cooldown_left(rules) {
            return Ok(Resend::Wait(left));
        }
        Ok(Resend::Done(self.send(cx, rules, to, purpose).await?))
    }
}

/// The code entry page (`code.html`) of a method that sends codes.
pub(crate) fn code_page(kind: &MethodId, rules: &CodeRules<'_>) -> Challenge {
    Challenge::new("code")
        .with("method", kind.as_str())
        .with("autocomplete", "one-time-code")
        .with("inputmode", "numeric")
        .with("resend", true)
        .with("valid_minutes", rules.valid_minutes())
}

/// The page after a "send a new code" request.
pub(crate) fn after_resend(page: Challenge, r: Resend) -> StepOutcome {
    StepOutcome::Again(match r {
        Resend::Wait(s) => page.with_error("login.code.wait").with("wait_seconds", s),
        Resend::Done(d) => match d.error() {
            None => page.with("resent", true),
            Some(e) => page.with_error(e),
        },
    })
}

/// The answer to a checked code. Only wrong guesses feed the throttle: a
/// dead, expired or malformed entry cannot succeed.
pub(crate) fn outcome(verdict: Verdict, page: Challenge, proven: Proven) -> StepOutcome {
    let reject = |error, count_failure| StepOutcome::Rejected {
        challenge: page.clone().with_error(error),
        count_failure,
    };
    match verdict {
        Verdict::Valid => StepOutcome::Passed(proven),
        Verdict::Wrong { dead: false } => reject("login.code.invalid", true),
        Verdict::Wrong { dead: true } => reject("login.code.too_many", true),
        Verdict::Dead => reject("login.code.too_many", false),
        Verdict::Expired => reject("login.code.expired", false),
        Verdict::NoCode | Verdict::Malformed => reject("login.code.invalid", false),
    }
}

/// `a***@example.com`: the first character of the local part and the domain.
pub(crate) fn mask_email(address: &str) -> String {
    match address.trim().rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// `+33*******78`: the first two digits (country code) and the last two.
pub(crate) fn mask_phone(e164: &str) -> String {
    let digits: Vec<char> = e164.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return "***".into();
    }
    let n = digits.len();
    let head: String = digits[..2].iter().collect();
    let tail: String = digits[n - 2..].iter().collect();
    format!("+{head}{}{tail}", "*".repeat(n - 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules<'a>(
        kek: &'a KeyEncryptionKey,
        settings: &'a MethodSettings,
        now: i64,
    ) -> CodeRules<'a> {
        CodeRules {
            kek,
            settings,
            flow_id: "flow-1",
            kind: &super::super::email_code::ID,
            now,
        }
    }

    #[test]
    fn codes_are_six_digits_spread_over_the_whole_space() {
        let mut first_digits = [0u32; 10];
        for _ in 0..2000 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
            first_digits[usize::from(c.as_bytes()[0] - b'0')] += 1;
        }
        // Leading zeros are kept, and every leading digit shows up.
        assert!(first_digits.iter().all(|n| *n > 100), "{first_digits:?}");
    }

    #[test]
    fn typed_codes_are_normalized() {
        assert_eq!(normalize(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize("123-456").as_deref(), Some("123456"));
        assert_eq!(normalize("12345"), None);
        assert_eq!(normalize("1234567"), None);
        assert_eq!(normalize("12345a"), None);
        assert_eq!(normalize("１２３４５６"), None, "full-width digits");
    }

    #[test]
    fn a_code_is_stored_hashed_works_once_and_dies_after_the_maximum_of_wrong_entries() {
        let kek = KeyEncryptionKey::generate();
        let settings = MethodSettings::default();
        let r = rules(&kek, &settings, 1000);
        let mut s = CodeState::default();
        let code = s.issue(&r, Purpose::Login, true).unwrap();
        let stored = serde_json::to_string(&s).unwrap();
        assert!(!stored.contains(&code), "the code is not stored in clear");
        let wrong = if code == "000000" { "000001" } else { "000000" };
        for i in 1..settings.code_max_attempts {
            assert_eq!(
                s.check(&r, Purpose::Login, wrong),
                Verdict::Wrong { dead: false },
                "{i}"
            );
        }
        assert_eq!(
            s.check(&r, Purpose::Login, wrong),
            Verdict::Wrong { dead: true }
        );
        assert_eq!(
            s.check(&r, Purpose::Login, &code),
            Verdict::Dead,
            "dead even for the right code"
        );

        let mut s = CodeState::default();
        let code = s.issue(&r, Purpose::Login, true).unwrap();
        assert_eq!(s.check(&r, Purpose::Login, "12"), Verdict::Malformed);
        assert_eq!(
            s.check(
                &r,
                Purpose::Login,
                &format!(" {} {} ", &code[..3], &code[3..])
            ),
            Verdict::Valid
        );
        assert_eq!(
            s.check(&r, Purpose::Login, &code),
            Verdict::NoCode,
            "single use"
        );
    }

    #[test]
    fn a_code_expires_and_is_bound_to_its_flow() {
        let kek = KeyEncryptionKey::generate();
        let settings = MethodSettings::default();
        let r = rules(&kek, &settings, 1000);
        let mut s = CodeState::default();
        let code = s.issue(&r, Purpose::Login, true).unwrap();
        let later = rules(&kek, &settings, 1000 + i64::from(settings.code_ttl_secs));
        assert_eq!(
            s.clone().check(&later, Purpose::Login, &code),
            Verdict::Expired
        );
        let just_before = rules(&kek, &settings, 999 + i64::from(settings.code_ttl_secs));
        assert_eq!(
            s.clone().check(&just_before, Purpose::Login, &code),
            Verdict::Valid
        );
        let other_flow = CodeRules {
            flow_id: "flow-2",
            ..rules(&kek, &settings, 1000)
        };
        assert_eq!(
            s.clone().check(&other_flow, Purpose::Login, &code),
            Verdict::Wrong { dead: false }
        );
        let other_method = CodeRules {
            kind: &super::super::sms_code::ID,
            ..rules(&kek, &settings, 1000)
        };
        assert_eq!(
            s.check(&other_method, Purpose::Login, &code),
            Verdict::Wrong { dead: false }
        );
        let mut s = CodeState::default();
        let code = s.issue(&r, Purpose::PhoneVerification, true).unwrap();
        assert_eq!(
            s.clone().check(&r, Purpose::Login, &code),
            Verdict::NoCode,
            "a phone confirmation code does not sign in"
        );
        assert_eq!(
            s.check(&r, Purpose::PhoneVerification, &code),
            Verdict::Valid
        );
    }

    #[test]
    fn an_unknown_account_gets_the_same_state_and_no_code_matches() {
        let kek = KeyEncryptionKey::generate();
        let settings = MethodSettings::default();
        let r = rules(&kek, &settings, 1000);
        let mut s = CodeState::default();
        assert_eq!(s.issue(&r, Purpose::Login, false), None);
        assert!(s.is_live(&r, Purpose::Login));
        assert_eq!(
            s.cooldown_left(&r),
            Some(settings.code_resend_cooldown_secs)
        );
        for guess in ["000000", "123456", "999999"] {
            assert!(matches!(
                s.check(&r, Purpose::Login, guess),
                Verdict::Wrong { .. }
            ));
        }
    }

    #[test]
    fn the_resend_cooldown_runs_from_the_last_send() {
        let kek = KeyEncryptionKey::generate();
        let settings = MethodSettings::default();
        let mut s = CodeState::default();
        assert_eq!(s.cooldown_left(&rules(&kek, &settings, 1000)), None);
        s.issue(&rules(&kek, &settings, 1000), Purpose::Login, true);
        assert_eq!(s.cooldown_left(&rules(&kek, &settings, 1001)), Some(29));
        assert_eq!(s.cooldown_left(&rules(&kek, &settings, 1029)), Some(1));
        assert_eq!(s.cooldown_left(&rules(&kek, &settings, 1030)), None);
        s.discard();
        assert_eq!(
            s.cooldown_left(&rules(&kek, &settings, 1010)),
            Some(20),
            "forgetting the code keeps the cool-down"
        );
    }

    #[test]
    fn destinations_are_masked() {
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
        assert_eq!(mask_email("Élodie@exemple.fr"), "É***@exemple.fr");
        assert_eq!(mask_email("nobody"), "***");
        assert_eq!(mask_phone("+33612345678"), "+33*******78");
        assert_eq!(mask_phone("+1234"), "***");
    }

    #[test]
    fn outcomes_count_only_real_guesses() {
        let page = Challenge::new("code");
        let counted = |v| match outcome(v, page.clone(), Proven::nothing()) {
            StepOutcome::Rejected { count_failure, .. } => Some(count_failure),
            _ => None,
        };
        assert_eq!(counted(Verdict::Wrong { dead: false }), Some(true));
        assert_eq!(counted(Verdict::Wrong { dead: true }), Some(true));
        assert_eq!(counted(Verdict::Dead), Some(false));
        assert_eq!(counted(Verdict::Expired), Some(false));
        assert_eq!(counted(Verdict::Malformed), Some(false));
        assert_eq!(
            outcome(Verdict::Valid, page, Proven::new(&["sms"], &[])),
            StepOutcome::Passed(Proven::new(&["sms"], &[]))
        );
    }
}
