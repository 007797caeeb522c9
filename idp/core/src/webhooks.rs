//! Outbound provisioning: signed webhooks to relying platforms.
//!
//! A platform subscribes, in its client file, endpoints to event types. When
//! an event happens, [`Events::emit`](crate::events::Events::emit) writes one
//! [`WebhookDelivery`] per subscribed endpoint into the outbox (the
//! [`WebhookRepo`](crate::ports::WebhookRepo) port, a database table), so a
//! delivery survives a receiver outage and a restart of the provider. A
//! worker (in the server crate) claims due deliveries under a lease, so that
//! several nodes never send the same delivery at the same time, posts them,
//! and records the outcome: delivered, or failed with the next attempt
//! scheduled by [`RetryPolicy`] (exponential backoff with jitter, capped), or
//! given up for good.
//!
//! Requests follow the Standard Webhooks convention
//! (<https://www.standardwebhooks.com>): headers `webhook-id` (the event id,
//! the same on every retry: receivers de-duplicate by it),
//! `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`). Delivery is at
//! least once: a receiver that processed a request but whose answer was lost
//! gets it again, with the same id.

use crate::domain::ClientId;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// What happened. `user.deleted` has no code path yet (accounts cannot be
/// deleted); it is accepted in subscriptions so platforms can subscribe now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum WebhookEventType {
    #[serde(rename = "user.created")]
    UserCreated,
    /// Email (address or its verification) or name changed.
    #[serde(rename = "user.updated")]
    UserUpdated,
    /// A user's roles in an organization changed (added, changed, removed).
    #[serde(rename = "user.roles_changed")]
    UserRolesChanged,
    #[serde(rename = "user.deleted")]
    UserDeleted,
    #[serde(rename = "organization.validated")]
    OrganizationValidated,
    /// Not a subscribable event: a logout token for a client's
    /// `backchannel_logout_uri` (see `oidc::logout_channels`), sent through
    /// the same outbox and worker. Not in [`Self::ALL`].
    #[serde(rename = "oidc.backchannel_logout")]
    BackchannelLogout,
}

impl WebhookEventType {
    pub const ALL: [Self; 5] = [
        Self::UserCreated,
        Self::UserUpdated,
        Self::UserRolesChanged,
        Self::UserDeleted,
        Self::OrganizationValidated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserCreated => "user.created",
            Self::UserUpdated => "user.updated",
            Self::UserRolesChanged => "user.roles_changed",
            Self::UserDeleted => "user.deleted",
            Self::OrganizationValidated => "organization.validated",
            Self::BackchannelLogout => "oidc.backchannel_logout",
        }
    }

    /// A subscribable event type (one of [`Self::ALL`]).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The type of a stored delivery: a subscribable one or
    /// [`Self::BackchannelLogout`].
    pub fn parse_stored(s: &str) -> Option<Self> {
        Self::parse(s)
            .or((s == Self::BackchannelLogout.as_str()).then_some(Self::BackchannelLogout))
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, as every subscribed endpoint receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// UUID v7; the `webhook-id` header and the body's `id`.
    pub id: Uuid,
    pub event_type: WebhookEventType,
    pub occurred_at: OffsetDateTime,
    pub data: serde_json::Value,
}

impl WebhookEvent {
    pub fn new(event_type: WebhookEventType, at: OffsetDateTime, data: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type,
            occurred_at: at,
            data,
        }
    }

    /// The request body: `{"id", "type", "timestamp" (RFC 3339), "data"}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type.as_str(),
            "timestamp": self.occurred_at.format(&Rfc3339).unwrap_or_default(),
            "data": self.data,
        })
        .to_string()
    }
}

/// The key an endpoint's requests are signed with. Never stored in the
/// database: it comes from configuration (an environment variable or a
/// file), and its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

/// Fewest bytes of key material a webhook secret must hold.
pub const MIN_SECRET_BYTES: usize = 32;

impl WebhookSecret {
    /// `whsec_<base64>` (the Standard Webhooks form: the key is the decoded
    /// bytes), or any other text, whose bytes are the key. Either way at
    /// least [`MIN_SECRET_BYTES`] bytes of key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let key = match text.strip_prefix("whsec_") {
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|_| "a whsec_ secret must be followed by standard base64".to_owned())?,
            None => text.as_bytes().to_vec(),
        };
        if key.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "must hold at least {MIN_SECRET_BYTES} bytes of key (has {})",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// The `webhook-signature` value for a request: `v1,<base64 of
    /// HMAC-SHA256("{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        use hmac::{KeyInit, Mac};
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        m.update(format!("{id}.{timestamp}.").as_bytes());
        m.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
    }
}

/// A subscribed endpoint of a relying platform (`[[webhooks]]` of its
/// client file). Identified by its client and URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub client_id: ClientId,
    /// https (http only on a loopback address), checked at load time.
    pub url: String,
    pub events: BTreeSet<WebhookEventType>,
    pub secret: WebhookSecret,
}

impl WebhookEndpoint {
    pub fn wants(&self, t: WebhookEventType) -> bool {
        self.events.contains(&t)
    }

