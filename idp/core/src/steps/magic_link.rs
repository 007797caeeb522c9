//! The emailed sign-in link: once the user is identified, a single-use link
//! valid [`VALIDITY_MINUTES`] minutes is emailed; opening it in the browser
//! that asked completes the step there. Opened in another browser (the
//! email read on a phone), the link is left unused and a page says to open
//! it in the browser that asked. A newer link replaces the older one; "send
//! a new link" waits for the same cool-down as codes, and at most
//! `one_time_code::MAX_SENDS_PER_HOUR` links go to one address per hour.
//!
//! Like an emailed code, it proves control of a mailbox, not an
//! authenticator (NIST SP 800-63B §5.1.3.1): `amr` `email_link`, no factor,
//! never toward AAL2.
//!
//! No enumeration: for an identifier that matches no account the page and
//! the work are the same (a link is bound to the flow, nothing is sent), and
//! the email itself goes out in the background, so the answer takes the same
//! time whether or not an account exists.

use crate::domain::{Email, TokenHash};
use crate::error::CoreError;
use crate::flow::state::CallbackBinding;
use crate::flow::{Applicability, Challenge, Proven, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, MethodId, StepTraits};
use crate::notify::{Message, Notification};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "magic_link";

/// RFC 8176 registers no value for a link sent by email: this unregistered
/// value, never `otp`.
pub const AMR: &str = "email_link";

/// How long a link works.
pub const VALIDITY_MINUTES: u32 = 10;

const SENDS_PURPOSE: &str = "magic-link-sends";

static TRAITS: StepTraits = StepTraits {
    amr: &[AMR],
    callback: true,
    ..StepTraits::new(NAME, Assurance::NOT_AN_AUTHENTICATOR, &["magic_link"])
};

/// The step's state, kept with the flow.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LinkScratch {
    /// Hash of the newest link: an older one no longer works.
    #[serde(default)]
    latest: Option<String>,
    /// When a link was last sent (unix seconds): the resend cool-down.
    #[serde(default)]
    last_sent_at: Option<i64>,
}

/// What the binding of a link holds.
#[derive(Debug, Serialize, Deserialize)]
struct LinkBinding {
    /// Unix seconds (checked against the clock, not only the store's TTL).
    expires_at: i64,
}

pub struct MagicLinkStep;

/// The page: where the link went (the typed address, masked; none when a
/// customer identifier was typed), how long it works, "send a new link".
fn page(cx: &StepCx<'_>) -> Challenge {
    let page = Challenge::new("magic_link")
        .with("method", NAME)
        .with("valid_minutes", VALIDITY_MINUTES)
        .with("resend", true);
    match cx.identifier.and_then(|i| Email::parse(i).ok()) {
        Some(typed) => page.with(
            "destination",
            super::one_time_code::mask_email(typed.as_str()),
        ),
        None => page,
    }
}

