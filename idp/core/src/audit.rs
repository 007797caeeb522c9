//! The audit trail as services write it: who did what, when, from where.
//! A failure to record is logged, not returned: the event already happened.

use crate::clock::SharedClock;
use crate::domain::{AuditEvent, ClientId, OrgId, RequestMeta, UserId};
use crate::ports::AuditRepo;
use std::sync::Arc;

/// Records security events (see `ports::AuditRepo`).
#[derive(Clone)]
pub struct Audit {
    repo: Arc<dyn AuditRepo>,
    clock: SharedClock,
}

impl Audit {
    pub fn new(repo: Arc<dyn AuditRepo>, clock: SharedClock) -> Self {
        Self { repo, clock }
    }

    /// Records `kind` about `user`, from `client`.
    pub async fn record(
        &self,
        kind: &str,
        user: Option<UserId>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) {
        self.record_in_org(kind, user, None, client, meta, detail)
            .await;
    }

    /// Records an event that concerns an organization (listed to its
    /// administrators as well as to the user).
    pub async fn record_in_org(
        &self,
        kind: &str,
        user: Option<UserId>,
        org: Option<OrgId>,
        client: Option<&ClientId>,
        meta: &RequestMeta,
        detail: serde_json::Value,
    ) {
        let ev = AuditEvent {
            id: uuid::Uuid::now_v7(),
            at: self.clock.now(),
            kind: kind.to_owned(),
            user_id: user,
            client_id: client.cloned(),
            org_id: org,
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
            detail,
        };
        if let Err(e) = self.repo.record(&ev).await {
            tracing::error!(error = %e, kind, "audit event not recorded");
        }
    }
}