    pub fn is(&self, client_id: &ClientId, url: &str) -> bool {
        self.client_id == *client_id && self.url == url
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted, under a lease).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: too many attempts, too old, or its endpoint is gone.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One event to one endpoint: a row of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub event_id: Uuid,
    pub event_type: WebhookEventType,
    pub client_id: ClientId,
    pub url: String,
    /// The exact request body (JSON text).
    pub payload: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not attempted before this.
    pub next_attempt_at: OffsetDateTime,
    /// Claimed by a worker until then (absent or past: free to claim).
    pub lease_until: Option<OffsetDateTime>,
    /// What went wrong last (status code or transport error; never a secret).
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
}

impl WebhookDelivery {
    /// A new pending delivery of `event` to `endpoint`, due at once.
    pub fn new(event: &WebhookEvent, endpoint: &WebhookEndpoint, body: &str) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_id: event.id,
            event_type: event.event_type,
            client_id: endpoint.client_id.clone(),
            url: endpoint.url.clone(),
            payload: body.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: event.occurred_at,
            lease_until: None,
            last_error: None,
            created_at: event.occurred_at,
            delivered_at: None,
        }
    }
}

/// When failed deliveries are tried again, and when they are given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubles after each further one.
    pub base_delay_secs: u32,
    /// Longest delay between two attempts.
    pub max_delay_secs: u32,
    /// Give up after this many attempts.
    pub max_attempts: u32,
    /// Give up on deliveries older than this.
    pub give_up_after_secs: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay_secs: 10,
            max_delay_secs: 3600,
            max_attempts: 100,
            give_up_after_secs: 3 * 24 * 3600,
        }
    }
}

impl RetryPolicy {
    /// The shortest wait after the `attempts`-th failed attempt (1-based):
    /// `base · 2^(attempts-1)`, capped.
    pub fn min_delay(&self, attempts: u32) -> time::Duration {
        let exp = attempts.saturating_sub(1).min(31);
        let secs = u64::from(self.base_delay_secs)
            .saturating_mul(1u64 << exp)
            .min(u64::from(self.max_delay_secs));
        time::Duration::seconds(secs as i64)
    }

    /// When to try again after the `attempts`-th failed attempt, `None` to
    /// give up. The delay is [`min_delay`](Self::min_delay) plus up to a
    /// fifth of it at random, so that receivers coming back up are not hit by
    /// every delivery at the same second.
    pub fn next_attempt(
        &self,
        attempts: u32,
        created_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if attempts >= self.max_attempts {
            return None;
        }
        let delay = self.min_delay(attempts);
        let spread = (delay.whole_milliseconds() / 5).clamp(0, i128::from(u32::MAX - 1)) as u32;
        let jitter = time::Duration::milliseconds(i64::from(crate::random::below(spread + 1)));
        let at = now + delay + jitter;
        let deadline = created_at + time::Duration::seconds(i64::from(self.give_up_after_secs));
        (at <= deadline).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_their_names() {
        for t in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(WebhookEventType::parse("user.exploded"), None);
        // Logout tokens share the outbox but cannot be subscribed to.
        assert_eq!(WebhookEventType::parse("oidc.backchannel_logout"), None);
        assert_eq!(
            WebhookEventType::parse_stored("oidc.backchannel_logout"),
            Some(WebhookEventType::BackchannelLogout)
        );
        assert_eq!(
            WebhookEventType::parse_stored("user.created"),
            Some(WebhookEventType::UserCreated)
        );
    }

    #[test]
    fn signature_follows_standard_webhooks() {
        // A whsec_ secret is base64; the signed content is
        // "{id}.{timestamp}.{body}", the signature v1 and standard base64.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err();
        assert!(secret.contains("at least 32"), "{secret}");
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjU")
            .expect("36 bytes of key");
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        use hmac::{KeyInit, Mac};
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYqrTwjU")
            .unwrap();
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#);
        assert_eq!(
            sig,
            format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
        );
        assert!(!format!("{secret:?}").contains("MfKQ"));
        // Plain text keys are their bytes.
        assert!(WebhookSecret::parse("short").is_err());
        assert!(WebhookSecret::parse(&"k".repeat(32)).is_ok());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
    }

    #[test]
    fn retries_back_off_exponentially_capped_then_give_up() {
        let p = RetryPolicy::default();
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(p.min_delay(1), time::Duration::seconds(10));
        assert_eq!(p.min_delay(2), time::Duration::seconds(20));
        assert_eq!(p.min_delay(5), time::Duration::seconds(160));
        assert_eq!(p.min_delay(20), time::Duration::seconds(3600));
        assert_eq!(p.min_delay(200), time::Duration::seconds(3600));
        for attempts in 1..12 {
            let next = p.next_attempt(attempts, t0, t0).expect("retried");
            let d = next - t0;
            let min = p.min_delay(attempts);
            assert!(d >= min && d <= min + min / 5, "{attempts}: {d}");
        }
        assert_eq!(p.next_attempt(p.max_attempts, t0, t0), None);
        let late = t0 + time::Duration::days(3) - time::Duration::seconds(5);
        assert_eq!(p.next_attempt(3, t0, late), None, "older than 3 days");
    }
}
