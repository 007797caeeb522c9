//! The webhook delivery worker: every `[webhook_delivery] poll_interval_secs`
//! each node claims the deliveries that are due (under a lease, so two nodes
//! never send the same one at once), signs them with their endpoint's secret
//! (Standard Webhooks headers, see `idp_core::webhooks`) and posts them. A 2xx
//! answer marks a delivery delivered; anything else (another status, a
//! timeout, a refused connection, a redirect: redirects are not followed)
//! schedules the next attempt with backoff, or gives up. The outbox is in the
//! database, so what is not yet delivered survives a restart.
//!
//! Back-channel logout tokens share the outbox (type
//! `oidc.backchannel_logout`): they are signed at each attempt and posted
//! form-encoded by [`LogoutTokenSender`](crate::logout_channels::LogoutTokenSender)
//! instead of being signed as webhooks.

use idp_core::clock::SharedClock;
use idp_core::ports::WebhookRepo;
use idp_core::webhooks::{RetryPolicy, WebhookDelivery, WebhookEndpoint, WebhookEventType};
use std::sync::Arc;
use std::time::Duration;

/// Sends the outbox's due deliveries.
pub struct WebhookDispatcher {
    repo: Arc<dyn WebhookRepo>,
    endpoints: Arc<Vec<WebhookEndpoint>>,
    clock: SharedClock,
    http: reqwest::Client,
    policy: RetryPolicy,
    settings: crate::config::WebhookDeliverySettings,
    logout: Option<Arc<crate::logout_channels::LogoutTokenSender>>,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassOutcome {
    pub delivered: usize,
    /// Failed attempts that will be tried again.
    pub retrying: usize,
    /// Deliveries given up in this pass.
    pub given_up: usize,
}

impl PassOutcome {
    pub fn attempted(&self) -> usize {
        self.delivered + self.retrying + self.given_up
    }
}

/// The outcome of one attempt.
enum Attempt {
    Delivered,
    Failed(String),
    /// Its endpoint is no longer configured: give up at once.
    Orphaned,
}

impl WebhookDispatcher {
    pub fn new(
        repo: Arc<dyn WebhookRepo>,
        endpoints: Arc<Vec<WebhookEndpoint>>,
        clock: SharedClock,
        settings: crate::config::WebhookDeliverySettings,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(u64::from(settings.timeout_secs)))
            .user_agent(concat!("idp-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            repo,
            endpoints,
            clock,
            http,
            policy: settings.retry_policy(),
            settings,
            logout: None,
        })
    }

    /// Also sends the back-channel logout tokens of the outbox.
    pub fn with_logout_tokens(
        mut self,
        sender: Arc<crate::logout_channels::LogoutTokenSender>,
    ) -> Self {
        self.logout = Some(sender);
        self
    }

    /// Whether any endpoint or back-channel logout receiver is configured
    /// (else the worker need not run).
    pub fn has_endpoints(&self) -> bool {
        !self.endpoints.is_empty() || self.logout.as_ref().is_some_and(|l| l.has_receivers())
    }

    /// One pass: claims what is due now (by the injected clock) and sends it,
    /// all requests of the batch at once.
    pub async fn run_once(&self) -> Result<PassOutcome, idp_core::ports::RepoError> {
        let now = self.clock.now();
        // Long enough for every request of the batch to finish or time out.
        let lease = time::Duration::seconds(i64::from(self.settings.timeout_secs) + 30);
        let claimed = self
            .repo
            .claim_due(now, now + lease, u64::from(self.settings.batch_size))
            .await?;
        let mut tasks = tokio::task::JoinSet::new();
        for d in claimed {
            let endpoint = self
                .endpoints
                .iter()
                .find(|e| e.is(&d.client_id, &d.url))
                .cloned();
            let http = self.http.clone();
            let at = now.unix_timestamp();
            let logout = self.logout.clone();
            tasks.spawn(async move {
                use crate::logout_channels::LogoutAttempt;
                let outcome = match (d.event_type, endpoint, logout) {
                    (WebhookEventType::BackchannelLogout, _, Some(l)) => {
                        match l.attempt(&http, &d, now).await {
                            LogoutAttempt::Delivered => Attempt::Delivered,
                            LogoutAttempt::Failed(e) => Attempt::Failed(e),
                            LogoutAttempt::Orphaned => Attempt::Orphaned,
                        }
                    }
                    (WebhookEventType::BackchannelLogout, _, None) => Attempt::Orphaned,
                    (_, Some(e), _) => attempt(&http, &e, &d, at).await,
                    (_, None, _) => Attempt::Orphaned,
                };
                (d, outcome)
            });
        }
        let mut pass = PassOutcome::default();
        while let Some(joined) = tasks.join_next().await {
            let Ok((d, outcome)) = joined else {
                continue;
            };
            let done = self.clock.now();
            match outcome {
                Attempt::Delivered => {
                    self.repo.mark_delivered(d.id, d.attempts, done).await?;
                    pass.delivered += 1;
                }
                Attempt::Failed(error) => {
                    let retry_at = self.policy.next_attempt(d.attempts + 1, d.created_at, done);
                    tracing::warn!(
                        delivery = %d.id, event = %d.event_id, client = %d.client_id,
                        attempts = d.attempts + 1, error, gave_up = retry_at.is_none(),
                        "webhook delivery failed"
                    );
                    self.repo
                        .mark_failed(d.id, d.attempts, &error, retry_at)
                        .await?;
                    if retry_at.is_some() {
                        pass.retrying += 1;
                    } else {
                        pass.given_up += 1;
                    }
                }
                Attempt::Orphaned => {
                    tracing::warn!(delivery = %d.id, client = %d.client_id, "webhook endpoint no longer configured; delivery given up");
                    self.repo
                        .mark_failed(
                            d.id,
                            d.attempts,
                            "the endpoint is no longer configured",
                            None,
                        )
                        .await?;
                    pass.given_up += 1;
                }
            }
        }
        Ok(pass)
    }

    /// Runs [`run_once`](Self::run_once) every `poll_interval_secs` (the
    /// first pass one interval after start), forever.
    pub fn spawn(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        let every = Duration::from_secs(u64::from(self.settings.poll_interval_secs));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                }
            }
        })
    }
}

/// Posts one delivery, signed at Unix time `at`.
async fn attempt(
    http: &reqwest::Client,
    e: &WebhookEndpoint,
    d: &WebhookDelivery,
    at: i64,
) -> Attempt {
    let id = d.event_id.to_string();
    let signature = e.secret.sign(&id, at, &d.payload);
    let res = http
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", at.to_string())
        .header("webhook-signature", signature)
        .body(d.payload.clone())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) => Attempt::Failed(format!("HTTP {}", r.status().as_u16())),
        // Without the URL: it may carry a token in its query.
        Err(err) => Attempt::Failed(transport_error(&err.without_url())),
    }
}

pub(crate) fn transport_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text.chars().take(500).collect()
}
