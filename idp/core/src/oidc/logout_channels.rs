//! Single logout: telling every client of a single sign-on session that the
//! session ended.
//!
//! - **Back-channel** (OpenID Connect Back-Channel Logout 1.0): when a
//!   session ends ([`SessionEndListener`]), one outbox row per client of the
//!   session that registered a `backchannel_logout_uri` is written to the
//!   webhook outbox (type [`WebhookEventType::BackchannelLogout`]), so the
//!   delivery is retried with the webhooks' backoff and survives a restart.
//!   The row holds the claims that stay the same on every attempt
//!   ([`PendingLogoutToken`]: `jti`, `sub`, `sid`); the worker signs a fresh
//!   `logout_token` at each attempt ([`logout_token_claims`]), so a token
//!   delivered after an outage is not already expired. Receivers
//!   de-duplicate by `jti`.
//! - **Front-channel** (OpenID Connect Front-Channel Logout 1.0): the logout
//!   page shows one iframe per client of the session that registered a
//!   `frontchannel_logout_uri` ([`frontchannel_url`]).
//! - The receiving side's checks (Back-Channel Logout §2.6), for relying
//!   parties written with this crate (the demo portals):
//!   [`check_logout_token`].

use crate::client::{Client, ClientRegistry};
use crate::clock::SharedClock;
use crate::domain::{ClientId, RequestMeta};
use crate::ports::WebhookRepo;
use crate::sessions::{EndedSession, SessionEndListener};
use crate::webhooks::{DeliveryStatus, WebhookDelivery, WebhookEventType};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

/// The `events` member a logout token carries (Back-Channel Logout §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The `typ` header of a logout token (Back-Channel Logout §2.4, explicit
/// typing).
pub const LOGOUT_TOKEN_TYPE: &str = "logout+jwt";

/// How long a logout token is valid after it is signed: short, as §2.4
/// recommends (it is signed again at each attempt).
pub const LOGOUT_TOKEN_LIFETIME_SECS: i64 = 120;

/// How far in the past or the future a received token's `iat` may be
/// (Back-Channel Logout §2.6 step 3, ID token validation's `iat` rule).
pub const ACCEPTED_IAT_SKEW_SECS: i64 = 300;

/// A client's logout channels (its file's `backchannel_logout_*` and
/// `frontchannel_logout_*` keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogoutChannels {
    /// Where logout tokens are POSTed (https, or http on a loopback address).
    pub backchannel_uri: Option<String>,
    /// The client asked for `sid` in logout tokens (they always carry it).
    pub backchannel_session_required: bool,
    /// Loaded in an iframe of the logout page.
    pub frontchannel_uri: Option<String>,
    /// The iframe URL carries `iss` and `sid`.
    pub frontchannel_session_required: bool,
}

impl LogoutChannels {
    /// The client hears of a session's end (back- or front-channel).
    pub fn is_listening(&self) -> bool {
        self.backchannel_uri.is_some() || self.frontchannel_uri.is_some()
    }
}

/// What an outbox row of a logout token holds (its `payload`, JSON): the
/// claims that are the same on every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogoutToken {
    /// Unique per token; receivers de-duplicate retries by it.
    pub jti: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl PendingLogoutToken {
    /// The token for `client` about `ended`, `sub` being the user as
    /// the client knows them (`subject`: pairwise or public). `sid` is always there, even
    /// when the client did not ask for it
    /// (`backchannel_logout_session_required`): one session ended, and a
    /// token without `sid` would tell the portal to end every session of
    /// the user (§2.4), including ones still alive at the provider.
    pub fn for_client(subject: String, ended: &EndedSession) -> Self {
        Self {
            jti: Uuid::new_v4().to_string(),
            sub: subject,
            sid: Some(ended.sid.clone()),
        }
    }
}

