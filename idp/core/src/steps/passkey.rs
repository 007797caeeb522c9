//! Passwordless login with a passkey: a discoverable WebAuthn credential
//! both identifies the user (its user handle is the user's id, set when the
//! key was enrolled through the [`webauthn`](super::webauthn) step) and
//! authenticates them, with user verification always required.
//!
//! No user is known when the page is shown: the browser lets the user pick
//! one of their passkeys for this site. The assertion names its user; the
//! credential must be one of that user's keys, checked against the key
//! stored for it.

use crate::domain::{UserId, UserStatus};
use crate::error::CoreError;
use crate::flow::{Applicability, Challenge, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use crate::steps::webauthn::{
    KeyUse, UserVerification, amr, browser_options, enrolled_keys, key_for, log_refusal, posted,
    proven, record_use, relying_party,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{DiscoverableAuthentication, PublicKeyCredential};

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "passkey";

static TRAITS: StepTraits = StepTraits {
    identifies: true,
    amr: &["hwk", "swk", "mfa"],
    needs_host_name: true,
    ..StepTraits::new(
        NAME,
        Assurance {
            phishing_resistant: true,
            ..Assurance::single(&[Factor::Possession, Factor::Verified])
        },
        &["webauthn"],
    )
};

pub struct PasskeyStep;

#[derive(Default, Serialize, Deserialize)]
struct PasskeyScratch {
    /// The options sent; single use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<DiscoverableAuthentication>,
}

impl PasskeyStep {
    async fn start(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        // Discoverable authentication always requires user verification,
        // whatever the second-factor setting says.
        let rp = relying_party(&cx.ports.webauthn, UserVerification::Required)?;
        let (rcr, state) = rp
            .start_discoverable_authentication()
            .map_err(|e| CoreError::Internal(format!("WebAuthn: {e}")))?;
        cx.set_scratch(&PasskeyScratch { state: Some(state) })?;
        Ok(Challenge::new("webauthn")
            .with("method", ID.as_str())
            .with("options", browser_options(&rcr)?))
    }

    async fn rejected(&self, cx: &mut StepCx<'_>) -> Result<StepOutcome, CoreError> {
        Ok(StepOutcome::Rejected {
            challenge: self.start(cx).await?.with_error("login.passkey.failed"),
            count_failure: true,
        })
    }
}

#[async_trait]
impl Step for PasskeyStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "webauthn"
    }

    /// Always: it is how the user signs in (keys are enrolled through the
    /// `webauthn` step, after another proof).
    async fn applies(&self, _cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        Ok(Applicability::Applies)
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        self.start(cx).await
    }

    /// RFC 8176 `amr`: `hwk` (or `swk` for a synced passkey) and `mfa`: the
    /// key is possessed and the authenticator verified the user (PIN or
    /// biometrics), which this step requires. See this module's `amr`.
    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let scratch: PasskeyScratch = cx.scratch();
        // Single use: whatever follows, this challenge is spent.
        cx.set_scratch(&PasskeyScratch::default())?;
        let Some(state) = scratch.state else {
            return self.rejected(cx).await;
        };
        let Some(posted) = posted::<PublicKeyCredential>(input) else {
            return Ok(StepOutcome::Rejected {
                challenge: self
                    .start(cx)
                    .await?
                    .with_error("login.webauthn.no_credential"),
                count_failure: false,
            });
        };
        let rp = relying_party(&cx.ports.webauthn, UserVerification::Required)?;
        let Ok((user_id, credential_id)) = rp.identify_discoverable_authentication(&posted) else {
            tracing::info!("passkey assertion without a user handle");
            return self.rejected(cx).await;
        };
        let user = match cx.ports.users.find_by_id(UserId(user_id)).await? {
            Some(u) if u.status == UserStatus::Active => u,
            _ => {
                tracing::info!(user = %user_id, "passkey of an unknown or inactive account");
                return self.rejected(cx).await;
            }
        };
        let keys = enrolled_keys(cx.ports, user.id).await?;
        // The user handle names the account; the credential must be one of its keys.
        let Some(key) = key_for(keys, credential_id) else {
            tracing::info!(user = %user.id, "passkey assertion by a credential this user does not have");
            return self.rejected(cx).await;
        };
        let result = match rp.finish_discoverable_authentication_v2(&posted, state, &key.passkey) {
            Ok(r) => r,
            Err(e) => {
                log_refusal(&ID, user.id, key.stored.id, &e);
                return self.rejected(cx).await;
            }
        };
        match record_use(cx.ports, &ID, &key, &result).await? {
            KeyUse::Recorded => {}
            KeyUse::PossibleClone => return self.rejected(cx).await,
            KeyUse::Concurrent => {
                return Ok(StepOutcome::Rejected {
                    challenge: self.start(cx).await?.with_error("login.webauthn.retry"),
                    count_failure: false,
                });
            }
        }
        let identifier = user.customer_id.as_str().to_owned();
        cx.identify(Some(user), identifier);
        // UV is required by the ceremony, so `result.user_verified()` holds.
        Ok(StepOutcome::Passed(proven(
            amr(result.backup_eligible(), result.user_verified()),
            Some(key.stored.id),
        )))
    }
}
