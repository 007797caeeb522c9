//! Single logout on the server side: the client file keys of the logout
//! channels, and the sending of back-channel logout tokens by the webhook
//! delivery worker (`crate::webhooks`), whose outbox, leases and retries they
//! share. What a token says and when it is queued is
//! `idp_core::oidc::logout_channels`'.

use crate::config::ClientFile;
use anyhow::{anyhow, bail};
use idp_core::client::ClientRegistry;
use idp_core::keys::KeyRing;
use idp_core::oidc::logout_channels::{
    LOGOUT_TOKEN_TYPE, LogoutChannels, PendingLogoutToken, logout_token_claims,
};
use idp_core::webhooks::WebhookDelivery;
use std::sync::Arc;
use time::OffsetDateTime;

/// The logout channels of a client file: `backchannel_logout_uri` (an
/// absolute https URI, http only on a loopback address, no fragment:
/// Back-Channel Logout §2.2) and `frontchannel_logout_uri` (the same, and
/// of the scheme, host and port of one of its redirect URIs: Front-Channel
/// Logout §2), with their `*_session_required` flags.
pub(crate) fn parse_client_channels(f: &ClientFile) -> anyhow::Result<LogoutChannels> {
    if let Some(u) = &f.backchannel_logout_uri {
        check_logout_uri(u).map_err(|e| anyhow!("backchannel_logout_uri: {e}"))?;
    } else if f.backchannel_logout_session_required {
        bail!("backchannel_logout_session_required: set backchannel_logout_uri too");
    }
    if let Some(u) = &f.frontchannel_logout_uri {
        let parsed = check_logout_uri(u).map_err(|e| anyhow!("frontchannel_logout_uri: {e}"))?;
        let origin = parsed.origin();
        let same_origin = f
            .redirect_uris
            .iter()
            .filter_map(|r| url::Url::parse(r).ok())
            .any(|r| r.origin() == origin);
        if !same_origin {
            bail!(
                "frontchannel_logout_uri: must have the scheme, host and port of one of redirect_uris (Front-Channel Logout 1.0 §2)"
            );
        }
    } else if f.frontchannel_logout_session_required {
        bail!("frontchannel_logout_session_required: set frontchannel_logout_uri too");
    }
    Ok(LogoutChannels {
        backchannel_uri: f.backchannel_logout_uri.clone(),
        backchannel_session_required: f.backchannel_logout_session_required,
        frontchannel_uri: f.frontchannel_logout_uri.clone(),
        frontchannel_session_required: f.frontchannel_logout_session_required,
    })
}

fn check_logout_uri(u: &str) -> anyhow::Result<url::Url> {
    let p = url::Url::parse(u).map_err(|e| anyhow!("{u:?} is not an absolute URL ({e})"))?;
    if p.fragment().is_some() || !p.username().is_empty() || p.password().is_some() {
        bail!("{u:?} must have no fragment and no credentials");
    }
    match p.scheme() {
        "https" => Ok(p),
        "http" if crate::config::is_loopback(&p) => Ok(p),
        _ => bail!("{u:?}: must be an https URL (http is allowed only on a loopback address)"),
    }
}

/// Signs and posts the logout tokens of the outbox.
pub struct LogoutTokenSender {
    issuer: String,
    clients: Arc<ClientRegistry>,
    keys: Arc<KeyRing>,
}

/// The outcome of one logout token delivery attempt.
pub(crate) enum LogoutAttempt {
    Delivered,
    Failed(String),
    /// The client, or its back-channel URI, is gone: give up at once.
    Orphaned,
}

impl LogoutTokenSender {
    pub fn new(issuer: String, clients: Arc<ClientRegistry>, keys: Arc<KeyRing>) -> Self {
        Self {
            issuer,
            clients,
            keys,
        }
    }

    /// Whether any client registered a back-channel logout URI.
    pub fn has_receivers(&self) -> bool {
        self.clients
            .iter()
            .any(|c| c.protocol.logout.backchannel_uri.is_some())
    }

    /// The `logout_token` of delivery `d`, signed now with the client's ID
    /// token algorithm; `None` when its client no longer posts to `d.url`.
    fn token(&self, d: &WebhookDelivery, now: OffsetDateTime) -> Result<Option<String>, String> {
        let Some(client) = self.clients.get(&d.client_id.0) else {
            return Ok(None);
        };
        if client.protocol.logout.backchannel_uri.as_deref() != Some(d.url.as_str()) {
            return Ok(None);
        }
        let pending: PendingLogoutToken = serde_json::from_str(&d.payload)
            .map_err(|e| format!("unreadable logout token payload: {e}"))?;
        let claims = logout_token_claims(&self.issuer, &client.id, &pending, now);
        self.keys
            .current()
            .sign(client.id_token_alg, LOGOUT_TOKEN_TYPE, claims)
            .map(Some)
            .map_err(|e| format!("signing failed: {e}"))
    }

    /// Posts `logout_token=<jwt>` form-encoded (Back-Channel Logout §2.5);
    /// 200 or 204 (any 2xx) is delivered.
    pub(crate) async fn attempt(
        &self,
        http: &reqwest::Client,
        d: &WebhookDelivery,
        now: OffsetDateTime,
    ) -> LogoutAttempt {
        let token = match self.token(d, now) {
            Ok(Some(t)) => t,
            Ok(None) => return LogoutAttempt::Orphaned,
            Err(e) => return LogoutAttempt::Failed(e),
        };
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", &token)
            .finish();
        let res = http
            .post(&d.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::CACHE_CONTROL, "no-store")
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status().is_success() => LogoutAttempt::Delivered,
            Ok(r) => LogoutAttempt::Failed(format!("HTTP {}", r.status().as_u16())),
            Err(err) => LogoutAttempt::Failed(crate::webhooks::transport_error(&err.without_url())),
        }
    }
}