/// The claims of a logout token signed at `now` (Back-Channel Logout
/// §2.4): `iss`, `aud`, `iat`, `exp`, `jti`, `events`, `sub`, `sid`; never a `nonce` (§2.4: it is forbidden, so a logout token
/// cannot pass for an ID token).
pub fn logout_token_claims(
    issuer: &str,
    client: &ClientId,
    pending: &PendingLogoutToken,
    now: OffsetDateTime,
) -> Map<String, Value> {
    let now = now.unix_timestamp();
    let mut c = Map::new();
    c.insert("iss".into(), issuer.into());
    c.insert("aud".into(), client.0.clone().into());
    c.insert("iat".into(), now.into());
    c.insert("exp".into(), (now + LOGOUT_TOKEN_LIFETIME_SECS).into());
    c.insert("jti".into(), pending.jti.clone().into());
    c.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
    c.insert("sub".into(), pending.sub.clone().into());
    if let Some(sid) = &pending.sid {
        c.insert("sid".into(), sid.clone().into());
    }
    c
}

/// The iframe URL of `client` on the logout page of session `sid`
/// (Front-Channel Logout §2: `iss` and `sid` added when the client
/// requires them), if it registered a `frontchannel_logout_uri`.
pub fn frontchannel_url(client: &Client, issuer: &str, sid: &str) -> Option<String> {
    let uri = client.protocol.logout.frontchannel_uri.as_ref()?;
    if !client.protocol.logout.frontchannel_session_required {
        return Some(uri.clone());
    }
    let mut url = url::Url::parse(uri).ok()?;
    url.query_pairs_mut()
        .append_pair("iss", issuer)
        .append_pair("sid", sid);
    Some(url.into())
}

/// Queues a logout token for every client of each ended session that
/// registered a `backchannel_logout_uri`.
pub struct SingleLogout {
    clients: Arc<ClientRegistry>,
    subjects: Arc<super::subjects::Subjects>,
    outbox: Arc<dyn WebhookRepo>,
    clock: SharedClock,
}

impl SingleLogout {
    pub fn new(
        clients: Arc<ClientRegistry>,
        subjects: Arc<super::subjects::Subjects>,
        outbox: Arc<dyn WebhookRepo>,
        clock: SharedClock,
    ) -> Self {
        Self {
            clients,
            subjects,
            outbox,
            clock,
        }
    }

    /// The outbox rows for `ended`: one per client with a back-channel URI.
    pub fn deliveries(&self, ended: &EndedSession) -> Vec<WebhookDelivery> {
        let now = self.clock.now();
        let event_id = Uuid::now_v7();
        ended
            .clients
            .iter()
            .filter_map(|id| self.clients.get(id))
            .filter_map(|c| {
                let url = c.protocol.logout.backchannel_uri.clone()?;
                let pending =
                    PendingLogoutToken::for_client(self.subjects.sub(&c, ended.user_id), ended);
                Some(WebhookDelivery {
                    id: Uuid::now_v7(),
                    event_id,
                    event_type: WebhookEventType::BackchannelLogout,
                    client_id: c.id.clone(),
                    url,
                    payload: serde_json::to_string(&pending).ok()?,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    next_attempt_at: now,
                    lease_until: None,
                    last_error: None,
                    created_at: now,
                    delivered_at: None,
                })
            })
            .collect()
    }
}

#[async_trait]
impl SessionEndListener for SingleLogout {
    async fn session_ended(&self, ended: &EndedSession, _meta: &RequestMeta) {
        let deliveries = self.deliveries(ended);
        if deliveries.is_empty() {
            return;
        }
        if let Err(e) = self.outbox.enqueue(&deliveries).await {
            tracing::error!(error = %e, sid = %ended.sid, "back-channel logout not queued");
        }
    }
}

/// Why a received logout token is refused (Back-Channel Logout §2.6: the
/// receiver answers 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("logout token refused: {0}")]
pub struct LogoutTokenRefused(pub &'static str);

/// What a checked logout token says: end the sessions of `sub` or `sid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutTokenClaims {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
}

