//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): checking the
//! request, then ending the single sign-on session (see `login.rs`).

use super::authorization::Authorization;
use super::authorize::{RawParams, redirect_with};
use super::error::OAuthError;
use crate::client::Client;
use serde_json::Value;
use std::sync::Arc;

/// A checked logout request.
#[derive(Debug, Clone)]
pub struct LogoutPlan {
    pub client: Option<Arc<Client>>,
    /// Where to send the browser afterwards (registered URI + state), if anywhere.
    pub redirect: Option<String>,
    /// `sid` of a valid id_token_hint: the RP proved it started this logout,
    /// so no confirmation is asked.
    pub hint_sid: Option<String>,
    pub hint_valid: bool,
}

impl Authorization {
    /// RP-Initiated Logout §2: an id_token_hint must be one of ours; a
    /// post_logout_redirect_uri must be registered, exactly, for the client
    /// named by the hint or by client_id. Errors are shown, never redirected.
    pub fn check_logout_request(&self, params: &RawParams) -> Result<LogoutPlan, OAuthError> {
        let mut client = None;
        let mut hint_sid = None;
        let mut hint_valid = false;
        if let Some(hint) = params.get("id_token_hint") {
            let claims = self
                .verify_id_token_hint(hint)
                .ok_or_else(|| OAuthError::invalid_request("id_token_hint is not valid"))?;
            let aud = match claims.get("aud") {
                Some(Value::String(a)) => Some(a.clone()),
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            client = aud.and_then(|a| self.clients.get(&a));
            if client.is_none() {
                return Err(OAuthError::invalid_request("id_token_hint is not valid"));
            }
            hint_sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
            hint_valid = true;
        }
        if let Some(id) = params.get("client_id") {
            match (&client, self.clients.get(id)) {
                (Some(c), _) if c.id.0 != id => {
                    return Err(OAuthError::invalid_request(
                        "client_id does not match id_token_hint",
                    ));
                }
                (None, Some(c)) => client = Some(c),
                (None, None) => return Err(OAuthError::invalid_request("unknown client")),
                _ => {}
            }
        }
        let redirect = match params.get("post_logout_redirect_uri") {
            None => None,
            Some(uri) => {
                let c = client.as_ref().ok_or_else(|| {
                    OAuthError::invalid_request(
                        "post_logout_redirect_uri needs id_token_hint or client_id",
                    )
                })?;
                if !c.post_logout_redirect_uris.iter().any(|r| r == uri) {
                    return Err(OAuthError::invalid_request(
                        "post_logout_redirect_uri is not registered for this client",
                    ));
                }
                Some(match params.get("state") {
                    Some(s) => redirect_with(uri, &[("state", s)]),
                    None => uri.to_owned(),
                })
            }
        };
        Ok(LogoutPlan {
            client,
            redirect,
            hint_sid,
            hint_valid,
        })
    }
}
