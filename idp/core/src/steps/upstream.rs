//! Sign-in through an upstream OpenID provider ("Continue with …"). The
//! page lists the upstreams the client offers; choosing one sends the browser
//! to that upstream's authorization endpoint (authorization code, PKCE S256,
//! fresh `state` and `nonce`, kept in this step's scratch); its answer comes
//! back to `/login/upstream/<name>/callback`, which the runner hands to this
//! step as a submission marked `callback`. The step checks that the answer
//! belongs to the request it sent (same upstream, same `state`, single use),
//! then has the adapter exchange the code and validate the ID token. What
//! the validated identity leads to (a linked account, a link to prove, a new
//! account) is the runner's decision (`oidc/federation.rs`).

use crate::error::CoreError;
use crate::federation::{UpstreamCallback, UpstreamError, UpstreamRequest};
use crate::flow::state::CallbackBinding;
use crate::flow::{Applicability, Challenge, Step, StepCx, StepInput, StepOutcome};
use crate::method::{Assurance, Factor, MethodId, StepTraits};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The method's id in client files, templates and URLs.
pub static ID: MethodId = MethodId::new(NAME);
const NAME: &str = "upstream";

static TRAITS: StepTraits = StepTraits {
    identifies: true,
    federates: true,
    callback: true,
    amr: &["fed"],
    ..StepTraits::new(NAME, Assurance::single(&[Factor::Knowledge]), &["upstream"])
};

pub struct UpstreamStep;

/// How long an upstream has to answer (the user signs in there meanwhile).
pub const ANSWER_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Default, Serialize, Deserialize)]
struct UpstreamScratch {
    /// The request sent, until its answer comes back (single use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<UpstreamRequest>,
}

fn page(cx: &StepCx<'_>) -> Challenge {
    let upstreams = cx.ports.upstreams.for_client(&cx.client.id);
    Challenge::new("upstream").with(
        "upstreams",
        serde_json::to_value(upstreams).unwrap_or_default(),
    )
}

fn refused(cx: &StepCx<'_>, message: &'static str) -> StepOutcome {
    StepOutcome::Rejected {
        challenge: page(cx).with_error(message),
        count_failure: false,
    }
}

/// The page's message for an adapter failure.
pub(crate) fn message_for(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Unknown(_) | UpstreamError::Unavailable(_) => "login.upstream.unavailable",
        UpstreamError::WrongIssuer(_) => "login.upstream.wrong_issuer",
        UpstreamError::Refused(_) | UpstreamError::Invalid(_) => "login.upstream.invalid",
    }
}

impl UpstreamStep {
    /// A button: start an authorization request at that upstream.
    async fn begin(&self, cx: &mut StepCx<'_>, name: &str) -> Result<StepOutcome, CoreError> {
        if !cx
            .ports
            .upstreams
            .for_client(&cx.client.id)
            .iter()
            .any(|u| u.name == name)
        {
            return Ok(refused(cx, "login.upstream.unavailable"));
        }
        let req = UpstreamRequest::new(name).with_max_age(cx.max_age);
        let location = match cx.ports.upstreams.authorization_url(&req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(upstream = name, error = %e, "upstream login could not start");
                return Ok(refused(cx, message_for(&e)));
            }
        };
        // The `state` leads the answer back to this flow (single use).
        let binding = CallbackBinding {
            flow_id: cx.flow_id.to_owned(),
            method: ID.clone(),
            value: serde_json::Value::Null,
            survives_other_browsers: false,
        };
        cx.ports
            .flows
            .bind_callback(&req.state, &binding, ANSWER_TTL)
            .await?;
        cx.set_scratch(&UpstreamScratch { pending: Some(req) })?;
        Ok(StepOutcome::Redirect { location })
    }

    /// The upstream's answer.
    async fn answer(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        let scratch: UpstreamScratch = cx.scratch();
        // Single use: whatever the answer, this request is spent.
        cx.set_scratch(&UpstreamScratch::default())?;
        let Some(req) = scratch.pending else {
            return Ok(refused(cx, "login.upstream.mismatch"));
        };
        let state = input.get("state").unwrap_or_default();
        let same_upstream = input.get("upstream") == Some(req.upstream.as_str());
        if !same_upstream || !bool::from(state.as_bytes().ct_eq(req.state.as_bytes())) {
            tracing::info!(
                upstream = req.upstream,
                "upstream answer does not match the request"
            );
            return Ok(refused(cx, "login.upstream.mismatch"));
        }
        if let Some(error) = input.get("error") {
            // The upstream's own words are not shown: they are its text, not
            // ours, and could be anything.
            tracing::info!(
                upstream = req.upstream,
                error,
                "upstream answered with an error"
            );
            let msg = if error == "access_denied" {
                "login.upstream.cancelled"
            } else {
                "login.upstream.invalid"
            };
            return Ok(refused(cx, msg));
        }
        let Some(code) = input.secret("code").filter(|c| !c.expose().is_empty()) else {
            return Ok(refused(cx, "login.upstream.mismatch"));
        };
        let cb = UpstreamCallback {
            code,
            iss: input.get("iss").map(str::to_owned),
        };
        match cx.ports.upstreams.finish(&req, &cb).await {
            Ok(identity) => Ok(StepOutcome::Federated(Box::new(identity))),
            Err(e) => {
                tracing::warn!(upstream = req.upstream, error = %e, "upstream answer refused");
                Ok(refused(cx, message_for(&e)))
            }
        }
    }
}

#[async_trait]
impl Step for UpstreamStep {
    fn traits(&self) -> &StepTraits {
        &TRAITS
    }

    fn template(&self, _enrolling: bool) -> &'static str {
        "upstream"
    }

    /// When the client offers at least one upstream.
    async fn applies(&self, cx: &StepCx<'_>) -> Result<Applicability, CoreError> {
        Ok(if cx.ports.upstreams.for_client(&cx.client.id).is_empty() {
            Applicability::Skip
        } else {
            Applicability::Applies
        })
    }

    async fn present(&self, cx: &mut StepCx<'_>) -> Result<Challenge, CoreError> {
        Ok(page(cx))
    }

    /// RFC 8176 `amr` of an upstream login: `fed`, plus what the upstream
    /// reported (added by the runner once the identity is resolved).
    async fn submit(
        &self,
        cx: &mut StepCx<'_>,
        input: &StepInput,
    ) -> Result<StepOutcome, CoreError> {
        if input.is_callback() {
            return self.answer(cx, input).await;
        }
        let name = input.get("upstream").unwrap_or_default().to_owned();
        self.begin(cx, &name).await
    }
}
