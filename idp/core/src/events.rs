//! Webhook events as services emit them: one delivery per subscribed
//! endpoint, written to the outbox (see [`crate::webhooks`]). The change an
//! event reports has already happened: a failure to queue is logged, not
//! returned.

use crate::clock::SharedClock;
use crate::domain::{Organization, Role, User, UserId};
use crate::ports::{UserRepo, WebhookRepo};
use crate::webhooks::{WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookEventType};
use std::sync::Arc;

/// Emits webhook events to the outbox.
#[derive(Clone)]
pub struct Events {
    endpoints: Arc<Vec<WebhookEndpoint>>,
    outbox: Arc<dyn WebhookRepo>,
    users: Arc<dyn UserRepo>,
    clock: SharedClock,
}

/// A user as webhooks describe it.
fn webhook_user(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "customer_id": u.customer_id.as_str(),
        "email": u.email.as_str(),
        "email_verified": u.email_verified,
        "name": u.name,
    })
}

impl Events {
    pub fn new(
        endpoints: Arc<Vec<WebhookEndpoint>>,
        outbox: Arc<dyn WebhookRepo>,
        users: Arc<dyn UserRepo>,
        clock: SharedClock,
    ) -> Self {
        Self {
            endpoints,
            outbox,
            users,
            clock,
        }
    }

    /// Queues `event` for every endpoint subscribed to its type (one
    /// delivery each, written together).
    pub async fn emit(&self, event: WebhookEvent) {
        let body = event.body();
        let deliveries: Vec<_> = self
            .endpoints
            .iter()
            .filter(|e| e.wants(event.event_type))
            .map(|e| WebhookDelivery::new(&event, e, &body))
            .collect();
        if deliveries.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.enqueue(&deliveries).await {
            tracing::error!(error = %e, event = %event.event_type, id = %event.id, "webhook event not queued");
        }
    }

    /// Emits `kind` about `user` (`data.user`).
    pub async fn user(&self, kind: WebhookEventType, user: &User) {
        let data = serde_json::json!({"user": webhook_user(user)});
        self.emit(WebhookEvent::new(kind, self.clock.now(), data))
            .await;
    }

    /// Emits `organization.validated` about `org`.
    pub async fn organization(&self, kind: WebhookEventType, data: serde_json::Value) {
        self.emit(WebhookEvent::new(kind, self.clock.now(), data))
            .await;
    }

    /// Emits `user.roles_changed`: `user`'s roles in `org` are now `roles`
    /// (empty: no longer a member).
    pub async fn roles_changed(&self, org: &Organization, user: UserId, roles: &[Role]) {
        let user = match self.users.find_by_id(user).await {
            Ok(Some(u)) => webhook_user(&u),
            Ok(None) => serde_json::json!({"id": user}),
            Err(e) => {
                tracing::warn!(error = %e, "webhook: user not read, sending its id only");
                serde_json::json!({"id": user})
            }
        };
        let data = serde_json::json!({
            "user": user,
            "organization": {"id": org.id, "name": org.name, "status": org.status.as_str()},
            "roles": roles,
        });
        self.emit(WebhookEvent::new(
            WebhookEventType::UserRolesChanged,
            self.clock.now(),
            data,
        ))
        .await;
    }
}