/// The checks of a logout token whose signature verified against the
/// provider's JWKS (Back-Channel Logout §2.6), in order.
pub fn check_logout_token(
    claims: &Map<String, Value>,
    typ: Option<&str>,
    issuer: &str,
    client_id: &str,
    now: OffsetDateTime,
) -> Result<LogoutTokenClaims, LogoutTokenRefused> {
    check_type(typ)?;
    check_issuer(claims, issuer)?;
    check_audience(claims, client_id)?;
    check_issued_at(claims, now)?;
    check_events(claims)?;
    let (sub, sid) = check_subject_or_session(claims)?;
    check_no_nonce(claims)?;
    let jti = check_jti(claims)?;
    Ok(LogoutTokenClaims { sub, sid, jti })
}

/// Back-Channel Logout §2.4 (explicit typing): `typ` is `logout+jwt` when
/// present.
fn check_type(typ: Option<&str>) -> Result<(), LogoutTokenRefused> {
    match typ {
        None => Ok(()),
        Some(t)
            if t.eq_ignore_ascii_case(LOGOUT_TOKEN_TYPE)
                || t.eq_ignore_ascii_case("application/logout+jwt") =>
        {
            Ok(())
        }
        Some(_) => Err(LogoutTokenRefused("typ is not logout+jwt")),
    }
}

/// Back-Channel Logout §2.6 step 3 (OIDC Core §3.1.3.7 item 2): `iss` is
/// the provider's issuer.
fn check_issuer(claims: &Map<String, Value>, issuer: &str) -> Result<(), LogoutTokenRefused> {
    match claims.get("iss").and_then(Value::as_str) {
        Some(i) if i == issuer => Ok(()),
        _ => Err(LogoutTokenRefused("iss is not the provider")),
    }
}

/// Back-Channel Logout §2.6 step 3 (OIDC Core §3.1.3.7 item 3): `aud`
/// holds the receiver's client id.
fn check_audience(claims: &Map<String, Value>, client_id: &str) -> Result<(), LogoutTokenRefused> {
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(client_id)),
        _ => false,
    };
    ok.then_some(())
        .ok_or(LogoutTokenRefused("aud is not this client"))
}

/// Back-Channel Logout §2.6 step 3 (OIDC Core §3.1.3.7 item 10) and §2.4
/// (`exp` short): `iat` recent, `exp`, when present, not past.
fn check_issued_at(
    claims: &Map<String, Value>,
    now: OffsetDateTime,
) -> Result<(), LogoutTokenRefused> {
    let now = now.unix_timestamp();
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or(LogoutTokenRefused("no iat"))?;
    if (now - iat).abs() > ACCEPTED_IAT_SKEW_SECS {
        return Err(LogoutTokenRefused("iat is too far from now"));
    }
    if let Some(exp) = claims.get("exp") {
        match exp.as_i64() {
            Some(exp) if exp > now => {}
            _ => return Err(LogoutTokenRefused("expired")),
        }
    }
    Ok(())
}

/// Back-Channel Logout §2.6 step 4: `events` is a JSON object holding the
/// member `http://schemas.openid.net/event/backchannel-logout`, itself an
/// object.
fn check_events(claims: &Map<String, Value>) -> Result<(), LogoutTokenRefused> {
    match claims.get("events").and_then(Value::as_object) {
        Some(e)
            if e.get(BACKCHANNEL_LOGOUT_EVENT)
                .is_some_and(Value::is_object) =>
        {
            Ok(())
        }
        _ => Err(LogoutTokenRefused("no back-channel logout event")),
    }
}

/// Back-Channel Logout §2.6 step 5: a `sub`, a `sid`, or both.
fn check_subject_or_session(
    claims: &Map<String, Value>,
) -> Result<(Option<String>, Option<String>), LogoutTokenRefused> {
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenRefused("neither sub nor sid"));
    }
    Ok((sub, sid))
}