impl MagicLinkStep {
    /// Binds a new link to the flow and, for a known account, emails it in
    /// the background. `false` when the hourly cap of the address is reached.
    async fn send(&self, cx: &StepCx<'_>, scratch: &mut LinkScratch) -> Result<bool, CoreError> {
        let who = match cx.subject() {
            Some(u) => u.email.normalized(),
            None => cx.identifier.unwrap_or_default().trim().to_lowercase(),
        };
        let sends = crate::throttle::Throttle::code_sends(
            &cx.ports.kek.mac(SENDS_PURPOSE, who.as_bytes()),
            super::one_time_code::MAX_SENDS_PER_HOUR as u32,
        );
        if !cx.ports.throttle.spend(sends).await? {
            return Ok(false);
        }
        let now = cx.ports.clock.now().unix_timestamp();
        let validity = i64::from(VALIDITY_MINUTES) * 60;
        let token = crate::random::token();
        let binding = CallbackBinding {
            flow_id: cx.flow_id.to_owned(),
            method: ID.clone(),
            value: serde_json::to_value(LinkBinding {
                expires_at: now + validity,
            })
            .map_err(|e| CoreError::Internal(e.to_string()))?,
            survives_other_browsers: true,
        };
        cx.ports
            .flows
            // Kept an hour past expiry so that a late click is told the link
            // expired (checked above against the clock) rather than unknown.
            .bind_callback(
                &token,
                &binding,
                Duration::from_secs(validity as u64 + 3600),
            )
            .await?;
        scratch.latest = Some(TokenHash::of(&token).as_str().to_owned());
        scratch.last_sent_at = Some(now);
        if let Some(user) = cx.subject() {
            let mut fields = serde_json::Map::new();
            fields.insert(
                "url".into(),
                format!("{}/login/callback?token={token}", cx.ports.issuer).into(),
            );
            fields.insert("valid_minutes".into(), VALIDITY_MINUTES.into());
            let n = Notification {
                message: Message::Method {
                    template: NAME.into(),
                    fields,
                },
                locale: cx.locale.to_owned(),
                theme: cx.client.theme.clone(),
                client_name: cx.client.name.clone(),
            };
            let (notifier, to) = (cx.ports.notifier.clone(), user.email.clone());
            tokio::spawn(async move {
                if let Err(e) = notifier.email(&to, &n).await {
                    tracing::warn!(error = %e, "sign-in link not delivered");
                }
            });
        }
        Ok(true)
    }

    /// Seconds before a new link may be sent, if any.
    fn cooldown_left(cx: &StepCx<'_>, scratch: &LinkScratch) -> Option<u32> {
        let last = scratch.last_sent_at?;
        let left = last + i64::from(cx.ports.settings.code_resend_cooldown_secs)
            - cx.ports.clock.now().unix_timestamp();
        (left > 0).then(|| u32::try_from(left).unwrap_or(u32::MAX))
    }

    /// The answer to an opened link.
    fn opened(&self, cx: &StepCx<'_>, input: &StepInput, scratch: &mut LinkScratch) -> StepOutcome {
        let refuse = |error| StepOutcome::Rejected {
            challenge: page(cx).with_error(error),
            count_failure: false,
        };
        let binding: Option<LinkBinding> = serde_json::from_value(input.binding().clone()).ok();
        let now = cx.ports.clock.now().unix_timestamp();
        if binding.is_none_or(|b| b.expires_at <= now) {
            return refuse("login.magic_link.expired");
        }
        let token = input.get("token").unwrap_or_default();
        if scratch.latest.as_deref() != Some(TokenHash::of(token).as_str()) {
            return refuse("login.magic_link.replaced");
        }
        if cx.subject().is_none() {
            // Unreachable: no link goes out for an unknown account.
            return refuse("login.magic_link.expired");
        }
        scratch.latest = None;
        StepOutcome::Passed(Proven::new(&[AMR], &[]))
    }
}

#[async_trait]
impl Step for MagicLinkStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "magic_link"
    }

    async fn applies(&self, _cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        // Every account has an address; an unknown one is answered the same.
        Ok(Applicability::Applies)
    }

    /// The first time the page is shown, a link is sent.
    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        let mut scratch: LinkScratch = cx.scratch();
        let mut page = page(cx);
        if scratch.last_sent_at.is_none() && !self.send(cx, &mut scratch).await? {
            page = page.with_error("login.magic_link.too_many_sent");
        }
        cx.set_scratch(&scratch)?;
        Ok(page)
    }

    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let mut scratch: LinkScratch = cx.scratch();
        let outcome = if input.is_callback() {
            self.opened(cx, input, &mut scratch)
        } else if input.get("resend") == Some("1") {
            let page = page(cx);
            StepOutcome::Again(match Self::cooldown_left(cx, &scratch) {
                Some(wait) => page
                    .with_error("login.magic_link.wait")
                    .with("wait_seconds", wait),
                None if self.send(cx, &mut scratch).await? => page.with("resent", true),
                None => page.with_error("login.magic_link.too_many_sent"),
            })
        } else {
            StepOutcome::Again(page(cx))
        };
        cx.set_scratch(&scratch)?;
        Ok(outcome)
    }
}