/// Back-Channel Logout §2.6 step 6: no `nonce` (an ID token is not a
/// logout token).
fn check_no_nonce(claims: &Map<String, Value>) -> Result<(), LogoutTokenRefused> {
    if claims.contains_key("nonce") {
        return Err(LogoutTokenRefused("a logout token has no nonce"));
    }
    Ok(())
}

/// Back-Channel Logout §2.4: `jti` is required (receivers may refuse a
/// replay by it).
fn check_jti(claims: &Map<String, Value>) -> Result<String, LogoutTokenRefused> {
    claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
        .map(str::to_owned)
        .ok_or(LogoutTokenRefused("no jti"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    fn pending(sid: Option<&str>) -> PendingLogoutToken {
        PendingLogoutToken {
            jti: "j1".into(),
            sub: "u1".into(),
            sid: sid.map(str::to_owned),
        }
    }

    #[test]
    fn claims_carry_the_event_and_no_nonce() {
        let c = logout_token_claims(
            "https://idp",
            &ClientId("a".into()),
            &pending(Some("s1")),
            at(1000),
        );
        assert_eq!(c["iss"], "https://idp");
        assert_eq!(c["aud"], "a");
        assert_eq!(c["iat"], 1000);
        assert_eq!(c["exp"], 1000 + LOGOUT_TOKEN_LIFETIME_SECS);
        assert_eq!(c["sid"], "s1");
        assert_eq!(c["sub"], "u1");
        assert!(c["events"][BACKCHANNEL_LOGOUT_EVENT].is_object());
        assert!(!c.contains_key("nonce"));
        let c = logout_token_claims("https://idp", &ClientId("a".into()), &pending(None), at(1));
        assert!(!c.contains_key("sid"));
        assert_eq!(
            check_logout_token(&c, Some("logout+jwt"), "https://idp", "a", at(1)),
            Ok(LogoutTokenClaims {
                sub: Some("u1".into()),
                sid: None,
                jti: "j1".into()
            })
        );
    }

    #[test]
    fn receiver_checks_refuse_what_is_not_a_logout_token_for_it() {
        let good = logout_token_claims(
            "https://idp",
            &ClientId("a".into()),
            &pending(Some("s1")),
            at(1000),
        );
        let check = |c: &Map<String, Value>, typ: Option<&str>, now: i64| {
            check_logout_token(c, typ, "https://idp", "a", at(now)).map_err(|e| e.0)
        };
        assert!(check(&good, None, 1000).is_ok());
        assert_eq!(
            check(&good, Some("JWT"), 1000),
            Err("typ is not logout+jwt")
        );
        assert_eq!(
            check_logout_token(&good, None, "https://other", "a", at(1000)).map_err(|e| e.0),
            Err("iss is not the provider")
        );
        assert_eq!(
            check_logout_token(&good, None, "https://idp", "b", at(1000)).map_err(|e| e.0),
            Err("aud is not this client")
        );
        assert_eq!(check(&good, None, 1000 + 121), Err("expired"));
        assert_eq!(
            check(&good, None, 1000 - 301),
            Err("iat is too far from now")
        );
        let mut id_token_like = good.clone();
        id_token_like.insert("nonce".into(), "n".into());
        assert_eq!(
            check(&id_token_like, None, 1000),
            Err("a logout token has no nonce")
        );
        let mut no_event = good.clone();
        no_event.insert("events".into(), json!({"other": {}}));
        assert_eq!(
            check(&no_event, None, 1000),
            Err("no back-channel logout event")
        );
        let mut anonymous = good.clone();
        anonymous.remove("sub");
        anonymous.remove("sid");
        assert_eq!(check(&anonymous, None, 1000), Err("neither sub nor sid"));
        let mut no_jti = good;
        no_jti.remove("jti");
        assert_eq!(check(&no_jti, None, 1000), Err("no jti"));
    }
}
